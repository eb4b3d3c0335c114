"""The export's model card: the trained run's own card, and one rendered as a run from Hub ids would have it."""

import json

import pytest

from dfd.modeling_dfd import DFDForVideoClassification
from dfd.tools.train.arguments import parse_args
from dfd.tools.train.card import model_card
from training_fixtures import read_card


def test_model_card(trained, training_videos, frame_cache_dir, tiny_clip_dir):
    output_dir, _ = trained
    card, body = read_card(output_dir / "model" / "README.md")
    assert card["license"] == "apache-2.0"
    assert card["library_name"] == "transformers"
    assert card["pipeline_tag"] == "video-classification"
    assert "deepfake-detection" in card["tags"]
    results = {m["type"]: m["value"] for m in card["model-index"][0]["results"][0]["metrics"]}
    metrics = json.loads((output_dir / "model" / "metrics.json").read_text())
    assert results["roc_auc"] == round(metrics["eval_roc_auc"], 4)
    assert results["recall_real"] == round(metrics["eval_recall_real"], 4)
    assert "| train | 7 | 6 | 13 |" in body and "| validation | 3 | 3 | 6 |" in body
    assert f"{metrics['trainable_parameters']:,} of {metrics['total_parameters']:,}" in body
    assert "Unreadable videos skipped: 1" in body
    assert "Source: local videos (folders of real/ and fake/)." in body
    assert (
        "Validation split: given by --validation_dir: 0 of its 6 videos also in training; the videos carry no "
        "identity groups, so shared identities are not measured." in body
    )
    calibration = metrics["calibration"]
    if calibration["temperature_kept"]:
        assert "Temperature scaling is kept: it lowered the validation videos' negative log-likelihood" in body
    else:
        assert "The temperature is 1: " in body and "the condition for keeping it." in body
    assert "### Evaluation sets" not in body  # no --eval_dir
    assert "| sampling | WeightedRandomSampler, inverse class-frequency weights |" in body
    assert "| batch | 4 per device x 1 process(es) x 1 accumulation steps = 4 |" in body

    # A published card names no local path: the local CLIP is described, not shown, and is no base_model.
    readme = (output_dir / "model" / "README.md").read_text()
    for local_path in (training_videos, frame_cache_dir, tiny_clip_dir, output_dir):
        assert str(local_path) not in readme
    assert "base_model" not in card
    assert "built from a local CLIP checkpoint" in body
    # Without --hub_model_id the model-index is named after the model, not the output folder.
    assert card["model-index"][0]["name"] == "dfd-deepfake-detector"
    assert body.startswith("\n# dfd-deepfake-detector\n")


@pytest.mark.parametrize(
    "source_args, base_model, source",
    [
        ([], "openai/clip-vit-large-patch14", "built from the CLIP checkpoint [`openai/clip-vit-large-patch14`]"),
        (
            ["--model_path", "dfd-tests/detector"],
            "dfd-tests/detector",
            "fine-tuned from the DFD detector [`dfd-tests/",
        ),
    ],
)
def test_model_card_keeps_hub_ids(trained, source_args, base_model, source, tmp_path):
    """The card of a run from Hub ids (rendered here from the trained run's own summary and metrics): the source is
    kept as base_model, a --model_path is named as the DFD detector it is, and --hub_model_id names the model."""
    output_dir, _ = trained
    args = parse_args(
        ["--train_dir", str(tmp_path), "--output_dir", "adapters", "--hub_model_id", "org/tiny-dfd", *source_args]
    )
    results = json.loads((output_dir / "model" / "metrics.json").read_text())
    metrics = {name.removeprefix("eval_"): value for name, value in results.items() if name.startswith("eval_")}
    del metrics["samples"]
    model = DFDForVideoClassification.from_pretrained(output_dir / "model")
    readme = tmp_path / "README.md"
    readme.write_text(model_card(args, model, results, metrics))
    card, body = read_card(readme)
    assert card["base_model"] == base_model
    assert card["model-index"][0]["name"] == "tiny-dfd"
    assert source in body and "CLIP vision tower" not in body
    assert 'from_pretrained("org/tiny-dfd", trust_remote_code=True)' in body
    assert "dfd serve --model org/tiny-dfd" in body and "dfd space --model org/tiny-dfd" in body


def test_model_card_states_an_identity_split_the_overlaps_allowed_and_the_sets_evaluated(trained, tmp_path):
    """Rendered from the trained run's metrics.json with what a run on indexed datasets adds: a validation split held
    out by identity, an overlap --allow_overlap let through, and evaluation sets with a row per method."""
    output_dir, _ = trained
    results = json.loads((output_dir / "model" / "metrics.json").read_text())
    metrics = {name.removeprefix("eval_"): value for name, value in results.items() if name.startswith("eval_")}
    del metrics["samples"]
    leakage = {"groups_known": True, "validation_groups": 3, "shared_groups": 0, "validation_videos": 6,
               "videos_sharing_a_group": 0, "shared_videos": 0}  # fmt: skip
    results["split"] = {
        "validation": "identity", "percentage": 10.0, "seed": 42, "excluded": 2, "leakage": leakage,
        "overlaps": [{"first": "train", "second": "evaluation set Celeb-DF", "videos": 0, "groups": 5}],
        "allow_overlap": True,
    }  # fmt: skip
    results["datasets"]["train"] = {"DeepFakeDetection": {"original": 4, "DeepFakeDetection": 9}}
    scores = {"eval_roc_auc": 0.9, "eval_average_precision": 0.8, "eval_eer": 0.1, "eval_balanced_accuracy": 0.7,
              "eval_recall_real": 0.75, "eval_recall_fake": 0.65}  # fmt: skip
    counts = {"eval_class_counts": {"real": 4, "fake": 8}}
    methods = {method: {**scores, "eval_class_counts": {"real": 4, "fake": 4}} for method in ("Deepfakes", "FaceSwap")}
    results["evaluation"] = {"threshold": 0.61, "rule": "top window", "sets": {"FaceForensics++": {
        "split": "test", "datasets": ["FaceForensics++"], "fake_methods": list(methods), **scores, **counts,
        "methods": methods,
    }}}  # fmt: skip
    args = parse_args(["--train_dir", str(tmp_path), "--output_dir", "out", "--allow_overlap", "--augment", "robust"])
    readme = tmp_path / "README.md"
    readme.write_text(
        model_card(args, DFDForVideoClassification.from_pretrained(output_dir / "model"), results, metrics)
    )
    _, body = read_card(readme)
    assert "Source: DeepFakeDetection (original: 4, DeepFakeDetection: 9 training videos)." in body
    assert (
        "Validation split: 10% of the training videos held out by identity group (seed 42; 2 fakes whose identities "
        "fell on both sides excluded): 0 of its 3 identity groups and 0 of its 6 videos also in training. This departs "
        "from the recipe's plain stratified split" in body
    )
    assert (
        "Trained with `--allow_overlap`: train and evaluation set Celeb-DF share 0 videos and 5 identity groups."
        in body
    )
    assert "re-compression (H.264 CRF 23-40 or JPEG quality 30-90)" in body
    assert "### Evaluation sets" in body and "FaceForensics++ (test split, fakes: Deepfakes, FaceSwap)" in body
    assert "| FaceForensics++ | test | 4 | 8 | 0.9000 | 0.8000 | 0.1000 | 0.7000 | 0.7500 | 0.6500 |" in body
    assert "| ↳ FaceSwap | test | 4 | 4 | 0.9000 |" in body

"""
The field's datasets as downloaded, end to end on their replicas (tests/dataset_replicas.py): `dfd data index` writes
manifests, train_accelerate.py trains on FaceForensics++'s official train/val split with --augment robust, and
evaluates the export on the official test splits of six sets given as manifests and as FORMAT:ROOT. One run, shared.
"""

import csv
import io
import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from dfd.tools.cli import main as dfd_main
from dfd.tools.data import read_manifest
from training_fixtures import TINY_CONFIG, read_card, run_script


# Set name -> (split, real, fake, fake methods with a row of their own) in the replicas' official test splits.
EXPECTED_SETS = {
    "FaceForensics++": ("test", 4, 20, ["Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter"]),
    "Celeb-DF": ("test", 3, 3, []),
    "DFDC": ("test", 3, 3, []),
    "DFDC-preview": ("test", 4, 4, ["method_A", "method_B"]),
    "dfb": ("test", 4, 2, ["CelebDFv2_fake", "DFD_fake"]),  # DeepfakeBench's JSON: two datasets, named by its file
}


@pytest.fixture(scope="module")
def trained_on_replicas(
    tmp_path_factory, ffpp_replicas, celebdf_replica, dfdc_replica, dfdcp_replica, deepfakebench_replica, tiny_clip_dir
):
    """(output folder, completed process, manifests folder) of one index -> train -> evaluate run."""
    folder = tmp_path_factory.mktemp("replicas_run")
    ffpp, _ = ffpp_replicas
    rgb = deepfakebench_replica.root.parent.parent / "rgb"
    for arguments in (
        ["ffpp", ffpp.root, "--output", folder / "ffpp.csv"],
        ["dfdc", dfdc_replica.root, "--output", folder / "dfdc.csv"],
        ["deepfakebench", deepfakebench_replica.root, "--frames_root", rgb, "--output", folder / "dfb.csv"],
    ):
        assert dfd_main(["data", "index", *map(str, arguments)]) == 0
    result = run_script(
        "--train_dir", folder / "ffpp.csv",
        "--eval_dir", folder / "ffpp.csv", f"celebdf:{celebdf_replica.root}", folder / "dfdc.csv",
        f"dfdcp:{dfdcp_replica.root}", folder / "dfb.csv", f"dfd:{ffpp.root}",
        "--init_from", tiny_clip_dir,
        "--config_overrides", TINY_CONFIG,
        "--cache_dir", folder / "cache",
        "--per_device_train_batch_size", "6",
        "--per_device_eval_batch_size", "16",
        "--gradient_accumulation_steps", "1",
        "--learning_rate", "3e-3",
        "--num_train_epochs", "2",
        "--preprocessing_num_workers", "2",
        "--dataloader_num_workers", "1",
        "--augment", "robust",
        "--report_to", "none",
        "--output_dir", folder / "out",
    )  # fmt: skip
    return folder / "out", result, folder


def test_each_set_is_evaluated_on_its_test_split_with_a_row_per_method(trained_on_replicas):
    output_dir, result, _ = trained_on_replicas
    evaluation = json.loads((output_dir / "evaluation" / "metrics.json").read_text())
    sets = evaluation["sets"]
    assert list(sets) == [*EXPECTED_SETS, "DeepFakeDetection"]
    for name, (split, real, fake, methods) in EXPECTED_SETS.items():
        assert (sets[name]["split"], sets[name]["eval_class_counts"]) == (split, {"real": real, "fake": fake}), name
        assert list(sets[name].get("methods", {})) == methods, name
    for method, row in sets["FaceForensics++"]["methods"].items():  # each method's fakes against all real videos
        assert row["eval_class_counts"] == {"real": 4, "fake": 4}, method
    # DFD has no official split: its test split is the identity split's (`dfd data index`), with both classes.
    assert sets["DeepFakeDetection"]["split"] == "test" and min(sets["DeepFakeDetection"]["eval_class_counts"].values())

    # The table printed at the end names each row's split and counts, the methods indented under their set.
    table = result.stdout[result.stdout.index("Evaluation at threshold") :].splitlines()
    assert table[1].split()[:4] == ["set", "split", "real", "fake"]
    assert [line.split()[:4] for line in table[2:8]] == [
        ["FaceForensics++", "test", "4", "20"],
        *(([method, "test", "4", "4"]) for method in EXPECTED_SETS["FaceForensics++"][3]),
    ]
    assert all(line.startswith("  ") for line in table[3:8])
    assert float(table[2].split()[4]) == pytest.approx(sets["FaceForensics++"]["eval_roc_auc"], abs=1e-4)


def test_predictions_carry_dataset_method_and_group_and_give_the_metrics(trained_on_replicas):
    """predictions.csv rows are the manifests' rows, with their scores; FF++'s per-method AUC is the AUC of the
    method's fakes against the real videos, recomputed here from the file."""
    output_dir, _, folder = trained_on_replicas
    rows = list(csv.DictReader(io.StringIO((output_dir / "evaluation" / "predictions.csv").read_text())))
    listed = {row.path: row for row in read_manifest(folder / "ffpp.csv")}
    ffpp = [row for row in rows if row["set"] == "FaceForensics++"]
    assert len(ffpp) == 24
    for row in ffpp:
        entry = listed[row["path"]]
        assert (row["split"], row["dataset"]) == ("test", "FaceForensics++") == (entry.split, entry.dataset)
        assert (row["label"], row["method"], row["group"]) == (entry.label, entry.method, entry.group)
    metrics = json.loads((output_dir / "evaluation" / "metrics.json").read_text())["sets"]["FaceForensics++"]
    subset = [row for row in ffpp if row["method"] in ("original", "FaceSwap")]
    labels = [row["label"] == "fake" for row in subset]
    auc = roc_auc_score(labels, [float(row["score"]) for row in subset])
    assert auc == pytest.approx(metrics["methods"]["FaceSwap"]["eval_roc_auc"], abs=1e-4)
    recall_fake = np.mean([row["verdict"] == "fake" for row in subset if row["label"] == "fake"])
    assert recall_fake == pytest.approx(metrics["methods"]["FaceSwap"]["eval_recall_fake"])
    assert {row["method"] for row in rows if row["set"] == "DFDC" and row["label"] == "fake"} == {"unknown"}


def test_export_states_its_split_leakage_and_evaluation(trained_on_replicas):
    """The export trained on whole frames crops nothing; its metrics.json and card state the split (FF++'s own, no
    identity shared), the augmentation, whether the temperature was kept, and the sets evaluated."""
    output_dir, result, _ = trained_on_replicas
    processor = json.loads((output_dir / "model" / "video_preprocessor_config.json").read_text())
    assert processor["crop"] == "frame"
    # DeepfakeBench's face crops, judged by a whole-frame model, are flagged as such.
    assert "Evaluation set dfb: 6 of its videos are face crops, but the model sees whole frames" in result.stderr

    metrics = json.loads((output_dir / "model" / "metrics.json").read_text())
    assert metrics["split"]["validation"] == "given"
    assert metrics["split"]["leakage"] == {
        "groups_known": True, "validation_groups": 4, "shared_groups": 0, "validation_videos": 24,
        "videos_sharing_a_group": 0, "shared_videos": 0,
    }  # fmt: skip
    assert metrics["split"]["overlaps"] == [] and metrics["split"]["allow_overlap"] is False
    assert metrics["augment"] == "robust"
    assert "temperature_kept" in metrics["calibration"] and "held_out_nll_gain" in metrics["calibration"]
    assert metrics["datasets"]["train"] == {
        "FaceForensics++": {"original": 6, **{method: 6 for method in EXPECTED_SETS["FaceForensics++"][3]}}
    }
    assert list(metrics["evaluation"]["sets"]) == [*EXPECTED_SETS, "DeepFakeDetection"]

    readme = (output_dir / "model" / "README.md").read_text()
    _, body = read_card(output_dir / "model" / "README.md")
    assert (
        "Validation split: the training data's own validation split: 0 of its 4 identity groups and 0 of its 24 "
        "videos also in training." in body
    )
    assert "### Evaluation sets" in body and "DFDC-preview (test split, fakes: method_A, method_B)" in body
    for name, (split, real, fake, methods) in EXPECTED_SETS.items():
        assert f"| {name} | {split} | {real} | {fake} | " in body
        for method in methods:
            assert f"| ↳ {method} | {split} | " in body
    assert "/tmp" not in readme and str(output_dir.parent) not in readme  # no local path in a published card
    assert np.isfinite(metrics["evaluation"]["sets"]["Celeb-DF"]["eval_roc_auc"])

"""
train_accelerate.py end to end, run as users run it (a subprocess from the repo root) on real mp4 files and a tiny
CLIP, plus its arguments, model card and data helpers (frame cache, augmentation, tables, sampling) in process.

The learnable task: real videos are bright, fake ones dark. Runs share one frame cache, so only the first decodes.
"""

import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
import yaml
from safetensors import safe_open

from conftest import REPO_ROOT, write_video
from dfd.configuration_dfd import DFDConfig
from dfd.tools.export import processor_for
from dfd.modeling_dfd import DFDForVideoClassification
from dfd.tools.training_data import (
    FrameCache,
    augment_videos,
    load_hub_video_tables,
    load_video_tables,
    normalize_videos,
)
from dfd.train_accelerate import (
    VideoData,
    choose_mixed_precision,
    load_model_and_processor,
    make_train_dataloader,
    model_card,
    parse_args,
)


TINY_CONFIG = '{"image_size": 48, "adapter_bottleneck": 8, "num_frames": 4}'
BRIGHTNESS = {"real": 170, "fake": 70}


def video_frames(label, seed, num_frames=8, size=40):
    rng = np.random.default_rng(seed)
    return np.clip(BRIGHTNESS[label] + rng.normal(0, 20, (num_frames, size, size, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """train/{real,fake}: 6 + 6 mp4 videos, one more real video as a frame folder and a corrupt file; val: 3 + 3."""
    root = tmp_path_factory.mktemp("videos")
    seed = 0
    for split, count in (("train", 6), ("val", 3)):
        for label in ("real", "fake"):
            (root / split / label).mkdir(parents=True)
            for index in range(count):
                seed += 1
                write_video(root / split / label / f"{label}_{index}.mp4", video_frames(label, seed))
    frame_folder = root / "train" / "real" / "frame_folder"
    frame_folder.mkdir()
    for index, frame in enumerate(video_frames("real", 99)):
        PIL.Image.fromarray(frame).save(frame_folder / f"frame_{index:03d}.png")
    (root / "train" / "fake" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but not really a video")
    return root


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("frame_cache")


@pytest.fixture(scope="module")
def train_args(data, cache_dir, tiny_clip_dir):
    """A few-step recipe on the tiny model: 4 epochs of 4 steps, a checkpoint every 2 steps."""
    return [
        "--train_dir", data / "train",
        "--validation_dir", data / "val",
        "--init_from", tiny_clip_dir,
        "--config_overrides", TINY_CONFIG,
        "--cache_dir", cache_dir,
        "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4",
        "--gradient_accumulation_steps", "1",
        "--learning_rate", "3e-3",
        "--num_train_epochs", "4",
        "--checkpointing_steps", "2",
        "--checkpoints_total_limit", "2",
        "--preprocessing_num_workers", "2",
    ]  # fmt: skip


def script_command(*args, launcher=(sys.executable,)):
    return [*launcher, "train_accelerate.py", *map(str, args)]


def run_script(*args, launcher=(sys.executable,), env=None, check=True):
    result = subprocess.run(
        script_command(*args, launcher=launcher), cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def read_card(readme_path):
    """(YAML metadata, markdown body) of a model card."""
    _, front_matter, body = readme_path.read_text().split("---\n", 2)
    return yaml.safe_load(front_matter), body


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def eval_metrics(folder):
    """The eval_* numbers of a training run's export (OUT/model/metrics.json), or of a --do_eval run (OUT/...)."""
    path = folder / "model" / "metrics.json" if (folder / "model").is_dir() else folder / "metrics.json"
    return {k: v for k, v in json.loads(path.read_text()).items() if k.startswith("eval_")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_args):
    """One uninterrupted training run, shared by the assertions below (and the reference for the resume test)."""
    output_dir = tmp_path_factory.mktemp("run") / "out"
    result = run_script(*train_args, "--output_dir", output_dir)
    return output_dir, result


def test_run_trains_evaluates_checkpoints_and_exports(trained, data):
    output_dir, result = trained
    for name in ("config.json", "model.safetensors", "video_preprocessor_config.json", "README.md", "modeling_dfd.py"):
        assert (output_dir / "model" / name).is_file(), name
    assert (output_dir / "model" / "roc_curve.png").read_bytes().startswith(b"\x89PNG")
    assert list((output_dir / "runs").rglob("events.out.tfevents*")), "no tensorboard log"

    log = read_jsonl(output_dir / "log.jsonl")
    assert [entry["epoch"] for entry in log] == [1, 2, 3, 4]
    assert [entry["step"] for entry in log] == [4, 8, 12, 16]

    metrics = json.loads((output_dir / "model" / "metrics.json").read_text())
    assert metrics["data"] == {"train": {"real": 7, "fake": 6}, "validation": {"real": 3, "fake": 3}}
    assert metrics["eval_samples"] == 6 and metrics["global_step"] == 16
    best = max(log, key=lambda entry: entry["eval_roc_auc"])  # the first epoch reaching the best ROC AUC
    assert metrics["best_epoch"] == best["epoch"] and metrics["best_checkpoint"] == f"checkpoint-{best['step']}"
    # The exported weights are the best checkpoint's: evaluating them again gives that epoch's numbers.
    assert metrics["eval_loss"] == pytest.approx(best["eval_loss"], abs=1e-6)

    # Calibration on the validation videos, stored with the export: the window duration is the training videos'
    # (8 frames at 25 fps; the frame folder has none), the temperature and threshold are the calibration's.
    config = json.loads((output_dir / "model" / "config.json").read_text())
    calibration = metrics["calibration"]
    assert config["window_duration"] == pytest.approx(8 / 25)
    assert config["calibration_temperature"] == calibration["temperature"] > 0
    assert config["decision_threshold"] == calibration["threshold"]
    assert config["real_log_odds"] == calibration["real_log_odds"]
    assert calibration["false_positive_rate"] <= calibration["target_false_positive_rate"] == 0.05
    assert {"ece_before", "ece_after", "true_positive_rate", "eer_threshold"} <= set(calibration)

    # The newest 2 checkpoints plus the best one; nothing half-written is left behind.
    checkpoints = sorted(path.name for path in (output_dir / "checkpoints").iterdir())
    assert checkpoints == sorted({"checkpoint-14", "checkpoint-16", metrics["best_checkpoint"]})
    for checkpoint in checkpoints:
        with safe_open(output_dir / "checkpoints" / checkpoint / "model.safetensors", framework="pt") as weights:
            assert all(".adapter." in name or name.startswith("classifier.") for name in weights.keys())
    assert not list(output_dir.rglob(".tmp-*"))

    # The corrupt file: one warning naming it, counted in the summary, and the run went on.
    warnings = [line for line in result.stderr.splitlines() if "Skipping unreadable video" in line]
    assert len(warnings) == 1 and str(data / "train" / "fake" / "corrupt.mp4") in warnings[0]
    assert metrics["skipped_videos"] == 1
    assert "1 unreadable video(s) skipped" in result.stderr

    # No --mixed_precision and no launcher setting: on a CPU the default is fp32, and the log says why.
    assert metrics["mixed_precision"] == "no"
    assert "Mixed precision: no (default on CPU: " in result.stderr


def test_loss_falls_on_learnable_task(trained):
    output_dir, _ = trained
    log = read_jsonl(output_dir / "log.jsonl")
    assert log[-1]["train_loss"] < log[0]["train_loss"] - 0.1, [entry["train_loss"] for entry in log]
    assert log[-1]["eval_loss"] < log[0]["eval_loss"]
    assert log[-1]["eval_roc_auc"] == 1.0


def test_model_card(trained, data, cache_dir, tiny_clip_dir):
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
    assert "| sampling | WeightedRandomSampler, inverse class-frequency weights |" in body

    # A published card names no local path: the local CLIP is described, not shown, and is no base_model.
    readme = (output_dir / "model" / "README.md").read_text()
    for local_path in (data, cache_dir, tiny_clip_dir, output_dir):
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
        ["--train_dir", "videos", "--output_dir", "adapters", "--hub_model_id", "org/tiny-dfd", *source_args]
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


def test_export_loads_with_auto_classes_in_fresh_process(trained, data):
    """The Hub path (trust_remote_code, the processor on raw files) reproduces the training run's validation scores,
    so the cached, normalised-on-the-fly frames the model trained on are exactly what inference feeds it."""
    output_dir, _ = trained
    videos = sorted(str(path) for path in (data / "val").rglob("*.mp4"))
    code = f"""
import json, torch
from sklearn.metrics import roc_auc_score
from transformers import AutoModelForVideoClassification, AutoVideoProcessor
model = AutoModelForVideoClassification.from_pretrained({str(output_dir / "model")!r}, trust_remote_code=True).eval()
processor = AutoVideoProcessor.from_pretrained({str(output_dir / "model")!r}, trust_remote_code=True)
videos = {videos!r}
labels = torch.tensor([int("/fake/" in video) for video in videos])
with torch.no_grad():
    logits = model(**processor(videos=videos, return_tensors="pt")).logits
print(json.dumps({{
    "dtype": str(next(model.parameters()).dtype),
    "roc_auc": roc_auc_score(labels, logits.softmax(-1)[:, 1]),
    "loss": torch.nn.functional.cross_entropy(logits, labels).item(),
}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    metrics = eval_metrics(output_dir)
    assert loaded["dtype"] == "torch.float32"
    assert loaded["roc_auc"] == metrics["eval_roc_auc"]
    assert loaded["loss"] == pytest.approx(metrics["eval_loss"], abs=1e-5)


def test_do_eval_reproduces_validation_metrics_on_several_sets(trained, data, cache_dir, tmp_path):
    output_dir, _ = trained
    result = run_script(
        "--do_eval",
        "--model_path", output_dir / "model",
        "--eval_dir", data / "val", data / "train",
        "--cache_dir", cache_dir,
        "--output_dir", tmp_path / "eval",
    )  # fmt: skip
    evaluation = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    training = json.loads((output_dir / "model" / "metrics.json").read_text())
    calibration = training["calibration"]
    assert evaluation["threshold"] == calibration["threshold"]
    evaluated = evaluation["sets"]["val"]
    # Threshold-free metrics as in training; the rest at the stored threshold, where calibration measured the rates.
    for name in ("eval_roc_auc", "eval_average_precision", "eval_eer"):
        assert evaluated[name] == pytest.approx(training[name], abs=1e-6), name
    assert evaluated["eval_recall_real"] == pytest.approx(1 - calibration["false_positive_rate"])
    assert evaluated["eval_recall_fake"] == pytest.approx(calibration["true_positive_rate"])
    assert evaluation["sets"]["train"]["eval_samples"] == 13  # the corrupt video is skipped
    for name in ("val", "train"):
        assert (tmp_path / "eval" / f"roc_curve-{name}.png").is_file()

    rows = list(csv.DictReader(io.StringIO((tmp_path / "eval" / "predictions.csv").read_text())))
    assert [row["set"] for row in rows] == ["val"] * 6 + ["train"] * 13
    for row in rows:
        assert row["label"] == ("fake" if "/fake/" in row["path"] else "real")
        fake = float(row["score"]) >= calibration["threshold"]
        assert row["verdict"] == ("fake" if fake else "real")
    val = [row for row in rows if row["set"] == "val"]
    recall_real = np.mean([row["verdict"] == "real" for row in val if row["label"] == "real"])
    assert recall_real == pytest.approx(evaluated["eval_recall_real"])

    # The cross-dataset table: one row per set.
    table = result.stdout[result.stdout.index("Evaluation at threshold") :].splitlines()
    assert table[1].split()[:3] == ["set", "videos", "AUC"]
    assert [line.split()[:2] for line in table[2:4]] == [["val", "6"], ["train", "13"]]
    assert float(table[2].split()[2]) == pytest.approx(evaluated["eval_roc_auc"], abs=1e-4)


def test_sigkill_then_resume_reaches_the_same_result(trained, train_args, tmp_path):
    """Killed (SIGKILL) right after its first checkpoint and resumed from `latest`, a run ends exactly where the
    uninterrupted one did: same data order, augmentation, dropout and optimizer state from the checkpoint."""
    reference_dir, _ = trained
    output_dir = tmp_path / "out"
    checkpoints = output_dir / "checkpoints"
    process = subprocess.Popen(
        script_command(*train_args, "--output_dir", output_dir),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while not list(checkpoints.glob("checkpoint-*")) and process.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (output_dir / "model").exists(), "the run finished before it could be killed"
    # A checkpoint cut short (no trainer_state.json) must never be picked up as the latest.
    (checkpoints / "checkpoint-999").mkdir()
    (checkpoints / "checkpoint-999" / "optimizer.bin").write_bytes(b"half written")

    # Without --resume_from_checkpoint, the earlier run's checkpoints are not silently mixed with a new run's.
    refused = run_script(*train_args, "--output_dir", output_dir, check=False)
    assert refused.returncode != 0 and "--resume_from_checkpoint latest" in refused.stderr.splitlines()[-1]

    result = run_script(*train_args, "--output_dir", output_dir, "--resume_from_checkpoint", "latest")
    resumed_from = [line for line in result.stderr.splitlines() if "Resumed from" in line]
    assert len(resumed_from) == 1 and "checkpoint-999" not in resumed_from[0]
    assert eval_metrics(output_dir) == eval_metrics(reference_dir)
    assert read_jsonl(output_dir / "log.jsonl") == read_jsonl(reference_dir / "log.jsonl")


@pytest.fixture(scope="module")
def bf16_run_with_failed_push(tmp_path_factory, train_args):
    """One bf16 step on CPU, then a push that fails (HF_HUB_OFFLINE=1, set by conftest)."""
    output_dir = tmp_path_factory.mktemp("bf16") / "out"
    result = run_script(
        *train_args,
        "--output_dir", output_dir,
        "--max_train_steps", "1",
        "--mixed_precision", "bf16",
        "--gradient_checkpointing",
        "--push_to_hub",
        "--hub_model_id", "dfd-tests/never-uploaded",
        check=False,
    )  # fmt: skip
    return output_dir, result


def test_bf16_step_runs_on_cpu_and_exports_the_fp32_backbone(bf16_run_with_failed_push, tiny_clip_dir):
    """Training held the frozen backbone in bf16; the export has the source's fp32 backbone bit for bit, plus the
    trained weights of the best checkpoint."""
    output_dir, result = bf16_run_with_failed_push
    assert "precision bf16" in result.stderr
    assert read_jsonl(output_dir / "log.jsonl")[0]["step"] == 1
    with safe_open(output_dir / "model" / "model.safetensors", framework="pt") as weights:
        assert {weights.get_slice(name).get_dtype() for name in weights.keys()} == {"F32"}  # exported in fp32
        exported = {name: weights.get_tensor(name) for name in weights.keys()}
    source = DFDForVideoClassification.from_clip(tiny_clip_dir, **json.loads(TINY_CONFIG)).state_dict()
    for name in ("dfd.encoder.layers.0.self_attn.q_proj.weight", "dfd.embeddings.position_embedding.weight"):
        assert not torch.equal(source[name], source[name].bfloat16().float()), "bf16 rounding would go unnoticed"
        assert torch.equal(exported[name], source[name]), name
    with safe_open(output_dir / "checkpoints" / "checkpoint-1" / "model.safetensors", framework="pt") as weights:
        for name in weights.keys():
            assert torch.equal(exported[name], weights.get_tensor(name)), name


def test_failed_push_keeps_the_export_and_says_how_to_retry(bf16_run_with_failed_push):
    output_dir, result = bf16_run_with_failed_push
    assert result.returncode != 0
    assert "Upload to the Hub failed" in result.stderr
    assert f"hf upload dfd-tests/never-uploaded {output_dir / 'model'} ." in result.stderr
    assert "Traceback" not in result.stderr
    assert {path.name for path in (output_dir / "model").iterdir()} >= {
        "config.json",
        "model.safetensors",
        "README.md",
    }
    assert (output_dir / "model" / "metrics.json").is_file()


def test_two_processes_train_evaluate_and_export_once(train_args, tmp_path):
    # `accelerate launch --cpu` starts a single process unless MPI is set up; a torchrun launch (--multi_gpu) with
    # ACCELERATE_USE_CPU gives real multi-process CPU training over gloo.
    output_dir = tmp_path / "out"
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2")
    launcher += ("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no")
    result = run_script(
        *train_args, "--output_dir", output_dir, "--num_train_epochs", "1", "--report_to", "none",
        launcher=launcher,
        env={**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert "(2 processes" in result.stderr
    assert result.stderr.count("Exported to") == 1
    assert len(read_jsonl(output_dir / "log.jsonl")) == 1
    metrics = json.loads((output_dir / "model" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["eval_samples"] == 6  # 6 = 4 + 2: no padding duplicates
    assert (output_dir / "model" / "model.safetensors").is_file()
    written = {path.name for path in output_dir.iterdir()}
    assert written == {"checkpoints", "log.jsonl", "model"}
    assert (output_dir / "checkpoints" / "checkpoint-2" / "random_states_1.pkl").is_file()


@pytest.mark.parametrize(
    "extra_args, error",
    [
        (["--config_overrides", '{"adaptr_layers": [0]}'], "unknown DFDConfig field(s): adaptr_layers"),
        (["--model_path", "some/detector", "--config_overrides", '{"image_size": 224}'], "can't reshape"),
        (["--num_train_epochs", "0"], "argument --num_train_epochs: must be at least 1, got 0"),
        (["--max_train_steps", "0"], "argument --max_train_steps: must be at least 1, got 0"),
        (
            ["--per_device_train_batch_size", "-4"],
            "argument --per_device_train_batch_size: must be at least 1, got -4",
        ),
    ],
)
def test_arguments_that_would_be_ignored_misfit_or_train_nothing_are_refused(extra_args, error, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--train_dir", "videos", "--output_dir", "out", *extra_args])
    assert exit_info.value.code == 2
    assert error in capsys.readouterr().err.splitlines()[-1]


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Peak learning rate of AdamW. (default: 5e-06)" in help_text
    assert "--num_train_epochs NUM_TRAIN_EPOCHS Passes over the training data. (default: 12)" in help_text
    assert re.search(
        r"--no-class_balanced_sampling Draw both classes .*? \(default: True\) --brightness_jitter", help_text
    )
    # Options without a default say nothing about it.
    assert "(default: None)" not in help_text and "(default: False)" not in help_text


@pytest.mark.parametrize(
    "requested, environ, expected",
    [
        (None, {}, "no"),  # a CPU: fp32, not the card's bf16
        (None, {"ACCELERATE_MIXED_PRECISION": "no"}, "no"),  # what `accelerate launch` sets when nothing is configured
        (None, {"ACCELERATE_MIXED_PRECISION": "fp16"}, "fp16"),  # accelerate launch --mixed_precision / its config
        ("bf16", {}, "bf16"),
        ("no", {"ACCELERATE_MIXED_PRECISION": "bf16"}, "no"),  # the script's own flag wins
    ],
)
def test_mixed_precision_choice_on_cpu(requested, environ, expected):
    chosen, reason = choose_mixed_precision(requested, "cpu", environ)
    assert chosen == expected
    if requested is None and expected == "no":
        assert reason.startswith("default on CPU: ") and "--mixed_precision bf16" in reason


def test_fine_tuning_without_class_balanced_sampling(trained, data, cache_dir, tmp_path):
    """A --model_path run with a plain shuffle: it trains from the export, and its card says how it was made without
    calling the checkpoint a CLIP model or showing its path."""
    reference_dir, _ = trained
    output_dir = tmp_path / "fine_tuned"
    result = run_script(
        "--train_dir", data / "train",
        "--validation_dir", data / "val",
        "--model_path", reference_dir / "model",
        "--cache_dir", cache_dir,
        "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "1",
        "--max_train_steps", "2",
        "--preprocessing_num_workers", "2",
        "--no-class_balanced_sampling",
        "--report_to", "none",
        "--output_dir", output_dir,
    )  # fmt: skip
    assert [entry["step"] for entry in read_jsonl(output_dir / "log.jsonl")] == [2]
    assert "Resumed from" not in result.stderr
    card, body = read_card(output_dir / "model" / "README.md")
    assert "| sampling | uniform shuffle (no class balancing) |" in body
    assert "fine-tuned from a local DFD checkpoint" in body and "CLIP checkpoint" not in body
    assert str(reference_dir) not in body and "base_model" not in card


def test_model_with_other_labels_is_refused(tiny_detector_dir, tmp_path):
    detector = tmp_path / "detector"
    shutil.copytree(tiny_detector_dir, detector)
    config = json.loads((detector / "config.json").read_text())
    config.update(id2label={"0": "fake", "1": "real"}, label2id={"fake": 0, "real": 1})
    (detector / "config.json").write_text(json.dumps(config))
    args = parse_args(["--do_eval", "--model_path", str(detector), "--eval_dir", "videos", "--output_dir", "out"])
    with pytest.raises(
        ValueError, match=r"detector: labels \{0: 'fake', 1: 'real'\}, expected \{0: 'real', 1: 'fake'\}"
    ):
        load_model_and_processor(args)


def test_script_run_as_a_file_imports_the_package_beside_it(tmp_path):
    """A second checkout's train_accelerate.py runs that checkout's code, not the installed `dfd`."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for path in REPO_ROOT.glob("*.py"):
        shutil.copy(path, checkout)
    shutil.copytree(REPO_ROOT / "tools", checkout / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    with open(checkout / "tools" / "training_data.py", "a", encoding="utf-8") as module:
        module.write('\nprint("training_data.py of the second checkout")\n')
    result = subprocess.run(
        [sys.executable, str(checkout / "train_accelerate.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.splitlines()[0] == "training_data.py of the second checkout"
    assert "--class_balanced_sampling" in result.stdout


# Data helpers, in process


def test_cache_frames_match_the_processor_and_are_reused(tmp_path, make_video):
    processor = processor_for(DFDConfig(image_size=48, num_frames=4))
    video = str(make_video("video.mp4", video_frames("real", 1)))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"garbage")
    cache = FrameCache(tmp_path / "cache", processor)

    frames, rows, failures = cache.lookup([video, str(corrupt)])
    assert rows[1] is None and len(failures) == 1 and failures[0].startswith(f"{corrupt}: ")
    cached = torch.from_numpy(frames[rows[0]]["frames"])
    assert cached.dtype == torch.uint8 and cached.shape == (4, 3, 48, 48)
    # Normalising the cached frames on the fly gives exactly what the processor gives at inference.
    expected = processor(videos=video, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(normalize_videos(cached[None], processor), expected, atol=1e-5, rtol=0)

    assert len(list(cache.directory.glob("shard-*"))) == 1
    cache.lookup([video, str(corrupt)])
    assert len(list(cache.directory.glob("shard-*"))) == 1, "a cached video (or failure) was decoded again"
    os.utime(video, ns=(time.time_ns(), time.time_ns() + 10**9))  # an edited file gets a new key
    _, rows, _ = cache.lookup([video])
    assert len(list(cache.directory.glob("shard-*"))) == 2 and rows[0] is not None


def test_augmentation_draws_once_per_video():
    torch.manual_seed(0)
    ramp = torch.linspace(50, 200, 8).round().to(torch.uint8)  # brightness rises left to right: a flip shows
    videos = ramp.expand(64, 4, 3, 8, 8)  # 64 videos of 4 identical frames
    augmented = augment_videos(videos, brightness=0.2)
    assert augmented.dtype == torch.float32
    assert torch.equal(augmented, augmented[:, :1].expand_as(augmented)), "frames of one video were augmented apart"
    flipped = augmented[:, 0, 0, 0, 0] > augmented[:, 0, 0, 0, -1]
    assert 10 < flipped.sum() < 54
    factors = augmented.mean((1, 2, 3, 4)) / ramp.float().mean()
    assert factors.min() >= 0.8 - 1e-6 and factors.max() <= 1.2 + 1e-6 and factors.std() > 0.05


def test_manifest_tables(tmp_path, make_video):
    make_video("a.mp4", video_frames("real", 1))
    make_video("b.mp4", video_frames("fake", 2))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label,split\na.mp4,real,train\nb.mp4,1,train\na.mp4,0,val\n")
    tables = load_video_tables(manifest)
    assert sorted(tables) == ["train", "validation"]
    assert list(tables["train"]["video"]) == [str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4")]
    assert list(tables["train"]["label"]) == [0, 1] and list(tables["validation"]["label"]) == [0]

    manifest.write_text("path,label\na.mp4,maybe\n")
    with pytest.raises(ValueError, match="manifest.csv, row 1: label must be 0/1 or real/fake"):
        load_video_tables(manifest)


def test_hub_dataset_with_embedded_videos_and_class_label(tmp_path, make_video):
    """A `Video` column holding bytes, and a ClassLabel whose names are alphabetical (fake=0, real=1)."""
    real = make_video("real.mp4", video_frames("real", 1)).read_bytes()
    fake = make_video("fake.mp4", video_frames("fake", 2)).read_bytes()
    features = datasets.Features({"video": datasets.Video(), "label": datasets.ClassLabel(names=["fake", "real"])})
    dataset = datasets.Dataset.from_dict(
        {"video": [{"bytes": real, "path": "r.mp4"}, {"bytes": fake, "path": "f.mp4"}], "label": [1, 0]},
        features=features,
    )
    (tmp_path / "hub" / "data").mkdir(parents=True)
    dataset.to_parquet(str(tmp_path / "hub" / "data" / "train-00000-of-00001.parquet"))

    tables = load_hub_video_tables(str(tmp_path / "hub"), None, None, "label", tmp_path / "files")
    assert list(tables["train"]["label"]) == [0, 1]  # by name: real -> 0, fake -> 1
    videos = list(tables["train"]["video"])
    assert [open(video, "rb").read() for video in videos] == [real, fake]


@pytest.mark.parametrize("balanced", [True, False])
def test_training_sampler(balanced):
    """Class-balanced: drawn with replacement, both classes about equally often. Off: each video once per epoch."""
    labels = [0] * 90 + [1] * 10
    table = datasets.Dataset.from_dict({"video": [f"video_{index}.mp4" for index in range(100)], "label": labels})
    frames = datasets.Dataset.from_dict({"frames": np.arange(100).reshape(100, 1, 1, 1, 1)}).with_format("numpy")
    data = VideoData(table, table, frames, {f"video_{index}.mp4": index for index in range(100)}, skipped=0)
    sampling = "--class_balanced_sampling" if balanced else "--no-class_balanced_sampling"
    args = parse_args(
        ["--train_dir", "videos", "--output_dir", "out", "--per_device_train_batch_size", "10", sampling]
    )
    dataloader, _ = make_train_dataloader(args, data)
    drawn = torch.cat([batch["frames"].flatten() for batch in dataloader]).tolist()
    assert len(drawn) == 100
    if balanced:
        assert 30 < sum(index >= 90 for index in drawn) < 70  # fakes are 10% of the videos
        assert len(set(drawn)) < 100
    else:
        assert sorted(drawn) == list(range(100))

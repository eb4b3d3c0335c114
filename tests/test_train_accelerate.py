"""
train_accelerate.py end to end, run as users run it (a subprocess, one shared run of a few steps on real mp4 files
and a tiny CLIP): it trains, evaluates, checkpoints and exports; it runs on two processes, in bf16 on a CPU, from a
folder outside the checkout through `accelerate launch`, and as `python -m dfd.train_accelerate`; and a refusal is one
line and exit status 1, from every process.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from dfd.modeling_dfd import DFDForVideoClassification
from training_fixtures import (
    LAUNCH,
    TINY_CONFIG,
    TWO_CPU_PROCESSES,
    TWO_CPU_PROCESSES_ENVIRONMENT,
    eval_metrics,
    last_line,
    read_card,
    read_jsonl,
    run_script,
)


def test_run_trains_evaluates_checkpoints_and_exports(trained, training_videos):
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

    # The newest 2 checkpoints plus the best one; nothing half-written is left behind.
    checkpoints = sorted(path.name for path in (output_dir / "checkpoints").iterdir())
    assert checkpoints == sorted({"checkpoint-14", "checkpoint-16", metrics["best_checkpoint"]})
    for checkpoint in checkpoints:
        with safe_open(output_dir / "checkpoints" / checkpoint / "model.safetensors", framework="pt") as weights:
            assert all(".adapter." in name or name.startswith("classifier.") for name in weights.keys())
    assert not list(output_dir.rglob(".tmp-*"))

    # The corrupt file: one warning naming it, counted in the summary, and the run went on.
    warnings = [line for line in result.stderr.splitlines() if "Skipping unreadable video" in line]
    assert len(warnings) == 1 and str(training_videos / "train" / "fake" / "corrupt.mp4") in warnings[0]
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


def test_export_loads_with_auto_classes_in_fresh_process(trained, training_videos):
    """The Hub path (trust_remote_code, the processor on raw files) reproduces the training run's validation scores,
    so the cached, normalised-on-the-fly frames the model trained on are exactly what inference feeds it."""
    output_dir, _ = trained
    videos = sorted(str(path) for path in (training_videos / "val").rglob("*.mp4"))
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


def test_two_processes_train_evaluate_and_export_once(train_args, tmp_path):
    output_dir = tmp_path / "out"
    result = run_script(
        *train_args, "--output_dir", output_dir, "--num_train_epochs", "1", "--report_to", "none",
        launcher=TWO_CPU_PROCESSES,
        env={**os.environ, **TWO_CPU_PROCESSES_ENVIRONMENT},
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


def test_a_refusal_ends_every_process_with_one_line(train_args, tmp_path):
    """Two processes refused by the data (a folder without real/ and fake/): each ends at once with the line and exit
    status 1, and nothing is left behind (no output folder)."""
    (tmp_path / "videos" / "clips").mkdir(parents=True)
    arguments = [*train_args, "--output_dir", tmp_path / "out", "--report_to", "none"]
    arguments[arguments.index("--train_dir") + 1] = tmp_path / "videos"
    result = run_script(
        *arguments,
        launcher=TWO_CPU_PROCESSES,
        env={**os.environ, **TWO_CPU_PROCESSES_ENVIRONMENT},
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    refusal = f"{tmp_path / 'videos'}: expected real/ and fake/ subfolders (or train/ and validation/ holding them)"
    assert f"error: {refusal}" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_script_runs_from_outside_the_checkout(tmp_path):
    """No import bootstrap: the script imports the installed `dfd` like any user code, through `accelerate launch`
    from another folder and as a module; the data is refused before any model loads (the default --init_from is a
    Hub id, which this offline machine can't load)."""
    help_text = run_script("--help", launcher=(*LAUNCH, "--cpu", "--num_processes", "1"), cwd=tmp_path).stdout
    assert "--class_balanced_sampling" in help_text

    (tmp_path / "videos").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "dfd.train_accelerate", "--train_dir", "videos", "--output_dir", "out"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert last_line(result.stderr) == (
        "error: videos: expected real/ and fake/ subfolders (or train/ and validation/ holding them)"
    )


def test_fine_tuning_without_class_balanced_sampling(trained, training_videos, frame_cache_dir, tmp_path):
    """A --model_path run with a plain shuffle: it trains from the export, and its card says how it was made without
    calling the checkpoint a CLIP model or showing its path."""
    reference_dir, _ = trained
    output_dir = tmp_path / "fine_tuned"
    result = run_script(
        "--train_dir", training_videos / "train",
        "--validation_dir", training_videos / "val",
        "--model_path", reference_dir / "model",
        "--cache_dir", frame_cache_dir,
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

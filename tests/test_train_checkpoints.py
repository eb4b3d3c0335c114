"""
Checkpoints of real runs: a run killed (SIGKILL) right after its first checkpoint and resumed ends exactly where the
uninterrupted one did; a checkpoint cut short is never resumed from; a new run refuses to mix with an earlier run's
checkpoints; and a resume with other batch settings is refused before anything loads, not run as a silent no-op.
"""

import shutil
import signal

import pytest
from accelerate import PartialState

from dfd.tools.train.arguments import parse_args
from dfd.tools.train.checkpoints import find_checkpoint
from dfd.tools.train.errors import TrainingError
from training_fixtures import digest, eval_metrics, kill_when, last_line, read_jsonl, run_script


def test_sigkill_then_resume_reaches_the_same_result(trained, train_args, tmp_path):
    """Same data order, augmentation, dropout and optimizer state from the checkpoint: the same log and metrics."""
    reference_dir, _ = trained
    output_dir = tmp_path / "out"
    checkpoints = output_dir / "checkpoints"
    killed = kill_when([*train_args, "--output_dir", output_dir], ready=lambda: list(checkpoints.glob("checkpoint-*")))
    assert killed == -signal.SIGKILL
    assert not (output_dir / "model").exists(), "the run finished before it could be killed"
    # A checkpoint cut short (no trainer_state.json) must never be picked up as the latest.
    (checkpoints / "checkpoint-999").mkdir()
    (checkpoints / "checkpoint-999" / "optimizer.bin").write_bytes(b"half written")

    # Without --resume_from_checkpoint, the earlier run's checkpoints are not silently mixed with a new run's.
    refused = run_script(*train_args, "--output_dir", output_dir, check=False)
    assert refused.returncode == 1
    assert last_line(refused.stderr) == (
        f"error: {checkpoints} holds checkpoints of an earlier run: continue it with --resume_from_checkpoint latest, "
        "or start over with --overwrite_output_dir"
    )

    result = run_script(*train_args, "--output_dir", output_dir, "--resume_from_checkpoint", "latest")
    resumed_from = [line for line in result.stderr.splitlines() if "Resumed from" in line]
    assert len(resumed_from) == 1 and "checkpoint-999" not in resumed_from[0]
    assert eval_metrics(output_dir) == eval_metrics(reference_dir)
    assert read_jsonl(output_dir / "log.jsonl") == read_jsonl(reference_dir / "log.jsonl")


def test_a_resume_with_other_batch_settings_is_refused(trained, train_args, tmp_path):
    """With twice the videos per step, the finished run's 16 steps would already reach its (halved) length: it would
    train nothing and export again. Refused, before any model or data loads, and nothing changes."""
    reference_dir, _ = trained
    output_dir = tmp_path / "out"
    shutil.copytree(reference_dir, output_dir)
    before = digest(output_dir)
    arguments = [*train_args, "--output_dir", output_dir, "--resume_from_checkpoint", "latest"]
    arguments[arguments.index("--gradient_accumulation_steps") + 1] = "2"
    result = run_script(*arguments, check=False)
    assert result.returncode == 1
    assert last_line(result.stderr) == (
        f"error: {output_dir / 'checkpoints' / 'checkpoint-16'} was trained with batches of 4 per device x 1 "
        "process(es) x 1 accumulation steps = 4 videos, this run's are 4 per device x 1 process(es) x 2 accumulation "
        "steps = 8: resume with --per_device_train_batch_size 4 --gradient_accumulation_steps 1 on 1 process(es), or "
        "start over with --overwrite_output_dir"
    )
    assert "Skipping unreadable video" not in result.stderr  # refused before the data was decoded
    assert digest(output_dir) == before


def test_an_incomplete_checkpoint_is_refused(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    args = parse_args(
        ["--train_dir", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--resume_from_checkpoint",
         str(tmp_path / "checkpoint-4")]
    )  # fmt: skip
    with pytest.raises(TrainingError, match=r"checkpoint-4: not a complete checkpoint \(no trainer_state.json\)"):
        find_checkpoint(args, PartialState())

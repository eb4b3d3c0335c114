"""
The output folder of real runs of train_accelerate.py: a SIGKILL during the export, the leftovers of killed runs, an
output folder that holds an export, and a checkpoint written onto a full (tiny tmpfs) disk.
"""

import os
import shutil
import signal
import subprocess

import pytest

from dfd.tools.train.output import recover_killed_run
from training_fixtures import digest, eval_metrics, kill_when, last_line, run_script


def test_sigkill_during_export_keeps_the_previous_set_and_the_next_start_cleans_up(trained, train_args, tmp_path):
    """
    A finished run resumed from its last checkpoint goes straight to the export. Killed (SIGKILL) while the new export
    is being assembled, it leaves the previous export whole, with the metrics.json and roc_curve.png of those
    weights; the next start removes the staging folder and exports again.
    """
    reference_dir, _ = trained
    output_dir = tmp_path / "out"
    shutil.copytree(reference_dir, output_dir)
    before = digest(output_dir / "model")
    assert {"metrics.json", "roc_curve.png", "model.safetensors", "README.md"} <= set(before)
    resume = [*train_args, "--output_dir", output_dir, "--resume_from_checkpoint", "latest"]
    returncode = kill_when(resume, ready=lambda: list(output_dir.glob(".model.tmp-*")))
    assert returncode == -signal.SIGKILL, "the run ended before its export could be killed"
    assert list(output_dir.glob(".model.tmp-*")), "killed before the export started"
    assert digest(output_dir / "model") == before

    result = run_script(*resume)
    assert not [path.name for path in output_dir.iterdir() if path.name.startswith(".")]
    assert eval_metrics(output_dir) == eval_metrics(reference_dir)  # the same best checkpoint, evaluated again
    assert "Its run is finished (step 16 of 16): exporting again" in result.stderr
    assert "Exported to" in result.stderr


def test_leftovers_of_a_killed_run_are_removed_and_an_export_moved_aside_is_restored(tmp_path):
    """The folders a kill leaves at each point of an export or a checkpoint, as real folders on disk."""
    output_dir = tmp_path / "out"
    previous = output_dir / ".model.old-k2j4"  # killed between moving the previous export aside and the swap
    previous.mkdir(parents=True)
    (previous / "model.safetensors").write_bytes(b"the previous weights")
    (output_dir / ".model.tmp-k2j4").mkdir()
    (output_dir / ".model.tmp-k2j4" / "config.json").write_text("{}")
    (output_dir / "checkpoints" / ".tmp-checkpoint-4").mkdir(parents=True)
    (output_dir / ".log.jsonl.x81b.tmp").write_text("half a li")
    (output_dir / "log.jsonl").write_text("{}\n")
    assert recover_killed_run(output_dir) == previous
    assert sorted(path.name for path in output_dir.iterdir()) == ["checkpoints", "log.jsonl", "model"]
    assert (output_dir / "model" / "model.safetensors").read_bytes() == b"the previous weights"
    assert list((output_dir / "checkpoints").iterdir()) == []

    # With an export in place, a folder moved aside is an older one: removed.
    (output_dir / ".model.old-zz11").mkdir()
    assert recover_killed_run(output_dir) is None
    assert sorted(path.name for path in output_dir.iterdir()) == ["checkpoints", "log.jsonl", "model"]


def test_an_output_dir_holding_an_export_needs_overwrite(trained, train_args, tmp_path):
    reference_dir, _ = trained
    output_dir = tmp_path / "out"
    shutil.copytree(reference_dir / "model", output_dir / "model")
    cache_dir = tmp_path / "untouched_cache"
    arguments = [*train_args, "--output_dir", output_dir, "--cache_dir", cache_dir]
    result = run_script(*arguments, check=False)
    assert result.returncode == 1
    assert last_line(result.stderr) == (
        f"error: {output_dir / 'model'} holds the export of an earlier run: start over with --overwrite_output_dir "
        "(it is replaced once the new export is ready), or choose another --output_dir"
    )
    assert "Traceback" not in result.stderr
    assert not cache_dir.exists()  # refused before any work


@pytest.fixture
def full_disk(tmp_path):
    """A folder on a 4 KiB tmpfs: real ENOSPC on the first write that does not fit (needs root; skipped elsewhere)."""
    folder = tmp_path / "out" / "checkpoints"
    folder.mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(folder)]
    if os.geteuid() != 0 or subprocess.run(mount).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_during_a_checkpoint_says_so(full_disk, train_args):
    output_dir = full_disk.parent
    result = run_script(
        *train_args, "--output_dir", output_dir, "--max_train_steps", "2", "--report_to", "none", check=False
    )
    assert result.returncode == 1
    # The progress bar shares stderr: it ends its line before the error's.
    message = last_line(result.stderr)
    assert message.startswith(f"error: {full_disk / '.tmp-checkpoint-2'}: no space left on the device (")
    assert message.endswith(
        "bytes free) while writing a checkpoint; free some space, then continue with --resume_from_checkpoint latest"
    )
    assert "Traceback" not in result.stderr

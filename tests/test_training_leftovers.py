"""
What training leaves behind when it is killed or runs out of disk, on real runs of train_accelerate.py (the tiny
recipe of test_training.py): a SIGKILL during the export, leftover temporary folders, an output folder that holds an
export, and a checkpoint written onto a full (tiny tmpfs) disk.
"""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO_ROOT
from dfd.configuration_dfd import DFDConfig
from dfd.tools.export import processor_for
from dfd.tools.training_data import FrameCache
from dfd.train_accelerate import remove_leftovers
from test_training import (  # noqa: F401 - fixtures
    cache_dir,
    data,
    eval_metrics,
    run_script,
    script_command,
    train_args,
    trained,
)


def digest(folder):
    """The content of every file in `folder`, by relative name."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


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
    process = subprocess.Popen(
        script_command(*resume), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 300
        while not list(output_dir.glob(".model.tmp-*")) and process.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before its export could be killed"
    assert list(output_dir.glob(".model.tmp-*")), "killed before the export started"
    assert digest(output_dir / "model") == before

    result = run_script(*resume)
    assert not [path.name for path in output_dir.iterdir() if path.name.startswith(".")]
    assert eval_metrics(output_dir) == eval_metrics(reference_dir)  # the same best checkpoint, evaluated again
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
    assert remove_leftovers(output_dir) == previous
    assert sorted(path.name for path in output_dir.iterdir()) == ["checkpoints", "log.jsonl", "model"]
    assert (output_dir / "model" / "model.safetensors").read_bytes() == b"the previous weights"
    assert list((output_dir / "checkpoints").iterdir()) == []

    # With an export in place, a folder moved aside is an older one: removed.
    (output_dir / ".model.old-zz11").mkdir()
    assert remove_leftovers(output_dir) is None
    assert sorted(path.name for path in output_dir.iterdir()) == ["checkpoints", "log.jsonl", "model"]


def test_frame_cache_removes_staging_folders_of_dead_decodes_only(tmp_path, tiny_detector_dir):
    cache = FrameCache(tmp_path, processor_for(DFDConfig.from_pretrained(tiny_detector_dir)))
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    host = socket.gethostname()
    dead = cache.directory / f".tmp-shard-{host}-{dead_pid}-a1b2c3"
    alive = cache.directory / f".tmp-shard-{host}-{os.getpid()}-d4e5f6"
    elsewhere = cache.directory / f".tmp-shard-another-host-{dead_pid}-g7h8"
    older = cache.directory / ".tmp-shard-x9y8z7"  # named before staging folders carried their owner
    for folder in (dead, alive, elsewhere, older):
        (folder / "shard").mkdir(parents=True)
    cache.remove_leftovers()
    assert sorted(path.name for path in cache.directory.iterdir()) == sorted([alive.name, elsewhere.name])


def test_an_output_dir_holding_an_export_needs_overwrite(trained, train_args, tmp_path):
    reference_dir, _ = trained
    output_dir = tmp_path / "out"
    shutil.copytree(reference_dir / "model", output_dir / "model")
    cache_dir = tmp_path / "untouched_cache"
    arguments = [*train_args, "--output_dir", output_dir, "--cache_dir", cache_dir]
    result = run_script(*arguments, check=False)
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == (
        f"{output_dir / 'model'} holds the export of an earlier run: start over with --overwrite_output_dir (it is "
        "replaced once the new export is ready), or choose another --output_dir"
    )
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
    assert result.returncode != 0
    # The progress bar shares stderr: the message is the text after its last frame.
    (line,) = [line for line in result.stderr.replace("\r", "\n").splitlines() if "no space left" in line]
    message = line[line.index(str(full_disk)) :]
    assert message.startswith(f"{full_disk / '.tmp-checkpoint-2'}: no space left on the device (")
    assert message.endswith(
        "bytes free) while writing a checkpoint; free some space, then continue with --resume_from_checkpoint latest"
    )
    assert "Traceback" not in result.stderr

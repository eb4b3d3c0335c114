"""First runs without a network: `dfd --help` and argument errors answer without the model libraries, and a Hub id
that is neither cached nor reachable fails after one unanswered request, with one line saying what to pass instead."""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest

from conftest import numbered_frames, write_video


# Each command line, then which of the model libraries `dfd` imported to answer it (in one process, in order).
IMPORTS = """
import json, sys
from dfd.tools.cli import main

for argv in json.loads(sys.argv[1]):
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code
    print(json.dumps([argv, status, [name for name in ("torch", "transformers") if name in sys.modules]]), flush=True)
"""


def test_help_and_argument_errors_answer_without_importing_torch():
    command_lines = [
        ["--help"],
        [],
        ["predictt"],
        ["predict"],
        ["predict", "video.mp4", "--windows", "two"],
        ["predict", "--help"],
        ["init", "--output", "x"],
        ["convert", "best_model.pt"],
        ["endpoint", "--help"],
        ["endpoint", "--model", "x", "--port", "99999"],
        ["data", "index", "nothing", "root"],
    ]
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS, json.dumps(command_lines)], capture_output=True, text=True, timeout=120
    )
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("[")]
    assert [argv for argv, _, _ in answers] == command_lines, result.stderr
    for argv, status, imported in answers:
        assert (argv, status, imported) == (argv, 0 if "--help" in argv else 2, [])
    assert "dfd: error: argument COMMAND: invalid choice: 'predictt'" in result.stderr
    assert "dfd predict: error: argument --windows: invalid positive_int value: 'two'" in result.stderr
    assert "dfd endpoint: error: argument --port: must be a port number from 0 to 65535, got 99999" in result.stderr


class SilentHub:
    """A Hub address that takes connections and never answers, as a captive or broken network does; counts them."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.connections = []
        threading.Thread(target=self.accept, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def accept(self):
        while True:
            try:
                self.connections.append(self.listener.accept()[0])
            except OSError:
                return

    def close(self):
        self.listener.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def silent_hub():
    hub = SilentHub()
    yield hub
    hub.close()


def dfd_without_hub(hub: SilentHub, cache, *args) -> subprocess.CompletedProcess:
    """`dfd ARGS` online (no HF_HUB_OFFLINE) with the Hub at `hub`'s address and its cache in `cache`."""
    environment = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache), "CUDA_VISIBLE_DEVICES": ""}
    environment.pop("HF_HUB_OFFLINE")
    command = [sys.executable, "-m", "dfd.tools.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)


def test_a_hub_id_neither_cached_nor_reachable_fails_after_one_request_with_one_line(silent_hub, tmp_path):
    video = write_video(tmp_path / "video.mp4", numbered_frames(30))
    reason = (
        "not a local folder, and not in the Hub's cache while the Hub cannot be reached (no connection): pass a "
        "local folder instead"
    )
    for args, option in [
        (["predict", video, "--model", "someone/detector"], "--model someone/detector"),
        (["init", "--clip", "someone/clip", "--output", tmp_path / "init"], "--clip someone/clip"),
        (["endpoint", "--model", "someone/detector"], "--model someone/detector"),
    ]:
        asked = len(silent_hub.connections)
        result = dfd_without_hub(silent_hub, tmp_path / "cache", *args)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines()[-1] == f"error: {option}: {reason}"
        assert len(silent_hub.connections) - asked == 1  # one request, no retries


def cache_model(folder, cache, repo_id: str):
    """`folder`'s files as the Hub cache holds a download of `repo_id` (refs/main -> a snapshot)."""
    revision = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)


def test_a_cached_hub_id_is_read_from_the_cache_while_the_hub_cannot_be_reached(
    silent_hub, tiny_detector_dir, tmp_path
):
    cache_model(tiny_detector_dir, tmp_path / "cache", "someone/detector")
    video = write_video(tmp_path / "video.mp4", numbered_frames(30))
    result = dfd_without_hub(
        silent_hub, tmp_path / "cache", "predict", video, "--model", "someone/detector", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert record["label"] in ("real", "fake") and len(silent_hub.connections) == 1

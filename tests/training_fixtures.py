"""
Fixtures and helpers of the training tests (a plugin listed in conftest.py): tiny real mp4 data with a learnable
task (real videos are bright, fake ones dark), `train_accelerate.py` run as users run it (a subprocess from the repo
root), one training run shared by every test that reads its results, and a stand-in for the Hub on 127.0.0.1.
"""

import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import PIL.Image
import pytest
import yaml

from conftest import REPO_ROOT, write_video


TINY_CONFIG = '{"image_size": 48, "adapter_bottleneck": 8, "num_frames": 4}'
# `accelerate launch` with every setting given, so that it warns about none; --quiet: the launcher adds no traceback
# of its own to a run that fails.
LAUNCH = (sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--num_machines", "1", "--mixed_precision",
          "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1")  # fmt: skip
# Two processes on a CPU: `accelerate launch --cpu` starts a single process unless MPI is set up; a torchrun launch
# (--multi_gpu) with ACCELERATE_USE_CPU gives real multi-process CPU runs over gloo.
TWO_CPU_PROCESSES = (*LAUNCH, "--multi_gpu", "--num_processes", "2")
TWO_CPU_PROCESSES_ENVIRONMENT = {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
BRIGHTNESS = {"real": 170, "fake": 70}


def video_frames(label, seed, num_frames=8, size=40):
    rng = np.random.default_rng(seed)
    return np.clip(BRIGHTNESS[label] + rng.normal(0, 20, (num_frames, size, size, 3)), 0, 255).astype(np.uint8)


def script_command(*args, launcher=(sys.executable,)):
    return [*launcher, str(REPO_ROOT / "train_accelerate.py"), *map(str, args)]


def run_script(*args, launcher=(sys.executable,), env=None, check=True, cwd=REPO_ROOT):
    result = subprocess.run(
        script_command(*args, launcher=launcher), cwd=cwd, capture_output=True, text=True, env=env, timeout=600
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def kill_when(arguments, ready, timeout=300) -> int:
    """Run the script with `arguments`, SIGKILL it as soon as `ready()` holds; returns its exit status."""
    process = subprocess.Popen(
        script_command(*arguments), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + timeout
        while not ready() and process.poll() is None and time.time() < deadline:
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    return process.returncode


def last_line(text: str) -> str:
    """The last line of a run's stderr (progress bars redraw with carriage returns, which also end a line)."""
    return text.splitlines()[-1]


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


def digest(folder):
    """The content of every file in `folder`, by relative name."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="session")
def training_videos(tmp_path_factory):
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


@pytest.fixture(scope="session")
def frame_cache_dir(tmp_path_factory):
    """One frame cache for every run of the session: only the first run decodes."""
    return tmp_path_factory.mktemp("frame_cache")


@pytest.fixture(scope="session")
def train_args(training_videos, frame_cache_dir, tiny_clip_dir):
    """A few-step recipe on the tiny model: 4 epochs of 4 steps, a checkpoint every 2 steps."""
    return [
        "--train_dir", training_videos / "train",
        "--validation_dir", training_videos / "val",
        "--init_from", tiny_clip_dir,
        "--config_overrides", TINY_CONFIG,
        "--cache_dir", frame_cache_dir,
        "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4",
        "--gradient_accumulation_steps", "1",
        "--learning_rate", "3e-3",
        "--num_train_epochs", "4",
        "--checkpointing_steps", "2",
        "--checkpoints_total_limit", "2",
        "--preprocessing_num_workers", "2",
    ]  # fmt: skip


@pytest.fixture(scope="session")
def trained(tmp_path_factory, train_args):
    """One uninterrupted training run, shared by the tests that read its results (and the reference of the resume
    tests): (output folder, completed process)."""
    output_dir = tmp_path_factory.mktemp("run") / "out"
    result = run_script(*train_args, "--output_dir", output_dir)
    return output_dir, result


# The Hub's answers to the calls a push makes, by token: a user who may write under their own name and dfd-tests,
# and one whose token is read-only. Creating a repo fails, as the real Hub does when it is down.
HUB_USERS = {
    "hf_writer": {"name": "tester", "orgs": [{"name": "dfd-tests"}], "auth": {"accessToken": {"role": "write"}}},
    "hf_reader": {"name": "reader", "orgs": [], "auth": {"accessToken": {"role": "read"}}},
}


class FakeHubHandler(http.server.BaseHTTPRequestHandler):
    requests = []  # (method, path) of every request, for the tests to check

    def _answer(self, status: int, body: dict):
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        self.requests.append(("GET", self.path))
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.path == "/api/whoami-v2" and token in HUB_USERS:
            self._answer(200, HUB_USERS[token])
        elif self.path == "/api/whoami-v2":
            self._answer(401, {"error": "Invalid credentials in Authorization header"})
        else:
            self._answer(404, {"error": "not on this test Hub"})

    def do_POST(self):
        self.requests.append(("POST", self.path))
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(500, {"error": "the test Hub takes no uploads"})

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def fake_hub():
    """A stand-in for the Hub's API on 127.0.0.1 (the network edge the tests cannot reach): its endpoint URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeHubHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def hub_environment(endpoint: str, token: str | None) -> dict:
    """The environment of a run that talks to the Hub at `endpoint` with `token`."""
    environment = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "NO_PROXY": "127.0.0.1"}
    environment.pop("HF_TOKEN", None)
    if token:
        environment["HF_TOKEN"] = token
    return environment


@pytest.fixture(scope="session")
def bf16_run_with_failed_push(tmp_path_factory, train_args, fake_hub):
    """One bf16 step on CPU, after a --push_to_hub check that passes, then an upload that fails (the Hub is up for
    `whoami` but refuses to create the repo)."""
    output_dir = tmp_path_factory.mktemp("bf16") / "out"
    result = run_script(
        *train_args,
        "--output_dir", output_dir,
        "--max_train_steps", "1",
        "--mixed_precision", "bf16",
        "--gradient_checkpointing",
        "--push_to_hub",
        "--hub_model_id", "dfd-tests/never-uploaded",
        env=hub_environment(fake_hub, "hf_writer"),
        check=False,
    )  # fmt: skip
    return output_dir, result

"""The serving container as a client meets it: an export's server (the command its Dockerfile runs, nothing of ours
installed) and `dfd endpoint`, as real processes on 127.0.0.1, answered over real HTTP."""

import base64
import functools
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from conftest import (
    REPO_ROOT,
    WITHOUT_DFD,
    barcode_frames,
    numbered_frames,
    python_fetching_from_loopback,
    write_video,
)


# Runs a script of the export as `python SCRIPT ARGUMENTS` does, with the `dfd` package hidden as in a container.
EXPORT_SCRIPT = WITHOUT_DFD + """
import os, runpy

script, *arguments = sys.argv[1:]
sys.argv = [script, *arguments]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
runpy.run_path(script, run_name="__main__")
"""
TIMEOUT = 300


class RunningServer:
    """A server process started by `command`; `url` once it prints `listening on URL`."""

    def __init__(self, command: list[str], cwd, log_dir: Path, **environment):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stdout, self.stderr = log_dir / "stdout.txt", log_dir / "stderr.txt"
        environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "DFD_ALLOW_LOCAL_PATHS": "", **environment}
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=out, stderr=err)
        self.url = self.wait_for_url()

    def wait_for_url(self) -> str | None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for line in self.stdout.read_text().splitlines():
                if line.startswith("listening on "):
                    return line.removeprefix("listening on ")
            if self.process.poll() is not None:
                return None
            time.sleep(0.1)
        raise TimeoutError(f"the server did not start: {self.log()}")

    def log(self) -> str:
        return self.stderr.read_text()

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        (line,) = [line for line in status.splitlines() if line.startswith("VmRSS:")]
        return int(line.split()[1]) * 1024

    def stop(self):
        """SIGTERM, as Docker and Kubernetes stop a container: the server finishes and shuts down cleanly."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down, so that the exit status tells how it ended.
        assert self.process.wait(60) in (0, -signal.SIGTERM), self.log()
        assert "Application shutdown complete." in self.log()


def dockerfile_command(folder: Path) -> list[str]:
    (line,) = [line for line in (folder / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    return json.loads(line.removeprefix("CMD "))


def start_export_server(folder: Path, log_dir: Path, **environment) -> RunningServer:
    """The command the export's image runs, in the export folder, on 127.0.0.1 and a free port instead of 0.0.0.0:80."""
    python, script, *arguments = dockerfile_command(folder)
    assert python == "python" and arguments == ["--model", "/repository", "--host", "0.0.0.0", "--port", "80"]
    arguments = ["--model", str(folder), "--host", "127.0.0.1", "--port", "0"]
    command = python_fetching_from_loopback("-c", EXPORT_SCRIPT, script, *arguments)
    server = RunningServer(command, folder, log_dir, **environment)
    assert server.url, server.log()
    return server


@pytest.fixture(scope="module")
def export_dir(tiny_detector_dir, tmp_path_factory):
    """An export as an Endpoint (or `docker build`) gets it: its folder, alone."""
    folder = tmp_path_factory.mktemp("endpoint") / "repository"
    shutil.copytree(tiny_detector_dir, folder)
    return folder


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Three different videos (so that answers mixed up between requests show), served over HTTP on 127.0.0.1."""
    folder = tmp_path_factory.mktemp("videos")
    noise = np.random.default_rng(0).integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
    write_video(folder / "ramp.mp4", numbered_frames(40), fps=25)
    write_video(folder / "barcode.mp4", barcode_frames(50), fps=25)
    write_video(folder / "noise.mp4", noise, fps=25, crf=30)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{web.server_address[1]}"
    web.shutdown()


@pytest.fixture(scope="module")
def predicted(export_dir, videos, tmp_path_factory):
    """`dfd predict --format json`'s record of each video, by (name, windows): what every answer must equal."""
    folder, _ = videos
    output = tmp_path_factory.mktemp("predicted")
    records = {}
    for windows in (None, 2):
        result_file = output / f"windows-{windows}.json"
        options = ["--windows", "2"] if windows else []
        command = [sys.executable, "-m", "dfd.tools.cli", "predict", str(folder), "--model", str(export_dir)]
        subprocess.run(
            [*command, *options, "--device", "cpu", "--output", str(result_file)],
            check=True,
            capture_output=True,
            timeout=TIMEOUT,
        )
        for record in json.loads(result_file.read_text()):
            records[Path(record.pop("path")).name, windows] = record
    return records


@pytest.fixture(scope="module")
def server(export_dir, tmp_path_factory):
    server = start_export_server(export_dir, tmp_path_factory.mktemp("server"), DFD_SERVE_BATCH_WAIT_MS="20")
    yield server
    server.stop()


def assert_same(answer, expected, path="answer"):
    """Equal records: numbers to 1e-6 (windows batched with other requests' may round differently), the rest exactly."""
    if isinstance(expected, dict):
        assert isinstance(answer, dict) and set(answer) == set(expected), path
        for key in expected:
            assert_same(answer[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(answer, list) and len(answer) == len(expected), path
        for index, (item, wanted) in enumerate(zip(answer, expected)):
            assert_same(item, wanted, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert answer == pytest.approx(expected, abs=1e-6), path
    else:
        assert answer == expected, path


def assert_answers(response: httpx.Response, record: dict, top_k: int | None = None):
    """`response` is the handler's answer for `record`'s video: the verdict with the record, then the other label."""
    assert response.status_code == 200, response.text
    verdict, *other = response.json()
    assert_same(verdict, record)
    if top_k == 1:
        assert other == []
    else:
        ((label, score),) = [(entry["label"], entry["score"]) for entry in other]
        assert label != record["label"] and score == pytest.approx(1 - record["score"], abs=1e-6)


def encode(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_every_export_carries_the_serving_container(export_dir):
    for name in ("serving_dfd.py", "Dockerfile", "handler.py"):
        assert (export_dir / name).read_bytes() == (REPO_ROOT / name).read_bytes(), name
    requirements = {}
    for line in (export_dir / "requirements.txt").read_text().splitlines():
        requirement = Requirement(line)
        requirements[requirement.name.lower()] = requirement.specifier
    assert {"starlette", "uvicorn", "transformers", "av"} <= set(requirements)
    # Nothing excludes transformers 5 or torch 2.6 and later, which transformers 5 needs.
    assert requirements["transformers"].contains("5.25.0")
    torch = requirements.get("torch", SpecifierSet())
    assert all(torch.contains(version) for version in ("2.6.0", "2.8.0", "2.14.1"))
    (base,) = [
        line for line in (export_dir / "Dockerfile").read_text().splitlines() if line.startswith("ARG BASE_IMAGE=")
    ]
    torch_version = base.split(":")[1].split("-")[0]  # pytorch/pytorch:<torch version>-cuda...
    assert tuple(map(int, torch_version.split("."))) >= (2, 6), base


def test_health_answers_once_the_model_is_loaded(server):
    for route in ("/health", "/"):
        response = httpx.get(server.url + route)
        assert response.status_code == 200 and response.json()["status"] == "ok"
    missing, wrong_method = httpx.get(server.url + "/nothing"), httpx.put(server.url + "/")
    assert (missing.status_code, missing.json()) == (404, {"error": "Not Found"})
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"error": "Method Not Allowed"})


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=UTF-8",
        "application/json;charset=utf8",
        'application/json; charset="utf-8"',
        "Application/JSON; Charset=UTF-8",
        "application/json; charset=utf-16",
    ],
)
def test_json_requests_in_any_charset_spelling_answer_as_dfd_predict(server, videos, predicted, content_type):
    folder, _ = videos
    charset = content_type.lower().partition("charset=")[2].strip('"') or "utf-8"
    body = json.dumps({"inputs": encode(folder / "ramp.mp4")}).encode(charset)
    response = httpx.post(server.url, content=body, headers={"Content-Type": content_type}, timeout=TIMEOUT)
    assert_answers(response, predicted["ramp.mp4", None])


def test_every_way_of_sending_a_video_answers_as_dfd_predict(server, videos, predicted):
    folder, url = videos
    video = folder / "barcode.mp4"
    record, two_windows = predicted["barcode.mp4", None], predicted["barcode.mp4", 2]
    post = functools.partial(httpx.post, timeout=TIMEOUT)
    for route in ("/", "/predict"):
        assert_answers(post(server.url + route, json={"inputs": encode(video)}), record)
    assert_answers(post(server.url, json={"inputs": f"data:video/mp4;base64,{encode(video)}"}), record)
    assert_answers(post(server.url, json={"inputs": f"{url}/barcode.mp4"}), record)
    assert_answers(
        post(server.url, json={"inputs": encode(video), "parameters": {"windows": 2, "top_k": 1}}), two_windows, 1
    )
    for content_type in ("video/mp4", "video/quicktime", "application/octet-stream"):
        raw = post(server.url, content=video.read_bytes(), headers={"Content-Type": content_type})
        assert_answers(raw, record)
    with_query = post(
        server.url + "/predict?windows=2&top_k=1", content=video.read_bytes(), headers={"Content-Type": "video/mp4"}
    )
    assert_answers(with_query, two_windows, 1)
    low = post(server.url + "?threshold=0.000001", content=video.read_bytes(), headers={"Content-Type": "video/mp4"})
    assert low.status_code == 200 and low.json()[0]["label"] == "fake" and low.json()[0]["threshold"] == 1e-6


def test_bad_requests_are_refused_with_one_line_naming_the_field_and_never_the_video(server, videos):
    folder, _ = videos
    video = (folder / "ramp.mp4").read_bytes()
    encoded = base64.b64encode(video).decode()
    raw = {"Content-Type": "video/mp4"}
    accepted = "accepted: windows, threshold, top_k"
    cases = [
        # The toolkit's echo: a body without 'inputs' (here misspelt) must not come back in the answer.
        (
            {"json": {"input": encoded}},
            400,
            "the request has no 'inputs' (a base64-encoded video, a data: URL or an http(s) URL)",
        ),
        ({"json": {"inputs": encoded, "parameters": {"window": 8}}}, 400, f"unknown parameter(s) 'window'; {accepted}"),
        ({"json": {"inputs": encoded, "parameters": {"windows": "x" * 5000}}}, 400, None),
        ({"json": {"inputs": encoded, "parameters": {"windows": 0}}}, 400, None),
        ({"json": ["not", "an", "object"]}, 400, "the request body must be a JSON object with 'inputs', got list"),
        (
            {"json": {"inputs": "not base64!"}},
            400,
            "'inputs': neither an http(s) URL nor base64-encoded video (paths on the server are refused unless "
            "DFD_ALLOW_LOCAL_PATHS=1)",
        ),
        ({"json": {"inputs": base64.b64encode(b"\0" * 3000).decode()}}, 400, None),
        ({"content": b'{"inputs": "' + encoded.encode(), "headers": {"Content-Type": "application/json"}}, 400, None),
        ({"content": video, "headers": {"Content-Type": "application/json; charset=klingon"}}, 415, None),
        (
            {"params": {"window": "8"}, "content": video, "headers": raw},
            400,
            f"unknown parameter(s) 'window'; {accepted}",
        ),
        (
            {"params": {"windows": "two"}, "content": video, "headers": raw},
            400,
            "parameter 'windows' must be a whole number of at least 1, got 'two'",
        ),
        (
            {"params": [("windows", "2"), ("windows", "3")], "content": video, "headers": raw},
            400,
            "parameter 'windows' is given more than once",
        ),
        ({"content": b"", "headers": raw}, 400, "'inputs': the request body is empty (send the video's bytes)"),
        (
            {"params": {"windows": "2"}, "json": {"inputs": encoded}},
            400,
            "query arguments are for raw video bodies: put them in the JSON 'parameters'",
        ),
        ({"content": video, "headers": {"Content-Type": "text/plain"}}, 415, None),
        ({"content": video}, 415, None),
    ]
    for options, status, message in cases:
        response = httpx.post(server.url, timeout=TIMEOUT, **options)
        assert response.status_code == status, (options.keys(), response.text)
        error = response.json()["error"]
        assert "\n" not in error and len(error) < 400, error
        assert encoded[:40] not in response.text
        if message:
            assert error == message
    long_value = httpx.post(server.url, json={"inputs": encoded, "parameters": {"windows": "x" * 5000}}).json()
    assert long_value["error"].startswith("parameter 'windows' must be a whole number of at least 1, got 'xxx")
    unsupported = httpx.post(server.url, content=video, headers={"Content-Type": "text/plain"}).json()["error"]
    assert unsupported.startswith("unsupported Content-Type 'text/plain': send application/json")
    assert "video/* or application/octet-stream" in unsupported


def post_slowly(url: str, body: bytes, headers: dict, sent: int) -> socket.socket:
    """A request whose client sends only the first `sent` bytes of its body, then waits: it holds its place."""
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)))
    head = f"POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    connection.sendall(head.encode() + body[:sent])
    return connection


def read_response(connection: socket.socket) -> tuple[int, dict, str]:
    """(status, headers, body) of the one response on `connection`, read until the server closes it."""
    connection.settimeout(TIMEOUT)
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
        if length and len(body) >= int(length[0].split(b":")[1]):
            break
    connection.close()
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body.decode()


@pytest.fixture(scope="module")
def restricted_export(export_dir, tmp_path_factory):
    """The export with a handler whose answers fail, showing the request in the error (a bug the server must hide)."""
    folder = tmp_path_factory.mktemp("restricted") / "repository"
    shutil.copytree(export_dir, folder)
    with open(folder / "handler.py", "a") as handler:
        handler.write(
            "\n\ndef failing_answer(self, prediction, parameters):\n"
            "    raise RuntimeError(f'a bug that shows the request: {parameters}')\n\n\n"
            "EndpointHandler.answer = failing_answer\n"
        )
    return folder


def test_limits_are_held_with_the_status_a_client_can_act_on(restricted_export, videos, tmp_path):
    folder, _ = videos
    video = (folder / "noise.mp4").read_bytes()
    cap = len(video) // 2
    server = start_export_server(
        restricted_export,
        tmp_path / "logs",
        DFD_MAX_INPUT_BYTES=str(cap),
        DFD_SERVE_MAX_QUEUE="1",
        DFD_SERVE_REQUEST_SECONDS="3",
    )
    try:
        raw = {"Content-Type": "video/mp4"}
        # 413: a raw body above the cap, refused by its Content-Length with the gate's words, or as it streams in.
        too_large = httpx.post(server.url, content=video, headers=raw)
        assert too_large.status_code == 413
        assert too_large.json() == {
            "error": f"'inputs': the video is {len(video):,} bytes, above the {cap:,} byte limit (DFD_MAX_INPUT_BYTES)"
        }
        streamed = httpx.post(server.url, content=iter([video[:cap], video[cap:]]), headers=raw)
        assert streamed.status_code == 413
        assert streamed.json() == {
            "error": f"'inputs': the video is above the {cap:,} byte limit (DFD_MAX_INPUT_BYTES)"
        }
        as_base64 = httpx.post(server.url, json={"inputs": encode(folder / "noise.mp4")})
        assert as_base64.status_code == 413 and as_base64.json()["error"].startswith("'inputs': the video is ")
        # A body announced as 1 GB is refused from its headers: nothing of it is read.
        status, _, body = read_response(post_slowly(server.url, b"x" * 10**9, raw, 10))
        assert status == 413 and json.loads(body)["error"].startswith("'inputs': the video is 1,000,000,000 bytes")

        # 503 with Retry-After: the one place (DFD_SERVE_MAX_QUEUE=1) is held by a client still sending its video.
        holder = post_slowly(server.url, video[: cap - 100], raw, 100)
        time.sleep(0.5)
        full = httpx.post(server.url, content=video[:100], headers=raw)
        assert full.status_code == 503 and full.headers["retry-after"] == "1"
        assert full.json() == {"error": "the server holds its most requests (1, DFD_SERVE_MAX_QUEUE); retry later"}
        # ... and the held request itself is answered 503 when its deadline (DFD_SERVE_REQUEST_SECONDS) passes.
        status, headers, body = read_response(holder)
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(body) == {"error": "the request took over 3 s (DFD_SERVE_REQUEST_SECONDS); retry later"}

        # 500: the failure is logged with its traceback; the answer says nothing of the request.
        small = (folder / "ramp.mp4").read_bytes()
        assert len(small) <= cap
        failed = httpx.post(server.url + "?windows=1", content=small, headers=raw, timeout=TIMEOUT)
        assert failed.status_code == 500
        assert failed.json() == {"error": "the server failed to score this request (see its log)"}
        assert "RuntimeError: a bug that shows the request" in server.log()
        assert httpx.get(server.url + "/health").json()["requests"] == 0  # every place is given back
    finally:
        server.stop()


def test_concurrent_clients_get_every_answer_right_with_windows_batched_across_requests(server, videos, predicted):
    """A load test: clients send every kind of request at once for a bounded time; nothing is lost or mixed up."""
    folder, _ = videos
    requests = []
    for name in ("ramp.mp4", "barcode.mp4", "noise.mp4"):
        data = (folder / name).read_bytes()
        requests += [
            ({"json": {"inputs": base64.b64encode(data).decode()}}, predicted[name, None], None),
            (
                {"json": {"inputs": base64.b64encode(data).decode(), "parameters": {"windows": 2}}},
                predicted[name, 2],
                None,
            ),
            (
                {"content": data, "headers": {"Content-Type": "video/mp4"}, "params": {"windows": "2", "top_k": "1"}},
                predicted[name, 2],
                1,
            ),
        ]
    before = httpx.get(server.url + "/health").json()
    rss = [server.rss_bytes()]
    answers, failures = [], []
    clients, seconds = 8, 12
    end = time.monotonic() + seconds

    def client(seed: int):
        order = np.random.default_rng(seed)
        with httpx.Client(timeout=TIMEOUT) as session:
            while time.monotonic() < end:
                options, record, top_k = requests[order.integers(len(requests))]
                try:
                    response = session.post(server.url, **options)
                    assert_answers(response, record, top_k)
                    answers.append(response)
                except Exception as error:  # noqa: BLE001 - reported below, with the others
                    failures.append(repr(error))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        rss.append(server.rss_bytes())
        time.sleep(0.2)
    after = httpx.get(server.url + "/health").json()
    assert failures == []
    assert len(answers) >= clients  # every client was answered, right, every time
    windows = after["windows"] - before["windows"]
    passes = after["forward_passes"] - before["forward_passes"]
    assert windows == sum(len(response.json()[0]["windows"]) for response in answers)  # no window lost or repeated
    assert windows > passes  # windows of concurrent requests shared forward passes
    assert after["requests"] == 0
    # Memory stays bounded: what the load adds is what its requests hold at once, not what they all sent.
    assert max(rss) - rss[0] < 200_000_000, (rss[0], max(rss))


def test_dfd_endpoint_serves_a_folder_as_the_container_does_and_stops_on_sigterm(
    export_dir, videos, predicted, tmp_path
):
    folder, _ = videos
    command = [sys.executable, "-m", "dfd.tools.cli", "endpoint", "--model", str(export_dir), "--port", "0"]
    bad = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "DFD_SERVE_BATCH_SIZE": "0"})
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: DFD_SERVE_BATCH_SIZE='0' is not valid: it must be a whole number of at least 1"
    )
    server = RunningServer(command, tmp_path, tmp_path / "logs")
    try:
        assert server.url.startswith("http://127.0.0.1:")
        video = (folder / "noise.mp4").read_bytes()
        response = httpx.post(
            server.url, content=video, headers={"Content-Type": "application/octet-stream"}, timeout=TIMEOUT
        )
        assert_answers(response, predicted["noise.mp4", None])
    finally:
        server.stop()

"""handler.py as Inference Endpoints runs it: imported from a model folder on sys.path, our package not installed."""

import base64
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import REPO_ROOT, WITHOUT_DFD, numbered_frames, python_fetching_from_loopback, write_video


# Runs in the endpoint's folder. `dfd` is installed in this venv (editable): hide it, as on a real endpoint.
ENDPOINT = WITHOUT_DFD + """
import json

sys.path.insert(0, sys.argv[1])
from handler import EndpointHandler

handlers = {}
for options, request in json.load(sys.stdin):  # options: the constructor arguments of the handler that answers
    key = json.dumps(options, sort_keys=True)
    try:
        if key not in handlers:
            handlers[key] = EndpointHandler(sys.argv[1], **options)
        response = handlers[key](request)
    except ValueError as error:
        response = {"error": str(error)}
    print(json.dumps(response), flush=True)
assert not any(name == "dfd" or name.startswith("dfd.") for name in sys.modules)
"""


@pytest.fixture(scope="module")
def endpoint_dir(tiny_detector_dir, tmp_path_factory):
    """A model repo as the endpoint downloads it: an export, which holds handler.py and what it loads."""
    folder = tmp_path_factory.mktemp("endpoint") / "repository"
    shutil.copytree(tiny_detector_dir, folder)
    for name in ("handler.py", "scoring_dfd.py"):
        assert (folder / name).read_bytes() == (REPO_ROOT / name).read_bytes()
    return folder


class QuietRequestHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the endpoint hangs up on purpose when a download exceeds its size limit


@pytest.fixture(scope="module")
def served_videos(tmp_path_factory):
    """Videos in a folder served over HTTP on localhost: a short one, a long one and a large one."""
    folder = tmp_path_factory.mktemp("served")
    write_video(folder / "short.mp4", numbered_frames(40), fps=25)  # 1.6 s, a few KB
    write_video(folder / "long.mp4", numbered_frames(100, 32, 32), fps=10)  # 10 s, a few KB
    noise = np.random.default_rng(0).integers(0, 256, (20, 64, 64, 3), dtype=np.uint8)
    write_video(folder / "large.mp4", noise, fps=25)  # lossless noise: hundreds of KB
    handler = functools.partial(QuietRequestHandler, directory=str(folder))
    server = QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def encode(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def run_endpoint(endpoint_dir, requests: list[tuple[dict, dict]], loopback=False, **environment) -> list:
    """
    The response (or `{"error": ...}`) to each (handler options, request) pair, from one endpoint process that
    builds a handler per distinct options. `loopback`: its fetcher is patched to download from the test's own server
    on 127.0.0.1 (conftest's `python_fetching_from_loopback`).
    """
    environment.setdefault("DFD_ALLOW_LOCAL_PATHS", "")  # the default, whatever this shell sets
    command = [sys.executable, "-c", ENDPOINT, str(endpoint_dir)]
    result = subprocess.run(
        python_fetching_from_loopback(*command[1:]) if loopback else command,
        input=json.dumps(requests),
        capture_output=True,
        text=True,
        cwd=endpoint_dir,
        # fp32 on the CPU, to compare with processor + model in this process
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", **environment},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_endpoint_scores_base64_url_and_allowed_path_inputs_and_enforces_limits(
    endpoint_dir, served_videos, tiny_detector_scores
):
    folder, url = served_videos
    short, long, large = folder / "short.mp4", folder / "long.mp4", folder / "large.mp4"
    assert large.stat().st_size > 10 * max(short.stat().st_size, long.stat().st_size)
    max_bytes = large.stat().st_size // 2
    requests = [
        {"inputs": encode(short)},
        {"inputs": encode(short), "parameters": {"windows": 2, "top_k": 1}},
        {"inputs": encode(short), "parameters": {"clips": 2, "top_k": 1}},  # the parameter's earlier name
        {"inputs": f"{url}/short.mp4"},
        {"inputs": str(short)},
        {"inputs": str(folder / "missing.mp4")},
        {"inputs": "short.mp4"},
        {"inputs": encode(large)},
        {"inputs": f"{url}/large.mp4"},
        {"inputs": encode(long)},
        {"inputs": "this is not base64!"},
        {"inputs": base64.b64encode(b"\x00" * 2000).decode()},
        {"inputs": encode(short), "parameters": {"windows": 4}},
        {"inputs": encode(short), "parameters": {"threshold": 1e-6}},
        {"inputs": encode(short), "parameters": {"threshold": 1.5}},
        {"inputs": encode(short), "parameters": {"threshold": "high"}},
    ]
    path_requests = [{"inputs": str(short)}, {"inputs": str(folder / "missing.mp4")}]
    responses = run_endpoint(
        endpoint_dir,
        [({}, request) for request in requests] + [({"allow_local_paths": True}, request) for request in path_requests],
        loopback=True,
        DFD_MAX_INPUT_BYTES=str(max_bytes),
        DFD_MAX_DURATION_SECONDS="5",
        DFD_MAX_WINDOWS="3",
    )
    by_allowed_path, by_allowed_missing_path = responses[len(requests) :]
    plain, with_windows, with_clips, by_url, by_path, by_missing_path, *responses = responses[: len(requests)]
    by_relative_path, too_large, too_large_url, too_long, not_base64, not_video, many, *responses = responses
    low_threshold, *bad_thresholds = responses

    # Same numbers as processor + model in this process; each entry's score is its label's probability.
    (scores,) = tiny_detector_scores([short])
    expected = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    assert [entry["label"] for entry in plain] == [label for label, _ in expected]
    assert [entry["score"] for entry in plain] == pytest.approx([score for _, score in expected], abs=1e-5)
    # The verdict (first) carries the whole record: the threshold, and which windows reached it.
    assert plain[0]["threshold"] == 0.5 and plain[0]["fake_score"] == pytest.approx(scores["fake"], abs=1e-5)
    assert plain[0]["mean_fake_probability"] == pytest.approx(scores["fake"], abs=1e-5)
    fake = plain[0]["label"] == "fake"
    assert [(window["start"], window["end"]) for window in plain[0]["flagged_windows"]] == [(0.0, 1.56)] * fake
    assert by_url == plain  # the same bytes, however they arrive

    # Paths on the endpoint are off by default, and refused alike whether the file exists or not.
    paths_off = "paths on the server are refused unless DFD_ALLOW_LOCAL_PATHS=1"
    assert by_path == by_missing_path == {"error": f"'inputs': a path: {paths_off}"}
    assert by_relative_path == {"error": f"'inputs': neither an http(s) URL nor base64-encoded video ({paths_off})"}
    # A handler built with allow_local_paths=True (or DFD_ALLOW_LOCAL_PATHS=1) reads them.
    assert by_allowed_path == plain
    assert by_allowed_missing_path == {
        "error": "'inputs': neither an http(s) URL, an existing file, nor base64-encoded video"
    }

    (top,) = with_windows
    assert set(top) == set(plain[0]) and "path" not in top
    assert [(window["start"], window["end"]) for window in top["windows"]] == [(0.0, 0.76), (0.8, 1.56)]
    # The rule's score: the top window's fake probability; `score` is the verdict's probability.
    assert top["fake_score"] == pytest.approx(max(window["fake_probability"] for window in top["windows"]), abs=1e-6)
    assert top["score"] == pytest.approx(top["fake_score"] if top["label"] == "fake" else 1 - top["fake_score"])
    assert with_clips == with_windows

    assert low_threshold[0]["label"] == "fake" and low_threshold[0]["threshold"] == 1e-6
    assert len(low_threshold[0]["flagged_windows"]) == 1
    for refused, value in zip(bad_thresholds, ("1.5", "'high'")):
        assert refused == {"error": f"parameter 'threshold' must be a number in (0, 1), got {value}"}

    for refused in (too_large, too_large_url):  # base64 is refused on its length, before decoding
        assert refused["error"].startswith("'inputs': the video is ")
        assert refused["error"].endswith(f" bytes, above the {max_bytes:,} byte limit (DFD_MAX_INPUT_BYTES)")
    assert too_long == {"error": "'inputs': the video lasts 10.0 s, above the 5 s limit (DFD_MAX_DURATION_SECONDS)"}
    assert not_base64 == by_relative_path
    assert not_video["error"].startswith("'inputs': not a video FFmpeg can read")
    assert many == {"error": "parameter 'windows': 4 windows asked, above the limit of 3 (DFD_MAX_WINDOWS)"}


FORMAT_REFUSED = (
    "not a self-contained video file: playlists, concat lists, image sequences and other formats that can name "
    "other files or URLs are refused"
)


def test_endpoint_reads_no_file_and_fetches_no_address_of_the_server(endpoint_dir, served_videos):
    folder, url = served_videos
    listing = "ffconcat version 1.0\nfile '{}'\n"
    requests = [
        # The audit's attack: a base64 concat list naming a video on the server, which must not be scored.
        {"inputs": base64.b64encode(listing.format(folder / "short.mp4").encode()).decode()},
        {"inputs": base64.b64encode(listing.format(folder / "missing.mp4").encode()).decode()},
        {"inputs": f"{url}/short.mp4"},
        {"inputs": f"http://localhost:{url.rsplit(':', 1)[1]}/short.mp4"},
    ]
    existing, missing, by_ip, by_name = run_endpoint(endpoint_dir, [({}, request) for request in requests])
    # Refused alike whether the named file exists or not: nothing to learn about the server's files.
    assert existing == missing == {"error": f"'inputs': {FORMAT_REFUSED}"}
    assert by_ip == {
        "error": "'inputs': cannot download: 127.0.0.1 is a loopback address; only public addresses are fetched"
    }
    assert by_name["error"].startswith("'inputs': cannot download: localhost (")
    assert by_name["error"].endswith(") is a loopback address; only public addresses are fetched")


def test_endpoint_validates_every_request_shape(endpoint_dir, served_videos):
    folder, _ = served_videos
    video = (folder / "short.mp4").read_bytes()
    plain = base64.b64encode(video).decode()
    single_keyframe = folder / "single_keyframe.mp4"
    write_video(single_keyframe, numbered_frames(300, 32, 32), fps=100, gop=1000)
    whole = "a whole number of at least 1"
    cases = [
        (["not", "a", "dict"], "the request body must be a JSON object with 'inputs', got list"),
        ({"inputs": plain, "parameters": [1]}, "'parameters' must be a JSON object, got list"),
        ({"inputs": plain, "parameters": "windows=2"}, "'parameters' must be a JSON object, got str"),
        ({"inputs": plain, "parameters": {"clips": [1]}}, f"parameter 'clips' must be {whole}, got [1]"),
        ({"inputs": plain, "parameters": {"windows": "x"}}, f"parameter 'windows' must be {whole}, got 'x'"),
        ({"inputs": plain, "parameters": {"windows": True}}, f"parameter 'windows' must be {whole}, got True"),
        ({"inputs": plain, "parameters": {"windows": 1.5}}, f"parameter 'windows' must be {whole}, got 1.5"),
        ({"inputs": plain, "parameters": {"windows": 0}}, f"parameter 'windows' must be {whole}, got 0"),
        (
            {"inputs": plain, "parameters": {"windows": 9}},
            "parameter 'windows': 9 windows asked, above the limit of 3 (DFD_MAX_WINDOWS)",
        ),
        (
            {"inputs": plain, "parameters": {"window": 2}},
            "unknown parameter(s) 'window'; accepted: windows, threshold, top_k",
        ),
        ({"inputs": plain, "parameters": {"top_k": {}}}, f"parameter 'top_k' must be {whole}, got {{}}"),
        ({"inputs": plain, "parameters": {"top_k": -1}}, f"parameter 'top_k' must be {whole}, got -1"),
        # Python's json reads Infinity and NaN (as the toolkit's parser may).
        ({"inputs": plain, "parameters": {"clips": float("inf")}}, f"parameter 'clips' must be {whole}, got inf"),
        ({"inputs": plain, "parameters": {"top_k": float("nan")}}, f"parameter 'top_k' must be {whole}, got nan"),
        ({"inputs": "data:video/mp4"}, "'inputs': a data: URL without a comma before its base64 video"),
        ({"inputs": ["a"]}, "'inputs': a video must be a path, an http(s) URL or bytes, got list"),
        ({"parameters": {}}, "the request has no 'inputs' (a base64-encoded video, a data: URL or an http(s) URL)"),
        (
            {"inputs": encode(single_keyframe)},
            "'inputs': the requested frames take decoding 300 frames, above the 200 frame limit "
            "(DFD_MAX_DECODED_FRAMES)",
        ),
    ]
    accepted = [
        {"inputs": plain},
        {"inputs": base64.encodebytes(video).decode()},  # wrapped in 76-character lines, as `base64` writes it
        {"inputs": base64.urlsafe_b64encode(video).decode().rstrip("=")},  # URL-safe, unpadded
        {"inputs": "data:video/mp4;base64," + plain},
        {"inputs": plain, "parameters": None},
        {"inputs": plain, "parameters": {"windows": None, "clips": None, "top_k": None}},
        {"inputs": plain, "parameters": {"windows": 2.0, "top_k": "1"}},
    ]
    requests = [request for request, _ in cases] + accepted
    responses = run_endpoint(
        endpoint_dir, [({}, request) for request in requests], DFD_MAX_WINDOWS="3", DFD_MAX_DECODED_FRAMES="200"
    )
    assert responses[: len(cases)] == [{"error": message} for _, message in cases]
    first, *others, two_windows = responses[len(cases) :]
    assert all(isinstance(response, list) and len(response) == 2 for response in [first, *others])
    assert all(response == first for response in others)
    assert len(two_windows) == 1 and len(two_windows[0]["windows"]) == 2


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("DFD_MAX_WINDOWS", "abc", "it must be a whole number of at least 1"),
        ("DFD_MAX_DURATION_SECONDS", "nan", "it must be a number of at least 1"),
        ("DFD_ALLOW_LOCAL_PATHS", "yes", "it must be 1 (on) or 0 (off)"),
        ("DFD_DTYPE", "fp16", "it must be auto, fp32, bf16, int8"),
    ],
)
def test_a_bad_setting_stops_the_endpoint_with_one_line_naming_it(endpoint_dir, name, value, message):
    (response,) = run_endpoint(endpoint_dir, [({}, {"inputs": "x"})], **{name: value})
    assert response == {"error": f"{name}={value!r} is not valid: {message}"}


def test_the_endpoint_runs_in_the_precision_dfd_dtype_names(endpoint_dir, served_videos, tiny_detector_scores):
    short = served_videos[0] / "short.mp4"
    requests = [({}, {"inputs": encode(short)})]
    (fp32,) = run_endpoint(endpoint_dir, requests)  # conftest's DFD_DTYPE=fp32
    (int8,) = run_endpoint(endpoint_dir, requests, DFD_DTYPE="int8")
    (scores,) = tiny_detector_scores([short])
    assert fp32[0]["fake_score"] == pytest.approx(scores["fake"], abs=1e-5)
    int8_fake = int8[0]["fake_score"]
    assert int8_fake == pytest.approx(scores["fake"], abs=0.05) and int8_fake != pytest.approx(scores["fake"], abs=1e-7)


# A one-frame 16000x16000 h264 (about 750 KB): 768 MB as RGB at full resolution.
HUGE_VIDEO = """
import sys, av, numpy as np
size = int(sys.argv[2])
with av.open(sys.argv[1], "w") as container:
    stream = container.add_stream("libx264", rate=1)
    stream.width = stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.options = {"preset": "ultrafast", "crf": "51"}
    frame = av.VideoFrame(size, size, "yuv420p")
    for plane in frame.planes:
        np.frombuffer(plane, np.uint8)[:] = 128
    for packet in [*stream.encode(frame), *stream.encode()]:
        container.mux(packet)
"""

# The endpoint's peak RSS (kB) before and after a request: first a small video, so that the model has run once.
PEAK_MEMORY = (
    ENDPOINT.split("handlers = {}")[0]
    + """
import base64, resource
handler = EndpointHandler(sys.argv[1])
small, large = (base64.b64encode(open(path, "rb").read()).decode() for path in sys.argv[2:4])
handler({"inputs": small})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    response = handler({"inputs": large})
except ValueError as error:
    response = {"error": str(error)}
print(json.dumps({"response": response, "before": before, "after": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""
)


def test_a_16000x16000_video_is_refused_without_decoding_it(endpoint_dir, served_videos, tmp_path):
    folder, _ = served_videos
    huge = tmp_path / "huge.mp4"
    subprocess.run([sys.executable, "-c", HUGE_VIDEO, str(huge), "16000"], check=True, timeout=300)
    result = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY, str(endpoint_dir), str(folder / "short.mp4"), str(huge)],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout)
    assert measured["response"] == {
        "error": "'inputs': frames of 16000x16000 (256,000,000 pixels) are above the limit of "
        "33,177,600 pixels per frame (DFD_MAX_FRAME_PIXELS)"
    }
    # The full-resolution frame alone would be 768 MB as RGB (384 MB as decoded YUV). What opening the file costs is
    # the h264 decoder's tables per 16x16 block, which FFmpeg sets up from the header before it refuses the frame.
    assert (measured["after"] - measured["before"]) * 1024 < 200_000_000

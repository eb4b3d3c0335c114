"""The page (`dfd serve`) and the Space writer (`dfd space`): the analysis on real mp4s, the app in a real browser."""

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import numbered_frames, write_video

try:
    import gradio  # noqa: F401
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("gradio is not installed (the `app` extra)", allow_module_level=True)

from dfd.tools.app import Limits, VideoAnalyzer, download_video, load_scorer  # noqa: E402
from dfd.tools.space import package_requirement, write_space  # noqa: E402


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_COPY = Path("/work/notes/app_screenshot.png")
START_TIMEOUT_SECONDS = 180


@pytest.fixture(scope="module")
def scorer(tiny_detector_dir):
    return load_scorer(str(tiny_detector_dir), device="cpu")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("videos") / "moving.mp4", numbered_frames(50, 64, 96))


@pytest.fixture
def file_server(tmp_path, loopback_fetches):
    """
    An HTTP server on 127.0.0.1 serving `tmp_path/served`: (folder, base URL), which the patched fetcher downloads
    from (conftest's `loopback_fetches`).
    """
    folder = tmp_path / "served"
    folder.mkdir()
    handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(folder))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_analysis_gives_the_scorers_verdict_with_timeline_frames_and_report(scorer, video, tmp_path):
    (expected,) = scorer.predict([str(video)], 3)
    (result,) = VideoAnalyzer(scorer, work_dir=tmp_path).analyze([("moving.mp4", str(video))], 3)

    assert result.error is None
    assert result.record["label"] == expected.label
    assert result.record["score"] == pytest.approx(expected.score)
    assert (
        f"verdict **{expected.label}**, score {expected.score:.3f} (top window, threshold {expected.threshold:.3f}); "
        f"flagged windows: " in result.verdict
    )
    assert f"; mean {expected.mean_fake_probability:.3f}" in result.verdict
    report = json.loads(Path(result.report).read_text())
    assert report == {**json.loads(json.dumps(expected.to_dict())), "path": "moving.mp4"}  # no server path leaks
    assert Path(result.timeline).read_bytes().startswith(b"\x89PNG")
    # The 12 frames of the most suspicious window, at its timestamps, brightest last (numbered_frames rises).
    window = expected.windows[expected.most_suspicious_window]
    assert [caption.split(" at ")[1] for _, caption in result.frames] == [f"{t:.2f} s" for t in window.timestamps]
    brightness = [np.asarray(Image.open(path)).mean() for path, _ in result.frames]
    assert brightness == sorted(brightness) and brightness[-1] > brightness[0]


def test_bad_inputs_get_their_one_line_error_and_the_rest_is_scored(scorer, video, tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    long_video = write_video(tmp_path / "long.mp4", numbered_frames(100, 32, 32), fps=10)  # 10 s
    inputs = [
        ("garbage.mp4", str(garbage)),
        ("moving.mp4", str(video)),
        ("long.mp4", str(long_video)),
        ("gone.mp4", str(tmp_path / "gone.mp4")),
        ("ftp://host/video.mp4", "ftp://host/video.mp4"),
    ]
    analyzer = VideoAnalyzer(scorer, Limits(max_duration=5.0), work_dir=tmp_path / "work")
    garbage_result, good, too_long, gone, ftp = analyzer.analyze(inputs, 1)

    assert garbage_result.error.startswith("not a video FFmpeg can read")
    assert good.error is None and good.record["label"] in scorer.labels
    assert too_long.error == "the video lasts 10.0 s, above the 5 s limit (DFD_MAX_DURATION_SECONDS)"
    assert gone.error == "file not found"
    assert ftp.error == "only http(s) URLs are downloaded"
    for result in (garbage_result, too_long, gone, ftp):
        assert result.record is None and "\n" not in result.error and result.verdict.startswith(f"**{result.name}**")


def test_oversized_upload_and_too_many_windows_are_refused(scorer, video, tmp_path):
    analyzer = VideoAnalyzer(scorer, Limits(max_input_bytes=100, max_windows=4), work_dir=tmp_path)
    (result,) = analyzer.analyze([("moving.mp4", str(video))], 1)
    assert result.error.endswith("above the 100 byte limit (DFD_MAX_INPUT_BYTES)")
    with pytest.raises(ValueError, match=r"windows must lie in \[1, 4\]"):
        analyzer.analyze([("moving.mp4", str(video))], 5)


def test_urls_are_downloaded_within_the_size_limit(scorer, video, file_server, tmp_path):
    folder, base = file_server
    shutil.copy(video, folder / "served.mp4")
    analyzer = VideoAnalyzer(scorer, work_dir=tmp_path / "work")
    scored, missing = analyzer.analyze([(f"{base}/served.mp4",) * 2, (f"{base}/missing.mp4",) * 2], 1)

    (expected,) = scorer.predict([str(video)])
    assert scored.record["label"] == expected.label
    assert scored.record["score"] == pytest.approx(expected.score)
    assert missing.error == "cannot download: HTTP 404 File not found"
    assert not list((tmp_path / "work").rglob("*.video"))  # downloads are deleted once scored

    target = tmp_path / "download.video"
    with pytest.raises(ValueError, match="above the 1,000 byte limit"):
        download_video(f"{base}/served.mp4", target, Limits(max_input_bytes=1000))
    assert not target.exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the app exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the app did not answer on {url}:\n{log.read_text()}")


def start(command: list[str], env: dict, log: Path, cwd=None) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **env}
    with open(log, "w") as output:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen):
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def served(tiny_detector_dir, tmp_path):
    """The app on the tiny detector, in its own process on a free port of 127.0.0.1: its URL."""
    port = free_port()
    serve = f"from dfd.tools.app import serve; serve({str(tiny_detector_dir)!r}, {port}, host='127.0.0.1', windows=3)"
    process = start([sys.executable, "-c", serve], {}, tmp_path / "app.log")
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_http(url, process, tmp_path / "app.log")
        yield url
    finally:
        stop(process)


def browser():
    """Playwright's sync API and Debian's chromium; in CI their absence fails the test instead of skipping it."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (the dev extra installs it)"
    if missing is None and not os.access(CHROMIUM, os.X_OK):
        missing = f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)"
    if missing:
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(missing)
    return sync_playwright


def test_the_page_in_a_real_browser_shows_the_verdict_and_timeline(served, scorer, tmp_path):
    video = write_video(tmp_path / "upload.mp4", numbered_frames(75, 120, 160))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 100)
    (expected,) = scorer.predict([str(video)], 3)
    sync_playwright = browser()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(served)
            page.locator("input[type=file]").first.set_input_files([str(video), str(garbage)])
            # Uploaded: the file list shows the names (as stem and extension).
            page.get_by_text("garbage", exact=True).wait_for(timeout=60_000)
            page.get_by_role("button", name="Analyze").click()
            verdicts = page.locator(".block.dfd-verdict")  # Gradio puts the class on the block and on its text too
            verdicts.first.wait_for(timeout=120_000)

            good, bad = (" ".join(text.split()) for text in verdicts.all_inner_texts())
            assert f"upload.mp4: verdict {expected.label}, score {expected.score:.3f} (top window" in good
            assert bad.startswith("garbage.mp4: error: not a video FFmpeg can read")
            assert "Traceback" not in page.content()
            timeline = page.locator(".dfd-timeline img").first
            timeline.wait_for(timeout=30_000)
            assert timeline.evaluate("image => image.complete && image.naturalWidth > 0")
            assert page.locator(".dfd-frames img").count() >= 1
            assert page.get_by_text("Download JSON report").first.is_visible()
            page.wait_for_timeout(500)  # let the gallery's thumbnails paint before the screenshot
            screenshot = page.screenshot(path=str(tmp_path / "app_screenshot.png"), full_page=True)
        finally:
            chromium.close()
    assert screenshot.startswith(b"\x89PNG")
    if SCREENSHOT_COPY.parent.is_dir():
        shutil.copy(tmp_path / "app_screenshot.png", SCREENSHOT_COPY)


def test_space_folder_has_the_metadata_and_its_app_serves(tiny_detector_dir, tmp_path):
    space = write_space("Arko007/deepfake-detector-dfd-sota", tmp_path / "space", hardware="t4-small")
    assert sorted(path.name for path in space.iterdir()) == ["README.md", "app.py", "requirements.txt"]
    _, front_matter, body = (space / "README.md").read_text().split("---\n", 2)
    metadata = yaml.safe_load(front_matter)
    assert metadata["sdk"] == "gradio" and metadata["app_file"] == "app.py"
    assert metadata["models"] == ["Arko007/deepfake-detector-dfd-sota"]
    assert metadata["suggested_hardware"] == "t4-small"
    assert "https://huggingface.co/Arko007/deepfake-detector-dfd-sota" in body
    requirements = (space / "requirements.txt").read_text().split()
    assert " ".join(requirements) == package_requirement("Arko007/deepfake-detector-dfd-sota")

    port = free_port()
    env = {"DFD_MODEL": str(tiny_detector_dir), "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
    process = start([sys.executable, "app.py"], env, tmp_path / "space.log", cwd=space)
    try:
        page = wait_for_http(f"http://127.0.0.1:{port}/", process, tmp_path / "space.log")
    finally:
        stop(process)
    assert "DFD deepfake detector" in page


def test_space_refuses_a_model_that_is_not_a_hub_id_and_an_existing_folder(tmp_path):
    with pytest.raises(ValueError, match="a Space links a Hub model id"):
        write_space("./checkpoints/dfd", tmp_path / "space")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        write_space("owner/model", tmp_path / "taken")


def commands():
    """`serve` and `space` as the `dfd` command registers them (tools/cli wires in the same add_parser)."""
    import argparse

    from dfd.tools import app, space

    parser = argparse.ArgumentParser(prog="dfd")
    subparsers = parser.add_subparsers(dest="command", required=True)
    parent = argparse.ArgumentParser(add_help=False)
    app.add_parser(subparsers, parent)
    space.add_parser(subparsers, parent)
    return parser


def test_space_command_writes_the_folder_and_serve_refuses_too_many_windows(tmp_path, capsys):
    args = commands().parse_args(["space", "--model", "owner/model", "--output", str(tmp_path / "space")])
    assert args.run(args) == 0
    assert yaml.safe_load((tmp_path / "space" / "README.md").read_text().split("---\n")[1])["models"] == ["owner/model"]
    assert "wrote the Space for owner/model" in capsys.readouterr().out

    args = commands().parse_args(["serve", "--model", "unused", "--windows", "33"])
    assert (args.port, args.share) == (7860, False)
    with pytest.raises(ValueError, match=r"--windows 33 is outside \[0, 32\]"):
        args.run(args)

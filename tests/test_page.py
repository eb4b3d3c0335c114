"""
The web page (page_dfd.py): its analysis on real mp4s, the HTML it shows, and a real `dfd serve` process driven by
the real `gradio_client` and by Debian's Chromium at 1280 and 400 px. The server fetches URLs of this test's own
file server on 127.0.0.1 (conftest's `python_fetching_from_loopback`); every other address rule holds.
"""

import http.server
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import numbered_frames, python_fetching_from_loopback, write_video

try:
    import gradio  # noqa: F401
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("gradio is not installed (the `app` extra)", allow_module_level=True)

from dfd.cards_dfd import NOT_CHECKED, Progress, VideoReport, render_card, render_summary  # noqa: E402
from dfd.inputs_dfd import LOCAL_PATHS_REFUSED, Limits  # noqa: E402
from dfd.page_dfd import VideoAnalyzer, VideoInput, checked_windows  # noqa: E402
from dfd.tools.loading import load_scorer  # noqa: E402


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
START_SECONDS = 180
# Where the browser test also puts its screenshots, to look at (e.g. for the README's docs/page.png).
SCREENSHOTS = os.environ.get("DFD_SCREENSHOTS")


@pytest.fixture(scope="module")
def scorer(tiny_detector_dir):
    return load_scorer(str(tiny_detector_dir), "cpu", limits=Limits())


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """A 2 s video, a 5-frame one (shorter than a window's 12 frames), a file that is not a video."""
    folder = tmp_path_factory.mktemp("videos")
    rng = np.random.default_rng(0)
    noisy = numbered_frames(50, 72, 96) // 2 + rng.integers(0, 100, (50, 72, 96, 3), dtype=np.uint8)
    notes = folder / "notes.txt"
    notes.write_text("not a video")
    return {
        "moving": write_video(folder / "moving.mp4", noisy),
        "short": write_video(folder / "short.mp4", numbered_frames(5, 64, 96)),
        "notes": notes,
    }


def reports_of(events) -> list[VideoReport]:
    return [event for event in events if isinstance(event, VideoReport)]


def assert_same_record(actual, expected):
    """Equal records, probabilities up to float noise (windows batched differently give the last bits)."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_same_record(actual[key], expected[key])
    elif isinstance(expected, list):
        assert len(actual) == len(expected)
        for item, expected_item in zip(actual, expected):
            assert_same_record(item, expected_item)
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-6)
    else:
        assert actual == expected


def test_each_video_gets_the_scorers_record_and_one_thumbnail_per_distinct_frame(scorer, videos):
    inputs = [
        VideoInput("moving.mp4", str(videos["moving"]), True),
        VideoInput("short.mp4", str(videos["short"]), True),
    ]
    moving, short = reports_of(VideoAnalyzer(scorer).analyze(inputs, windows=2))
    expected_moving, expected_short = scorer.predict([str(videos["moving"]), str(videos["short"])], 2)

    for report, expected, name in ((moving, expected_moving, "moving.mp4"), (short, expected_short, "short.mp4")):
        assert report.error is None
        assert_same_record(report.record, {**expected.to_dict(), "path": name})  # named as given, no server path
        window = expected.windows[expected.most_suspicious_window]
        assert [(thumbnail.frame, thumbnail.time) for thumbnail in report.thumbnails] == list(
            zip(window.frames, window.timestamps)
        )
        wide, narrow = (Image.open(io.BytesIO(png)) for png in report.timelines)
        assert wide.format == narrow.format == "PNG" and narrow.width < wide.width
    # The short video: one window that repeats its 5 frames; each is shown once, in order, brightest last.
    assert [thumbnail.frame for thumbnail in short.thumbnails] == [0, 1, 2, 3, 4]
    brightness = [np.asarray(Image.open(io.BytesIO(thumbnail.jpeg))).mean() for thumbnail in short.thumbnails]
    assert brightness == sorted(brightness) and brightness[-1] - brightness[0] > 100
    # Thumbnails keep the video's shape (96 x 64), not the model's square input.
    assert Image.open(io.BytesIO(short.thumbnails[0].jpeg)).size == (240, 160)


def test_the_page_opens_and_decodes_each_video_once_for_its_verdict_frames_and_explanation(
    tiny_detector_dir, videos, monkeypatch
):
    """Thumbnails and the explanation come from the windows decoded for scoring: one open, one decode per video."""
    import av

    from dfd import decoding_dfd

    opened, decoded = [], []
    real_open, real_read = av.open, decoding_dfd.read_video
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: opened.append(args[0]) or real_open(*args, **kwargs))
    monkeypatch.setattr(
        "dfd.processing_dfd.read_video",
        lambda video, *args, **kwargs: decoded.append(video) or real_read(video, *args, **kwargs),
    )
    monkeypatch.setenv("DFD_DECODE_THREADS", "2")  # one thread for each of the two decode workers: one decoder each
    scorer = load_scorer(str(tiny_detector_dir), "cpu", limits=Limits(), threshold=0.01)  # every window flagged
    (report,) = reports_of(
        VideoAnalyzer(scorer).analyze([VideoInput("moving.mp4", str(videos["moving"]), True)], 2, explain=True)
    )
    assert report.error is None and report.record["flagged_windows"] and report.thumbnails and report.explanations
    assert decoded == [str(videos["moving"])]
    assert [name.removeprefix("file:") for name in opened] == [str(videos["moving"])]


def test_paths_are_refused_alike_whether_they_exist_and_every_input_is_reported(scorer, videos, tmp_path):
    inputs = [
        VideoInput("notes.txt", str(videos["notes"]), True),
        VideoInput(str(videos["moving"]), str(videos["moving"]), False),  # typed into the URL box: exists
        VideoInput(str(tmp_path / "gone.mp4"), str(tmp_path / "gone.mp4"), False),  # does not exist
        VideoInput("/etc/passwd", "/etc/passwd", False),
        VideoInput("ftp://host/video.mp4", "ftp://host/video.mp4", False),
    ]
    notes, existing, missing, passwd, ftp = reports_of(VideoAnalyzer(scorer).analyze(inputs))

    assert notes.error.startswith("not a video FFmpeg can read")
    assert existing.error == missing.error == passwd.error == LOCAL_PATHS_REFUSED
    assert ftp.error == LOCAL_PATHS_REFUSED  # not an http(s) URL: the gate takes it for a path
    assert [report.name for report in (notes, existing, missing, passwd, ftp)] == [video.name for video in inputs]
    assert all(report.record is None and "\n" not in report.error for report in (notes, existing, missing, passwd, ftp))


def test_progress_covers_every_window_and_stop_keeps_what_was_scored(tiny_detector_dir, videos):
    scorer = load_scorer(str(tiny_detector_dir), "cpu", batch_size=1, limits=Limits())
    inputs = [VideoInput(name, str(videos[name]), True) for name in ("moving", "short", "moving")]
    stop = threading.Event()
    events = []
    for event in VideoAnalyzer(scorer).analyze(inputs, windows=3, stop=stop):
        events.append(event)
        if isinstance(event, Progress) and event.position == 1:
            stop.set()  # while the second video is being read

    checking = [(event.done, event.windows) for event in events if isinstance(event, Progress) and event.position == 0]
    assert checking == [(0, 0), (0, 3), (1, 3), (2, 3)]  # read, then each window
    fractions = [event.fraction for event in events if isinstance(event, Progress)]
    assert fractions == sorted(fractions) and fractions[-1] < 1
    first, second, third = reports_of(events)
    assert first.record["label"] in {"real", "fake"} and len(first.record["windows"]) == 3
    assert second.stopped and third.stopped
    assert second.to_dict() == {"path": "short", "error": NOT_CHECKED}


def test_windows_are_zero_for_automatic_or_a_whole_number_within_the_limit():
    limits = Limits(max_windows=4)
    assert checked_windows(0, limits) is None and checked_windows(None, limits) is None
    assert checked_windows(3.0, limits) == 3
    with pytest.raises(ValueError, match=r"5 windows asked, above the limit of 4 \(DFD_MAX_WINDOWS\)"):
        checked_windows(5, limits)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="windows must be 0"):
            checked_windows(bad, limits)


def test_cards_say_the_verdict_in_words_and_escape_what_users_gave(scorer, videos):
    hostile = '<img src=x onerror="alert(1)">.mp4'
    (report,) = reports_of(VideoAnalyzer(scorer).analyze([VideoInput(hostile, str(videos["moving"]), True)], 2))
    record = report.record
    card = render_card(report, 1)
    assert "<img src=x" not in card and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.mp4" in card
    words = "⚠ Likely fake" if record["label"] == "fake" else "✓ Likely real"
    assert words in card and f"Fake score {record['fake_score']:.0%}" in card
    assert f"flags a video at {record['threshold']:.0%} or more" in card
    assert 'download="img_src_x_onerror_alert_1_.mp4.json"' in card and "Download the report on &lt;img" in card

    raised = VideoReport("long.mp4", record={**record, "threshold": 0.8}, one_part_threshold=0.5)
    assert "raised from 50% for a one-part video because each of its 2 parts" in render_card(raised, 1)
    refused = VideoReport("big.mp4", error="the video is 200 bytes, above the 100 byte limit (DFD_MAX_INPUT_BYTES)")
    assert "Upload a smaller file" in render_card(refused, 2)
    summary = render_summary([report, refused, VideoReport("x.mp4", stopped=True)], 4)
    assert "✕ Not checked: 2" in summary and "still to check: 1" in summary


# --- a real server ---------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FileServer(http.server.ThreadingHTTPServer):
    """Serves a folder on 127.0.0.1; `/slow.mp4` answers only once `release` is set (a download that takes long)."""

    def __init__(self, folder: Path):
        self.release = threading.Event()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args):
                super().__init__(*args, directory=str(folder))

            def do_GET(self):
                if self.path == "/slow.mp4":
                    server.release.wait(60)
                    self.path = "/moving.mp4"
                super().do_GET()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture(scope="module")
def file_server(videos, tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    shutil.copy(videos["moving"], folder / "moving.mp4")
    server = FileServer(folder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def served(tiny_detector_dir, tmp_path_factory):
    """`dfd serve` on the tiny detector in its own process: (URL, process, log path, its GRADIO_TEMP_DIR)."""
    root = tmp_path_factory.mktemp("served-page")
    uploads, log = root / "gradio", root / "serve.log"
    uploads.mkdir()
    port = free_port()
    command = python_fetching_from_loopback(
        "-m", "dfd.tools.cli", "serve", "--model", str(tiny_detector_dir), "--port", str(port)
    )
    env = {**os.environ, "GRADIO_TEMP_DIR": str(uploads), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_http(url, process, log)
        yield url, process, log, uploads
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for_http(url: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the server did not answer on {url}:\n{log.read_text()}")


def test_the_api_returns_records_for_uploads_and_urls_and_reads_no_server_file(served, scorer, videos, file_server):
    from gradio_client import Client, handle_file

    url = served[0]
    client = Client(url, verbose=False)
    on_server = str(videos["moving"])  # a real video on the server's disk
    lines = f"{file_server.url}/moving.mp4\n{on_server}\n{on_server}.gone\n/etc/passwd"
    records = json.loads(client.predict([handle_file(str(videos["short"]))], lines, 2, api_name="/analyze"))

    expected_short, expected_moving = (json.loads(json.dumps(record.to_dict())) for record in scorer.predict(
        [str(videos["short"]), str(videos["moving"])], 2
    ))  # fmt: skip
    uploaded, downloaded, existing, missing, passwd = records
    assert_same_record(uploaded, {**expected_short, "path": "short.mp4"})
    assert_same_record(downloaded, {**expected_moving, "path": f"{file_server.url}/moving.mp4"})
    refused = LOCAL_PATHS_REFUSED
    assert existing == {"path": on_server, "error": refused}
    assert missing == {"path": f"{on_server}.gone", "error": refused}
    assert passwd == {"path": "/etc/passwd", "error": refused}

    with pytest.raises(Exception, match="no video"):
        client.predict([], "", 0, api_name="/analyze")
    with pytest.raises(Exception, match=r"33 windows asked, above the limit of 32 \(DFD_MAX_WINDOWS\)"):
        client.predict([], f"{file_server.url}/moving.mp4", 33, api_name="/analyze")

    # A forged upload that names a file on the server is refused by Gradio before the page sees it.
    forged = {"data": [[{"path": on_server, "meta": {"_type": "gradio.FileData"}}], "", 0]}
    request = urllib.request.Request(
        f"{url}gradio_api/call/analyze", json.dumps(forged).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/analyze/{event_id}", timeout=60) as response:
        stream = response.read().decode()
    assert "event: error" in stream and "label" not in stream


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


def launch_chromium(playwright, profile: Path):
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, accept_downloads=False
    )


def screenshot(page, name: str, tmp_path: Path):
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SCREENSHOTS) / name)


def inside(inner: dict, outer: dict) -> bool:
    return (
        inner["x"] >= outer["x"] - 0.5
        and inner["y"] >= outer["y"] - 0.5
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 0.5
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 0.5
    )


def check_layout(page, width: int):
    """Nothing wider than the screen; every thumbnail inside its grid and its card; every image named."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for card in page.locator(".dfd-card").all():
        card_box = card.bounding_box()
        for grid in card.locator(".dfd-frames ul").all():
            grid_box = grid.bounding_box()
            for thumbnail in grid.locator("li").all():
                box = thumbnail.bounding_box()
                assert inside(box, grid_box) and inside(box, card_box), (width, box, grid_box, card_box)
    for image in page.locator(".dfd-card img").all():
        assert image.get_attribute("alt").strip()
        assert image.evaluate("image => image.complete && image.naturalWidth > 0")
    assert page.get_by_role("button", name="Upload videos").count() == 1  # not Gradio's raw key "common.upload"


def test_the_page_in_a_browser_shows_progress_stops_and_reports_every_video(served, videos, file_server, tmp_path):
    url = served[0]
    sync_playwright = browser()
    from playwright.sync_api import expect

    with sync_playwright() as playwright:
        context = launch_chromium(playwright, tmp_path / "profile")
        try:
            page = context.new_page()
            page.set_viewport_size({"width": 1280, "height": 1000})
            page.goto(url)
            analyze = page.get_by_role("button", name="Analyze")
            stop = page.get_by_role("button", name="Stop")
            analyze.click()  # nothing given: one line on the page, no error
            page.get_by_text("Add a video file or a link first.").wait_for(timeout=30_000)

            # A run whose second video downloads slowly: the progress shows, Analyze waits, Stop ends it.
            urls = page.get_by_label("Or links to videos, one per line")
            urls.fill(f"{file_server.url}/moving.mp4\n{file_server.url}/slow.mp4\n{file_server.url}/moving.mp4")
            analyze.click()
            page.get_by_text("Video 2 of 3").wait_for(timeout=60_000)
            assert page.locator(".dfd-progress progress").first.is_visible()
            expect(analyze).to_be_disabled()
            expect(stop).to_be_enabled()
            assert page.locator(".dfd-card").count() == 1  # the first video's result is on screen already
            screenshot(page, "running-1280.png", tmp_path)
            stop.click()
            file_server.release.set()
            page.get_by_text("Stopped: 1 of 3 videos checked").wait_for(timeout=60_000)
            assert page.locator(".dfd-card").count() == 3
            assert page.locator(".dfd-card.dfd-stopped").count() == 2
            expect(analyze).to_be_enabled()
            expect(stop).to_be_disabled()

            # A full run: uploads (one not a video) and paths typed into the URL box (one real, one missing).
            on_server = str(videos["moving"])
            page.locator("input[type=file]").first.set_input_files(
                [str(videos["moving"]), str(videos["short"]), str(videos["notes"])]
            )
            page.get_by_text("notes", exact=True).wait_for(timeout=60_000)
            urls.fill(f"{on_server}\n{on_server}.gone")
            analyze.click()
            page.get_by_text("Done: 2 of 5 videos checked").wait_for(timeout=120_000)
            cards = page.locator(".dfd-card")
            names = [card.locator(".dfd-name").inner_text() for card in cards.all()]
            assert names == ["moving.mp4", "short.mp4", "notes.txt", on_server, f"{on_server}.gone"]
            reasons = [cards.nth(index).locator(".dfd-reason").inner_text() for index in (2, 3, 4)]
            assert reasons[0].startswith("not a video FFmpeg can read")
            assert reasons[1] == reasons[2] == LOCAL_PATHS_REFUSED
            short = cards.nth(1)
            alts = [image.get_attribute("alt") for image in short.locator(".dfd-frames img").all()]
            assert alts == [f"short.mp4, 0:00.{4 * frame:02d}, frame {frame}" for frame in range(5)]
            assert short.get_by_role("link", name="Download the report on short.mp4 (JSON)").count() == 1
            summary = page.locator(".dfd-summary")
            assert summary.is_visible() and "✕ Not checked: 3" in summary.inner_text()
            assert "Traceback" not in page.content()
            check_layout(page, 1280)
            screenshot(page, "page-1280.png", tmp_path)

            page.set_viewport_size({"width": 400, "height": 900})
            page.wait_for_timeout(500)
            check_layout(page, 400)
            timeline = cards.first.locator(".dfd-timeline img")
            assert timeline.evaluate("image => image.currentSrc !== image.src")  # the phone's own timeline
            screenshot(page, "page-400.png", tmp_path)
        finally:
            context.close()


def test_sigterm_stops_the_server_without_tracebacks_or_files_left(served, videos):
    from gradio_client import Client, handle_file

    url, process, log, uploads = served
    client = Client(url, verbose=False)
    client.predict([handle_file(str(videos["short"]))], "", 0, api_name="/analyze")
    assert any(path.is_file() for path in uploads.rglob("*"))  # the upload, while the server runs

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert [path for path in uploads.rglob("*") if path.is_file()] == []
    assert not list(uploads.glob("dfd-page-*"))  # the server's own upload folder
    # User errors (nothing to analyze, too many windows, paths, non-videos) log no traceback; Gradio logs the one
    # of the forged upload (the API test), an attack rather than a mistake.
    text = log.read_text()
    assert text.count("Traceback") == text.count("InvalidPathError: Cannot move")


def test_serve_refuses_too_many_windows_with_one_line(tiny_detector_dir):
    result = subprocess.run(
        [sys.executable, "-m", "dfd.tools.cli", "serve", "--model", str(tiny_detector_dir), "--windows", "33"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --windows 33 is outside [0, 32] (DFD_MAX_WINDOWS)"

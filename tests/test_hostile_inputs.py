"""Hostile inputs: files that name other files, URLs that lead inside, servers that drip, frames too large to hold."""

import base64
import http.server
import io
import os
import socketserver
import threading
import time

import av
import numpy as np
import PIL.Image
import pytest
import torch

from conftest import numbered_frames, write_video
from dfd import fetching_dfd
from dfd.decoding_dfd import (
    VideoDecodeError,
    decoding_threads,
    frames_to_decode,
    load_video_frames,
    max_frame_pixels,
    probe_video,
)
from dfd.fetching_dfd import address_refusal, download_seconds, fetch, max_input_bytes
from dfd.inference import Limits, VideoError, VideoPrediction, VideoScorer
from dfd.processing_dfd import DFDVideoProcessor


FORMAT_REFUSED = (
    "not a self-contained video file: playlists, concat lists, image sequences and other formats that can name "
    "other files or URLs are refused"
)


# --- the decoder opens nothing but the file it was given -----------------------------------------------------------


def crafted_files(folder, named_video):
    """Files that make a demuxer open other files or URLs, each naming `named_video` (which may not exist)."""
    png = io.BytesIO()
    PIL.Image.fromarray(numbered_frames(1)[0]).save(png, format="PNG")
    crafted = {
        "ffconcat": f"ffconcat version 1.0\nfile '{named_video}'\n",
        "ffconcat, file: URL": f"ffconcat version 1.0\nfile 'file:{named_video}'\n",
        "HLS playlist": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile://{named_video}\n#EXT-X-ENDLIST\n",
        "HLS playlist, http": (
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n"
        ),
        "DASH manifest": (
            '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" '
            'mediaPresentationDuration="PT1S"><Period><AdaptationSet><Representation id="1" bandwidth="1" '
            f'mimeType="video/mp4"><BaseURL>file://{named_video}</BaseURL></Representation></AdaptationSet>'
            "</Period></MPD>\n"
        ),
        "SDP (RTP)": (
            "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
            "m=video 9 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
        ),
        "ffmetadata": ";FFMETADATA1\ntitle=x\n",
    }
    extensions = {"ffconcat": ".ffconcat", "HLS": ".m3u8", "DASH": ".mpd", "SDP": ".sdp", "ffmetadata": ".txt"}
    paths = {}
    for kind, text in crafted.items():
        # Named as their kind, so FFmpeg's probe (which weighs the extension) picks the demuxer that would follow them.
        paths[kind] = folder / f"{len(paths)}{extensions[kind.split()[0].rstrip(',')]}"
        paths[kind].write_text(text)
    # An image sequence: image2 expands %03d into other files' names.
    (folder / "frame_001.png").write_bytes(png.getvalue())
    paths["image2 pattern"] = folder / "frame_%03d.png"
    paths["image2 pattern"].write_bytes(png.getvalue())
    paths["single image"] = folder / "image.mp4"
    paths["single image"].write_bytes(png.getvalue())
    return paths


@pytest.mark.parametrize("named", ["existing", "missing"])
def test_files_that_name_other_files_or_urls_are_refused(tmp_path, named):
    video = write_video(tmp_path / "secret.mp4", numbered_frames(10))
    named_video = video if named == "existing" else tmp_path / "missing.mp4"
    for kind, path in crafted_files(tmp_path, named_video).items():
        with pytest.raises(VideoDecodeError) as raised:
            probe_video(path)
        if kind == "DASH manifest" and not av.format.ContainerFormat("dash").is_input:
            # PyAV's FFmpeg has no DASH demuxer, so the manifest is no video; one that has it is stopped by the list.
            assert str(raised.value).startswith(f"{path}: not a video FFmpeg can read"), kind
            continue
        assert str(raised.value) == f"{path}: {FORMAT_REFUSED}", kind
        with pytest.raises(VideoDecodeError, match=FORMAT_REFUSED):
            DFDVideoProcessor()(str(path), return_tensors="pt")


def test_names_that_look_like_protocols_are_just_file_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_video(tmp_path / "other.mp4", numbered_frames(30))
    # FFmpeg would read "concat:a|b" as its concat protocol, and "subfile,..." as a slice of another file.
    for name in ("concat:other.mp4|other.mp4", "subfile,,start,0,end,0,,:other.mp4"):
        write_video(tmp_path / name, numbered_frames(5))
        assert probe_video(name).total_frames == 5
    assert load_video_frames("concat:other.mp4|other.mp4").shape[0] == 12


def test_pipes_and_devices_are_not_read(tmp_path):
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    for path in (fifo, "/dev/zero"):
        with pytest.raises(VideoDecodeError) as raised:
            probe_video(path)
        assert str(raised.value) == f"{path}: not a regular file"


# --- memory and work are bounded by the output ---------------------------------------------------------------------


def test_frames_above_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    video = write_video(tmp_path / "clip.mp4", numbered_frames(4, height=48, width=64))
    folder = tmp_path / "frames"
    folder.mkdir()
    PIL.Image.fromarray(numbered_frames(1, height=48, width=64)[0]).save(folder / "0.png")
    monkeypatch.setenv("DFD_MAX_FRAME_PIXELS", "3000")
    assert max_frame_pixels() == 3000
    with pytest.raises(VideoDecodeError) as raised:
        probe_video(video)
    assert str(raised.value) == (
        f"{video}: frames of 64x48 (3,072 pixels) are above the limit of 3,000 pixels per frame (DFD_MAX_FRAME_PIXELS)"
    )
    with pytest.raises(VideoDecodeError) as raised:
        load_video_frames(folder)
    assert str(raised.value) == (
        f"{folder / '0.png'}: 64x48 (3,072 pixels) is above the limit of 3,000 pixels per frame (DFD_MAX_FRAME_PIXELS)"
    )
    monkeypatch.setenv("DFD_MAX_FRAME_PIXELS", "3072")
    assert load_video_frames(video).shape == (12, 48, 64, 3)


def test_frames_to_decode_counts_from_each_wanted_frames_keyframe(tmp_path):
    info = probe_video(write_video(tmp_path / "clip.mp4", numbered_frames(100, 32, 32), gop=25))
    assert info.keyframe_indices.tolist() == [0, 25, 50, 75]
    assert frames_to_decode(info, [10]) == 11
    assert frames_to_decode(info, [30]) == 6
    assert frames_to_decode(info, [30, 30, 40, 99]) == 16 + 25
    assert frames_to_decode(info, range(100)) == 100


def test_frames_are_resized_as_decoded_and_pixel_values_do_not_change(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (20, 270, 480, 3), dtype=np.uint8)
    path = write_video(tmp_path / "clip.mp4", frames)
    processor = DFDVideoProcessor()
    full = load_video_frames(path)
    assert full.shape == (12, 270, 480, 3)
    early = processor(str(path), return_tensors="pt", return_metadata=True)
    late = processor(full, do_sample_frames=False, return_tensors="pt")
    assert torch.equal(early["pixel_values"], late["pixel_values"])
    assert early["video_metadata"][0].height == 384  # what the decoder kept: the resized frames


# --- one fetcher: http(s), public addresses, an overall deadline, a size cap ---------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes of the test server: a file, redirects, a drip, a large body; every request is counted."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        route, _, argument = self.path.lstrip("/").partition("/")
        if route == "file":
            self._send(200, server.body)
        elif route == "redirect":
            self.send_response(302)
            self.send_header("Location", argument.replace("|", "/"))
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "chain":  # /chain/N: N + 1 redirects to the file
            hops = int(argument)
            self.send_response(302)
            self.send_header("Location", f"/chain/{hops - 1}" if hops else "/file/")  # N + 1 redirects
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif route == "drip":  # declares 1000 bytes, sends one a second
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self._drip(b"x" * 1000)
        elif route == "drip-headers":
            self._drip(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"y" * 1000)
        elif route == "undeclared":  # no Content-Length: the body ends when the connection closes
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * 200_000)
        else:
            self._send(404, b"")

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, data):
        try:
            for byte in data:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(1)
        except OSError:
            pass

    def log_message(self, format, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass


@pytest.fixture
def server(tmp_path):
    """A server on 127.0.0.1 serving a real video at /file/."""
    server = Server(("127.0.0.1", 0), Handler)
    server.requests = []
    server.body = write_video(tmp_path / "served.mp4", numbered_frames(30)).read_bytes()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def loopback_allowed(monkeypatch):
    """The fetcher's test-only switch: the test's own server on 127.0.0.1 (only that address) may be fetched."""
    monkeypatch.setattr(fetching_dfd, "TEST_ALLOWED_ADDRESSES", frozenset({"127.0.0.1"}))


def download(url, limit=10**9, deadline=30):
    file = io.BytesIO()

    def check_size(size):
        if size > limit:
            raise ValueError(f"{size} > {limit}")

    fetch(url, file, check_size, deadline=deadline)
    return file.getvalue()


@pytest.mark.parametrize(
    "address, reason",
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1%1", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),
        ("::127.0.0.1", "loopback"),  # IPv4-compatible
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_only_public_addresses_are_fetched_from(address, reason):
    assert address_refusal(address) == reason  # decided without connecting anywhere


def test_loopback_is_refused_by_default_before_connecting(server):
    for url in (f"{server.url}/file/", f"http://localhost:{server.server_address[1]}/file/"):
        with pytest.raises(ValueError, match=r"^cannot download: .* is a loopback address; only public addresses"):
            download(url)
    assert server.requests == []


def test_the_switch_lets_a_test_fetch_from_its_own_server(server, loopback_allowed):
    assert download(f"{server.url}/file/") == server.body
    assert download(f"{server.url}/redirect/|file|") == server.body  # a redirect within the allowed address
    # The processor takes URLs and bytes through the same fetcher, with the same frames as the file.
    processor = DFDVideoProcessor()
    expected = processor(server.body, return_tensors="pt")["pixel_values"]
    assert torch.equal(processor(f"{server.url}/file/", return_tensors="pt")["pixel_values"], expected)
    assert torch.equal(processor([server.body, server.body], return_tensors="pt")["pixel_values"][1], expected[0])


def test_every_redirect_is_checked(server, loopback_allowed):
    port = server.server_address[1]
    refused = {
        f"http://127.0.0.2:{port}|file|": "cannot download: 127.0.0.2 is a loopback address; only public addresses",
        "ftp:||127.0.0.1|video.mp4": "cannot download: redirected to ftp://127.0.0.1/video.mp4, which is not an http",
        "file:|||etc|passwd": "cannot download: redirected to file:///etc/passwd, which is not an http",
        f"http://[::ffff:127.0.0.1]:{port}|file|": "cannot download: ::ffff:127.0.0.1 is a loopback address",
    }
    for target, message in refused.items():
        with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace(".", r"\.")):
            download(f"{server.url}/redirect/{target}")
    assert download(f"{server.url}/chain/4") == server.body  # five redirects
    with pytest.raises(ValueError, match="^cannot download: more than 5 redirects$"):
        download(f"{server.url}/chain/5")


def test_a_dripping_server_is_stopped_at_the_overall_deadline(server, loopback_allowed):
    for route in ("drip", "drip-headers"):
        start = time.monotonic()
        with pytest.raises(ValueError, match=r"^cannot download: took longer than 2 s \(DFD_DOWNLOAD_SECONDS\)$"):
            download(f"{server.url}/{route}/", deadline=2)
        assert time.monotonic() - start < 3.5, route


def test_downloads_stop_at_the_size_cap(server, loopback_allowed, monkeypatch):
    with pytest.raises(ValueError, match=f"^{len(server.body)} > 1000$"):  # the declared size
        download(f"{server.url}/file/", limit=1000)
    with pytest.raises(ValueError, match=r"^\d+ > 100000$"):  # received so far, when nothing is declared
        download(f"{server.url}/undeclared/", limit=100_000)
    monkeypatch.setenv("DFD_MAX_INPUT_BYTES", "1000")
    url = f"{server.url}/file/"
    with pytest.raises(VideoDecodeError) as raised:
        DFDVideoProcessor()(url)
    assert str(raised.value) == (
        f"{url}: the video is {len(server.body):,} bytes, above the 1,000 byte limit (DFD_MAX_INPUT_BYTES)"
    )
    with pytest.raises(VideoDecodeError, match="^<video bytes>: the video is .* above the 1,000 byte limit"):
        DFDVideoProcessor()(server.body)


def test_the_processor_refuses_loopback_urls_naming_them(server):
    url = f"{server.url}/file/"
    with pytest.raises(VideoDecodeError) as raised:
        DFDVideoProcessor()(url)
    assert str(raised.value) == (
        f"{url}: cannot download: 127.0.0.1 is a loopback address; only public addresses are fetched"
    )
    assert server.requests == []


# --- DFD_* settings --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, value, read",
    [
        ("DFD_DECODE_THREADS", "abc", decoding_threads),
        ("DFD_DECODE_THREADS", "0", decoding_threads),
        ("DFD_MAX_FRAME_PIXELS", "1e6", max_frame_pixels),
        ("DFD_MAX_INPUT_BYTES", "-5", max_input_bytes),
        ("DFD_DOWNLOAD_SECONDS", "nan", download_seconds),
        ("DFD_MAX_INPUT_BYTES", "100MB", Limits),
        ("DFD_MAX_DURATION_SECONDS", "inf", Limits),
        ("DFD_MAX_WINDOWS", "2.5", Limits),
        ("DFD_MAX_DECODED_FRAMES", "many", Limits),
    ],
)
def test_a_bad_setting_is_refused_on_one_line_naming_it(monkeypatch, name, value, read):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as raised:
        read()
    assert str(raised.value).startswith(f"{name}={value!r} is not valid: it must be a ")
    assert "\n" not in str(raised.value)


# --- one video's failure is that video's error -----------------------------------------------------------------------


def test_a_failing_video_becomes_its_error_and_the_batch_goes_on(tmp_path, tiny_detector_dir, monkeypatch):
    from transformers import AutoModelForVideoClassification, AutoVideoProcessor

    model = AutoModelForVideoClassification.from_pretrained(tiny_detector_dir, trust_remote_code=True)
    processor = AutoVideoProcessor.from_pretrained(tiny_detector_dir, trust_remote_code=True)
    good = write_video(tmp_path / "good.mp4", numbered_frames(30))
    # One keyframe, 600 frames: every frame up to the last wanted one must be decoded.
    long = write_video(tmp_path / "long.mp4", numbered_frames(600, 32, 32), fps=100, gop=10_000)
    listing = tmp_path / "list.mp4"
    listing.write_text(f"ffconcat version 1.0\nfile '{good}'\n")
    large = write_video(tmp_path / "large.mp4", numbered_frames(30, 128, 128))  # over the pixel limit set below
    monkeypatch.setenv("DFD_MAX_FRAME_PIXELS", str(64 * 64))
    scorer = VideoScorer(model, processor, limits=Limits(max_decoded_frames=500))
    good_alone = list(scorer.predict([good]))[0]
    results = list(scorer.predict([good, long, good, listing, good, large, good], num_windows=1))
    kinds = [VideoPrediction, VideoError] * 3 + [VideoPrediction]
    assert [type(result) for result in results] == kinds
    assert str(results[1]) == (
        f"{long}: the requested frames take decoding 600 frames, above the 500 frame limit (DFD_MAX_DECODED_FRAMES)"
    )
    assert str(results[3]) == f"{listing}: {FORMAT_REFUSED}"
    assert str(results[5]) == (
        f"{large}: frames of 128x128 (16,384 pixels) are above the limit of 4,096 pixels per frame "
        "(DFD_MAX_FRAME_PIXELS)"
    )
    for result in results[::2]:
        assert result.score == pytest.approx(good_alone.score, abs=1e-6)

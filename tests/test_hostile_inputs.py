"""The guarded URL fetcher: http(s) only, public addresses only, one deadline, a size cap."""

import io
import http.server
import socketserver
import threading
import time

import pytest
import torch

from conftest import numbered_frames, write_video

from dfd import fetching_dfd
from dfd.fetching_dfd import address_refusal, fetch
from dfd.probing_dfd import VideoDecodeError
from dfd.processing_dfd import DFDVideoProcessor
from dfd.settings_dfd import max_input_bytes


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

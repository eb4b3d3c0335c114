"""
The guarded URL fetcher (fetching_dfd.py): http(s) only, public addresses only, every redirect checked, a size cap,
and one deadline however a server stalls: real servers on 127.0.0.1, let through by the conftest patch.
"""

import http.server
import io
import os
import select
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time

import pytest
import torch

from conftest import REPO_ROOT, numbered_frames, python_fetching_from_loopback, write_video
from dfd.fetching_dfd import address_refusal, fetch
from dfd.inputs_dfd import Limits, video_file
from dfd.probing_dfd import VideoDecodeError
from dfd.processing_dfd import DFDVideoProcessor


# --- addresses -------------------------------------------------------------------------------------------------------


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
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_only_public_addresses_are_fetched_from(address, reason):
    assert address_refusal(address) == reason  # decided without connecting anywhere


# --- a server of routes: a file, redirects, an undeclared body --------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    """Routes of the test server: a file, redirects, a body of no declared size; every request is counted."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        route, _, argument = self.path.lstrip("/").partition("/")
        if route == "file":
            self._send(200, server.body)
        elif route == "redirect":  # /redirect/<target with | for />
            self._redirect(argument.replace("|", "/"))
        elif route == "chain":  # /chain/N: N + 1 redirects to the file
            hops = int(argument)
            self._redirect(f"/chain/{hops - 1}" if hops else "/file/")
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

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the fetcher hangs up on purpose at the size cap


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


def download(url, limit=10**9, deadline=30):
    file = io.BytesIO()

    def check_size(size):
        if size > limit:
            raise ValueError(f"{size} > {limit}")

    fetch(url, file, check_size, deadline=deadline)
    return file.getvalue()


def test_loopback_is_refused_before_connecting(server):
    for url in (f"{server.url}/file/", f"http://localhost:{server.server_address[1]}/file/"):
        with pytest.raises(ValueError, match=r"^cannot download: .* is a loopback address; only public addresses"):
            download(url)
    assert server.requests == []


def test_the_patched_fetcher_downloads_from_the_tests_own_server(server, loopback_fetches):
    assert download(f"{server.url}/file/") == server.body
    assert download(f"{server.url}/redirect/|file|") == server.body  # a redirect to the let-through address
    assert download(f"{server.url}/file/vidéo mp4") == server.body  # sent percent-encoded, as a browser does
    assert server.requests[-1] == "/file/vid%C3%A9o%20mp4"


def test_every_redirect_is_checked(server, loopback_fetches):
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


def test_downloads_stop_at_the_size_cap(server, loopback_fetches):
    with pytest.raises(ValueError, match=f"^{len(server.body)} > 1000$"):  # the declared size
        download(f"{server.url}/file/", limit=1000)
    with pytest.raises(ValueError, match=r"^\d+ > 100000$"):  # received so far, when nothing is declared
        download(f"{server.url}/undeclared/", limit=100_000)


def test_the_input_gate_refuses_loopback_urls_naming_them(server):
    url = f"{server.url}/file/"
    with pytest.raises(VideoDecodeError) as raised, video_file(url):
        pass
    assert str(raised.value) == (
        f"{url}: cannot download: 127.0.0.1 is a loopback address; only public addresses are fetched"
    )
    assert server.requests == []


def test_the_input_gate_fetches_urls_within_the_size_cap(server, loopback_fetches):
    url = f"{server.url}/file/"
    with video_file(url) as path:
        with open(path, "rb") as file:
            assert file.read() == server.body
    assert not os.path.exists(path)  # the download is deleted once used
    with pytest.raises(VideoDecodeError) as raised, video_file(url, limits=Limits(max_input_bytes=1000)):
        pass
    assert str(raised.value) == (
        f"{url}: the video is {len(server.body):,} bytes, above the 1,000 byte limit (DFD_MAX_INPUT_BYTES)"
    )


def test_the_processor_reads_a_url_as_the_same_bytes(server, loopback_fetches):
    processor = DFDVideoProcessor()
    expected = processor(server.body, return_tensors="pt")["pixel_values"]
    assert torch.equal(processor(f"{server.url}/file/", return_tensors="pt")["pixel_values"], expected)


# --- one deadline, however a server stalls ---------------------------------------------------------------------------

DEADLINE = 1  # DFD_DOWNLOAD_SECONDS in these tests
SLACK = 3  # generous: the 2-core CI machine may be busy; a fetcher that is not cut off runs for DRIP_SECONDS * 60
DRIP_SECONDS = 0.25  # between two bytes: every read gets one long before any timeout per read could fire
DRIP = 60  # bytes a dripping server sends before it hangs up itself, after 15 s

DRIPS = {  # (sent at once, then dripped a byte at a time)
    "Content-Length body": (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b"x" * DRIP),
    "chunked body": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"1\r\nx\r\n" * (DRIP // 6)),
    "close-delimited body": (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b"x" * DRIP),
    "HTTP/1.0 body": (b"HTTP/1.0 200 OK\r\nContent-Type: video/mp4\r\n\r\n", b"x" * DRIP),
    "status line": (b"", b"HTTP/1.1 200 " + b"O" * (DRIP - 13)),
    "headers": (b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"y" * (DRIP - 8)),
    "silence": (b"", b""),  # reads the request and says nothing
}


class DripServer:
    """
    A server on 127.0.0.1 for one connection: it reads the request, sends `head`, then `drip` a byte every
    DRIP_SECONDS, then waits as long again; `hung_up` is set when the client closes the connection.
    `tls`: a server SSLContext, to speak HTTPS.
    """

    def __init__(self, head: bytes, drip: bytes, tls: ssl.SSLContext | None = None):
        self.head, self.drip, self.tls = head, drip, tls
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.hung_up = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        connection, _ = self.listener.accept()
        try:
            if self.tls is not None:
                connection = self.tls.wrap_socket(connection, server_side=True)
            request = b""
            while b"\r\n\r\n" not in request:
                if not (data := connection.recv(65536)):
                    raise ConnectionResetError
                request += data
            connection.sendall(self.head)
            for byte in self.drip:
                connection.sendall(bytes([byte]))
                self._wait(connection, DRIP_SECONDS)
            self._wait(connection, DRIP_SECONDS * DRIP)
        except OSError:  # recv gave nothing, or a send was reset: the client hung up
            self.hung_up.set()
        finally:
            connection.close()

    @staticmethod
    def _wait(connection, seconds):
        """Wait `seconds`; OSError as soon as the client hangs up."""
        readable, _, _ = select.select([connection], [], [], seconds)
        if readable and not connection.recv(1):
            raise ConnectionResetError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.thread.join(DRIP_SECONDS * DRIP * 2)
        self.listener.close()


def open_sockets() -> set[str]:
    """The process's open sockets ("socket:[inode]")."""
    targets = set()
    for descriptor in os.listdir("/proc/self/fd"):
        try:
            targets.add(os.readlink(f"/proc/self/fd/{descriptor}"))
        except OSError:  # the listing's own descriptor, closed since
            pass
    return {target for target in targets if target.startswith("socket:")}


def assert_cut_off_at_the_deadline(url: str, server: DripServer):
    """The fetch of `url` ends at the deadline with its one line, the server sees it hang up, nothing is left open."""
    threads, sockets = set(threading.enumerate()), open_sockets()
    start = time.monotonic()
    with pytest.raises(ValueError) as raised:
        fetch(url, io.BytesIO(), lambda size: None)
    stopped = time.monotonic() - start
    assert str(raised.value) == f"cannot download: took longer than {DEADLINE} s (DFD_DOWNLOAD_SECONDS)"
    assert DEADLINE <= stopped < DEADLINE + SLACK
    assert server.hung_up.wait(SLACK), "the server still sends: the download was not stopped"
    server.thread.join(SLACK)  # it closes its side
    assert open_sockets() <= sockets  # the fetcher's socket is closed
    assert set(threading.enumerate()) <= threads  # and no thread of the fetcher is left behind


@pytest.fixture
def deadline(monkeypatch, loopback_fetches):
    monkeypatch.setenv("DFD_DOWNLOAD_SECONDS", str(DEADLINE))


@pytest.mark.parametrize("kind", list(DRIPS))
def test_a_dripping_server_is_cut_off_at_the_deadline(kind, deadline):
    with DripServer(*DRIPS[kind]) as server:
        assert_cut_off_at_the_deadline(f"http://127.0.0.1:{server.port}/video.mp4", server)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, made by openssl's command line: (certificate file, key file)."""
    folder = tmp_path_factory.mktemp("tls")
    certificate, key = folder / "certificate.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        + ["-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
    )
    return certificate, key


@pytest.fixture
def tls_server(certificate, monkeypatch):
    """A server SSLContext with the certificate, which the fetcher trusts (SSL_CERT_FILE) in this test."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    return context


def test_https_checks_the_certificate_against_the_urls_host(tls_server, loopback_fetches, monkeypatch):
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nvideo"
    with DripServer(answer, b"", tls=tls_server) as server:
        assert download(f"https://127.0.0.1:{server.port}/video.mp4") == b"video"
    monkeypatch.delenv("SSL_CERT_FILE")  # the system's authorities, which never signed it
    with DripServer(answer, b"", tls=tls_server) as server:
        refused = r"^cannot download: \[SSL: CERTIFICATE_VERIFY_FAILED\] certificate verify failed: self-signed"
        with pytest.raises(ValueError, match=refused):
            download(f"https://127.0.0.1:{server.port}/video.mp4")


def test_a_silent_https_server_is_cut_off_in_the_handshake(deadline):
    with DripServer(*DRIPS["silence"]) as server:  # a TCP server that never answers the TLS hello
        assert_cut_off_at_the_deadline(f"https://127.0.0.1:{server.port}/video.mp4", server)


@pytest.mark.parametrize("kind", ["Content-Length body", "close-delimited body", "headers"])
def test_a_dripping_https_server_is_cut_off_at_the_deadline(kind, tls_server, deadline):
    with DripServer(*DRIPS[kind], tls=tls_server) as server:
        assert_cut_off_at_the_deadline(f"https://127.0.0.1:{server.port}/video.mp4", server)


def test_a_host_lookup_that_hangs_is_cut_off_at_the_deadline(deadline, monkeypatch):
    answered = threading.Event()
    # DNS is the one edge these tests cannot reach: a resolver that takes 30 s.
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answered.wait(30) and [])
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"^cannot download: took longer than 1 s \(DFD_DOWNLOAD_SECONDS\)$"):
        fetch("http://videos.example/clip.mp4", io.BytesIO(), lambda size: None)
    assert DEADLINE <= time.monotonic() - start < DEADLINE + SLACK
    answered.set()


# --- server processes that fetch from a test's own server -------------------------------------------------------------


def test_the_conftest_helper_patches_every_fetcher_a_process_imports(server, tmp_path):
    """`python_fetching_from_loopback` lets 127.0.0.1 through in `dfd.fetching_dfd` and in a model folder's copy."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "__init__.py").touch()
    for name in ("fetching_dfd.py", "settings_dfd.py"):
        shutil.copy(REPO_ROOT / name, folder / name)
    count = "import io, sys; file = io.BytesIO(); fetch(sys.argv[1], file, lambda size: None); print(file.tell())"
    (tmp_path / "package_fetch.py").write_text(f"from dfd.fetching_dfd import fetch\n{count}\n")
    copy_fetch = f"from model.fetching_dfd import fetch; {count}"
    url = f"{server.url}/file/"
    commands = {
        "-m": python_fetching_from_loopback("-m", "package_fetch", url),
        "-c": python_fetching_from_loopback("-c", copy_fetch, url),
    }
    for option, command in commands.items():
        run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert run.stdout == f"{len(server.body)}\n", (option, run.stderr)
    plain = subprocess.run([sys.executable, "-c", copy_fetch, url], cwd=tmp_path, capture_output=True, text=True)
    assert "ValueError: cannot download: 127.0.0.1 is a loopback address" in plain.stderr

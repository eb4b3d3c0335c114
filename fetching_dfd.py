"""The one fetcher of videos given by URL, which the input gate (inputs_dfd.py) calls for every surface.

A URL in a request is hostile: it may point at the server's own network (loopback, a cloud metadata address, a
private range), redirect there, or drip bytes forever. So only http(s) is fetched, every address a host resolves to is
checked and the connection goes to that checked address (no second lookup a DNS answer could change in between),
redirects are followed by hand and each hop is checked alike, and the whole download has one deadline and a size cap.
"""

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from contextlib import closing
from urllib.parse import quote, urljoin, urlsplit

from .settings_dfd import DOWNLOAD_SECONDS, download_seconds


MAX_REDIRECTS = 5
URL_SCHEMES = ("http://", "https://")

_NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
_PRINTABLE = "".join(map(chr, range(0x21, 0x7F)))  # kept as they are in a request target; the rest percent-encoded


def is_url(video) -> bool:
    return isinstance(video, str) and video.lower().startswith(URL_SCHEMES)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, compatible, 6to4, Teredo, NAT64), which is where it leads."""
    if address.ipv4_mapped or address.sixtofour:
        return address.ipv4_mapped or address.sixtofour
    if address.teredo:
        return address.teredo[1]
    if (address.packed[:12] == bytes(12) and int(address) > 1) or address in _NAT64_PREFIX:  # not :: or ::1
        return ipaddress.IPv4Address(address.packed[12:])
    return None


def address_refusal(address: str) -> str | None:
    """Why a connection to the IP `address` is refused (e.g. "loopback"), or `None` for a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # without an IPv6 zone ("fe80::1%eth0")
    for candidate in (_embedded_ipv4(ip) if ip.version == 6 else None, ip):  # where it leads first
        if candidate is None:
            continue
        for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
            if getattr(candidate, f"is_{kind}"):
                return kind.replace("_", "-")
        if not candidate.is_global:  # e.g. shared address space (100.64.0.0/10)
            return "non-public"
    return None


class _Deadline:
    """One deadline for a whole download: the host lookups, connections, TLS handshakes, every read and redirect."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() >= self.end

    def remaining(self) -> float:
        """Seconds left; TimeoutError once there are none."""
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no time left")
        return remaining

    def error(self) -> ValueError:
        return ValueError(f"cannot download: took longer than {self.seconds:g} s ({DOWNLOAD_SECONDS})")


class _DeadlineBound:
    """
    A socket whose every wait (each read, each send) ends at the download's deadline. A timeout per read would not do:
    a server that sends a byte now and then restarts it forever, whatever its framing. http.client reads the status
    line, the headers and any body through `recv_into` of this socket, whichever object holds it by then (the response
    takes it over from the connection when the server will close), so no read escapes the deadline.
    """

    deadline: _Deadline

    def recv_into(self, *args):
        self.settimeout(self.deadline.remaining())
        return super().recv_into(*args)

    def sendall(self, *args):
        self.settimeout(self.deadline.remaining())
        return super().sendall(*args)


class _DeadlineSocket(_DeadlineBound, socket.socket):
    pass


class _DeadlineSSLSocket(_DeadlineBound, ssl.SSLSocket):
    """The TLS socket over a `_DeadlineSocket`; the handshake itself is bounded by the timeout it starts with."""


def _resolve(host: str, port: int, deadline: _Deadline) -> list[tuple]:
    """
    `socket.getaddrinfo`, waited for until the deadline. It has no timeout of its own, so it runs in a daemon thread:
    a lookup that outlasts the deadline is left to finish on its own and does not hold the process at exit.
    """
    answer = []

    def lookup():
        try:
            answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except Exception as error:  # handed to the caller, as gaierror, UnicodeError (an invalid name)...
            answer.append(error)

    thread = threading.Thread(target=lookup, name="dfd-resolve", daemon=True)
    thread.start()
    thread.join(deadline.remaining())
    if not answer:
        raise TimeoutError(f"resolving {host}")
    if isinstance(answer[0], Exception):
        reason = getattr(answer[0], "strerror", None) or answer[0]
        raise ValueError(f"cannot download: cannot resolve {host} ({reason})")
    return answer[0]


def _public_addresses(host: str, port: int, deadline: _Deadline) -> list[tuple]:
    """Every address `host` resolves to, refused as a whole when any of them is not public."""
    found = _resolve(host, port, deadline)
    for *_, sockaddr in found:
        reason = address_refusal(sockaddr[0])
        if reason is not None:
            shown = host if host == sockaddr[0] else f"{host} ({sockaddr[0]})"
            raise ValueError(f"cannot download: {shown} is a {reason} address; only public addresses are fetched")
    return [(family, sockaddr) for family, _, _, _, sockaddr in found]


def _connect(addresses: list[tuple], deadline: _Deadline) -> _DeadlineSocket:
    """A connection to the first of the checked `addresses` that answers."""
    error = None
    for family, sockaddr in addresses:
        sock = _DeadlineSocket(family, socket.SOCK_STREAM)
        sock.deadline = deadline
        try:
            sock.settimeout(deadline.remaining())
            sock.connect(sockaddr)
            return sock
        except OSError as failed:
            sock.close()
            error = failed
    raise error


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to an address checked beforehand; the Host header still names the URL's host."""

    def __init__(self, host: str, port: int, addresses: list[tuple], deadline: _Deadline):
        super().__init__(host, port)
        self.addresses = addresses
        self.deadline = deadline

    def connect(self):
        self.sock = _connect(self.addresses, self.deadline)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address checked beforehand; SNI and the certificate check use the URL's host name."""

    def __init__(self, host: str, port: int, addresses: list[tuple], deadline: _Deadline):
        context = ssl.create_default_context()
        context.sslsocket_class = _DeadlineSSLSocket
        super().__init__(host, port, context=context)
        self.addresses = addresses
        self.deadline = deadline

    def connect(self):
        sock = _connect(self.addresses, self.deadline)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        finally:
            sock.close()  # nothing once wrapped: the TLS socket took the connection over
        self.sock.deadline = self.deadline


def _connection(parts, deadline: _Deadline) -> http.client.HTTPConnection:
    """A connection (not yet open) to the host of the split URL `parts`, at an address checked to be public."""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"cannot download: invalid port in {parts.geturl()}") from None
    if not parts.hostname:
        raise ValueError(f"cannot download: no host in {parts.geturl()}")
    addresses = _public_addresses(parts.hostname, port, deadline)
    kind = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
    return kind(parts.hostname, port, addresses, deadline)


def _save(response: http.client.HTTPResponse, file, check_size: Callable[[int], None]) -> None:
    declared = response.getheader("Content-Length")
    if declared is not None and declared.strip().isdigit():
        check_size(int(declared))
    received = 0
    while chunk := response.read1(1 << 20):
        received += len(chunk)
        check_size(received)
        file.write(chunk)
    if response.length:  # the server hung up before sending all it declared
        raise ValueError(f"cannot download: the connection closed after {received:,} bytes")
    file.flush()


def _get(url: str, file, check_size: Callable[[int], None], deadline: _Deadline) -> str | None:
    """Download `url` into `file` (None), or the URL it redirects to; the connection is closed either way."""
    parts = urlsplit(url)
    target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe=_PRINTABLE)
    with closing(_connection(parts, deadline)) as connection:
        connection.request("GET", target, headers={"Accept-Encoding": "identity", "User-Agent": "dfd"})
        with connection.getresponse() as response:
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise ValueError(f"cannot download: HTTP {response.status} redirect without a Location")
                return urljoin(url, location.strip())
            if response.status != 200:
                raise ValueError(f"cannot download: HTTP {response.status} {response.reason}")
            _save(response, file, check_size)
    return None


def fetch(url: str, file, check_size: Callable[[int], None], deadline: float | None = None) -> None:
    """
    Stream an http(s) `url` into the binary `file`. `check_size(bytes)` is called with the declared and the received
    size and raises to stop a download that grows too large. `deadline`: seconds for the whole download (default
    `download_seconds()`). A refused or failed download raises ValueError saying why, on one line.
    """
    if not is_url(url):
        raise ValueError("not an http(s) URL")
    deadline = _Deadline(download_seconds() if deadline is None else deadline)
    try:
        for _ in range(MAX_REDIRECTS + 1):
            url = _get(url, file, check_size, deadline)
            if url is None:
                return
            if not is_url(url):
                raise ValueError(f"cannot download: redirected to {url}, which is not an http(s) URL")
    except (OSError, http.client.HTTPException, ValueError) as error:
        if deadline.passed() or isinstance(error, TimeoutError):  # every wait is bounded by the time left
            raise deadline.error() from None
        if isinstance(error, (OSError, http.client.HTTPException)):  # unreachable hosts, TLS errors, hang-ups...
            raise ValueError(f"cannot download: {' '.join(str(error).split())}") from None  # on one line
        raise
    raise ValueError(f"cannot download: more than {MAX_REDIRECTS} redirects")


__all__ = ["address_refusal", "fetch", "is_url"]

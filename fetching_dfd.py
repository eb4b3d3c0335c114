"""The one fetcher of videos given by URL, which the input gate (inputs_dfd.py) calls for every surface.

A URL in a request is hostile: it may point at the server's own network (loopback, a cloud metadata address, a
private range), redirect there, or drip bytes forever. So only http(s) is fetched, every address a host resolves to is
checked and the connection goes to that checked address (no second lookup a DNS answer could change in between),
redirects are followed by hand and each hop is checked alike, and the whole download has one deadline and a size cap.
"""

import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import urljoin, urlsplit

from .settings_dfd import DOWNLOAD_SECONDS, download_seconds


MAX_REDIRECTS = 5
URL_SCHEMES = ("http://", "https://")

TEST_ALLOWED_ADDRESSES: frozenset[str] = frozenset()
"""For tests only: addresses fetched from despite the rules (a test's own server on 127.0.0.1). Nothing a request or
the environment sends can change it; only code running in the process can."""

_NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")


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
    if address in TEST_ALLOWED_ADDRESSES:
        return None
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


def _public_addresses(host: str, port: int, deadline: "_Deadline") -> list[tuple]:
    """Every address `host` resolves to, refused as a whole when any of them is not public."""
    # getaddrinfo has no timeout of its own: a lookup that outlasts the deadline is left to finish on its own.
    lookup = ThreadPoolExecutor(1, thread_name_prefix="dfd-resolve")
    try:
        found = lookup.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM).result(deadline.remaining())
    except TimeoutError:
        raise deadline.error() from None
    except (socket.gaierror, UnicodeError) as error:
        raise ValueError(f"cannot download: cannot resolve {host} ({getattr(error, 'strerror', None) or error})")
    finally:
        lookup.shutdown(wait=False)
    for *_, sockaddr in found:
        reason = address_refusal(sockaddr[0])
        if reason is not None:
            shown = host if host == sockaddr[0] else f"{host} ({sockaddr[0]})"
            raise ValueError(f"cannot download: {shown} is a {reason} address; only public addresses are fetched")
    return [(family, sockaddr) for family, _, _, _, sockaddr in found]


def _connect(addresses: list[tuple], timeout: float) -> socket.socket:
    """A connection to the first of the checked `addresses` that answers."""
    error = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock
        except OSError as failed:
            sock.close()
            error = failed
    raise error


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to an address checked beforehand; the Host header still names the URL's host."""

    def __init__(self, host, port, addresses, timeout):
        super().__init__(host, port, timeout=timeout)
        self.addresses = addresses

    def connect(self):
        self.sock = _connect(self.addresses, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address checked beforehand; SNI and the certificate check use the URL's host name."""

    def __init__(self, host, port, addresses, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.addresses = addresses

    def connect(self):
        self.sock = self._context.wrap_socket(_connect(self.addresses, self.timeout), server_hostname=self.host)


class _Deadline:
    """One deadline for a whole download: a watchdog shuts the socket down, which ends any read blocked on it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise self.error()
        return remaining

    def error(self) -> ValueError:
        return ValueError(f"cannot download: took longer than {self.seconds:g} s ({DOWNLOAD_SECONDS})")

    @contextmanager
    def watching(self, connection: http.client.HTTPConnection):
        def stop():
            if connection.sock is not None:
                try:
                    connection.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(self.remaining(), stop)
        watchdog.daemon = True
        watchdog.start()
        try:
            yield
        except (OSError, http.client.HTTPException, ValueError):
            if time.monotonic() >= self.end:
                raise self.error() from None
            raise
        finally:
            watchdog.cancel()
            connection.close()


def _open(url: str, deadline: _Deadline) -> http.client.HTTPConnection:
    """A connection to `url`'s host at a checked address, its request sent."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"cannot download: invalid port in {url}") from None
    if not parts.hostname:
        raise ValueError(f"cannot download: no host in {url}")
    addresses = _public_addresses(parts.hostname, port, deadline)
    kind = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
    connection = kind(parts.hostname, port, addresses, timeout=deadline.remaining())
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection.request("GET", target, headers={"Accept-Encoding": "identity", "User-Agent": "dfd"})
    return connection


def fetch(url: str, file, check_size: Callable[[int], None], deadline: float | None = None) -> None:
    """
    Stream an http(s) `url` into the binary `file`. `check_size(bytes)` is called with the declared and the received
    size and raises to stop a download that grows too large. `deadline`: seconds for the whole download (default
    `download_seconds()`). A refused or failed download raises ValueError saying why, on one line.
    """
    if not is_url(url):
        raise ValueError("not an http(s) URL")
    deadline = _Deadline(download_seconds() if deadline is None else deadline)
    for _ in range(MAX_REDIRECTS + 1):
        try:
            connection = _open(url, deadline)
            with deadline.watching(connection):
                response = connection.getresponse()
                if response.status in (301, 302, 303, 307, 308):
                    location = response.getheader("Location")
                    if not location:
                        raise ValueError(f"cannot download: HTTP {response.status} redirect without a Location")
                    url = urljoin(url, location.strip())
                    if not is_url(url):
                        raise ValueError(f"cannot download: redirected to {url}, which is not an http(s) URL")
                    continue
                if response.status != 200:
                    raise ValueError(f"cannot download: HTTP {response.status} {response.reason}")
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
                return
        except (OSError, http.client.HTTPException) as error:  # unreachable hosts, TLS errors, dropped connections
            raise ValueError(f"cannot download: {getattr(error, 'reason', None) or error}") from None
    raise ValueError(f"cannot download: more than {MAX_REDIRECTS} redirects")


__all__ = ["address_refusal", "fetch", "is_url"]

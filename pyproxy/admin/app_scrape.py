"""Fetching the app's metrics for the merged endpoint: one plain HTTP/1.0 GET in trio, bounded.

Bounded in time (``timeout``: connect + the whole answer) and size (``max_bytes``), so a slow or huge app
answer costs the proxy one waiting task and a bounded buffer, never its event loop: the read is trio I/O like
any connection's. Errors are :class:`ScrapeError` with a one-line reason (the merged endpoint then serves the
proxy's metrics alone and counts the failure, as Istio's agent does).

HTTP/1.0 with ``connection: close``: the answer ends at EOF, with no chunked encoding to undo (prometheus_client's
server and Go's net/http both answer a 1.0 request that way).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

DEFAULT_TIMEOUT = 2.0
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
ACCEPT = "text/plain;version=0.0.4;q=1.0,*/*;q=0.1"


class ScrapeError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class AppMetricsUrl:
    host: str
    port: int
    path: str  # with the query, if any

    @classmethod
    def parse(cls, text: str) -> AppMetricsUrl:
        """``http://HOST:PORT/PATH`` (``[v6]`` hosts too); ValueError with the reason otherwise."""
        url = urlsplit(text)
        if url.scheme != "http":
            raise ValueError(f"{text!r}: only http:// URLs are supported")
        try:
            port = url.port
        except ValueError:
            raise ValueError(f"{text!r}: invalid port") from None
        if not url.hostname or port is None:
            raise ValueError(f"{text!r}: expected http://HOST:PORT/PATH")
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        return cls(url.hostname, port, path)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"


async def fetch(url: AppMetricsUrl, *, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """The body of ``GET url`` (status 200 only), decoded as UTF-8."""
    with trio.move_on_after(timeout) as scope:
        data = await _exchange(url, max_bytes)
    if scope.cancelled_caught:
        raise ScrapeError(f"{url}: no complete answer within {timeout:g}s")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ScrapeError(f"{url}: the answer has no HTTP header block")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ScrapeError(f"{url}: not an HTTP answer ({status_line[:60]!r})")
    if parts[1] != "200":
        raise ScrapeError(f"{url}: status {' '.join(parts[1:])}")
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "transfer-encoding" and value.strip().lower() != "identity":
            raise ScrapeError(f"{url}: transfer-encoding {value.strip()} in an HTTP/1.0 answer")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise ScrapeError(f"{url}: the body is not UTF-8") from None


async def _exchange(url: AppMetricsUrl, max_bytes: int) -> bytes:
    try:
        stream = await trio.open_tcp_stream(url.host, url.port)
    except OSError as e:
        raise ScrapeError(f"{url}: cannot connect: {e.strerror or e}") from None
    async with stream:
        host = f"[{url.host}]" if ":" in url.host else url.host
        request = (f"GET {url.path} HTTP/1.0\r\nhost: {host}:{url.port}\r\naccept: {ACCEPT}\r\n"
                   "user-agent: pyproxy-metrics-merge\r\nconnection: close\r\n\r\n")
        chunks: list[bytes] = []
        size = 0
        try:
            await stream.send_all(request.encode("latin-1"))
            while chunk := await stream.receive_some(65536):
                size += len(chunk)
                if size > max_bytes:
                    raise ScrapeError(f"{url}: the answer is over {max_bytes} bytes")
                chunks.append(chunk)
        except (trio.BrokenResourceError, OSError) as e:
            raise ScrapeError(f"{url}: connection failed: {e}") from None
        return b"".join(chunks)

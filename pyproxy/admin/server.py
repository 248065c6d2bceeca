"""The admin API (HTTP/1.1, like Envoy's): /ready, /server_info, /config_dump, /clusters, /listeners,
/stats, /stats/prometheus, /certs, /quitquitquit.

Small on purpose: one task per admin connection, requests read with a size limit and a timeout, responses
with ``connection: close``. Never on the request path of proxied traffic.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import trio

from pyproxy.admin import dumps

if TYPE_CHECKING:
    from pyproxy.admin.merged import MergedStats
    from pyproxy.proxy.runtime import Runtime

log = logging.getLogger("pyproxy.admin")

MAX_REQUEST = 16384
READ_TIMEOUT = 10.0
_REASONS = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            400: "Bad Request",
            500: "Internal Server Error", 503: "Service Unavailable"}

Response = tuple[int, str, bytes]


class AdminServer:
    """``token``: the credential the changing endpoints (any POST) need as ``Authorization: Bearer <token>``
    (None: open, as Envoy's admin is; Istio keeps Envoy's admin on the pod's localhost instead, which a laptop
    mesh on shared loopback addresses cannot). A POST from a browser page (an ``Origin`` header) is refused in
    any case. The read-only endpoints stay open, like Istio's 15090."""

    def __init__(self, runtime: Runtime, started_at: float, on_quit: Callable[[], None],
                 token: str | None = None) -> None:
        self.runtime = runtime
        self.started_at = started_at
        self.on_quit = on_quit
        self.token = token.encode() if token else None

    async def serve(self, host: str, port: int, *, prometheus_only: bool = False, merged: MergedStats | None = None,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the admin API on host:port; ``prometheus_only``: only /stats/prometheus (Istio's 15090);
        ``merged``: only /stats/prometheus, answered with the merged metrics (Istio's 15020)."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        kind = " (merged prometheus)" if merged is not None else " (prometheus)" if prometheus_only else ""
        log.info("admin%s on %s:%d", kind, host, bound)
        task_status.started(bound)

        async def handler(stream: trio.SocketStream) -> None:
            await self._handle(stream, prometheus_only or merged is not None, merged)

        await trio.serve_listeners(handler, listeners)

    async def _handle(self, stream: trio.SocketStream, prometheus_only: bool,
                      merged: MergedStats | None = None) -> None:
        try:
            with trio.move_on_after(READ_TIMEOUT):
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    data += chunk
                    if len(data) > MAX_REQUEST:
                        await self._send(stream, (400, "text/plain", b"request too large\n"))
                        return
                head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
                request_line = head.split("\r\n", 1)[0]
                parts = request_line.split(" ")
                if len(parts) != 3:
                    await self._send(stream, (400, "text/plain", b"bad request\n"))
                    return
                method, target, _ = parts
                headers = _headers(head)
                try:
                    refused = self.refuse(method, headers)
                    if refused is None and merged is not None and urlsplit(target).path == "/stats/prometheus":
                        response = 200, "text/plain; version=0.0.4", (await merged.render()).encode()
                    else:
                        response = refused or self.dispatch(method, target, prometheus_only)
                except Exception as e:
                    log.exception("admin %s %s failed", method, target)
                    response = (500, "text/plain", f"internal error: {e}\n".encode())
                await self._send(stream, response, head_only=method == "HEAD")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await stream.aclose()

    def refuse(self, method: str, headers: dict[str, str]) -> Response | None:
        """The answer to a changing request that may not go on (None: it may)."""
        if method in ("GET", "HEAD"):
            return None
        if "origin" in headers:
            log.warning("admin %s refused: a cross-origin request (Origin: %s)", method, headers["origin"])
            return 403, "text/plain", b"cross-origin requests are refused\n"
        if self.token is not None:
            scheme, _, value = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token):
                log.warning("admin %s refused: no or a wrong credential", method)
                return 401, "text/plain", b"this endpoint needs the mesh owner's credential (Authorization: Bearer)\n"
        return None

    async def _send(self, stream: trio.SocketStream, response: Response, head_only: bool = False) -> None:
        status, ctype, body = response
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\ncontent-type: {ctype}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode()
        await stream.send_all(head if head_only else head + body)

    def dispatch(self, method: str, target: str, prometheus_only: bool = False) -> Response:
        url = urlsplit(target)
        path = url.path
        query = parse_qs(url.query)
        rt = self.runtime
        if prometheus_only and path != "/stats/prometheus":
            return 404, "text/plain", b"only /stats/prometheus is served here\n"
        if path == "/ready":
            if rt.shutting_down:
                return 503, "text/plain", b"DRAINING\n"
            if not rt.ready.is_set():
                return 503, "text/plain", b"PRE_INITIALIZING\n"
            return 200, "text/plain", b"LIVE\n"
        if path == "/stats/prometheus":
            return 200, "text/plain; version=0.0.4", dumps.prometheus(rt).encode()
        if path == "/stats":
            if query.get("format") == ["prometheus"]:
                return 200, "text/plain; version=0.0.4", dumps.prometheus(rt).encode()
            if query.get("format") == ["json"]:
                return 200, "application/json", json.dumps(dumps.stats_json(rt), indent=2).encode()
            return 200, "text/plain", dumps.stats_text(rt).encode()
        if path == "/config_dump":
            dump = dumps.config_dump(rt, query.get("resource", [None])[0])
            return 200, "application/json", json.dumps(dump, indent=2).encode()
        if path == "/clusters":
            if query.get("format") == ["json"]:
                return 200, "application/json", json.dumps(dumps.clusters_json(rt), indent=2).encode()
            return 200, "text/plain", dumps.clusters_text(rt).encode()
        if path == "/listeners":
            if query.get("format") == ["json"]:
                return 200, "application/json", json.dumps(dumps.listeners_json(rt), indent=2).encode()
            return 200, "text/plain", dumps.listeners_text(rt).encode()
        if path == "/certs":
            return 200, "application/json", json.dumps(dumps.certs(rt), indent=2).encode()
        if path == "/server_info":
            info = dumps.server_info(rt, time.time() - self.started_at)
            return 200, "application/json", json.dumps(info, indent=2).encode()
        if path == "/quitquitquit":
            if method != "POST":
                return 405, "text/plain", b"use POST\n"
            self.on_quit()
            return 200, "text/plain", b"OK\n"
        if path in ("/", "/help"):
            return 200, "text/plain", dumps.HELP.encode()
        return 404, "text/plain", b"not found; see /help\n"


def _headers(head: str) -> dict[str, str]:
    """The request head's header fields, names lowercased (the last of repeated ones)."""
    out = {}
    for line in head.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out

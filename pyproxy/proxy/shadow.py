"""Request mirroring (``request_mirror_policies``): fire and forget.

A :class:`ShadowStream` sends a copy of the request to the mirror cluster with ``-shadow`` appended to the
host part of ``:authority`` (Envoy's behaviour), and throws the response away. It never affects the caller:
its failures are only counted, its response is acknowledged and dropped, and when the copy cannot keep up
(more than :data:`MAX_SHADOW_BUFFER` bytes waiting for the mirror's flow-control window) the copy is
abandoned rather than slowing the real request.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from pyproxy.http2.connection import StreamStateError
from pyproxy.http2.events import DataReceived, HeadersReceived
from pyproxy.http2.frames import ErrorCode
from pyproxy.http2.hpack import Header
from pyproxy.proxy.errors import ProxyError

if TYPE_CHECKING:
    from pyproxy.upstream.cluster import ClusterState, Host
    from pyproxy.upstream.connection import UpstreamConnection
    from pyproxy.upstream.interfaces import OutputCoalescing
    from pyproxy.upstream.pool import HostPool

MAX_SHADOW_BUFFER = 4 << 20


def shadow_authority(authority: bytes) -> bytes:
    """``payment:8080`` -> ``payment-shadow:8080`` (Envoy appends to the host, before the port)."""
    if authority.startswith(b"["):
        end = authority.find(b"]")
        return authority[:end + 1] + b"-shadow" + authority[end + 1:]
    host, sep, port = authority.rpartition(b":")
    if sep and port.isdigit():
        return host + b"-shadow:" + port
    return authority + b"-shadow"


class ShadowStream:
    __slots__ = ("buffered", "cluster", "done", "end_received", "end_sent", "headers", "host", "pending",
                 "pool", "runtime", "trailers", "up", "up_sid")

    def __init__(self, runtime: OutputCoalescing, cluster: ClusterState, host: Host, headers: list[Header]) -> None:
        self.runtime = runtime
        self.cluster = cluster
        self.host = host
        self.headers = headers
        self.pending: deque[bytes] = deque()
        self.buffered = 0
        self.end_received = False
        self.end_sent = False
        self.trailers: list[Header] | None = None
        self.up: UpstreamConnection | None = None
        self.up_sid = 0
        self.pool: HostPool | None = None
        self.done = False
        host.active_requests += 1
        cluster.stats.upstream_rq_total += 1
        cluster.stats.upstream_rq_active += 1

    # ---------------------------------------------------------------------------- fed by the real request

    def on_data(self, data: bytes, end_stream: bool) -> None:
        if self.done:
            return
        if data:
            self.pending.append(data)
            self.buffered += len(data)
        if end_stream:
            self.end_received = True
        if self.buffered > MAX_SHADOW_BUFFER:
            self._abandon()
            return
        self._pump()

    def on_trailers(self, trailers: list[Header]) -> None:
        if self.done:
            return
        self.trailers = trailers
        self.end_received = True
        self._pump()

    def cancel(self) -> None:
        """The real request was cancelled by its caller: Envoy cancels the shadow too."""
        self._abandon()

    # ---------------------------------------------------------------------------- upstream side

    def bind_upstream(self, conn: UpstreamConnection, sid: int) -> None:
        self.up = conn
        self.up_sid = sid
        end = self.end_received and not self.pending and self.trailers is None
        conn.engine.send_headers(sid, self.headers, end_stream=end)
        self.end_sent = end
        self._pump()

    def _pump(self) -> None:
        up = self.up
        if up is None or self.end_sent or self.done:
            return
        eng = up.engine
        sid = self.up_sid
        try:
            while self.pending:
                room = eng.max_send(sid)
                if room <= 0:
                    break
                chunk = self.pending[0]
                if len(chunk) <= room:
                    self.pending.popleft()
                    last = not self.pending and self.end_received and self.trailers is None
                    eng.send_data(sid, chunk, end_stream=last)
                    self.end_sent = last
                else:
                    eng.send_data(sid, chunk[:room])
                    self.pending[0] = chunk[room:]
                    room = 0
                self.buffered -= min(len(chunk), room) if room else len(chunk)
            if not self.pending and self.end_received and not self.end_sent:
                if self.trailers is not None:
                    eng.send_headers(sid, self.trailers, end_stream=True)
                else:
                    eng.send_data(sid, b"", end_stream=True)
                self.end_sent = True
        except StreamStateError:
            self._finish()
            return
        self.runtime.mark_dirty(up)

    def on_upstream_window(self) -> None:
        self._pump()

    def on_response_headers(self, ev: HeadersReceived) -> None:
        if ev.end_stream:
            self._finish()

    def on_response_data(self, ev: DataReceived) -> None:
        up = self.up
        if up is not None and ev.flow_controlled_length:
            up.engine.acknowledge_stream(ev.flow_controlled_length, self.up_sid)
            self.runtime.mark_dirty(up)
        if ev.end_stream:
            self._finish()

    def on_response_trailers(self, ev: HeadersReceived) -> None:
        self._finish()

    def on_upstream_reset(self, code: int, remote: bool) -> None:
        self._finish()

    def on_upstream_lost(self, reason: str) -> None:
        self.up = None
        self._finish()

    def on_upstream_failure(self, err: ProxyError) -> None:
        self.pool = None
        self._finish()

    def _abandon(self) -> None:
        if self.done:
            return
        up = self.up
        if up is not None and self.up_sid in up.engine.streams:
            up.engine.reset_stream(self.up_sid, ErrorCode.CANCEL)
            self.runtime.mark_dirty(up)
        if self.pool is not None:
            self.pool.cancel(self)
            self.pool = None
        self._finish()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.pending.clear()
        up = self.up
        if up is not None:
            if not self.end_sent and self.up_sid in up.engine.streams:
                up.engine.reset_stream(self.up_sid, ErrorCode.CANCEL)
                self.runtime.mark_dirty(up)
            up.stream_done(self.up_sid)
            self.up = None
        self.host.active_requests -= 1
        self.cluster.stats.upstream_rq_active -= 1

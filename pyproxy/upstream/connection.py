"""One multiplexed HTTP/2 connection to an upstream host, and how it is opened.

Many proxied streams share one connection (HAProxy's way); the pool opens another only when this one reaches
the peer's SETTINGS_MAX_CONCURRENT_STREAMS, was told to go away (GOAWAY), or failed.

Resource handling: :func:`connect` returns a connected (and, for TLS, handshaken and verified) transport or
raises :class:`ConnectError`; :meth:`UpstreamConnection.run` owns the transport from then on and closes it
when it returns. Error handling: every stream still on the connection when it ends is told why
(``on_upstream_lost``), so no caller is left hanging.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from typing import TYPE_CHECKING, Protocol

import trio

from pyproxy.config.model import Cluster, SocketAddress, TlsContext
from pyproxy.http2.connection import H2Connection, H2Settings
from pyproxy.http2.events import (
    INFORMATIONAL,
    RESPONSE,
    ConnectionTerminated,
    DataReceived,
    HeadersReceived,
    PingAcknowledged,
    StreamReset,
    WindowUpdated,
)
from pyproxy.http2.frames import ErrorCode
from pyproxy.io.transport import CLOSE_LINGER_TIMEOUT, TlsTransport, Transport, TransportClosed
from pyproxy.proxy.errors import grpc_to_http_status
from pyproxy.proxy.keepalive import Keepalive
from pyproxy.tls import identity_from_cert, san_matches

if TYPE_CHECKING:
    from pyproxy.upstream.interfaces import UpstreamConnectionRuntime


class UpstreamStreamOwner(Protocol):
    """What owns a stream on an upstream connection (a proxied request's attempt, a mirrored request) and is
    told, through these callbacks, everything that happens to it. The connection calls them from its read
    loop; the owner queues its output and the loop flushes it
    (:class:`~pyproxy.upstream.interfaces.OutputCoalescing`)."""

    def bind_upstream(self, conn: UpstreamConnection, sid: int) -> None:
        """The stream ``sid`` on ``conn`` is the owner's: send the request on it."""

    def on_response_headers(self, ev: HeadersReceived) -> None: ...

    def on_response_data(self, ev: DataReceived) -> None: ...

    def on_response_trailers(self, ev: HeadersReceived) -> None: ...

    def on_upstream_window(self) -> None:
        """The stream's or the connection's send window grew: there may be room for more request data."""

    def on_upstream_reset(self, code: int, remote: bool) -> None: ...

    def on_upstream_lost(self, reason: str) -> None:
        """The connection is gone (``reason`` is Envoy's transport failure reason) and the stream with it."""


class ConnectionCluster(Protocol):
    """The cluster an upstream connection belongs to, as the connection sees it: its configuration."""

    @property
    def config(self) -> Cluster: ...


class ConnectionHost(Protocol):
    """The host an upstream connection goes to, as the connection sees it: its address (for the log) and the
    per-host request counters it keeps (Envoy's host stats ``rq_total``, ``rq_success``, ``rq_error``)."""

    rq_total: int
    rq_success: int
    rq_error: int

    @property
    def address(self) -> SocketAddress: ...


class ConnectionPool(Protocol):
    """What an :class:`UpstreamConnection` reads of the pool that opened it
    (:class:`~pyproxy.upstream.pool.HostPool`) and tells it."""

    @property
    def cluster(self) -> ConnectionCluster: ...

    @property
    def host(self) -> ConnectionHost: ...

    def connection_idle(self, conn: UpstreamConnection) -> None: ...

    def connection_draining(self, conn: UpstreamConnection) -> None: ...

    def connection_closed(self, conn: UpstreamConnection) -> None: ...


class ConnectError(Exception):
    """Could not connect; the message is Envoy's "transport failure reason"."""


async def open_tcp(host: str, port: int, family: int = 0, source: str | None = None) -> socket.socket:
    """A connected non-blocking TCP socket with TCP_NODELAY (from ``source``'s IP when given)."""
    try:
        infos = await trio.socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ConnectError(f"DNS resolution failed for {host}: {e}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if source is not None:
            try:
                sock.bind((source, 0))
            except OSError as e:
                raise ConnectError(f"cannot bind source address {source}: {e.strerror}") from None
        err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            raise ConnectError(f"delayed connect error: {err} ({os.strerror(err)})")
        if err:
            await trio.lowlevel.wait_writable(sock)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise ConnectError(f"delayed connect error: {err} ({os.strerror(err)})")
    except BaseException:
        sock.close()
        raise
    return sock


async def connect(host: str, port: int, tls: TlsContext | None, ssl_context: ssl.SSLContext | None,
                  timeout: float, family: int = 0, source: str | None = None) -> Transport:
    """Connect (and handshake) within ``timeout`` seconds; raises ConnectError."""
    try:
        with trio.fail_after(timeout):
            sock = await open_tcp(host, port, family, source)
            if tls is None or ssl_context is None:
                return Transport(sock)
            transport = TlsTransport(sock, ssl_context, server_side=False, server_hostname=tls.sni or None)
            try:
                await transport.handshake()
            except BaseException:
                transport.close()
                raise
            identity = identity_from_cert(transport.peer_certificate())
            if not san_matches(tls.validation, identity):
                transport.close()
                raise ConnectError("TLS error: peer certificate SAN does not match "
                                   f"(got {', '.join(identity.uri_sans + identity.dns_sans) or 'none'})")
            if transport.alpn not in (None, "h2"):
                transport.close()
                raise ConnectError(f"upstream negotiated ALPN {transport.alpn!r}, not h2")
            return transport
    except trio.TooSlowError:
        raise ConnectError("connection timeout") from None
    except TransportClosed as e:
        raise ConnectError(str(e)) from None


def _is_error(ev: HeadersReceived) -> bool:
    """A response Envoy's host stats count in ``rq_error``: a 5xx, or a trailers-only gRPC reply whose
    grpc-status maps to one (Envoy's ``grpcToHttpStatus``, as outlier detection sees it)."""
    status = ev.status
    if status >= 500:
        return True
    if not ev.end_stream or status != 200:
        return False
    for name, value in ev.headers:
        if name == b"grpc-status":
            return value.isdigit() and grpc_to_http_status(int(value)) >= 500
    return False


class UpstreamConnection:
    """The client side of one HTTP/2 connection to an upstream host."""

    __slots__ = ("closing", "dirty", "engine", "keepalive", "local_address", "peer_principal", "pool", "runtime",
                 "streams", "streams_opened", "transport")

    def __init__(self, runtime: UpstreamConnectionRuntime, pool: ConnectionPool, transport: Transport,
                 settings: H2Settings) -> None:
        self.runtime = runtime
        self.pool = pool
        self.transport = transport
        transport.set_buffer_limit(pool.cluster.config.per_connection_buffer_limit_bytes)
        self.engine = H2Connection(client_side=True, settings=settings)
        self.engine.initiate_connection()  # preface first: streams may be opened before run() starts
        self.streams: dict[int, UpstreamStreamOwner] = {}
        self.dirty = False
        self.closing = False  # GOAWAY received or connection failing: no new streams
        self.peer_principal = identity_from_cert(transport.peer_certificate()).principal
        self.local_address = transport.local_address  # for %UPSTREAM_LOCAL_ADDRESS%
        self.streams_opened = 0
        h2 = pool.cluster.config.http2
        self.keepalive: Keepalive | None = None
        if h2.connection_keepalive_interval:
            self.keepalive = Keepalive(runtime, self.engine, lambda: runtime.mark_dirty(self), transport.close,
                                       h2.connection_keepalive_interval, h2.connection_keepalive_timeout,
                                       h2.connection_keepalive_interval_jitter)

    def flush(self) -> None:
        self.dirty = False
        data = self.engine.data_to_send()
        if data:
            self.transport.write(data)

    @property
    def available(self) -> bool:
        return not self.closing and self.engine.can_open_stream()

    def open_stream(self, stream: UpstreamStreamOwner) -> None:
        """Start ``stream`` on this connection (the caller checked :attr:`available`)."""
        sid = self.engine.get_next_stream_id()
        self.streams[sid] = stream
        self.streams_opened += 1
        self.pool.host.rq_total += 1
        limit = self.pool.cluster.config.max_requests_per_connection
        if limit and self.streams_opened >= limit:
            self.closing = True  # max_requests_per_connection: this connection takes no more streams
        stream.bind_upstream(self, sid)
        self.runtime.mark_dirty(self)

    def stream_done(self, sid: int) -> None:
        self.streams.pop(sid, None)
        if not self.streams:
            self.pool.connection_idle(self)

    async def run(self) -> None:
        """Read loop. Returns when the connection is gone; tells remaining streams why."""
        engine = self.engine
        runtime = self.runtime
        transport = self.transport
        runtime.mark_dirty(self)
        runtime.flush()
        reason = "connection termination"
        host = self.pool.host
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(transport.run_writer)
                try:
                    while True:
                        if transport.pending >= transport.high_water:
                            await transport.wait_drained()
                        data = await transport.receive()
                        if not data:
                            break
                        events = engine.receive_data(data)
                        if self.keepalive is not None:
                            self.keepalive.frame_received()
                        streams = self.streams
                        for ev in events:
                            t = type(ev)
                            if t is DataReceived:
                                # The connection's window comes back at once: a stream whose reader stalls
                                # holds only its own stream window, never the streams beside it (issue 9.3).
                                engine.acknowledge_connection(ev.flow_controlled_length)  # type: ignore[attr-defined]
                                s = streams.get(ev.stream_id)  # type: ignore[attr-defined]
                                if s is not None:
                                    s.on_response_data(ev)  # type: ignore[arg-type]
                            elif t is HeadersReceived:
                                s = streams.get(ev.stream_id)  # type: ignore[attr-defined]
                                if s is not None:
                                    kind = ev.kind  # type: ignore[attr-defined]
                                    if kind == RESPONSE:
                                        if _is_error(ev):  # type: ignore[arg-type]
                                            host.rq_error += 1
                                        else:
                                            host.rq_success += 1
                                        s.on_response_headers(ev)  # type: ignore[arg-type]
                                    elif kind != INFORMATIONAL:
                                        s.on_response_trailers(ev)  # type: ignore[arg-type]
                            elif t is WindowUpdated:
                                sid = ev.stream_id  # type: ignore[attr-defined]
                                if sid:
                                    s = streams.get(sid)
                                    if s is not None:
                                        s.on_upstream_window()
                                else:
                                    for s in list(streams.values()):
                                        s.on_upstream_window()
                            elif t is StreamReset:
                                s = streams.get(ev.stream_id)  # type: ignore[attr-defined]
                                if s is not None:
                                    s.on_upstream_reset(ev.error_code, ev.remote)  # type: ignore[attr-defined]
                            elif t is PingAcknowledged:
                                if self.keepalive is not None:
                                    self.keepalive.ping_acknowledged(ev.payload)  # type: ignore[attr-defined]
                            elif t is ConnectionTerminated:
                                self.closing = True
                                self.pool.connection_draining(self)
                                if ev.local:  # type: ignore[attr-defined]
                                    reason = "protocol error: " + ev.additional_data.decode(  # type: ignore[attr-defined]
                                        errors="replace")
                        runtime.mark_dirty(self)
                        runtime.flush()
                        if engine.closed:
                            break
                        if self.closing and not self.streams:
                            self.close_gracefully()  # and read on until the peer closes (lingering close)
                except TransportClosed as e:
                    reason = f"connection termination ({e})" if str(e) else reason
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            if self.keepalive is not None:
                self.keepalive.stop()
            self.runtime.log.debug("upstream connection to %s closed: %s", self.pool.host.address, reason)
            self.closing = True
            if not transport.closed and transport.pending and transport.broken is None:
                with trio.CancelScope(shield=True):
                    await transport.flush(CLOSE_LINGER_TIMEOUT)  # the GOAWAY / last frames we queued
            transport.close()
            self.pool.connection_closed(self)
            lost = list(self.streams.values())
            self.streams.clear()
            for s in lost:
                s.on_upstream_lost(reason)
            runtime.flush()

    def shutdown(self) -> None:
        """Graceful: GOAWAY; the read loop ends once the streams finished."""
        if not self.closing:
            self.closing = True
            self.engine.send_goaway(ErrorCode.NO_ERROR)
            self.runtime.mark_dirty(self)
        if not self.streams:
            self.close_gracefully()

    def close_gracefully(self) -> None:
        """What is queued (the GOAWAY, the last frames) goes out, then a FIN; the read loop goes on until the
        peer closes too (see :meth:`Transport.close_lingering`)."""
        self.flush()
        self.transport.close_lingering(self.runtime.timers.call_later)

"""Accepting connections: listeners, filter chain selection, TLS termination, the downstream read loop.

Flow per connection: accept -> (tls_inspector) peek at the first bytes -> pick the filter chain the way Envoy
does (destination port, server names, transport protocol, application protocols; most specific wins) ->
TLS handshake when the chain has a transport socket (peer certificate verified, SANs matched) -> HTTP/2
server engine -> one :class:`~pyproxy.proxy.stream.ProxyStream` per request.

Resource handling: each connection runs in its own task in the runtime's nursery and closes its transport
when it returns; streams still open are told the downstream went away (their upstream streams are reset).
Error handling: protocol errors are answered by the engine (GOAWAY / RST_STREAM); socket and TLS errors end
the connection; nothing here raises into the listener's accept loop.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
from typing import TYPE_CHECKING

import trio

from pyproxy.config.model import FilterChain, Listener
from pyproxy.http2.connection import H2Connection
from pyproxy.http2.events import (
    REQUEST,
    TRAILERS,
    ConnectionTerminated,
    DataReceived,
    HeaderListTooLarge,
    HeadersReceived,
    PingAcknowledged,
    StreamReset,
    WindowUpdated,
)
from pyproxy.http2.frames import PREFACE, ErrorCode
from pyproxy.io.sniff import ClientHelloInfo, client_hello_complete, looks_like_tls, parse_client_hello
from pyproxy.io.transport import PrefixedTransport, TlsTransport, Transport, TransportClosed
from pyproxy.proxy.keepalive import Keepalive
from pyproxy.proxy.stream import ProxyStream
from pyproxy.tls import PeerIdentity, identity_from_cert, san_matches

if TYPE_CHECKING:
    from pyproxy.proxy.context import ChainContext
    from pyproxy.proxy.interfaces import ListenerRuntime
    from pyproxy.stats import ListenerCounters
    from pyproxy.timers import TimerHandle

log = logging.getLogger("pyproxy.downstream")

_HTTP1_REPLY = (b"HTTP/1.1 505 HTTP Version Not Supported\r\ncontent-type: text/plain\r\nconnection: close\r\n"
                b"content-length: 39\r\n\r\npyproxy serves HTTP/2 only (h2 or h2c)\n")


class DownstreamConnection:
    transport: Transport
    requested_server_name: str | None
    peer: PeerIdentity
    peer_address: tuple[str, int]
    __slots__ = ("ctx", "dirty", "draining", "duration_timer", "engine", "got_data", "header_timer", "idle_since",
                 "idle_timer", "keepalive", "local_port", "peer", "peer_address", "requested_server_name", "runtime",
                 "streams", "transport")

    def __init__(self, ctx: ChainContext, transport: Transport, peer: PeerIdentity,
                 requested_server_name: str | None = None, created: float | None = None) -> None:
        """``created``: when the connection was created (its filter chain chosen, before a TLS handshake), the
        start of the HCM's idle and max-duration timers; now when not given."""
        self.ctx = ctx
        # The SNI, when a listener filter read the ClientHello (%REQUESTED_SERVER_NAME%).
        self.requested_server_name: str | None = requested_server_name
        self.runtime = ctx.runtime
        self.transport = transport
        transport.set_buffer_limit(ctx.buffer_limit)
        self.peer = peer
        self.peer_address = transport.peer_address
        self.local_port = transport.local_address[1]
        self.engine = H2Connection(client_side=False, settings=ctx.h2_settings)
        self.streams: dict[int, ProxyStream] = {}
        self.dirty = False
        self.draining = False
        # Connection timers, as Envoy's connection manager runs them: idle_timeout (no active stream for that
        # long) and max_connection_duration, both from the connection's creation. The idle timer is lazy: a
        # stream ending only records the time (no timer per request); the timer, when it fires, re-arms itself
        # for the time left, or does nothing while streams are active (stream_done re-arms it then).
        if created is None:
            created = trio.current_time()
        hcm = ctx.hcm
        timers = ctx.runtime.timers
        self.got_data = False  # Envoy creates its codec on the first bytes: before them a timeout just closes
        self.idle_since = created
        self.idle_timer: TimerHandle | None = None
        if hcm.idle_timeout is not None:
            self.idle_timer = timers.call_at(created + hcm.idle_timeout, self._on_idle_timer)
        self.header_timer: TimerHandle | None = None  # request_headers_timeout, while a header block arrives
        self.duration_timer: TimerHandle | None = None
        if hcm.max_connection_duration is not None:
            self.duration_timer = timers.call_at(created + hcm.max_connection_duration, self._on_max_duration)
        h2 = hcm.http2
        self.keepalive: Keepalive | None = None
        if h2.connection_keepalive_interval:
            self.keepalive = Keepalive(self.runtime, self.engine, lambda: self.runtime.mark_dirty(self),
                                       transport.close, h2.connection_keepalive_interval,
                                       h2.connection_keepalive_timeout, h2.connection_keepalive_interval_jitter)

    def flush(self) -> None:
        self.dirty = False
        data = self.engine.data_to_send()
        if data:
            self.transport.write(data)

    def stream_done(self, sid: int) -> None:
        streams = self.streams
        streams.pop(sid, None)
        if not streams:
            idle = self.ctx.hcm.idle_timeout
            if idle is not None:
                self.idle_since = now = trio.current_time()
                if self.idle_timer is None and not self.transport.closed:
                    self.idle_timer = self.runtime.timers.call_at(now + idle, self._on_idle_timer)
            if self.draining and self.engine.goaway_sent_last_id != 2**31 - 1:
                self._close_gracefully()

    def _on_idle_timer(self) -> None:
        self.idle_timer = None
        idle = self.ctx.hcm.idle_timeout
        if self.streams or self.transport.closed or idle is None:
            return  # stream_done arms it again once the last stream ends
        deadline = self.idle_since + idle
        if trio.current_time() < deadline:
            self.idle_timer = self.runtime.timers.call_at(deadline, self._on_idle_timer)
            return
        log.debug("downstream %s: idle timeout", self.peer_address)
        self.ctx.hcm_counters.downstream_cx_idle_timeout += 1
        self._end_by_timer()

    def _watch_header_block(self, timeout: float) -> None:
        """Envoy's request_headers_timeout: from the first byte of a request's header block to its last. In
        HTTP/2 nothing else may come from the client until its header block is complete (RFC 9113 6.10), and
        the block cannot be skipped without losing the HPACK state, so a client too slow with its headers
        loses the connection (GOAWAY), as a stream of its own would block the rest anyway."""
        if self.engine.header_block_pending:
            if self.header_timer is None:
                self.header_timer = self.runtime.timers.call_later(timeout, self._on_header_timeout)
        elif self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _on_header_timeout(self) -> None:
        self.header_timer = None
        if self.transport.closed or not self.engine.header_block_pending:
            return
        log.debug("downstream %s: request header timeout", self.peer_address)
        self.ctx.hcm_counters.downstream_rq_header_timeout += 1
        self.engine.send_goaway(ErrorCode.NO_ERROR, b"request header timeout")
        self.flush()
        self.transport.close_lingering(self.runtime.timers.call_later)

    def _on_max_duration(self) -> None:
        self.duration_timer = None
        if self.transport.closed:
            return
        log.debug("downstream %s: max connection duration reached", self.peer_address)
        self.ctx.hcm_counters.downstream_cx_max_duration_reached += 1
        self._end_by_timer()

    def _end_by_timer(self) -> None:
        """Envoy's onIdleTimeout / onConnectionDurationTimeout: a connection that never sent a byte (no codec
        yet) is closed at once (our SETTINGS already went out); otherwise the drain sequence (GOAWAY, then the
        final GOAWAY after drain_timeout, close once the streams are done)."""
        if not self.got_data:
            self.flush()
            self.transport.close()
        else:
            self.drain()

    def _close_gracefully(self) -> None:
        """The last stream of a draining connection is done: its response (still in the engine or the
        transport's queue) goes out first, then a FIN; the read loop goes on until the peer closes too (see
        :meth:`Transport.close_lingering`)."""
        self.flush()
        if self.engine.premature_reset_goaway:
            # A peer busy flooding us may take a while to read the GOAWAY: until then it sends streams that the
            # GOAWAY refused, and a close now (an RST, with its input unread) would lose the GOAWAY and fail the
            # other streams it relayed on this connection instead of having them retried. It has
            # drain_timeout in all (see _too_many_premature_resets).
            self.transport.close_lingering(self.runtime.timers.call_later, self.ctx.hcm.drain_timeout)
        else:
            self.transport.close_lingering(self.runtime.timers.call_later)

    def drain(self) -> None:
        """Graceful shutdown, as Envoy's connection manager does it: a GOAWAY with the maximum stream id
        (a "shutdown notice": streams already on their way are still accepted), then after ``drain_timeout``
        the final GOAWAY with the last stream id actually processed; close once the streams finished."""
        if self.draining:
            return
        self.draining = True
        self.engine.send_goaway(ErrorCode.NO_ERROR, last_stream_id=2**31 - 1)
        self.runtime.mark_dirty(self)
        self.runtime.flush()
        self.runtime.timers.call_later(self.ctx.hcm.drain_timeout, self._final_goaway)

    def _final_goaway(self) -> None:
        if self.transport.closed:
            return
        self.engine.send_goaway(ErrorCode.NO_ERROR)
        self.runtime.mark_dirty(self)
        self.runtime.flush()
        if not self.streams:
            self._close_gracefully()

    def _too_many_premature_resets(self) -> None:
        """The engine sent its rapid-reset GOAWAY (see ``H2Connection._premature_reset``): this connection,
        the one that made the resets, is closed once the streams it already had are done, within
        ``drain_timeout``; no new stream is accepted meanwhile."""
        self.runtime.stats.downstream_rq_too_many_premature_resets += 1
        log.warning("downstream %s: too many premature stream resets (HTTP/2 rapid reset): GOAWAY, closing",
                    self.peer_address)
        self.runtime.timers.call_later(self.ctx.hcm.drain_timeout, self._drain_expired)

    def _drain_expired(self) -> None:
        if not self.transport.closed:
            self.transport.close()

    async def run(self) -> None:
        engine = self.engine
        runtime = self.runtime
        transport = self.transport
        ctx = self.ctx
        streams = self.streams
        header_timeout = ctx.hcm.request_headers_timeout
        engine.initiate_connection()
        runtime.mark_dirty(self)
        runtime.flush()
        runtime.downstream_connections.add(self)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(transport.run_writer)
                try:
                    while True:
                        if transport.pending >= transport.high_water:
                            # The peer does not read what we send: stop reading what it sends.
                            await transport.wait_drained()
                        data = await transport.receive()
                        if not data:
                            break
                        self.got_data = True
                        if self.keepalive is not None:
                            self.keepalive.frame_received()
                        for ev in engine.receive_data(data):
                            t = type(ev)
                            if t is DataReceived:
                                # The connection's window comes back at once, the stream's once forwarded (see
                                # ProxyStream._ack_down): one stalled stream cannot starve the client's others.
                                engine.acknowledge_connection(ev.flow_controlled_length)  # type: ignore[attr-defined]
                                s = streams.get(ev.stream_id)  # type: ignore[attr-defined]
                                if s is not None:
                                    s.on_request_data(ev)  # type: ignore[arg-type]
                            elif t is HeadersReceived:
                                kind = ev.kind  # type: ignore[attr-defined]
                                if kind == REQUEST:
                                    s = ProxyStream(ctx, self,  # self: a StreamConnection, checked here
                                                    ev)  # type: ignore[arg-type]
                                    streams[ev.stream_id] = s  # type: ignore[attr-defined]
                                    s.start()
                                elif kind == TRAILERS:
                                    s = streams.get(ev.stream_id)  # type: ignore[attr-defined]
                                    if s is not None:
                                        s.on_request_trailers(ev)  # type: ignore[arg-type]
                            elif t is WindowUpdated:
                                sid = ev.stream_id  # type: ignore[attr-defined]
                                if sid:
                                    s = streams.get(sid)
                                    if s is not None:
                                        s.on_downstream_window()
                                else:
                                    for s in list(streams.values()):
                                        s.on_downstream_window()
                            elif t is StreamReset:
                                s = streams.get(ev.stream_id)  # type: ignore[attr-defined]
                                if s is not None:
                                    s.on_downstream_reset(ev.error_code)  # type: ignore[attr-defined]
                            elif t is HeaderListTooLarge:
                                sid = ev.stream_id  # type: ignore[attr-defined]
                                engine.send_headers(sid, [(b":status", b"431")], end_stream=True)
                                engine.reset_stream(sid, ErrorCode.NO_ERROR)
                            elif t is PingAcknowledged:
                                if self.keepalive is not None:
                                    self.keepalive.ping_acknowledged(ev.payload)  # type: ignore[attr-defined]
                            elif t is ConnectionTerminated:
                                if engine.premature_reset_goaway and not engine.closed:
                                    self._too_many_premature_resets()
                                elif ev.local:  # type: ignore[attr-defined]
                                    log.info("downstream %s: connection error: %s", self.peer_address,
                                             ev.additional_data.decode(errors="replace"))  # type: ignore[attr-defined]
                                self.draining = True
                        if header_timeout is not None:
                            self._watch_header_block(header_timeout)
                        runtime.mark_dirty(self)
                        runtime.flush()
                        if engine.closed:
                            break
                        if self.draining and not streams and engine.goaway_sent_last_id != 2**31 - 1:
                            self._close_gracefully()  # and read on until the peer closes (lingering close)
                except TransportClosed:
                    pass
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            if self.keepalive is not None:
                self.keepalive.stop()
            for timer in (self.idle_timer, self.duration_timer, self.header_timer):
                if timer is not None:
                    timer.cancel()
            self.idle_timer = self.duration_timer = self.header_timer = None
            runtime.downstream_connections.discard(self)
            lost = list(streams.values())
            streams.clear()
            for s in lost:
                s.on_downstream_lost()
            runtime.flush()
            if not transport.closed and transport.pending:
                with trio.CancelScope(shield=True):
                    await transport.flush(1.0)
            transport.close()


# ------------------------------------------------------------------------------------------- listeners


def select_filter_chain(listener: Listener, port: int, is_tls: bool,
                        hello: ClientHelloInfo | None) -> FilterChain | None:
    """Envoy's filter chain match: for each criterion, specific matches beat wildcards."""
    candidates = list(listener.filter_chains)
    transport = "tls" if is_tls else "raw_buffer"
    sni = hello.server_name if hello else None
    alpn = hello.alpn if hello else ()

    def narrow(specific: list[FilterChain], wildcard: list[FilterChain]) -> list[FilterChain]:
        return specific if specific else wildcard

    candidates = narrow([c for c in candidates if c.match.destination_port == port],
                        [c for c in candidates if c.match.destination_port is None])
    candidates = narrow([c for c in candidates if c.match.server_names and sni is not None
                         and _sni_matches(c.match.server_names, sni)],
                        [c for c in candidates if not c.match.server_names])
    candidates = narrow([c for c in candidates if c.match.transport_protocol == transport],
                        [c for c in candidates if not c.match.transport_protocol])
    candidates = narrow([c for c in candidates if c.match.application_protocols
                         and set(c.match.application_protocols) & set(alpn)],
                        [c for c in candidates if not c.match.application_protocols])
    if candidates:
        return candidates[0]
    return listener.default_filter_chain


def _tls_only(listener: Listener) -> bool:
    """Every filter chain matches TLS only (``transport_protocol: tls``): plaintext can match none."""
    return bool(listener.filter_chains) and all(c.match.transport_protocol == "tls" for c in listener.filter_chains)


_last_plaintext_warning: dict[str, float] = {}


def _refuse_plaintext(runtime: ListenerRuntime[ChainContext], listener_name: str, sock: socket.socket,
                      first_bytes: bytes) -> None:
    """Count a plaintext client on a TLS-only listener and say so (at most one warning per second per
    listener: a non-mesh client retrying must not flood the log; the counter has every one)."""
    runtime.stats.downstream_plaintext_refused += 1
    now = trio.current_time()
    if now - _last_plaintext_warning.get(listener_name, -10.0) < 1.0:
        return
    _last_plaintext_warning[listener_name] = now
    what = "plaintext HTTP/2 (h2c)" if PREFACE.startswith(first_bytes[:len(PREFACE)]) else "plaintext"
    log.warning("listener %s: %s connection from %s refused: this listener requires (m)TLS "
                "(PeerAuthentication STRICT); %d refused so far", listener_name, what, _peer(sock),
                runtime.stats.downstream_plaintext_refused)


def _sni_matches(names: tuple[str, ...], sni: str) -> bool:
    sni = sni.lower()
    for name in names:
        n = name.lower()
        if n == sni or (n.startswith("*.") and sni.endswith(n[1:])):
            return True
    return False


def needs_inspection(listener: Listener) -> bool:
    if listener.tls_inspector:
        return True
    return any(c.match.transport_protocol or c.match.application_protocols or c.match.server_names
               for c in listener.filter_chains)


async def _peek(sock: socket.socket, timeout: float | None, limit: int = 16384) -> tuple[bytes, bool]:
    """Read the first bytes: enough to tell TLS from plaintext and to parse a ClientHello.

    Returns the bytes and whether the listener filter timeout expired first."""
    data = b""
    with trio.move_on_after(timeout if timeout else float("inf")) as scope:
        while len(data) < limit:
            try:
                chunk = sock.recv(limit - len(data))
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            if not chunk:
                break
            data += chunk
            if looks_like_tls(data):
                if client_hello_complete(data):
                    break
            elif len(data) >= 3:
                break
    return data, scope.cancelled_caught


async def handle_connection(runtime: ListenerRuntime[ChainContext], listener_name: str, sock: socket.socket,
                            counters: ListenerCounters | None = None, accepted: float | None = None,
                            filters_timed_out: bool = False) -> None:
    """Serve one accepted connection to completion (never raises, except Cancelled).

    ``accepted``: when it was accepted (the listener filters' and, without listener filters, the connection's
    timers run from then); ``filters_timed_out``: the listener filters' timeout already expired (while the
    connection was parked, see :mod:`pyproxy.proxy.parking`) and the listener continues without them."""
    if accepted is None:
        accepted = trio.current_time()
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        entry = runtime.listener_entry(listener_name)
        if entry is None:
            sock.close()
            return
        listener = entry.listener
        prefix = b""
        hello: ClientHelloInfo | None = None
        is_tls = False
        inspected = needs_inspection(listener)
        if inspected:
            if filters_timed_out:
                timed_out = True  # counted when it expired
            else:
                timeout = listener.listener_filters_timeout
                remaining = None if timeout is None else max(accepted + timeout - trio.current_time(), 1e-6)
                try:
                    prefix, timed_out = await _peek(sock, remaining)
                except OSError:
                    sock.close()
                    return
            if timed_out and not filters_timed_out:
                if counters is not None:
                    counters.downstream_pre_cx_timeout += 1
                if not listener.continue_on_listener_filters_timeout:
                    log.info("listener %s: listener filters timed out for %s", listener_name, _peer(sock))
                    sock.close()
                    return
            is_tls = looks_like_tls(prefix)
            if is_tls:
                hello = parse_client_hello(prefix)
        chain = select_filter_chain(listener, sock.getsockname()[1], is_tls, hello)
        if chain is None:
            if prefix and not is_tls and _tls_only(listener):
                # Istio's STRICT inbound has TLS chains only, so plaintext matches none: say that.
                _refuse_plaintext(runtime, listener_name, sock, prefix)
            else:
                log.info("listener %s: no filter chain matches connection from %s", listener_name,
                         _peer(sock))
            sock.close()
            return
        ctx = entry.contexts[id(chain)]
        # The connection exists from here (Envoy creates it, with its network filters, once the filter chain
        # is chosen): the HCM's idle and max-duration timers start now, before the TLS handshake.
        created = trio.current_time() if inspected else accepted
        transport: Transport
        identity = PeerIdentity()
        if not prefix:
            # Nothing is allocated for a connection before its first bytes (Envoy, too, creates the HTTP/2
            # codec, and so sends its SETTINGS, on the first data): a silent connection costs a socket and
            # this task, not a TLS engine, an HTTP/2 engine and a writer task (issue 9.7: 3,000 silent
            # connections took 140 MB).
            bound, cause = connection_bound(chain, created, tls=chain.tls is not None)
            first = await _wait_first_bytes(sock, bound)
            if not first:
                if first is False:
                    count_timeout(ctx, counters, cause)
                    log.debug("listener %s: %s closed %s before its first byte", listener_name, cause,
                              _peer(sock))
                sock.close()  # or the peer left without a byte: nothing to answer
                return
        if chain.tls is not None:
            ssl_context = entry.ssl_contexts[id(chain)]
            transport = TlsTransport(sock, ssl_context, server_side=True, prefix=prefix)
            bound, cause = connection_bound(chain, created, tls=True)
            try:
                with trio.fail_at(bound):
                    await transport.handshake()
            except (TransportClosed, trio.TooSlowError) as e:
                if isinstance(e, trio.TooSlowError):
                    count_timeout(ctx, counters, cause)
                    log.debug("listener %s: TLS handshake with %s did not complete: %s", listener_name,
                              _peer(sock), cause)
                    transport.close()
                    return
                runtime.stats.downstream_tls_failures += 1
                if transport.first_bytes and not looks_like_tls(transport.first_bytes):
                    _refuse_plaintext(runtime, listener_name, sock, transport.first_bytes)
                else:
                    log.info("listener %s: TLS handshake with %s failed: %s", listener_name, _peer(sock), e)
                transport.close()
                return
            identity = identity_from_cert(transport.peer_certificate())
            if not san_matches(chain.tls.validation, identity):
                runtime.stats.downstream_tls_failures += 1
                log.info("listener %s: peer %s certificate SAN not allowed (%s)", listener_name, _peer(sock),
                         ", ".join(identity.uri_sans) or "no SAN")
                transport.close()
                return
        else:
            transport = PrefixedTransport(sock, prefix) if prefix else Transport(sock)
            if prefix and not PREFACE.startswith(prefix[:len(PREFACE)]) and looks_like_http1(prefix):
                transport.write(_HTTP1_REPLY)
                await transport.flush(1.0)
                transport.close()
                return
        await DownstreamConnection(ctx, transport, identity, hello.server_name if hello else None, created).run()
    except (OSError, ssl.SSLError) as e:
        log.debug("connection error: %s", e)
        try:
            sock.close()
        except OSError:
            pass


def connection_bound(chain: FilterChain, created: float, *, tls: bool) -> tuple[float, str]:
    """When a connection that has not sent its first byte (or completed its TLS handshake) is given up, and
    which Envoy timer that is: the filter chain's transport_socket_connect_timeout (TLS only), or the HCM's
    idle_timeout / max_connection_duration, which run from the connection's creation (with none of them set,
    Envoy waits forever; so does pyproxy)."""
    bounds = [(created + t, cause) for t, cause in (
        (chain.transport_socket_connect_timeout if tls else None, "transport_socket_connect_timeout"),
        (chain.hcm.idle_timeout, "idle_timeout"),
        (chain.hcm.max_connection_duration, "max_connection_duration")) if t is not None]
    return min(bounds) if bounds else (math.inf, "")


def count_timeout(ctx: ChainContext, counters: ListenerCounters | None, cause: str) -> None:
    if cause == "transport_socket_connect_timeout":
        if counters is not None:
            counters.downstream_cx_transport_socket_connect_timeout += 1
    elif cause == "idle_timeout":
        ctx.hcm_counters.downstream_cx_idle_timeout += 1
    elif cause == "max_connection_duration":
        ctx.hcm_counters.downstream_cx_max_duration_reached += 1


async def _wait_first_bytes(sock: socket.socket, deadline: float) -> bool | None:
    """Wait until ``sock`` has data to read: True; None when the peer closed (or reset) it first, False when
    ``deadline`` passed first."""
    while True:
        try:
            return True if sock.recv(1, socket.MSG_PEEK) else None  # data (usually sent with the connect), EOF
        except BlockingIOError:
            pass
        except OSError:
            return None
        with trio.move_on_at(deadline):
            await trio.lowlevel.wait_readable(sock)
        if trio.current_time() >= deadline:
            return False


def looks_like_http1(prefix: bytes) -> bool:
    return prefix[:4] in (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN")


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"

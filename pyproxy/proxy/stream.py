"""One request through the connection manager: headers in, the HTTP filter chain, the router, the response out.

A :class:`ProxyStream` is created when a request's headers arrive (Envoy's ``ActiveStream``). It does what the
connection manager does before any filter (``x-request-id``, ``x-forwarded-proto``/``-for``, header-name
checks, the request and idle timeouts), selects the route and its cluster, and then runs the chain:

- request headers, data and trailers go through the chain's filters in order (:mod:`pyproxy.filters.api`);
  a filter may stop iteration (a fault delay) and resume it later, or answer the request itself (RBAC,
  a fault abort). What arrives while iteration is stopped is held without being acknowledged, so the
  caller's flow-control window bounds it. Past the last filter the request reaches the terminal filter, the
  :class:`~pyproxy.proxy.router.Router`, which owns the upstream side (attempts, retries, pools).
- the response comes back from the router through the filters in reverse order and is sent downstream here,
  as far as the caller's windows allow; window goes back to the upstream only for bytes handed to the
  caller's transport, and not while that transport is above its high-water mark.

There are no tasks per request: the stream is driven by the two connections' read loops and by timers.

Errors: anything the proxy answers itself goes through :meth:`ProxyStream.fail`, which turns a
:class:`~pyproxy.proxy.errors.ProxyError` into a local reply before response headers, or ends the response
after them (gRPC: trailers with grpc-status; others: RST_STREAM). That is the one place errors become
responses. Local replies do not pass through the filters' response hooks.

The stream is also the per-request record that the access log, the metrics and the admin API read
(route, cluster, host, attempts, flags, identities, timings): a :class:`~pyproxy.proxy.record.RequestRecord`.
The router sees it as a :class:`~pyproxy.proxy.router.RouterDownstream`, and it holds its downstream
connection as a :class:`~pyproxy.proxy.interfaces.StreamConnection`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING

import trio

from pyproxy.config.model import DirectResponse, RouteAction
from pyproxy.filters.api import STOP, FilterEnv, PeerFacts
from pyproxy.http2.connection import StreamStateError
from pyproxy.http2.events import DataReceived, HeadersReceived
from pyproxy.http2.frames import ErrorCode
from pyproxy.http2.hpack import Header
from pyproxy.proxy import errors
from pyproxy.proxy.errors import ProxyError, encode_grpc_message, local_reply
from pyproxy.proxy.flow import send_queued
from pyproxy.proxy.headers import append_xff
from pyproxy.proxy.router import Router

if TYPE_CHECKING:
    from pyproxy.proxy.context import ChainContext
    from pyproxy.proxy.interfaces import StreamConnection
    from pyproxy.routing.table import CompiledRoute
    from pyproxy.timers import TimerHandle
    from pyproxy.upstream.cluster import ClusterState, Host

_GRPC_PREFIX = b"application/grpc"
# Envoy's ResponseFlag bit order (source/common/stream_info/utility.cc), which orders a combined flag string.
_FLAG_ORDER = {f: i for i, f in enumerate((
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC", "URX", "SI", "IH",
    "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR"))}


def flag_order(flag: str) -> int:
    return _FLAG_ORDER.get(flag, len(_FLAG_ORDER))

# Held events while a filter has stopped iteration: (first filter to run, kind, payload, end, flow length).
_DATA, _TRAILERS, _HEADERS = 0, 1, 2
Held = tuple[int, int, object, bool, int]


class ProxyStream:
    __slots__ = (
        "attempts", "authority", "bytes_received", "bytes_sent", "cluster", "cluster_name", "ctx",
        "done", "down", "down_sid", "filter_state", "flags", "grpc_status", "grpc_timeout",
        "host", "idle_timer", "is_grpc", "last_activity", "method", "path", "peer_metadata", "req_direct",
        "req_end_received", "req_held", "req_stopped", "req_trailers", "request_headers", "request_timer",
        "resp_end_received", "resp_headers_sent", "resp_held", "resp_pending", "resp_stopped", "resp_trailers",
        "response_code", "route", "router",
        # For access logs and traces:
        "details", "end_time", "failure_reason", "response_headers", "response_headers_time",
        "response_trailers_seen", "start_time", "start_wallclock", "upstream_local", "upstream_principal",
        "upstream_start",
    )
    # Read by the access log, the stats and the admin API (declared for type checkers; set in __init__).
    ctx: ChainContext
    down: StreamConnection
    response_code: int
    grpc_status: int | None
    flags: str
    details: str
    failure_reason: str
    bytes_received: int
    bytes_sent: int
    upstream_principal: str
    cluster: ClusterState | None
    host: Host | None
    attempts: int

    def __init__(self, ctx: ChainContext, down: StreamConnection, ev: HeadersReceived) -> None:
        self.ctx = ctx
        self.down = down
        self.down_sid = ev.stream_id
        self.request_headers = ev.headers
        self.method = ev.method
        self.path = ev.path
        self.authority = ev.authority
        self.start_time = trio.current_time()
        self.start_wallclock = time.time()
        self.is_grpc = False
        self.grpc_timeout: bytes | None = None
        self.route: CompiledRoute | None = None
        self.cluster_name = ""
        self.cluster: ClusterState | None = None
        self.host: Host | None = None
        self.router: Router | None = None
        self.filter_state: dict[str, object] | None = None
        self.req_stopped = -1  # index of the filter that stopped the request's iteration (-1: none)
        self.resp_stopped = -1
        self.req_held: deque[Held] | None = None
        self.resp_held: deque[Held] | None = None
        self.req_direct = False  # request body goes straight to the router (no body filter, not stopped)
        self.req_end_received = ev.end_stream
        self.req_trailers: list[Header] | None = None
        self.resp_pending: deque[bytes] = deque()
        self.resp_headers_sent = False
        self.resp_end_received = False
        self.resp_trailers: list[Header] | None = None
        self.idle_timer: TimerHandle | None = None
        self.request_timer: TimerHandle | None = None
        self.done = False
        self.attempts = 0
        self.response_code = 0
        self.grpc_status: int | None = None
        self.flags = "-"
        self.bytes_received = 0
        self.bytes_sent = 0
        self.peer_metadata: bytes | None = None
        self.end_time = 0.0
        self.response_headers: list[Header] | None = None
        self.response_headers_time = 0.0
        self.response_trailers_seen: list[Header] | None = None
        self.details = ""
        self.failure_reason = ""
        self.upstream_principal = ""
        self.upstream_local: tuple[str, int] | None = None
        self.upstream_start = 0.0
        self.last_activity = self.start_time

    # ================================================================================== request start

    def start(self) -> None:
        """The connection manager's part, route selection, then the filter chain."""
        ctx = self.ctx
        runtime = ctx.runtime
        headers = self.request_headers
        has_request_id = has_proto = underscore = False
        for name, value in headers:
            if name == b"content-type":
                self.is_grpc = value.startswith(_GRPC_PREFIX)
            elif name == b"grpc-timeout":
                self.grpc_timeout = value
            elif name == b"x-envoy-peer-metadata":
                self.peer_metadata = value
            elif name == b"x-request-id":
                has_request_id = True
            elif name == b"x-forwarded-proto":
                has_proto = True
            elif b"_" in name:
                underscore = True
        if underscore and ctx.underscores != "ALLOW":
            if ctx.underscores == "REJECT_REQUEST":
                # Envoy: HTTP/2 requests with underscores in header names end with a stream reset.
                self.flags = "DPE"
                self.details = "unexpected_underscore"
                self.down.engine.reset_stream(self.down_sid, ErrorCode.PROTOCOL_ERROR)
                runtime.mark_dirty(self.down)
                self._finish()
                return
            headers[:] = [h for h in headers if b"_" not in h[0]]
        # The connection manager's own headers (Envoy: generate_request_id, x-forwarded-proto, XFF).
        if not has_request_id and ctx.generate_request_id:
            headers.append((b"x-request-id", str(uuid.UUID(bytes=os.urandom(16), version=4)).encode()))
        if not has_proto:
            headers.append((b"x-forwarded-proto", ctx.forwarded_proto))
        if ctx.use_remote_address:
            append_xff(headers, self.down.peer_address[0].encode())
        if ctx.request_timeout and not self.req_end_received:
            self.request_timer = runtime.timers.call_at(self.start_time + ctx.request_timeout,
                                                        self._on_request_timeout)
        # Route selection happens before the filters (they may read the route and its per-filter config);
        # a missing route is the router's to answer, after filters such as RBAC have had their say.
        table = ctx.route_table()
        selected = table.select(self.authority, self.path, headers, self.is_grpc) if table else None
        idle = ctx.stream_idle_timeout
        if selected is not None:
            croute = self.route = selected[1]
            action = croute.route.action
            if isinstance(action, RouteAction):
                self.cluster_name = croute.pick_cluster(runtime.rng)
                if action.idle_timeout is not None:
                    idle = action.idle_timeout
        if idle:
            self.idle_timer = runtime.timers.call_at(self.start_time + idle, self._on_idle_check)
        if ctx.filters and not self._request_headers_from(0):
            return
        self._to_router()

    # ================================================================================== the filter chain

    @property
    def env(self) -> FilterEnv:
        return self.ctx.runtime

    def peer_facts(self) -> PeerFacts:
        return self.down

    def per_route_config(self, filter_name: str) -> object | None:
        route = self.route
        return route.per_filter.get(filter_name) if route is not None else None

    def add_flag(self, flag: str) -> None:
        """Set an Envoy response flag; several are comma-joined in Envoy's order (``DI,FI``, ``UF,URX``)."""
        flags = self.flags
        if flags == "-":
            self.flags = flag
        elif flag not in flags.split(","):
            self.flags = ",".join(sorted((*flags.split(","), flag), key=flag_order))

    def send_local_reply(self, error: ProxyError) -> None:
        self.fail(error)

    def _request_headers_from(self, first: int) -> bool:
        """Run request headers through filters ``first``..; True when they passed them all."""
        end = self.req_end_received and self.req_trailers is None and not self.req_held  # headers' END_STREAM
        filters = self.ctx.filters
        for i in range(first, len(filters)):
            status = filters[i].on_request_headers(self, end)
            if self.done:
                return False
            if status is STOP:
                self.req_stopped = i
                return False
        return True

    def resume_request(self) -> None:
        stopped = self.req_stopped
        if stopped < 0 or self.done:
            return
        self.req_stopped = -1
        if self.router is None:
            if not self._request_headers_from(stopped + 1):
                return
            self._to_router()
            if self.done:
                return
        self._deliver_held_request()
        self.ctx.runtime.mark_dirty(self.down)

    def _hold_request(self, item: Held, front: bool = False) -> None:
        held = self.req_held
        if held is None:
            held = self.req_held = deque()
        if front:
            held.appendleft(item)
        else:
            held.append(item)

    def _deliver_held_request(self) -> None:
        held = self.req_held
        while held and self.req_stopped < 0 and not self.done:
            first, kind, payload, end, flow_len = held.popleft()
            self._request_body_from(first, kind, payload, end, flow_len)
        if not held and self.req_stopped < 0 and not self.done:
            self.req_held = None
            self.req_direct = not self.ctx.request_body_filters

    def _request_body_from(self, first: int, kind: int, payload: object, end: bool, flow_len: int) -> None:
        filters = self.ctx.filters
        for i in range(first, len(filters)):
            f = filters[i]
            if not f.wants_request_body:
                continue
            status = (f.on_request_data(self, payload, end) if kind == _DATA  # type: ignore[arg-type]
                      else f.on_request_trailers(self, payload))  # type: ignore[arg-type]
            if self.done:
                return
            if status is STOP:
                self.req_stopped = i
                self.req_direct = False
                self._hold_request((i + 1, kind, payload, end, flow_len), front=True)
                return
        router = self.router
        assert router is not None
        if kind == _DATA:
            router.on_request_data(payload, end, flow_len)  # type: ignore[arg-type]
        else:
            router.on_request_trailers(payload)  # type: ignore[arg-type]

    def _to_router(self) -> None:
        """The request passed every filter: the router takes it (or the proxy answers: no route, no cluster)."""
        croute = self.route
        if croute is None:
            self.fail(errors.NoRoute())
            return
        action = croute.route.action
        if isinstance(action, DirectResponse):
            self.fail(errors.DirectResponseReply(action.status, action.body))
            return
        assert isinstance(action, RouteAction)
        cluster = self.ctx.runtime.clusters.get(self.cluster_name)
        if cluster is None:
            self.fail(errors.ClusterNotFound(f"cluster not found: {self.cluster_name}",
                                             action.cluster_not_found_response_code))
            return
        self.cluster = cluster
        # The request's end reaches the router now if the headers ended it (nothing held behind them).
        end_in = self.req_end_received and self.req_trailers is None and not self.req_held
        router = self.router = Router(self, croute, action, cluster, end_in)
        self.req_direct = not self.ctx.request_body_filters and not self.req_held
        router.start(croute, self.grpc_timeout)

    # ================================================================================== request body

    def on_request_data(self, ev: DataReceived) -> None:
        data = ev.data
        self.last_activity = trio.current_time()
        self.bytes_received += len(data)
        end = ev.end_stream
        if end:
            self.req_end_received = True
            self._request_complete()
        if self.req_direct:
            router = self.router
            assert router is not None
            router.on_request_data(data, end, ev.flow_controlled_length)
        elif self.req_stopped >= 0 or self.req_held or self.router is None:
            if not self.done:
                self._hold_request((0, _DATA, data, end, ev.flow_controlled_length))
        else:
            self._request_body_from(0, _DATA, data, end, ev.flow_controlled_length)

    def on_request_trailers(self, ev: HeadersReceived) -> None:
        self.req_end_received = True
        self.req_trailers = ev.headers
        self._request_complete()
        if self.req_direct:
            router = self.router
            assert router is not None
            router.on_request_trailers(ev.headers)
        elif self.req_stopped >= 0 or self.req_held or self.router is None:
            if not self.done:
                self._hold_request((0, _TRAILERS, ev.headers, True, 0))
        else:
            self._request_body_from(0, _TRAILERS, ev.headers, True, 0)

    def _request_complete(self) -> None:
        timer = self.request_timer
        if timer is not None:
            timer.cancel()
            self.request_timer = None

    def ack_request(self, n: int) -> None:
        """Give the caller ``n`` bytes of stream window back (the router forwarded them)."""
        self.down.engine.acknowledge_stream(n, self.down_sid)
        self.ctx.runtime.mark_dirty(self.down)

    # ================================================================================== response

    def encode_headers(self, headers: list[Header], end: bool) -> None:
        """Response headers from the router: through the filters (last to first), then downstream."""
        if self.ctx.response_filters and not self._response_from(0, _HEADERS, headers, end, 0):
            return
        self._send_response_headers(headers, end)

    def encode_data(self, data: bytes, end: bool, flow_len: int) -> None:
        if self.ctx.response_filters and not self._response_from(0, _DATA, data, end, flow_len):
            return
        self._send_response_data(data, end, flow_len)

    def encode_trailers(self, trailers: list[Header]) -> None:
        if self.ctx.response_filters and not self._response_from(0, _TRAILERS, trailers, True, 0):
            return
        self._send_response_trailers(trailers)

    def _response_from(self, first: int, kind: int, payload: object, end: bool, flow_len: int,
                       replay: bool = False) -> bool:
        """Run a response event through the response filters from ``first``; True when it passed them all.
        A new event waits behind held ones (``replay``: it is a held one)."""
        if not replay and (self.resp_stopped >= 0 or self.resp_held):
            held = self.resp_held
            if held is None:
                held = self.resp_held = deque()
            held.append((0, kind, payload, end, flow_len))
            return False
        filters = self.ctx.response_filters
        for i in range(first, len(filters)):
            f = filters[i]
            if kind == _HEADERS:
                status = f.on_response_headers(self, payload, end)  # type: ignore[arg-type]
            elif kind == _DATA:
                status = f.on_response_data(self, payload, end)  # type: ignore[arg-type]
            else:
                status = f.on_response_trailers(self, payload)  # type: ignore[arg-type]
            if self.done:
                return False
            if status is STOP:
                self.resp_stopped = i
                held = self.resp_held
                if held is None:
                    held = self.resp_held = deque()
                held.appendleft((i + 1, kind, payload, end, flow_len))
                return False
        return True

    def resume_response(self) -> None:
        if self.resp_stopped < 0 or self.done:
            return
        self.resp_stopped = -1
        held = self.resp_held
        while held and self.resp_stopped < 0 and not self.done:
            first, kind, payload, end, flow_len = held.popleft()
            if not self._response_from(first, kind, payload, end, flow_len, replay=True):
                continue
            if kind == _HEADERS:
                self._send_response_headers(payload, end)  # type: ignore[arg-type]
            elif kind == _DATA:
                self._send_response_data(payload, end, flow_len)  # type: ignore[arg-type]
            else:
                self._send_response_trailers(payload)  # type: ignore[arg-type]
        if not held:
            self.resp_held = None
        self.ctx.runtime.mark_dirty(self.down)

    def _send_response_headers(self, out: list[Header], end: bool) -> None:
        self.response_headers = out  # (the router set response_headers_time when it made them)
        self.resp_headers_sent = True
        if end:
            self.resp_end_received = True
        try:
            self.down.engine.send_headers(self.down_sid, out, end_stream=end)
        except StreamStateError:
            self._finish()
            return
        self.ctx.runtime.mark_dirty(self.down)
        if end:
            self._response_complete()

    def _send_response_data(self, data: bytes, end: bool, flow_len: int) -> None:
        self.last_activity = trio.current_time()
        self.bytes_sent += len(data)
        if end:
            self.resp_end_received = True
        down = self.down
        if not self.resp_pending:
            sid = self.down_sid
            if len(data) <= down.engine.max_send(sid):
                try:
                    down.engine.send_data(sid, data, end_stream=end)
                except StreamStateError:
                    self._finish()
                    return
                self.ctx.runtime.mark_dirty(down)
                if flow_len:
                    self._ack_up(flow_len)
                if end:
                    self._response_complete()
                return
        if data:
            self.resp_pending.append(data)
        self._pump_response()

    def _send_response_trailers(self, trailers: list[Header]) -> None:
        self.resp_end_received = True
        self.resp_trailers = trailers
        self.response_trailers_seen = trailers
        self._pump_response()

    def _pump_response(self) -> None:
        """Send queued response data as the caller's windows allow, then the trailers (or END_STREAM)."""
        down = self.down
        eng = down.engine
        sid = self.down_sid
        pending = self.resp_pending
        try:
            forwarded, ended = send_queued(eng, sid, pending, self.resp_end_received and self.resp_trailers is None,
                                           None)
            if not pending and self.resp_end_received and not ended:
                if self.resp_trailers is not None:
                    eng.send_headers(sid, self.resp_trailers, end_stream=True)
                    self.resp_trailers = None
                else:
                    eng.send_data(sid, b"", end_stream=True)
                ended = True
        except StreamStateError:
            self._finish()
            return
        self.ctx.runtime.mark_dirty(down)
        if forwarded:
            self._ack_up(forwarded)
        if ended:
            self._response_complete()

    def _ack_up(self, n: int) -> None:
        router = self.router
        if router is not None:
            router.ack_response(n)

    def on_downstream_window(self) -> None:
        if self.resp_pending or (self.resp_end_received and self.resp_trailers is not None):
            self._pump_response()

    def _response_complete(self) -> None:
        """The response ended downstream. Close what is still open and finish."""
        if not self.req_end_received:
            # RFC 9113 8.1: a complete response before the whole request; ask the client to stop sending.
            self.down.engine.reset_stream(self.down_sid, ErrorCode.NO_ERROR)
            self.ctx.runtime.mark_dirty(self.down)
        if self.router is not None:
            self.router.response_complete()
        self._finish()

    # ================================================================================== failures

    def fail(self, err: ProxyError) -> None:
        """The one place errors become responses: local reply before headers, trailers/reset after."""
        if self.done:
            return
        runtime = self.ctx.runtime
        if err.flag != "-":
            self.add_flag(err.flag)
        if not self.details:
            self.details = err.details
        if isinstance(err, errors.UpstreamConnectFailure):
            self.failure_reason = err.reason
        if self.router is not None:
            self.router.cancel()
        down = self.down
        eng = down.engine
        sid = self.down_sid
        if sid not in eng.streams:
            self._finish()
            return
        if not self.resp_headers_sent:
            ctx = self.ctx
            headers, body = local_reply(err, self.is_grpc, ctx.server_header)
            if err.envoy_headers and not ctx.suppress_envoy_headers:
                headers.extend(err.envoy_headers)
            self.response_headers = headers
            self.response_headers_time = trio.current_time()
            self.response_code = err.http_status if not self.is_grpc else 200
            if self.is_grpc:
                self.grpc_status = err.grpc_code()
            self.resp_headers_sent = True
            eng.send_headers(sid, headers, end_stream=not body)
            if body:
                if eng.max_send(sid) >= len(body):
                    eng.send_data(sid, body, end_stream=True)
                else:  # a local reply body larger than the client's window: not worth queueing
                    eng.reset_stream(sid, ErrorCode.INTERNAL_ERROR)
            runtime.mark_dirty(down)
            self.resp_pending.clear()
            self._response_complete()
            return
        # Response already started.
        if self.is_grpc:
            self.grpc_status = err.grpc_code()
            trailers = [(b"grpc-status", str(err.grpc_code()).encode())]
            if err.message:
                trailers.append((b"grpc-message", encode_grpc_message(err.message)))
            self.resp_trailers = trailers
            self.resp_end_received = True
            # If the client's window blocks queued data, the trailers follow it when the client reads.
            self._pump_response()
            return
        eng.reset_stream(sid, ErrorCode.INTERNAL_ERROR)
        runtime.mark_dirty(down)
        self._finish()

    def reset_downstream(self, code: int) -> None:
        """End the caller's stream with RST_STREAM ``code`` (the upstream's reset, relayed)."""
        self.down.engine.reset_stream(self.down_sid, code)
        self.ctx.runtime.mark_dirty(self.down)
        self._finish()

    def on_downstream_reset(self, code: int) -> None:
        """The caller reset the stream (cancel): propagate to the upstream at once."""
        if self.done:
            return
        if self.flags == "-":
            self.flags = "DC"
        router = self.router
        if router is not None:
            router.cancel()
            router.cancel_shadows()
        self._finish()

    def on_downstream_lost(self) -> None:
        self.on_downstream_reset(ErrorCode.CANCEL)

    def _on_request_timeout(self) -> None:
        self.request_timer = None
        if not self.done and not self.req_end_received:
            self.fail(errors.RequestTimeout())

    def _on_idle_check(self) -> None:
        """HCM stream_idle_timeout: no DATA either way for that long ends the stream (flag SI)."""
        self.idle_timer = None
        if self.done:
            return
        idle = self.ctx.stream_idle_timeout
        route = self.route
        if (route is not None and isinstance(route.route.action, RouteAction)
                and route.route.action.idle_timeout is not None):
            idle = route.route.action.idle_timeout
        assert idle
        due = self.last_activity + idle
        if due > trio.current_time():
            self.idle_timer = self.ctx.runtime.timers.call_at(due, self._on_idle_check)
            return
        self.fail(errors.StreamIdleTimeout())

    # ================================================================================== end

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.end_time = trio.current_time()
        for timer in (self.idle_timer, self.request_timer):
            if timer is not None:
                timer.cancel()
        self.idle_timer = self.request_timer = None
        self.down.stream_done(self.down_sid)
        if self.router is not None:
            self.router.finish()
        self.req_held = self.resp_held = None
        ctx = self.ctx
        for f in ctx.end_filters:
            f.on_stream_end(self)
        ctx.record(self)
        # The stream and its router point at each other: break the cycle so both are freed by reference
        # counting now, not by the cyclic GC later (measured: ~14 objects per request for the GC otherwise,
        # +10 % CPU at load). Late events for the router (a deferred window update) still find it.
        self.router = None


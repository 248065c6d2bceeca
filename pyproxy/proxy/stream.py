"""One proxied request: downstream stream <-> upstream stream(s), with flow control in both directions.

A :class:`ProxyStream` is created when a request's headers arrive. It routes (route table compiled per
snapshot), picks a cluster and a host, and asks the host's pool for an upstream stream. From then on it moves
bytes both ways without tasks of its own: it is driven by the two connections' read loops and by timers.

Flow control and backpressure: DATA received on one side is sent to the other side as far as that side's
HTTP/2 windows allow; the rest waits in a per-direction queue. Window is returned to the sender (WINDOW_UPDATE)
only for bytes that were handed to the other side's transport, and not while that transport has more than
its high-water mark queued. So a slow reader stops its writer through HTTP/2 flow control, and the proxy's
memory per stream is bounded by the windows it advertises.

Retries (Envoy's router): until response headers are forwarded downstream, an attempt that fails in a way the
route's retry policy covers (connect failure, refused stream, reset, per-try timeout, a retriable status or
trailers-only grpc-status) is abandoned and, after a jittered back-off, the request is replayed on another
host from the request body kept for that purpose (up to :data:`RETRY_BUFFER_LIMIT`; beyond it the request is
no longer retried). The route timeout covers all attempts. The retry *policy* questions are answered by
:mod:`pyproxy.retry`; the *state* is here.

Errors: anything the proxy decides to answer itself goes through :meth:`ProxyStream.fail`, which turns a
:class:`~pyproxy.proxy.errors.ProxyError` into a local reply before response headers, or ends the response
after them (gRPC: trailers with grpc-status; others: RST_STREAM). That is the one place errors become
responses.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from pyproxy.config.model import DirectResponse, RetryPolicy, RouteAction
from pyproxy.filters.rbac import RequestFacts
from pyproxy.http2.connection import H2Connection, StreamStateError
from pyproxy.http2.events import DataReceived, HeadersReceived
from pyproxy.http2.frames import ErrorCode
from pyproxy.http2.hpack import Header
from pyproxy.proxy import errors
from pyproxy.proxy.errors import ProxyError, encode_grpc_message, grpc_to_http_status, local_reply
from pyproxy.proxy.grpc_timeout import format_grpc_timeout, parse_grpc_timeout
from pyproxy.proxy.shadow import ShadowStream, shadow_authority
from pyproxy.retry import ResetKind, backoff, would_retry_reset, would_retry_response

if TYPE_CHECKING:
    from pyproxy.proxy.context import ChainContext
    from pyproxy.proxy.downstream import DownstreamConnection
    from pyproxy.routing.table import CompiledMutation, CompiledRoute
    from pyproxy.timers import TimerHandle
    from pyproxy.upstream.cluster import ClusterState, Host
    from pyproxy.upstream.connection import UpstreamConnection
    from pyproxy.upstream.pool import HostPool

_GRPC_PREFIX = b"application/grpc"
_STRIP_REQUEST = frozenset({b"x-envoy-peer-metadata", b"x-envoy-peer-metadata-id"})
RETRY_BUFFER_LIMIT = 1 << 20  # request bytes kept for replay (Envoy: the per-request buffer limit, 1 MiB)


class ProxyStream:
    __slots__ = (
        "attempts", "authority", "bytes_received", "bytes_sent", "cluster", "ctx", "deadline_from_caller",
        "deferred_down_ack", "deferred_up_ack", "done", "down", "down_sid", "flags", "grpc_status", "host",
        "include_attempt_count", "is_grpc", "method", "path", "peer_metadata", "per_try_timer", "pool",
        "replay", "req_buffer", "req_buffer_bytes", "req_end_received", "req_end_sent", "req_pending",
        "req_trailers", "request_headers", "resp_end_received", "resp_headers_sent", "resp_pending",
        "resp_trailers", "response_code", "response_mutations", "retry_policy", "retry_timer", "route",
        "shadows", "start_time", "timer", "tried_hosts", "up", "up_sid", "upstream_headers",
        # For access logs and traces:
        "details", "end_time", "failure_reason", "response_headers", "response_headers_time",
        "response_trailers_seen", "start_wallclock", "upstream_local", "upstream_principal", "upstream_start",
        "idle_timer", "last_activity", "request_timer",
    )
    # Read by the access log, the stats and the admin API (declared for type checkers; set in __init__).
    ctx: ChainContext
    down: DownstreamConnection
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

    def __init__(self, ctx: ChainContext, down: DownstreamConnection, ev: HeadersReceived) -> None:
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
        self.route: CompiledRoute | None = None
        self.cluster: ClusterState | None = None
        self.host: Host | None = None
        self.pool: HostPool | None = None
        self.up: UpstreamConnection | None = None
        self.up_sid = 0
        self.upstream_headers: list[Header] = []
        self.response_mutations: tuple[CompiledMutation, ...] = ()
        self.req_pending: deque[bytes] = deque()
        self.req_end_received = ev.end_stream
        self.req_end_sent = False
        self.req_trailers: list[Header] | None = None
        self.resp_pending: deque[bytes] = deque()
        self.resp_headers_sent = False
        self.resp_end_received = False
        self.resp_trailers: list[Header] | None = None
        self.deferred_down_ack = 0
        self.deferred_up_ack = 0
        self.timer: TimerHandle | None = None
        self.idle_timer: TimerHandle | None = None
        self.request_timer: TimerHandle | None = None
        self.deadline_from_caller = False
        self.done = False
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
        # Retries.
        self.attempts: int = 0
        self.retry_policy: RetryPolicy | None = None
        self.retry_timer: TimerHandle | None = None
        self.per_try_timer: TimerHandle | None = None
        self.req_buffer: list[bytes] | None = None
        self.req_buffer_bytes = 0
        self.replay: deque[bytes] | None = None
        self.tried_hosts: list[Host] | None = None
        self.include_attempt_count = 0  # bit 1: on upstream requests, bit 2: on downstream responses
        self.shadows: list[ShadowStream] | None = None

    # ================================================================================== request start

    def start(self) -> None:
        """Route the request and hand it to an upstream pool (or answer it locally)."""
        ctx = self.ctx
        runtime = ctx.runtime
        headers = self.request_headers
        grpc_timeout: bytes | None = None
        has_request_id = has_proto = underscore = False
        for name, value in headers:
            if name == b"content-type":
                self.is_grpc = value.startswith(_GRPC_PREFIX)
            elif name == b"grpc-timeout":
                grpc_timeout = value
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
            _append_xff(headers, self.down.peer_address[0].encode())
        if ctx.rbac_filters and not self._authorized(headers):
            return
        if ctx.request_timeout and not self.req_end_received:
            self.request_timer = runtime.timers.call_at(self.start_time + ctx.request_timeout,
                                                        self._on_request_timeout)
        table = ctx.route_table()
        selected = table.select(self.authority, self.path, headers, self.is_grpc) if table else None
        if selected is None:
            self.fail(errors.NoRoute())
            return
        cvh, croute = selected
        self.route = croute
        route = croute.route
        action = route.action
        if isinstance(action, DirectResponse):
            self.fail(errors.DirectResponseReply(action.status, action.body))
            return
        assert isinstance(action, RouteAction)
        cluster_name = croute.pick_cluster(runtime.rng)
        cluster = runtime.clusters.get(cluster_name)
        if cluster is None:
            self.fail(errors.ClusterNotFound(f"cluster not found: {cluster_name}",
                                             action.cluster_not_found_response_code))
            return
        self.cluster = cluster
        # Timeout: the route's, or the caller's grpc-timeout when the route honours it (max_grpc_timeout).
        timeout = action.timeout
        if grpc_timeout is not None and action.max_grpc_timeout is not None:
            caller = parse_grpc_timeout(grpc_timeout)
            if caller is not None:
                cap = action.max_grpc_timeout
                if cap and caller > cap:
                    caller = cap
                caller -= action.grpc_timeout_offset
                if caller > 0 and (not timeout or caller < timeout or action.grpc_timeout_is_stream_duration):
                    timeout = caller
                    self.deadline_from_caller = action.grpc_timeout_is_stream_duration
        max_duration = action.max_stream_duration if action.max_stream_duration is not None else (
            ctx.max_stream_duration)
        # Upstream request headers.
        up_headers = [h for h in headers if h[0] not in _STRIP_REQUEST] if ctx.strip_peer_metadata else list(
            headers)
        request_mutations, self.response_mutations = croute.mutations(cluster_name)
        for m in request_mutations:
            _apply(up_headers, m)
        if action.prefix_rewrite is not None or action.host_rewrite_literal is not None:
            self._rewrite(up_headers, croute, action)
        if timeout and self.is_grpc:
            _set_header(up_headers, b"grpc-timeout", format_grpc_timeout(timeout))
        extra = ctx.upstream_request_headers
        if extra:
            up_headers.extend(extra)
        if timeout and not ctx.suppress_envoy_headers:
            up_headers.append((b"x-envoy-expected-rq-timeout-ms", b"%d" % int(timeout * 1000)))
        vhost = cvh.vhost
        if vhost.include_request_attempt_count:
            self.include_attempt_count |= 1
            up_headers.append((b"x-envoy-attempt-count", b"1"))
        if vhost.include_attempt_count_in_response:
            self.include_attempt_count |= 2
        self.upstream_headers = up_headers
        if max_duration and (not timeout or max_duration < timeout):
            self.timer = runtime.timers.call_at(self.start_time + max_duration, self._on_max_duration)
        elif timeout:
            self.timer = runtime.timers.call_at(self.start_time + timeout, self._on_timeout)
        idle = action.idle_timeout if action.idle_timeout is not None else ctx.stream_idle_timeout
        if idle:
            self.idle_timer = runtime.timers.call_at(self.start_time + idle, self._on_idle_check)
        policy = action.retry_policy or vhost.retry_policy
        if policy is not None and policy.num_retries > 0:
            self.retry_policy = policy
            self.req_buffer = []
        if action.mirrors:
            self._start_shadows(action, up_headers)
        self._start_attempt()

    def _authorized(self, headers: list[Header]) -> bool:
        """The RBAC filters, in order (Istio: DENY policies first, then ALLOW); False once one denies."""
        down = self.down
        peer = down.peer
        path = self.path.decode("latin-1")
        q = path.find("?")
        facts = RequestFacts(headers=headers, path=path if q < 0 else path[:q], destination_port=down.local_port,
                             peer_ip=down.peer_address[0], uri_sans=peer.uri_sans, dns_sans=peer.dns_sans,
                             subject=peer.subject, authenticated=peer.presented)
        for rbac in self.ctx.rbac_filters:
            decision = rbac.evaluate(facts)
            if not decision.allowed:
                self.fail(errors.RbacDenied(decision.policy))
                return False
        return True

    def _rewrite(self, headers: list[Header], croute: CompiledRoute, action: RouteAction) -> None:
        for i, (name, value) in enumerate(headers):
            if name == b":path" and action.prefix_rewrite is not None:
                prefix = croute.route.match.prefix
                if prefix is not None and value.lower().startswith(prefix.lower().encode()):
                    new = action.prefix_rewrite.encode() + value[len(prefix):]
                    headers[i] = (b":path", new)
                    if not self.ctx.suppress_envoy_headers:
                        headers.append((b"x-envoy-original-path", value))
            elif name == b":authority" and action.host_rewrite_literal is not None:
                headers[i] = (b":authority", action.host_rewrite_literal.encode())

    def _start_shadows(self, action: RouteAction, up_headers: list[Header]) -> None:
        runtime = self.ctx.runtime
        for mirror in action.mirrors:
            if mirror.fraction < 1.0 and runtime.rng.random() >= mirror.fraction:
                continue
            cluster = runtime.clusters.get(mirror.cluster)
            if cluster is None:
                continue
            host = cluster.pick_host(runtime.rng)
            if host is None:
                continue
            headers = [(b":authority", shadow_authority(v)) if n == b":authority" else (n, v)
                       for n, v in up_headers]
            shadow = ShadowStream(runtime, cluster, host, headers)
            if self.shadows is None:
                self.shadows = []
            self.shadows.append(shadow)
            if self.req_end_received:
                shadow.on_data(b"", True)
            cluster.pool_for(host).attach(shadow)  # type: ignore[arg-type]

    # ================================================================================== attempts

    def _start_attempt(self) -> None:
        """Pick a host and ask its pool for a stream (first try, or a retry after back-off)."""
        self.retry_timer = None
        if self.done:
            return
        cluster = self.cluster
        assert cluster is not None
        runtime = self.ctx.runtime
        if cluster.stats.upstream_rq_active >= cluster.config.circuit_breakers.max_requests:
            cluster.stats.upstream_rq_pending_overflow += 1
            self.fail(errors.Overflow())
            return
        host = self._pick_host()
        if host is None:
            self.fail(errors.NoHealthyUpstream())
            return
        self.host = host
        self.attempts += 1
        host.active_requests += 1
        stats = cluster.stats
        stats.upstream_rq_total += 1
        stats.upstream_rq_active += 1
        policy = self.retry_policy
        if policy is not None and policy.per_try_timeout:
            self.per_try_timer = runtime.timers.call_later(policy.per_try_timeout, self._on_per_try_timeout)
        cluster.pool_for(host).attach(self)

    def _pick_host(self) -> Host | None:
        cluster = self.cluster
        assert cluster is not None
        rng = self.ctx.runtime.rng
        host = cluster.pick_host(rng)
        tried = self.tried_hosts
        policy = self.retry_policy
        if host is not None and tried and policy is not None and policy.retry_previous_hosts:
            # retry_host_predicate previous_hosts: re-pick up to host_selection_retry_max_attempts times.
            for _ in range(max(policy.host_selection_retry_max_attempts, 1)):
                if host not in tried:
                    break
                host = cluster.pick_host(rng)
        return host

    def _end_attempt(self) -> None:
        """Abandon the current upstream attempt (its stream reset, its host released)."""
        runtime = self.ctx.runtime
        timer = self.per_try_timer
        if timer is not None:
            timer.cancel()
            self.per_try_timer = None
        up = self.up
        if up is not None:
            if self.up_sid in up.engine.streams:
                up.engine.reset_stream(self.up_sid, ErrorCode.CANCEL)
                runtime.mark_dirty(up)
            up.stream_done(self.up_sid)
            self.up = None
        if self.pool is not None:
            self.pool.cancel(self)
            self.pool = None
        host = self.host
        if host is not None:
            host.active_requests -= 1
            assert self.cluster is not None
            self.cluster.stats.upstream_rq_active -= 1
            if self.tried_hosts is None:
                self.tried_hosts = []
            self.tried_hosts.append(host)
            self.host = None
        self.req_end_sent = False
        self.replay = None

    def _can_retry(self) -> bool:
        policy = self.retry_policy
        if policy is None or self.req_buffer is None or self.resp_headers_sent or self.done:
            return False
        if self.attempts > policy.num_retries:
            return False
        cluster = self.cluster
        assert cluster is not None
        if cluster.retries_active >= cluster.config.circuit_breakers.max_retries:
            cluster.stats.upstream_rq_retry_overflow += 1
            return False
        return True

    def _retry(self) -> None:
        """Schedule the next attempt after Envoy's jittered exponential back-off."""
        policy = self.retry_policy
        cluster = self.cluster
        assert policy is not None and cluster is not None
        self._end_attempt()
        cluster.stats.upstream_rq_retry += 1
        cluster.retries_active += 1
        delay = backoff(self.attempts, policy.base_interval, policy.max_interval, self.ctx.runtime.rng)
        self.retry_timer = self.ctx.runtime.timers.call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        assert self.cluster is not None
        self.cluster.retries_active -= 1
        self._start_attempt()

    def _retry_on_reset(self, kind: ResetKind) -> bool:
        policy = self.retry_policy
        if policy is None or not would_retry_reset(policy, kind):
            return False
        if not self._can_retry():
            if self.attempts > policy.num_retries:
                self.flags = "URX"
            return False
        self._retry()
        return True

    def _on_per_try_timeout(self) -> None:
        self.per_try_timer = None
        if self.done or self.resp_headers_sent:
            return
        assert self.cluster is not None
        self.cluster.stats.upstream_rq_per_try_timeout += 1
        self._outlier(504, local_origin=True)
        if self._retry_on_reset("reset"):
            return
        self.fail(errors.UpstreamTimeout())

    def _outlier(self, status: int, local_origin: bool = False) -> None:
        """Tell outlier detection how the current attempt ended."""
        cluster = self.cluster
        host = self.host
        if cluster is not None and host is not None and cluster.outlier is not None:
            cluster.outlier.report(host, status, local_origin)

    # ================================================================================== request body

    def bind_upstream(self, conn: UpstreamConnection, sid: int) -> None:
        """Called by the pool: the upstream stream is ``sid`` on ``conn``; send headers and queued body."""
        self.up = conn
        self.up_sid = sid
        self.pool = None
        self.upstream_principal = conn.peer_principal
        self.upstream_local = conn.local_address
        self.upstream_start = trio.current_time()
        headers = self.upstream_headers
        if self.attempts > 1:
            if self.include_attempt_count & 1:
                headers = list(headers)
                _set_header(headers, b"x-envoy-attempt-count", b"%d" % self.attempts)
            if self.req_buffer:
                self.replay = deque(self.req_buffer)
        end = (self.req_end_received and not self.replay and not self.req_pending
               and self.req_trailers is None)
        conn.engine.send_headers(sid, headers, end_stream=end)
        if end:
            self.req_end_sent = True
        elif self.replay or self.req_pending or self.req_end_received:
            self._pump_request()

    def on_request_data(self, ev: DataReceived) -> None:
        data = ev.data
        self.last_activity = trio.current_time()
        self.bytes_received += len(data)
        end = ev.end_stream
        if end:
            self.req_end_received = True
            self._request_complete()
        shadows = self.shadows
        if shadows is not None:
            for shadow in shadows:
                shadow.on_data(data, end)
        up = self.up
        if up is not None and not self.req_pending and not self.replay:
            sid = self.up_sid
            if len(data) <= up.engine.max_send(sid):
                up.engine.send_data(sid, data, end_stream=end)
                if end:
                    self.req_end_sent = True
                self.ctx.runtime.mark_dirty(up)
                if self.req_buffer is not None and data:
                    self._keep_for_retry(data)
                self._ack_down(ev.flow_controlled_length)
                return
        if data:
            self.req_pending.append(data)
        elif not end:
            return
        if up is not None:
            self._pump_request()

    def on_request_trailers(self, ev: HeadersReceived) -> None:
        self.req_end_received = True
        self.req_trailers = ev.headers
        self._request_complete()
        if self.shadows is not None:
            for shadow in self.shadows:
                shadow.on_trailers(ev.headers)
        if self.up is not None:
            self._pump_request()

    def _request_complete(self) -> None:
        timer = self.request_timer
        if timer is not None:
            timer.cancel()
            self.request_timer = None

    def _keep_for_retry(self, data: bytes) -> None:
        buf = self.req_buffer
        assert buf is not None
        self.req_buffer_bytes += len(data)
        if self.req_buffer_bytes > RETRY_BUFFER_LIMIT:
            self.req_buffer = None  # too big to replay: this request will not be retried
        else:
            buf.append(data)

    def _pump_request(self) -> None:
        """Send what the upstream windows allow: the replayed body of a retry first, then new data."""
        up = self.up
        if up is None or self.req_end_sent:
            return
        eng = up.engine
        sid = self.up_sid
        pending = self.req_pending
        forwarded = 0
        ends_with_data = self.req_end_received and self.req_trailers is None
        try:
            replay = self.replay
            if replay:
                _, self.req_end_sent = _send_queued(eng, sid, replay, ends_with_data and not pending, None)
            if not replay and not self.req_end_sent:
                keep = self._keep_for_retry if self.req_buffer is not None else None
                forwarded, self.req_end_sent = _send_queued(eng, sid, pending, ends_with_data, keep)
                if not pending and self.req_end_received and not self.req_end_sent:
                    if self.req_trailers is not None:
                        eng.send_headers(sid, self.req_trailers, end_stream=True)
                    else:
                        eng.send_data(sid, b"", end_stream=True)
                    self.req_end_sent = True
        except StreamStateError:
            pending.clear()
        self.ctx.runtime.mark_dirty(up)
        if forwarded:
            self._ack_down(forwarded)

    def on_upstream_window(self) -> None:
        if self.replay or self.req_pending or (self.req_end_received and not self.req_end_sent):
            self._pump_request()

    def _ack_down(self, n: int) -> None:
        """Return ``n`` bytes of window to the downstream peer once the upstream side can take more."""
        up = self.up
        if up is not None and up.transport.pending >= up.transport.high_water:
            if not self.deferred_down_ack:
                up.transport.on_drain(self._release_down_ack)
            self.deferred_down_ack += n
            return
        self.down.engine.acknowledge_stream(n, self.down_sid)
        self.ctx.runtime.mark_dirty(self.down)

    def _release_down_ack(self) -> None:
        n = self.deferred_down_ack
        self.deferred_down_ack = 0
        if n and not self.done:
            self.down.engine.acknowledge_stream(n, self.down_sid)
            self.ctx.runtime.mark_dirty(self.down)
            self.ctx.runtime.flush()

    # ================================================================================== response

    def on_response_headers(self, ev: HeadersReceived) -> None:
        if self.done:
            return
        headers = ev.headers
        grpc_status: int | None = None
        ratelimited = False
        for name, value in headers:
            if name == b"grpc-status":
                grpc_status = _int(value)
            elif name == b"x-envoy-ratelimited":
                ratelimited = True
        if self.cluster is not None and self.cluster.outlier is not None:
            status = ev.status
            if status == 200 and grpc_status is not None and ev.end_stream:
                status = grpc_to_http_status(grpc_status)  # trailers-only gRPC error (Envoy's mapping)
            self._outlier(status)
        policy = self.retry_policy
        if policy is not None and would_retry_response(policy, ev.status, grpc_status, ratelimited):
            if self._can_retry():
                self._retry()
                return
            if self.attempts > policy.num_retries:
                self.flags = "URX"
        timer = self.per_try_timer
        if timer is not None:
            timer.cancel()
            self.per_try_timer = None
        self.response_code = ev.status
        self.grpc_status = grpc_status
        ctx = self.ctx
        out: list[Header] = []
        for h in headers:
            name = h[0]
            if name == b"x-envoy-upstream-service-time" and not ctx.suppress_envoy_headers:
                continue  # the router sets it (replacing an upstream proxy's value)
            if name in _STRIP_REQUEST:
                if name == b"x-envoy-peer-metadata":
                    self.peer_metadata = h[1]
                if ctx.strip_peer_metadata:
                    continue
            elif name == b"server" and ctx.server_header is not None:
                continue
            out.append(h)
        for m in self.response_mutations:
            _apply(out, m)
        extra = ctx.downstream_response_headers
        if extra:
            out.extend(extra)
        now = trio.current_time()
        if not ctx.suppress_envoy_headers:
            out.append((b"x-envoy-upstream-service-time", b"%d" % int((now - self.upstream_start) * 1000)))
        if self.include_attempt_count & 2:
            out.append((b"x-envoy-attempt-count", b"%d" % self.attempts))
        if ctx.server_header is not None:
            out.append((b"server", ctx.server_header))
        self.response_headers = out
        self.response_headers_time = now
        self.resp_headers_sent = True
        self.req_buffer = None  # committed: no more retries, no need to keep the body
        if ev.end_stream:
            self.resp_end_received = True
        try:
            self.down.engine.send_headers(self.down_sid, out, end_stream=ev.end_stream)
        except StreamStateError:
            self._finish()
            return
        ctx.runtime.mark_dirty(self.down)
        if ev.end_stream:
            self._response_complete()

    def on_response_data(self, ev: DataReceived) -> None:
        if self.done:
            self._ack_up_now(ev.flow_controlled_length)
            return
        data = ev.data
        self.last_activity = trio.current_time()
        self.bytes_sent += len(data)
        if ev.end_stream:
            self.resp_end_received = True
        down = self.down
        if not self.resp_pending:
            sid = self.down_sid
            if len(data) <= down.engine.max_send(sid):
                try:
                    down.engine.send_data(sid, data, end_stream=ev.end_stream)
                except StreamStateError:
                    self._finish()
                    return
                self.ctx.runtime.mark_dirty(down)
                self._ack_up(ev.flow_controlled_length)
                if ev.end_stream:
                    self._response_complete()
                return
        if data:
            self.resp_pending.append(data)
        self._pump_response()

    def on_response_trailers(self, ev: HeadersReceived) -> None:
        if self.done:
            return
        for name, value in ev.headers:
            if name == b"grpc-status":
                self.grpc_status = _int(value)
        self.resp_end_received = True
        self.resp_trailers = ev.headers
        self.response_trailers_seen = ev.headers
        self._pump_response()

    def _pump_response(self) -> None:
        """Send queued response data as the caller's windows allow, then the trailers (or END_STREAM)."""
        down = self.down
        eng = down.engine
        sid = self.down_sid
        pending = self.resp_pending
        try:
            forwarded, ended = _send_queued(eng, sid, pending, self.resp_end_received and self.resp_trailers is None,
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

    def on_downstream_window(self) -> None:
        if self.resp_pending or (self.resp_end_received and self.resp_trailers is not None):
            self._pump_response()

    def _ack_up(self, n: int) -> None:
        transport = self.down.transport
        if transport.pending >= transport.high_water:
            if not self.deferred_up_ack:
                transport.on_drain(self._release_up_ack)
            self.deferred_up_ack += n
            return
        self._ack_up_now(n)

    def _ack_up_now(self, n: int) -> None:
        up = self.up
        if up is not None and n:
            up.engine.acknowledge_stream(n, self.up_sid)
            self.ctx.runtime.mark_dirty(up)

    def _release_up_ack(self) -> None:
        n = self.deferred_up_ack
        self.deferred_up_ack = 0
        if n:
            self._ack_up_now(n)
            self.ctx.runtime.flush()

    def _response_complete(self) -> None:
        """The response ended downstream. Close what is still open and finish."""
        runtime = self.ctx.runtime
        if not self.req_end_received:
            # RFC 9113 8.1: a complete response before the whole request; ask the client to stop sending.
            self.down.engine.reset_stream(self.down_sid, ErrorCode.NO_ERROR)
            runtime.mark_dirty(self.down)
        up = self.up
        if up is not None and not self.req_end_sent and self.up_sid in up.engine.streams:
            up.engine.reset_stream(self.up_sid, ErrorCode.CANCEL)
            runtime.mark_dirty(up)
        self._finish()

    # ================================================================================== failures

    def fail(self, err: ProxyError) -> None:
        """The one place errors become responses: local reply before headers, trailers/reset after."""
        if self.done:
            return
        runtime = self.ctx.runtime
        if err.flag != "-" and self.flags == "-":
            self.flags = err.flag
        if not self.details:
            self.details = err.details
        if isinstance(err, errors.UpstreamConnectFailure):
            self.failure_reason = err.reason
        retry_timer = self.retry_timer
        if retry_timer is not None:
            retry_timer.cancel()
            self.retry_timer = None
            assert self.cluster is not None
            self.cluster.retries_active -= 1
        up = self.up
        if up is not None and self.up_sid in up.engine.streams:
            up.engine.reset_stream(self.up_sid, ErrorCode.CANCEL)
            runtime.mark_dirty(up)
        if self.pool is not None:
            self.pool.cancel(self)
            self.pool = None
        down = self.down
        eng = down.engine
        sid = self.down_sid
        if sid not in eng.streams:
            self._finish()
            return
        if not self.resp_headers_sent:
            headers, body = local_reply(err, self.is_grpc, self.ctx.server_header)
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

    def on_upstream_failure(self, err: ProxyError) -> None:
        """The pool could not give us a stream (connect failure, overflow)."""
        self.pool = None
        if isinstance(err, errors.UpstreamConnectFailure):
            self.failure_reason = err.reason
            self._outlier(503, local_origin=True)
            if self._retry_on_reset("connect-failure"):
                return
        self.fail(err)

    def on_upstream_reset(self, code: int, remote: bool) -> None:
        if self.done:
            return
        if not self.resp_headers_sent:
            if code == ErrorCode.REFUSED_STREAM:
                reason = "remote refused stream reset"
                kind: ResetKind = "refused-stream"
            elif remote:
                reason = "remote reset"
                kind = "reset"
            else:
                reason = "protocol error"
                kind = "reset"
            self._outlier(503, local_origin=True)
            if self._retry_on_reset(kind):
                return
            if self.up is not None:
                self.up.stream_done(self.up_sid)
                self.up = None
            self.fail(errors.UpstreamReset(reason, "UR" if remote else "UPE"))
            return
        if self.up is not None:
            self.up.stream_done(self.up_sid)
            self.up = None
        self.flags = "UR" if remote else "UPE"
        if remote:
            # Relay the upstream's reset code untouched.
            self.down.engine.reset_stream(self.down_sid, code)
            self.ctx.runtime.mark_dirty(self.down)
            self._finish()
        else:
            self.fail(errors.UpstreamReset("protocol error", "UPE"))

    def on_upstream_lost(self, reason: str) -> None:
        """The upstream connection ended under this stream."""
        if self.done:
            return
        self.up = None
        if not self.resp_headers_sent:
            self._outlier(503, local_origin=True)
            if self._retry_on_reset("reset"):
                return
        self.fail(errors.UpstreamReset(reason, "UC"))

    def on_downstream_reset(self, code: int) -> None:
        """The caller reset the stream (cancel): propagate to the upstream at once."""
        if self.done:
            return
        if self.flags == "-":
            self.flags = "DC"
        up = self.up
        runtime = self.ctx.runtime
        if up is not None and self.up_sid in up.engine.streams:
            up.engine.reset_stream(self.up_sid, ErrorCode.CANCEL)
            runtime.mark_dirty(up)
        if self.pool is not None:
            self.pool.cancel(self)
            self.pool = None
        if self.retry_timer is not None:
            self.retry_timer.cancel()
            self.retry_timer = None
            assert self.cluster is not None
            self.cluster.retries_active -= 1
        if self.shadows is not None:
            for shadow in self.shadows:
                shadow.cancel()
        self._finish()

    def on_downstream_lost(self) -> None:
        self.on_downstream_reset(ErrorCode.CANCEL)

    def _on_timeout(self) -> None:
        self.timer = None
        if self.done:
            return
        if self.cluster is not None:
            self.cluster.stats.upstream_rq_timeout += 1
            if not self.resp_headers_sent:
                self._outlier(504, local_origin=True)
        if self.deadline_from_caller:
            self.fail(errors.DurationTimeout(self.req_end_received))
        else:
            self.fail(errors.UpstreamTimeout())

    def _on_max_duration(self) -> None:
        self.timer = None
        if not self.done:
            self.fail(errors.MaxStreamDuration())

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
        for timer in (self.timer, self.idle_timer, self.per_try_timer, self.request_timer):
            if timer is not None:
                timer.cancel()
        self.timer = self.idle_timer = self.per_try_timer = self.request_timer = None
        self.down.stream_done(self.down_sid)
        up = self.up
        if up is not None:
            up.stream_done(self.up_sid)
            self.deferred_up_ack = 0
        host = self.host
        if host is not None:
            host.active_requests -= 1
            cluster = self.cluster
            assert cluster is not None
            cluster.stats.upstream_rq_active -= 1
        self.req_buffer = None
        self.ctx.record(self)


def _send_queued(eng: H2Connection, sid: int, queue: deque[bytes], end_with_last: bool,
                 keep: Callable[[bytes], None] | None) -> tuple[int, bool]:
    """Send chunks from ``queue`` as far as the stream's flow-control windows allow (splitting one if needed).

    Returns (bytes sent, END_STREAM sent). ``end_with_last``: put END_STREAM on the last chunk; ``keep`` is called
    with every piece sent (the retry buffer)."""
    sent = 0
    while queue:
        room = eng.max_send(sid)
        if room <= 0:
            break
        chunk = queue[0]
        if len(chunk) > room:
            part = chunk[:room]
            eng.send_data(sid, part)
            queue[0] = chunk[room:]
            if keep is not None:
                keep(part)
            return sent + room, False
        queue.popleft()
        last = end_with_last and not queue
        eng.send_data(sid, chunk, end_stream=last)
        sent += len(chunk)
        if keep is not None:
            keep(chunk)
        if last:
            return sent, True
    return sent, False


def _int(value: bytes) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _set_header(headers: list[Header], name: bytes, value: bytes) -> None:
    for i, (n, _) in enumerate(headers):
        if n == name:
            headers[i] = (name, value)
            return
    headers.append((name, value))


def _append_xff(headers: list[Header], address: bytes) -> None:
    """``use_remote_address``: append the downstream address to x-forwarded-for."""
    for i, (n, v) in enumerate(headers):
        if n == b"x-forwarded-for":
            headers[i] = (n, v + b"," + address)
            return
    headers.append((b"x-forwarded-for", address))


def _apply(headers: list[Header], mutation: CompiledMutation) -> None:
    """Apply one header mutation in place (remove, then add/overwrite)."""
    if mutation.remove:
        remove = mutation.remove
        headers[:] = [h for h in headers if h[0] not in remove]
    for key, value, append in mutation.add:
        if not append:
            headers[:] = [h for h in headers if h[0] != key]
        headers.append((key, value))

"""The router: the terminal HTTP filter, which owns the upstream side of one request (Envoy's ``Router::Filter``).

A :class:`Router` is made when a request has passed every other filter. It prepares the upstream request
(route timeout or the caller's grpc-timeout, header mutations, rewrites, Envoy's ``x-envoy-*`` headers),
then runs *attempts*: pick a host, ask its pool for a stream, send headers and body, relay the response to
the request's downstream side (:class:`~pyproxy.proxy.stream.ProxyStream`, seen as a :class:`RouterDownstream`),
which runs it back through the filters. Pools and upstream connections call the router directly
(``bind_upstream``, ``on_response_*``, ``on_upstream_*``).

Retries: until response headers are committed downstream, an attempt that fails in a way the route's retry
policy covers (connect failure, refused stream, reset, per-try timeout, a retriable status or a trailers-only
grpc-status) is abandoned and, after a jittered back-off, replayed on another host from the body kept in
:class:`~pyproxy.proxy.retry_state.RetryState`. The route timeout covers all attempts.

Better than Envoy for gRPC, opt-in per route (route metadata ``filter_metadata["minimesh"]``, see
:class:`~pyproxy.config.model.GrpcTrailersOptions`), off by default so behaviour stays Envoy's:
``retry_on_trailers``: a unary call whose response carries its grpc-status in *trailers* after headers is
held (up to the retry buffer limit) until those trailers arrive, and retried if that status is retriable
(envoy#11049); a response that turns out to be a stream (a second message begins) is committed and flows;
``outlier_on_trailers``: outlier detection counts that grpc-status instead of the 200 of the headers
(envoy#8228).

Flow control: request DATA is sent upstream as far as the upstream stream's windows allow; window goes back
to the caller only for bytes handed to the upstream transport, and not while that transport is above its
high-water mark (and symmetrically for the response, in :class:`ProxyStream`).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

import trio

from pyproxy.config.model import RouteAction
from pyproxy.http2.connection import StreamStateError
from pyproxy.http2.events import DataReceived, HeadersReceived
from pyproxy.http2.frames import ErrorCode
from pyproxy.http2.hpack import Header
from pyproxy.proxy import errors
from pyproxy.proxy.errors import ProxyError, grpc_to_http_status
from pyproxy.proxy.flow import send_queued
from pyproxy.proxy.headers import apply_mutation, header_int, set_header
from pyproxy.proxy.retry_state import RETRY_BUFFER_LIMIT, RetryState
from pyproxy.proxy.shadow import ShadowStream, shadow_authority
from pyproxy.proxy.upstream_request import PEER_METADATA_HEADERS, final_timeout, upstream_headers
from pyproxy.retry import ResetKind, backoff, would_retry_reset, would_retry_response

if TYPE_CHECKING:
    from pyproxy.io.transport import Transport
    from pyproxy.proxy.context import ChainContext
    from pyproxy.routing.table import CompiledMutation, CompiledRoute
    from pyproxy.timers import TimerHandle
    from pyproxy.upstream.cluster import ClusterState, Host
    from pyproxy.upstream.connection import UpstreamConnection
    from pyproxy.upstream.pool import HostPool



class RouterConnection(Protocol):
    """The downstream connection as the router sees it: the transport whose backlog holds back the upstream's
    window (:meth:`Router.ack_response`)."""

    @property
    def transport(self) -> Transport: ...


class RouterDownstream(Protocol):
    """The request's downstream side as its router sees it (:class:`~pyproxy.proxy.stream.ProxyStream`): the
    request to forward, the record it fills in (host, attempts, response code and grpc-status, identities,
    timings, flags), and where the response goes (through the filters, then downstream)."""

    @property
    def ctx(self) -> ChainContext: ...

    @property
    def down(self) -> RouterConnection: ...

    # The request
    @property
    def request_headers(self) -> list[Header]: ...

    @property
    def is_grpc(self) -> bool: ...

    @property
    def start_time(self) -> float: ...

    @property
    def req_end_received(self) -> bool: ...

    @property
    def req_trailers(self) -> list[Header] | None: ...

    # Where the request is
    @property
    def done(self) -> bool: ...

    @property
    def resp_headers_sent(self) -> bool: ...

    # The record, filled in by the router
    host: Host | None
    attempts: int
    response_code: int
    grpc_status: int | None
    peer_metadata: bytes | None
    failure_reason: str
    upstream_principal: str
    upstream_local: tuple[str, int] | None
    upstream_start: float
    response_headers_time: float

    def add_flag(self, flag: str) -> None: ...

    # The response, and the request's flow control
    def encode_headers(self, headers: list[Header], end: bool) -> None: ...

    def encode_data(self, data: bytes, end: bool, flow_len: int) -> None: ...

    def encode_trailers(self, trailers: list[Header]) -> None: ...

    def ack_request(self, n: int) -> None: ...

    # Endings
    def fail(self, err: ProxyError) -> None: ...

    def reset_downstream(self, code: int) -> None: ...


class Router:
    __slots__ = (
        "action", "cluster", "deadline_from_caller", "deferred_down_ack", "deferred_up_ack", "held",
        "held_bytes", "held_headers", "hold_for_trailers", "host", "include_attempt_count", "outlier_on_trailers",
        "per_try_timer", "pool", "replay", "req_end_sent", "req_pending", "response_mutations", "retry",
        "s", "shadows", "timer", "trailers_in", "up", "up_sid", "upstream_headers", "end_in",
    )

    def __init__(self, s: RouterDownstream, croute: CompiledRoute, action: RouteAction, cluster: ClusterState,
                 end_in: bool) -> None:
        self.s = s
        # The request's end and trailers as they reached the router (past the filters, which may hold them).
        self.end_in = end_in
        self.trailers_in: list[Header] | None = None
        self.action = action
        self.cluster = cluster
        self.host: Host | None = None
        self.pool: HostPool | None = None  # set by the pool while the attempt waits for a stream
        self.up: UpstreamConnection | None = None
        self.up_sid = 0
        self.upstream_headers: list[Header] = []
        self.response_mutations: tuple[CompiledMutation, ...] = ()
        self.req_pending: deque[bytes] = deque()
        self.req_end_sent = False
        self.replay: deque[bytes] | None = None
        self.deferred_down_ack = 0
        self.deferred_up_ack = 0
        self.timer: TimerHandle | None = None
        self.per_try_timer: TimerHandle | None = None
        self.deadline_from_caller = False
        self.retry: RetryState | None = None
        self.include_attempt_count = 0  # bit 1: on upstream requests, bit 2: on downstream responses
        self.shadows: list[ShadowStream] | None = None
        opts = croute.grpc_trailers
        self.hold_for_trailers = opts.retry_on_trailers
        self.outlier_on_trailers = opts.outlier_on_trailers
        self.held: list[tuple[bytes, bool]] | None = None  # a response's DATA, held until its trailers
        self.held_headers: list[Header] = []
        self.held_bytes = 0

    # ================================================================================== start

    def start(self, croute: CompiledRoute, grpc_timeout: bytes | None) -> None:
        """The request reached the router: build the upstream request and start the first attempt."""
        s = self.s
        ctx = s.ctx
        runtime = ctx.runtime
        action = self.action
        cluster_name = self.cluster.name
        timeout, self.deadline_from_caller = final_timeout(action, grpc_timeout)
        max_duration = action.max_stream_duration if action.max_stream_duration is not None else (
            ctx.max_stream_duration)
        request_mutations, self.response_mutations = croute.mutations(cluster_name)
        up_headers = upstream_headers(s.request_headers, request_mutations, croute, action, timeout, s.is_grpc,
                                      strip_peer_metadata=ctx.strip_peer_metadata,
                                      suppress_envoy_headers=ctx.suppress_envoy_headers,
                                      extra=ctx.upstream_request_headers)
        vhost = croute.vhost
        if vhost is not None:
            if vhost.include_request_attempt_count:
                self.include_attempt_count |= 1
                up_headers.append((b"x-envoy-attempt-count", b"1"))
            if vhost.include_attempt_count_in_response:
                self.include_attempt_count |= 2
        self.upstream_headers = up_headers
        if max_duration and (not timeout or max_duration < timeout):
            self.timer = runtime.timers.call_at(s.start_time + max_duration, self._on_max_duration)
        elif timeout:
            self.timer = runtime.timers.call_later(timeout, self._on_timeout)
        policy = action.retry_policy or (vhost.retry_policy if vhost is not None else None)
        if policy is not None and policy.num_retries > 0:
            self.retry = RetryState(policy)
        if action.mirrors:
            self._start_shadows(up_headers)
        self._start_attempt()

    def _start_shadows(self, up_headers: list[Header]) -> None:
        s = self.s
        runtime = s.ctx.runtime
        for mirror in self.action.mirrors:
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
            if self.end_in and self.trailers_in is None:
                shadow.on_data(b"", True)
            elif self.trailers_in is not None:
                shadow.on_trailers(self.trailers_in)
            cluster.pool_for(host).attach(shadow)

    # ================================================================================== attempts

    def _start_attempt(self) -> None:
        """Pick a host and ask its pool for a stream (first try, or a retry after back-off)."""
        s = self.s
        if s.done:
            return
        cluster = self.cluster
        stats = cluster.stats
        if stats.upstream_rq_active >= cluster.config.circuit_breakers.max_requests:
            stats.upstream_rq_pending_overflow += 1  # Envoy counts request overflow here for HTTP/2
            s.fail(errors.Overflow())
            return
        host = self._pick_host()
        if host is None:
            s.fail(errors.NoHealthyUpstream())
            return
        self.host = s.host = host
        s.attempts += 1
        host.active_requests += 1
        stats.upstream_rq_total += 1
        stats.upstream_rq_active += 1
        retry = self.retry
        if retry is not None and retry.policy.per_try_timeout:
            self.per_try_timer = s.ctx.runtime.timers.call_later(retry.policy.per_try_timeout,
                                                                 self._on_per_try_timeout)
        cluster.pool_for(host).attach(self)

    def _pick_host(self) -> Host | None:
        cluster = self.cluster
        rng = self.s.ctx.runtime.rng
        host = cluster.pick_host(rng)
        retry = self.retry
        if host is not None and retry is not None and retry.tried_hosts and retry.policy.retry_previous_hosts:
            # retry_host_predicate previous_hosts: re-pick up to host_selection_retry_max_attempts times.
            tried = retry.tried_hosts
            for _ in range(max(retry.policy.host_selection_retry_max_attempts, 1)):
                if host not in tried:
                    break
                host = cluster.pick_host(rng)
        return host

    def _end_attempt(self) -> None:
        """Abandon the current upstream attempt (its stream reset, its host released)."""
        runtime = self.s.ctx.runtime
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
            self.cluster.stats.upstream_rq_active -= 1
            if self.retry is not None:
                self.retry.tried_hosts.append(host)
            self.host = None
        self.req_end_sent = False
        self.replay = None
        self.held = None
        self.held_bytes = 0

    def _can_retry(self) -> bool:
        retry = self.retry
        s = self.s
        self._release_retry()  # the attempt that just ended was this request's outstanding retry, if any
        if retry is None or not retry.retriable or s.resp_headers_sent or s.done:
            return False
        if not retry.attempts_left(s.attempts):
            return False
        cluster = self.cluster
        if cluster.retries_active >= cluster.config.circuit_breakers.max_retries:
            cluster.stats.upstream_rq_retry_overflow += 1
            s.add_flag("UO")  # Envoy's flag for a retry overflow; the upstream's response is relayed
            return False
        return True

    def _release_retry(self) -> None:
        """This request's retry no longer counts against the cluster's max_retries (its attempt ended)."""
        retry = self.retry
        if retry is not None and retry.outstanding:
            retry.outstanding = False
            self.cluster.retries_active -= 1

    def _retry(self) -> None:
        """Schedule the next attempt after Envoy's jittered exponential back-off."""
        retry = self.retry
        assert retry is not None
        cluster = self.cluster
        self._end_attempt()
        cluster.stats.upstream_rq_retry += 1
        cluster.retries_active += 1
        retry.outstanding = True
        runtime = self.s.ctx.runtime
        delay = backoff(self.s.attempts, retry.policy.base_interval, retry.policy.max_interval, runtime.rng)
        retry.timer = runtime.timers.call_later(delay, self._retry_now)

    def _retry_now(self) -> None:
        retry = self.retry
        assert retry is not None
        retry.timer = None
        self._start_attempt()

    def _retry_on_reset(self, kind: ResetKind) -> bool:
        retry = self.retry
        if retry is None or not would_retry_reset(retry.policy, kind):
            return False
        if not self._can_retry():
            if not retry.attempts_left(self.s.attempts):
                self.s.add_flag("URX")
            return False
        self._retry()
        return True

    def _on_per_try_timeout(self) -> None:
        self.per_try_timer = None
        s = self.s
        if s.done or s.resp_headers_sent:
            return
        self.cluster.stats.upstream_rq_per_try_timeout += 1
        self._outlier(504, local_origin=True)
        if self._retry_on_reset("reset"):
            return
        s.fail(errors.UpstreamTimeout())

    def _on_timeout(self) -> None:
        self.timer = None
        s = self.s
        if s.done:
            return
        self.cluster.stats.upstream_rq_timeout += 1
        if not s.resp_headers_sent:
            self._outlier(504, local_origin=True)
        if self.deadline_from_caller:
            s.fail(errors.DurationTimeout(s.req_end_received))
        else:
            s.fail(errors.UpstreamTimeout())

    def _on_max_duration(self) -> None:
        self.timer = None
        if not self.s.done:
            self.s.fail(errors.MaxStreamDuration())

    def _outlier(self, status: int, local_origin: bool = False) -> None:
        """Tell outlier detection how the current attempt ended."""
        host = self.host
        outlier = self.cluster.outlier
        if host is not None and outlier is not None:
            outlier.report(host, status, local_origin)

    # ================================================================================== request body

    def bind_upstream(self, conn: UpstreamConnection, sid: int) -> None:
        """Called by the pool: the upstream stream is ``sid`` on ``conn``; send headers and queued body."""
        s = self.s
        self.up = conn
        self.up_sid = sid
        self.pool = None
        s.upstream_principal = conn.peer_principal
        s.upstream_local = conn.local_address
        s.upstream_start = trio.current_time()
        headers = self.upstream_headers
        if s.attempts > 1:
            if self.include_attempt_count & 1:
                headers = list(headers)
                set_header(headers, b"x-envoy-attempt-count", b"%d" % s.attempts)
            retry = self.retry
            if retry is not None and retry.body:
                self.replay = deque(retry.body)
        end = self.end_in and not self.replay and not self.req_pending and self.trailers_in is None
        conn.engine.send_headers(sid, headers, end_stream=end)
        if end:
            self.req_end_sent = True
        elif self.replay or self.req_pending or self.end_in:
            self._pump_request()

    def on_request_data(self, data: bytes, end: bool, flow_len: int) -> None:
        """Request DATA that passed the filters (the stream updated its counters and end flag)."""
        if end:
            self.end_in = True
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
                self.s.ctx.runtime.mark_dirty(up)
                retry = self.retry
                if retry is not None and data:
                    retry.keep(data)
                self._ack_down(flow_len)
                return
        if data:
            self.req_pending.append(data)
        elif not end:
            return
        if up is not None:
            self._pump_request()

    def on_request_trailers(self, trailers: list[Header]) -> None:
        self.end_in = True
        self.trailers_in = trailers
        if self.shadows is not None:
            for shadow in self.shadows:
                shadow.on_trailers(trailers)
        if self.up is not None:
            self._pump_request()

    def _pump_request(self) -> None:
        """Send what the upstream windows allow: the replayed body of a retry first, then new data."""
        up = self.up
        if up is None or self.req_end_sent:
            return
        s = self.s
        eng = up.engine
        sid = self.up_sid
        pending = self.req_pending
        forwarded = 0
        ends_with_data = self.end_in and self.trailers_in is None
        try:
            replay = self.replay
            if replay:
                _, self.req_end_sent = send_queued(eng, sid, replay, ends_with_data and not pending, None)
            if not replay and not self.req_end_sent:
                keep = self.retry.keep if self.retry is not None and self.retry.retriable else None
                forwarded, self.req_end_sent = send_queued(eng, sid, pending, ends_with_data, keep)
                if not pending and self.end_in and not self.req_end_sent:
                    if self.trailers_in is not None:
                        eng.send_headers(sid, self.trailers_in, end_stream=True)
                    else:
                        eng.send_data(sid, b"", end_stream=True)
                    self.req_end_sent = True
        except StreamStateError:
            pending.clear()
        s.ctx.runtime.mark_dirty(up)
        if forwarded:
            self._ack_down(forwarded)

    def on_upstream_window(self) -> None:
        if self.replay or self.req_pending or (self.end_in and not self.req_end_sent):
            self._pump_request()

    def _ack_down(self, n: int) -> None:
        """Return ``n`` bytes of window to the downstream peer once the upstream side can take more."""
        up = self.up
        if up is not None and up.transport.pending >= up.transport.high_water:
            if not self.deferred_down_ack:
                up.transport.on_drain(self._release_down_ack)
            self.deferred_down_ack += n
            return
        self.s.ack_request(n)

    def _release_down_ack(self) -> None:
        n = self.deferred_down_ack
        self.deferred_down_ack = 0
        if n and not self.s.done:
            self.s.ack_request(n)
            self.s.ctx.runtime.flush()

    # ================================================================================== response

    def on_response_headers(self, ev: HeadersReceived) -> None:
        s = self.s
        if s.done:
            return
        headers = ev.headers
        grpc_status: int | None = None
        ratelimited = False
        for name, value in headers:
            if name == b"grpc-status":
                grpc_status = header_int(value)
            elif name == b"x-envoy-ratelimited":
                ratelimited = True
        status = ev.status
        retry = self.retry
        # Hold a gRPC response whose status will come in trailers, to retry on it (opt-in, unary calls only:
        # the whole request has arrived and was kept for replay).
        hold = (self.hold_for_trailers and grpc_status is None and not ev.end_stream and status == 200
                and retry is not None and retry.retriable and self.end_in and s.is_grpc)
        if self.cluster.outlier is not None and not (self.outlier_on_trailers and grpc_status is None
                                                     and not ev.end_stream):
            outlier_status = status
            if status == 200 and grpc_status is not None and ev.end_stream:
                outlier_status = grpc_to_http_status(grpc_status)  # trailers-only gRPC error (Envoy's mapping)
            self._outlier(outlier_status)
        if retry is not None and would_retry_response(retry.policy, status, grpc_status, ratelimited):
            if self._can_retry():
                self._retry()
                return
            if not retry.attempts_left(s.attempts):
                s.add_flag("URX")
        timer = self.per_try_timer
        if timer is not None and not hold:
            timer.cancel()
            self.per_try_timer = None
        s.response_code = status
        s.grpc_status = grpc_status
        out = self._downstream_headers(headers)
        if hold:
            self.held = []
            self.held_headers = out
            return
        if retry is not None:
            retry.commit()
            self._release_retry()
        s.encode_headers(out, ev.end_stream)

    def _downstream_headers(self, headers: list[Header]) -> list[Header]:
        s = self.s
        ctx = s.ctx
        out: list[Header] = []
        for h in headers:
            name = h[0]
            if name == b"x-envoy-upstream-service-time" and not ctx.suppress_envoy_headers:
                continue  # the router sets it (replacing an upstream proxy's value)
            if name in PEER_METADATA_HEADERS:
                if name == b"x-envoy-peer-metadata":
                    s.peer_metadata = h[1]
                if ctx.strip_peer_metadata:
                    continue
            elif name == b"server" and ctx.server_header is not None:
                continue
            out.append(h)
        for m in self.response_mutations:
            apply_mutation(out, m)
        extra = ctx.downstream_response_headers
        if extra:
            out.extend(extra)
        now = s.response_headers_time = trio.current_time()
        if not ctx.suppress_envoy_headers:
            out.append((b"x-envoy-upstream-service-time", b"%d" % int((now - s.upstream_start) * 1000)))
        if self.include_attempt_count & 2:
            out.append((b"x-envoy-attempt-count", b"%d" % s.attempts))
        if ctx.server_header is not None:
            out.append((b"server", ctx.server_header))
        return out

    def on_response_data(self, ev: DataReceived) -> None:
        s = self.s
        if s.done:
            self.ack_response_now(ev.flow_controlled_length)
            return
        held = self.held
        if held is not None:
            held.append((ev.data, ev.end_stream))
            self.held_bytes += len(ev.data)
            self.ack_response_now(ev.flow_controlled_length)  # held bytes are bounded by the buffer limit
            if ev.end_stream or self.held_bytes > RETRY_BUFFER_LIMIT or self._holds_a_stream():
                self._release_held(None)  # no trailers, too big to hold, or a stream: commit what we have
            return
        s.encode_data(ev.data, ev.end_stream, ev.flow_controlled_length)

    def on_response_trailers(self, ev: HeadersReceived) -> None:
        s = self.s
        if s.done:
            return
        grpc_status: int | None = None
        for name, value in ev.headers:
            if name == b"grpc-status":
                grpc_status = header_int(value)
        if grpc_status is not None and self.outlier_on_trailers and self.cluster.outlier is not None:
            self._outlier(grpc_to_http_status(grpc_status))
        if self.held is not None:
            retry = self.retry
            if (retry is not None and grpc_status is not None
                    and would_retry_response(retry.policy, 200, grpc_status, False)):
                if self._can_retry():
                    self._retry()
                    return
                if not retry.attempts_left(s.attempts):
                    s.add_flag("URX")
            self._release_held(ev.headers, grpc_status)
            return
        if grpc_status is not None:
            s.grpc_status = grpc_status
        s.encode_trailers(ev.headers)

    def _holds_a_stream(self) -> bool:
        """The held response has begun a second gRPC message: a server stream, not a unary reply, which must
        flow rather than wait for its trailers (its first message was held until then)."""
        held = self.held
        assert held is not None
        head = b""
        for data, _ in held:
            head += data[:5 - len(head)]
            if len(head) == 5:
                return self.held_bytes > 5 + int.from_bytes(head[1:], "big")  # 5-byte gRPC message prefix
        return False

    def _release_held(self, trailers: list[Header] | None, grpc_status: int | None = None) -> None:
        """Commit a held response downstream: headers, the data, then the trailers (if they came)."""
        s = self.s
        held = self.held
        assert held is not None
        self.held = None
        self.held_bytes = 0
        timer = self.per_try_timer
        if timer is not None:
            timer.cancel()
            self.per_try_timer = None
        if self.retry is not None:
            self.retry.commit()
            self._release_retry()
        s.encode_headers(self.held_headers, False)
        for data, end in held:
            if s.done:
                return
            s.encode_data(data, end, 0)
        if trailers is not None and not s.done:
            if grpc_status is not None:
                s.grpc_status = grpc_status
            s.encode_trailers(trailers)

    def ack_response(self, n: int) -> None:
        """Return ``n`` bytes of the upstream's window once the downstream transport can take more."""
        transport = self.s.down.transport
        if transport.pending >= transport.high_water:
            if not self.deferred_up_ack:
                transport.on_drain(self._release_up_ack)
            self.deferred_up_ack += n
            return
        up = self.up
        if up is not None and n:
            up.engine.acknowledge_stream(n, self.up_sid)
            self.s.ctx.runtime.mark_dirty(up)

    def ack_response_now(self, n: int) -> None:
        up = self.up
        if up is not None and n:
            up.engine.acknowledge_stream(n, self.up_sid)
            self.s.ctx.runtime.mark_dirty(up)

    def _release_up_ack(self) -> None:
        n = self.deferred_up_ack
        self.deferred_up_ack = 0
        if n:
            self.ack_response_now(n)
            self.s.ctx.runtime.flush()

    # ================================================================================== failures

    def on_upstream_failure(self, err: ProxyError) -> None:
        """The pool could not give us a stream (connect failure, overflow)."""
        self.pool = None
        if isinstance(err, errors.UpstreamConnectFailure):
            self.s.failure_reason = err.reason
            self._outlier(503, local_origin=True)
            if self._retry_on_reset("connect-failure"):
                return
        self.s.fail(err)

    def on_upstream_reset(self, code: int, remote: bool) -> None:
        s = self.s
        if s.done:
            return
        if not s.resp_headers_sent:
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
            self._release_stream()
            s.fail(errors.UpstreamReset(reason, "UR" if remote else "UPE"))
            return
        self._release_stream()
        s.add_flag("UR" if remote else "UPE")
        if remote:
            s.reset_downstream(code)  # relay the upstream's reset code untouched
        else:
            s.fail(errors.UpstreamReset("protocol error", "UPE"))

    def _release_stream(self) -> None:
        if self.up is not None:
            self.up.stream_done(self.up_sid)
            self.up = None

    def on_upstream_lost(self, reason: str) -> None:
        """The upstream connection ended under this stream."""
        s = self.s
        if s.done:
            return
        self.up = None
        if not s.resp_headers_sent:
            self._outlier(503, local_origin=True)
            if self._retry_on_reset("reset"):
                return
        s.fail(errors.UpstreamReset(reason, "UC"))

    # ================================================================================== end

    def cancel(self) -> None:
        """The request ended from the downstream side (or the proxy answered it): stop the upstream side."""
        runtime = self.s.ctx.runtime
        retry = self.retry
        if retry is not None and retry.timer is not None:
            retry.timer.cancel()
            retry.timer = None
        self._release_retry()
        up = self.up
        if up is not None and self.up_sid in up.engine.streams:
            up.engine.reset_stream(self.up_sid, ErrorCode.CANCEL)
            runtime.mark_dirty(up)
        if self.pool is not None:
            self.pool.cancel(self)
            self.pool = None

    def cancel_shadows(self) -> None:
        if self.shadows is not None:
            for shadow in self.shadows:
                shadow.cancel()

    def response_complete(self) -> None:
        """The response ended downstream: an upstream request still being sent is cancelled."""
        up = self.up
        if up is not None and not self.req_end_sent and self.up_sid in up.engine.streams:
            up.engine.reset_stream(self.up_sid, ErrorCode.CANCEL)
            self.s.ctx.runtime.mark_dirty(up)

    def finish(self) -> None:
        """Release everything the request holds upstream (called once, when the stream finishes)."""
        for timer in (self.timer, self.per_try_timer):
            if timer is not None:
                timer.cancel()
        self.timer = self.per_try_timer = None
        up = self.up
        if up is not None:
            up.stream_done(self.up_sid)
            self.deferred_up_ack = 0
        host = self.host
        if host is not None:
            host.active_requests -= 1
            self.cluster.stats.upstream_rq_active -= 1
        if self.retry is not None:
            self.retry.commit()
            self._release_retry()
        self.held = None

"""The fault filter against a fake request (FilterCallbacks), a fake clock and a seeded random source: every
decision of Envoy's fault_filter.cc, with no sockets.

Statistical checks draw from a seeded ``random.Random``, so they are deterministic; their tolerances are
stated in standard deviations of the binomial (sigma = sqrt(p (1 - p) / n)) and are far tighter than the
error a wrong denominator, a second draw or a dropped header would make. Exact replays (a second
``random.Random`` with the same seed) pin the rule itself: one 64-bit draw per decision, ``draw % denominator
< numerator``.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterable

import pytest

from pyproxy.config.model import (
    FaultAbort,
    FaultConfig,
    FaultDelay,
    FractionalPercent,
    HeaderMatcher,
    Route,
    RouteAction,
    RouteMatch,
    StringMatcher,
    VirtualHost,
)
from pyproxy.filters import FACTORIES, build_filters
from pyproxy.filters.api import CONTINUE, STOP, FilterEnv, PeerFacts, Status
from pyproxy.filters.fault import MAX_DOWNSTREAM_CLUSTERS, FaultCounters, FaultFilter
from pyproxy.filters.rbac import RbacCounters
from pyproxy.http2.hpack import Header
from pyproxy.proxy import errors
from pyproxy.proxy.errors import ProxyError
from pyproxy.routing.table import CompiledRoute

NAME = "envoy.filters.http.fault"


# ------------------------------------------------------------------------------------------- fakes


class FakeTimer:
    def __init__(self, when: float, seq: int, callback: Callable[[], None]) -> None:
        self.when, self.seq, self.callback = when, seq, callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: FakeTimer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)


class FakeEnv:
    """A clock that moves only when the test advances it, and a seeded random source."""

    def __init__(self, seed: int = 1, rng: random.Random | None = None) -> None:
        self.rng = rng if rng is not None else random.Random(seed)
        self.clock = 0.0
        self.timers: list[FakeTimer] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.clock

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(self.clock + delay, next(self._seq), callback)
        heapq.heappush(self.timers, timer)
        return timer

    def advance(self, seconds: float) -> None:
        end = self.clock + seconds
        for _ in range(100_000):  # bounded: a callback may schedule more timers
            if not self.timers or self.timers[0].when > end:
                break
            timer = heapq.heappop(self.timers)
            self.clock = timer.when
            if not timer.cancelled:
                timer.callback()
        self.clock = end

    def pending(self) -> int:
        return sum(1 for t in self.timers if not t.cancelled)


class FakeRequest:
    """What a request offers its filters (FilterCallbacks), recording what the filter does with it."""

    def __init__(self, env: FilterEnv, headers: Iterable[tuple[str, str]] = (), *, route: CompiledRoute | None = None,
                 is_grpc: bool = True) -> None:
        self.env = env
        self.request_headers: list[Header] = [
            (b":method", b"POST"), (b":path", b"/payment.PaymentService/Charge"), (b":authority", b"payment"),
            (b"content-type", b"application/grpc" if is_grpc else b"text/plain"),
            *((k.encode(), v.encode()) for k, v in headers)]
        self.method = b"POST"
        self.path = b"/payment.PaymentService/Charge"
        self.authority = b"payment"
        self.is_grpc = is_grpc
        self.route = route
        self.cluster_name = route.clusters[0] if route is not None and route.clusters else ""  # the route's pick
        self.filter_state: dict[str, object] | None = None
        self.replies: list[ProxyError] = []
        self.flags: list[str] = []
        self.resumed = 0

    def per_route_config(self, filter_name: str) -> object | None:
        return self.route.per_filter.get(filter_name) if self.route is not None else None

    def send_local_reply(self, error: ProxyError) -> None:
        self.replies.append(error)

    def resume_request(self) -> None:
        self.resumed += 1

    def resume_response(self) -> None:
        raise AssertionError("the fault filter never stops responses")

    def add_flag(self, flag: str) -> None:
        self.flags.append(flag)

    def peer_facts(self) -> PeerFacts:
        raise AssertionError("the fault filter does not look at the connection")


def route(per_route: FaultConfig | object | None = None, vhost: FaultConfig | object | None = None,
          cluster: str = "backend") -> CompiledRoute:
    r = Route(name="r", match=RouteMatch(prefix="/"), action=RouteAction(cluster=cluster),
              per_filter_config=((NAME, per_route),) if per_route is not None else ())
    vh = VirtualHost(name="v", domains=("*",), routes=(r,),
                     per_filter_config=((NAME, vhost),) if vhost is not None else ())
    return CompiledRoute(r, vh)


def pct(numerator: int, denominator: int = 100) -> FractionalPercent:
    return FractionalPercent(numerator, denominator)


ALWAYS = FractionalPercent(100)


def abort_http(status: int = 503, percentage: FractionalPercent = ALWAYS) -> FaultAbort:
    return FaultAbort(kind="http", percentage=percentage, http_status=status)


def abort_grpc(code: int = 14, percentage: FractionalPercent = ALWAYS) -> FaultAbort:
    return FaultAbort(kind="grpc", percentage=percentage, grpc_status=code)


def delay_fixed(ms: int = 200, percentage: FractionalPercent = ALWAYS) -> FaultDelay:
    return FaultDelay(percentage=percentage, fixed_delay_ms=ms)


HEADER_ABORT = FaultAbort(kind="header", percentage=FractionalPercent(100))
HEADER_DELAY = FaultDelay(percentage=FractionalPercent(100))


def fault_filter(config: FaultConfig | None = None, counters: FaultCounters | None = None) -> FaultFilter:
    return FaultFilter(NAME, config if config is not None else FaultConfig(), counters)


def run(f: FaultFilter, env: FakeEnv, headers: Iterable[tuple[str, str]] = (), *, route: CompiledRoute | None = None,
        is_grpc: bool = True) -> tuple[FakeRequest, Status]:
    req = FakeRequest(env, headers, route=route, is_grpc=is_grpc)
    return req, f.on_request_headers(req, True)


def aborted(f: FaultFilter, env: FakeEnv, n: int, headers: Iterable[tuple[str, str]] = ()) -> int:
    """Run ``n`` requests to completion (each ends before the next), counting the aborted ones."""
    count = 0
    for _ in range(n):
        req, status = run(f, env, headers)
        if req.replies:
            assert status is STOP
            count += 1
        f.on_stream_end(req)
    return count


def within(observed: int, n: int, p: float, sigmas: float) -> bool:
    sigma = math.sqrt(p * (1 - p) / n)
    return abs(observed / n - p) <= sigmas * sigma


# ------------------------------------------------------------------------------------------- no fault


def test_no_config_costs_nothing_and_draws_nothing() -> None:
    f = fault_filter()
    env = FakeEnv()
    state = env.rng.getstate()
    for r in (None, route(), route(per_route=FaultConfig()), route(vhost=FaultConfig())):
        req, status = run(f, env, route=r)
        assert status is CONTINUE and req.filter_state is None and not req.flags and not req.replies
        f.on_stream_end(req)
    assert env.rng.getstate() == state
    assert f.counters == FaultCounters()
    assert f.wants_end and not f.wants_request_body and not f.wants_response


def test_registered_and_built_with_the_connection_managers_counters() -> None:
    from pyproxy.config.model import HttpFilter as HttpFilterConfig

    class Stats:
        def __init__(self) -> None:
            self.faults: dict[str, FaultCounters] = {}

        def rbac_counters(self, config: object, hcm_stat_prefix: str) -> RbacCounters:
            return RbacCounters()

        def fault_counters(self, hcm_stat_prefix: str) -> FaultCounters:
            return self.faults.setdefault(hcm_stat_prefix, FaultCounters())

    assert FaultConfig in FACTORIES
    stats = Stats()
    configs = [HttpFilterConfig(NAME, "t", FaultConfig(abort=abort_http())), HttpFilterConfig("f2", "t", FaultConfig())]
    built = build_filters(configs, stats, "ingress")
    assert [type(f) for f in built] == [FaultFilter, FaultFilter]
    assert all(isinstance(f, FaultFilter) and f.counters is stats.faults["ingress"] for f in built)


# ------------------------------------------------------------------------------------------- aborts


def test_http_abort_replies_with_the_status_and_counts_until_the_stream_ends() -> None:
    f = fault_filter(FaultConfig(abort=abort_http(503)))
    env = FakeEnv()
    req, status = run(f, env, is_grpc=False)
    assert status is STOP and req.flags == ["FI"]
    [reply] = req.replies
    assert isinstance(reply, errors.FaultAbort)
    assert (reply.http_status, reply.grpc_status, reply.flag, reply.message, reply.details) == (
        503, None, "FI", "fault filter abort", "fault_filter_abort")
    assert errors.local_reply(reply, is_grpc=False) == (
        [(b":status", b"503"), (b"content-type", b"text/plain"), (b"content-length", b"18")], b"fault filter abort")
    # A gRPC caller gets the trailers-only form, the status mapped as for any local reply (503 -> 14).
    assert errors.local_reply(reply, is_grpc=True)[0] == [
        (b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"14"),
        (b"grpc-message", b"fault filter abort")]
    assert (f.counters.aborts_injected, f.counters.active_faults, f.counters.delays_injected) == (1, 1, 0)
    f.on_stream_end(req)
    assert f.counters.active_faults == 0
    f.on_stream_end(req)  # idempotent
    assert f.counters.active_faults == 0


def test_grpc_abort_is_trailers_only_for_grpc_and_a_200_for_other_callers() -> None:
    f = fault_filter(FaultConfig(abort=abort_grpc(8)))
    req, status = run(f, FakeEnv())
    assert status is STOP
    [reply] = req.replies
    assert (reply.http_status, reply.grpc_status) == (200, 8)
    headers, body = errors.local_reply(reply, is_grpc=True)
    assert headers == [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"8"),
                       (b"grpc-message", b"fault filter abort")] and body == b""
    # Envoy's sendLocalReply for a request that is not gRPC: the HTTP status (200) and the body.
    assert errors.local_reply(reply, is_grpc=False) == (
        [(b":status", b"200"), (b"content-type", b"text/plain"), (b"content-length", b"18")], b"fault filter abort")


def test_grpc_status_zero_is_an_abort_too() -> None:
    req, _ = run(fault_filter(FaultConfig(abort=abort_grpc(0))), FakeEnv())
    assert [(r.http_status, r.grpc_status) for r in req.replies] == [(200, 0)]


# ------------------------------------------------------------------------------------------- percentages


@pytest.mark.parametrize(("numerator", "denominator"), [
    (30, 100), (2_500, 10_000), (30, 10_000), (123_456, 1_000_000), (30, 1_000_000)])
def test_abort_percentage_with_each_denominator(numerator: int, denominator: int) -> None:
    """n = 40,000 requests per case; the observed share must be within 5 sigma of numerator/denominator (30 %:
    sigma = 0.23 points, so 1.15 points; 0.3 %: sigma = 0.027 points). A denominator mistaken for 100 is off by
    29.7 points or more, far outside."""
    n = 40_000
    p = numerator / denominator
    f = fault_filter(FaultConfig(abort=abort_http(percentage=pct(numerator, denominator))))
    env = FakeEnv(seed=numerator + denominator)
    count = aborted(f, env, n)
    assert within(count, n, p, 5), (count / n, p)
    assert f.counters.aborts_injected == count and f.counters.active_faults == 0


@pytest.mark.parametrize(("numerator", "denominator"), [(30, 100), (7, 10_000), (999_999, 1_000_000)])
def test_one_draw_per_decision_replays_exactly(numerator: int, denominator: int) -> None:
    seed = 20_261_208
    f = fault_filter(FaultConfig(abort=abort_http(percentage=pct(numerator, denominator))))
    env = FakeEnv(seed)
    decisions = []
    for _ in range(5_000):
        req, _ = run(f, env)
        decisions.append(bool(req.replies))
        f.on_stream_end(req)
    replay = random.Random(seed)
    assert decisions == [replay.getrandbits(64) % denominator < numerator for _ in range(5_000)]
    assert env.rng.getstate() == replay.getstate()  # nothing else was drawn


class ScriptedRandom(random.Random):
    """Hands out the given 64-bit values, in order."""

    def __init__(self, values: Iterable[int]) -> None:
        super().__init__(0)
        self.values = list(values)

    def getrandbits(self, k: int) -> int:
        assert k == 64
        return self.values.pop(0)


@pytest.mark.parametrize(("draw", "expected"), [(0, True), (1, False), (1_000_000, True), (1_000_001, False),
                                                (2**64 - 1, False)])
def test_boundary_of_one_in_a_million(draw: int, expected: bool) -> None:
    f = fault_filter(FaultConfig(abort=abort_http(percentage=pct(1, 1_000_000))))
    req, _ = run(f, FakeEnv(rng=ScriptedRandom([draw])))
    assert bool(req.replies) is expected


def test_numerator_above_the_denominator_is_always_and_zero_is_never() -> None:
    always = fault_filter(FaultConfig(abort=abort_http(percentage=pct(101))))
    never = fault_filter(FaultConfig(abort=abort_http(percentage=pct(0, 1_000_000))))
    env = FakeEnv()
    assert aborted(always, env, 2_000) == 2_000
    assert aborted(never, env, 2_000) == 0


def test_same_seed_same_decisions_other_seed_other_decisions() -> None:
    config = FaultConfig(delay=delay_fixed(10, pct(40)), abort=abort_http(percentage=pct(30)))

    def trace(seed: int) -> list[tuple[bool, bool]]:
        f = fault_filter(config)
        env = FakeEnv(seed)
        out = []
        for _ in range(1_000):
            req, status = run(f, env)
            env.advance(0.010)
            out.append((status is STOP and "DI" in req.flags, bool(req.replies)))
            f.on_stream_end(req)
        return out

    assert trace(7) == trace(7)
    assert trace(7) != trace(8)


# ------------------------------------------------------------------------------------------- header control


def test_header_abort_takes_the_status_from_the_request() -> None:
    f = fault_filter(FaultConfig(abort=HEADER_ABORT))
    env = FakeEnv()

    def outcome(*headers: tuple[str, str]) -> tuple[int, int | None] | None:
        req, _ = run(f, env, headers)
        f.on_stream_end(req)
        return (req.replies[0].http_status, req.replies[0].grpc_status) if req.replies else None

    assert outcome() is None
    assert outcome(("x-envoy-fault-abort-request", "429")) == (429, None)
    assert outcome(("x-envoy-fault-abort-request", " 599 ")) == (599, None)
    assert outcome(("x-envoy-fault-abort-request", "600")) is None
    assert outcome(("x-envoy-fault-abort-request", "199")) is None
    assert outcome(("x-envoy-fault-abort-request", "abc")) is None
    assert outcome(("x-envoy-fault-abort-grpc-request", "14")) == (200, 14)
    assert outcome(("x-envoy-fault-abort-grpc-request", "-1")) is None
    # HTTP wins over gRPC; only the first value of a header counts.
    assert outcome(("x-envoy-fault-abort-grpc-request", "14"), ("x-envoy-fault-abort-request", "503")) == (503, None)
    assert outcome(("x-envoy-fault-abort-request", "x"), ("x-envoy-fault-abort-request", "503")) is None
    assert f.counters.active_faults == 0


def test_header_percentage_is_capped_by_the_configured_one() -> None:
    """x-envoy-fault-abort-request-percentage: min(header, configured numerator), the configured denominator."""
    n = 20_000
    capped = FaultConfig(abort=FaultAbort(kind="header", percentage=pct(20)))
    headers = [("x-envoy-fault-abort-request", "503"), ("x-envoy-fault-abort-request-percentage", "90")]
    count = aborted(fault_filter(capped), FakeEnv(3), n, headers)
    assert within(count, n, 0.20, 5)  # sigma 0.28 points; the header's 90 % would be 70 points off
    lowered = [("x-envoy-fault-abort-request", "503"), ("x-envoy-fault-abort-request-percentage", "5")]
    count = aborted(fault_filter(capped), FakeEnv(4), n, lowered)
    assert within(count, n, 0.05, 5)
    junk = [("x-envoy-fault-abort-request", "503"), ("x-envoy-fault-abort-request-percentage", "99999999999")]
    count = aborted(fault_filter(capped), FakeEnv(5), n, junk)  # does not parse as uint32: the configured 20 %
    assert within(count, n, 0.20, 5)
    per_million = FaultConfig(abort=FaultAbort(kind="header", percentage=pct(500_000, 1_000_000)))
    count = aborted(fault_filter(per_million), FakeEnv(6), n,
                    [("x-envoy-fault-abort-request", "503"), ("x-envoy-fault-abort-request-percentage", "100000")])
    assert within(count, n, 0.10, 5)  # 100,000 out of a million


def test_fault_headers_are_ignored_without_header_control() -> None:
    f = fault_filter(FaultConfig(abort=abort_http(503, pct(0)), delay=delay_fixed(10, pct(0))))
    headers = [("x-envoy-fault-abort-request", "429"), ("x-envoy-fault-abort-request-percentage", "100"),
               ("x-envoy-fault-delay-request", "100"), ("x-envoy-fault-delay-request-percentage", "100")]
    assert aborted(f, FakeEnv(), 500, headers) == 0
    assert f.counters.delays_injected == 0
    g = fault_filter(FaultConfig(abort=abort_http(503)))
    req, _ = run(g, FakeEnv(), [("x-envoy-fault-abort-request", "429")])
    assert req.replies[0].http_status == 503


def test_header_delay() -> None:
    f = fault_filter(FaultConfig(delay=HEADER_DELAY))
    env = FakeEnv()
    for value in (None, "0", "abc", "-5"):
        req, status = run(f, env, [("x-envoy-fault-delay-request", value)] if value is not None else [])
        assert status is CONTINUE and not req.flags
    req, status = run(f, env, [("x-envoy-fault-delay-request", "250")])
    assert status is STOP and req.flags == ["DI"]
    env.advance(0.249)
    assert req.resumed == 0
    env.advance(0.001)
    assert req.resumed == 1 and f.counters.active_faults == 0
    capped = fault_filter(FaultConfig(delay=FaultDelay(percentage=pct(50))))
    n, delayed = 10_000, 0
    for _ in range(n):
        req, status = run(capped, env, [("x-envoy-fault-delay-request", "1"),
                                        ("x-envoy-fault-delay-request-percentage", "10")])
        delayed += status is STOP
        capped.on_stream_end(req)
    assert within(delayed, n, 0.10, 5)  # sigma 0.3 points


# ------------------------------------------------------------------------------------------- gates


def test_upstream_cluster_gate() -> None:
    f = fault_filter(FaultConfig(abort=abort_http(), upstream_cluster="backend"))
    env = FakeEnv()
    state = env.rng.getstate()
    assert run(f, env, route=route(cluster="other"))[1] is CONTINUE
    assert run(f, env, route=None)[1] is CONTINUE  # no route: no cluster to match
    assert env.rng.getstate() == state  # a gate that fails draws nothing
    assert run(f, env, route=route(cluster="backend"))[1] is STOP


def test_downstream_nodes_gate() -> None:
    f = fault_filter(FaultConfig(abort=abort_http(), downstream_nodes=frozenset({"node-a", "node-b"})))
    env = FakeEnv()
    assert run(f, env)[1] is CONTINUE
    assert run(f, env, [("x-envoy-downstream-service-node", "node-c")])[1] is CONTINUE
    assert run(f, env, [("x-envoy-downstream-service-node", "node-b")])[1] is STOP


def test_header_matchers_gate_all_must_match() -> None:
    headers = (HeaderMatcher(name="x-canary", string_match=StringMatcher(kind="exact", value="yes")),
               HeaderMatcher(name="x-debug", present_match=True, invert_match=True))
    f = fault_filter(FaultConfig(abort=abort_http(), headers=headers))
    env = FakeEnv()
    assert run(f, env)[1] is CONTINUE
    assert run(f, env, [("x-canary", "no")])[1] is CONTINUE
    assert run(f, env, [("x-canary", "yes"), ("x-debug", "1")])[1] is CONTINUE
    assert run(f, env, [("x-canary", "yes")])[1] is STOP


# ------------------------------------------------------------------------------------------- max_active_faults


def test_max_active_faults_overflow_and_release() -> None:
    f = fault_filter(FaultConfig(abort=abort_http(), max_active_faults=2))
    env = FakeEnv()
    first, s1 = run(f, env)
    _, s2 = run(f, env)
    third, s3 = run(f, env)
    assert (s1, s2, s3) == (STOP, STOP, CONTINUE) and not third.replies and third.filter_state is None
    assert (f.counters.active_faults, f.counters.faults_overflow, f.counters.aborts_injected) == (2, 1, 2)
    f.on_stream_end(third)
    f.on_stream_end(first)
    assert f.counters.active_faults == 1
    _, s4 = run(f, env)
    assert s4 is STOP and f.counters.active_faults == 2


def test_overflow_is_checked_for_the_delay_and_again_for_the_abort() -> None:
    counters = FaultCounters(active_faults=1)  # another request holds the only slot
    f = fault_filter(FaultConfig(delay=delay_fixed(), abort=abort_http(), max_active_faults=1), counters)
    req, status = run(f, FakeEnv())
    assert status is CONTINUE and not req.flags
    assert counters.faults_overflow == 2  # Envoy's tryIncActiveFaults, once per fault tried


def test_max_active_faults_zero_means_no_fault() -> None:
    f = fault_filter(FaultConfig(abort=abort_http(), max_active_faults=0))
    assert aborted(f, FakeEnv(), 10) == 0 and f.counters.faults_overflow == 10


def test_counters_are_shared_by_filters_of_one_connection_manager() -> None:
    counters = FaultCounters()
    a = fault_filter(FaultConfig(abort=abort_http(), max_active_faults=1), counters)
    b = fault_filter(FaultConfig(abort=abort_http(), max_active_faults=1), counters)  # a later snapshot's copy
    env = FakeEnv()
    held, _ = run(a, env)
    assert run(b, env)[1] is CONTINUE and counters.faults_overflow == 1
    a.on_stream_end(held)
    assert run(b, env)[1] is STOP


# ------------------------------------------------------------------------------------------- delays


def test_delay_then_continue() -> None:
    f = fault_filter(FaultConfig(delay=delay_fixed(200)))
    env = FakeEnv()
    req, status = run(f, env)
    assert status is STOP and req.flags == ["DI"] and not req.replies
    assert (f.counters.delays_injected, f.counters.active_faults) == (1, 1)
    env.advance(0.199)
    assert req.resumed == 0
    env.advance(0.002)
    assert req.resumed == 1 and not req.replies
    assert f.counters.active_faults == 0  # the delay is over: no longer an active fault
    f.on_stream_end(req)
    assert f.counters.active_faults == 0


def test_delay_then_abort_decides_the_abort_when_the_delay_ends() -> None:
    f = fault_filter(FaultConfig(delay=delay_fixed(50), abort=abort_grpc(14)))
    env = FakeEnv()
    req, status = run(f, env)
    assert status is STOP and req.flags == ["DI"] and not req.replies
    env.advance(0.05)
    assert req.flags == ["DI", "FI"] and req.resumed == 0
    assert [(r.http_status, r.grpc_status) for r in req.replies] == [(200, 14)]
    assert (f.counters.delays_injected, f.counters.aborts_injected, f.counters.active_faults) == (1, 1, 1)
    f.on_stream_end(req)
    assert f.counters.active_faults == 0


def test_the_abort_after_a_delay_draws_when_the_timer_fires() -> None:
    """Draw order: the delay's draw at the headers, the abort's draw at the end of the delay (Envoy's
    postDelayInjection), so requests started in between draw in between."""
    f = fault_filter(FaultConfig(delay=delay_fixed(10, pct(50)), abort=abort_http(percentage=pct(50))))
    # request 1: delay draw 0 (delayed); request 2: delay draw 60 (not delayed), abort draw 0 (aborted);
    # request 1's timer: abort draw 60 (not aborted), resumed.
    env = FakeEnv(rng=ScriptedRandom([0, 60, 0, 60]))
    first, s1 = run(f, env)
    second, s2 = run(f, env)
    assert (s1, s2) == (STOP, STOP) and first.flags == ["DI"] and second.flags == ["FI"]
    env.advance(0.01)
    assert first.resumed == 1 and not first.replies
    assert isinstance(env.rng, ScriptedRandom) and env.rng.values == []


def test_stream_end_during_a_delay_cancels_the_timer_and_releases_the_count() -> None:
    f = fault_filter(FaultConfig(delay=delay_fixed(200), abort=abort_http()))
    env = FakeEnv()
    req, status = run(f, env)
    assert status is STOP and env.pending() == 1 and f.counters.active_faults == 1
    env.advance(0.1)
    f.on_stream_end(req)  # the caller went away
    assert env.pending() == 0 and f.counters.active_faults == 0
    env.advance(1.0)
    assert req.resumed == 0 and not req.replies and f.counters.aborts_injected == 0


def test_delay_percentage_and_overflowed_delay_still_allows_an_abort() -> None:
    n = 20_000
    f = fault_filter(FaultConfig(delay=delay_fixed(1, pct(1_000, 10_000))))
    env = FakeEnv(11)
    delayed = 0
    for _ in range(n):
        req, status = run(f, env)
        delayed += status is STOP
        env.advance(0.001)
        f.on_stream_end(req)
    assert within(delayed, n, 0.10, 5)  # sigma 0.21 points
    # With the only slot taken, the delay overflows and the abort (tried next) overflows too: nothing.
    counters = FaultCounters()
    g = fault_filter(FaultConfig(delay=delay_fixed(), abort=abort_http(), max_active_faults=1), counters)
    holder, _ = run(g, env)
    req, status = run(g, env)
    assert status is CONTINUE and counters.faults_overflow == 2
    g.on_stream_end(holder)


# ------------------------------------------------------------------------------------------- per route


def test_route_config_replaces_the_listener_config() -> None:
    f = fault_filter(FaultConfig(abort=abort_http(503)))
    env = FakeEnv()
    assert run(f, env, route=route())[0].replies[0].http_status == 503  # no override: the listener's
    assert run(f, env, route=route(per_route=FaultConfig()))[1] is CONTINUE  # an empty HTTPFault: no fault
    req, status = run(f, env, route=route(per_route=FaultConfig(delay=delay_fixed(10))))
    assert status is STOP and req.flags == ["DI"]
    env.advance(0.01)
    assert req.resumed == 1 and not req.replies  # the route's config has no abort; the listener's is replaced
    assert run(f, env, route=route(vhost=FaultConfig(abort=abort_http(429))))[0].replies[0].http_status == 429
    assert run(f, env, route=route(per_route=FaultConfig(abort=abort_http(500)),
                                   vhost=FaultConfig(abort=abort_http(429))))[0].replies[0].http_status == 500


def test_listener_without_fault_and_route_with_one() -> None:
    f = fault_filter(FaultConfig())
    env = FakeEnv()
    assert run(f, env, route=route())[1] is CONTINUE
    assert run(f, env, route=route(per_route=FaultConfig(abort=abort_grpc(14))))[1] is STOP


def test_an_entry_of_another_type_under_the_name_is_not_a_fault_config() -> None:
    from pyproxy.config.model import RbacPerRoute

    f = fault_filter(FaultConfig(abort=abort_http(503)))
    req, _ = run(f, FakeEnv(), route=route(per_route=RbacPerRoute()))
    assert req.replies[0].http_status == 503  # Envoy: the typed lookup finds no FaultSettings; the listener's


def test_per_route_settings_are_compiled_once() -> None:
    f = fault_filter()
    config = FaultConfig(abort=abort_http())
    r = route(per_route=config)
    env = FakeEnv()
    run(f, env, route=r)
    compiled = f._per_route[id(config)][1]
    run(f, env, route=r)
    assert f._per_route[id(config)][1] is compiled and len(f._per_route) == 1


# ------------------------------------------------------------------------------------------- downstream cluster


def test_downstream_cluster_counters() -> None:
    f = fault_filter(FaultConfig(delay=delay_fixed(1), abort=abort_http()))
    env = FakeEnv()
    req, _ = run(f, env, [("x-envoy-downstream-service-cluster", "client")])
    env.advance(0.001)
    f.on_stream_end(req)
    req, _ = run(f, env, [("x-envoy-downstream-service-cluster", "")])  # empty: no per-cluster stats
    env.advance(0.001)
    f.on_stream_end(req)
    assert f.counters.downstream == {"client": [1, 1]}
    assert (f.counters.delays_injected, f.counters.aborts_injected) == (2, 2)
    quiet = fault_filter(FaultConfig(abort=abort_http(), disable_downstream_cluster_stats=True))
    run(quiet, env, [("x-envoy-downstream-service-cluster", "client")])
    assert quiet.counters.downstream == {} and quiet.counters.aborts_injected == 1


def test_downstream_cluster_names_are_bounded() -> None:
    counters = FaultCounters()
    for i in range(MAX_DOWNSTREAM_CLUSTERS + 10):
        counters.count_downstream(f"c{i}", 1)
    counters.count_downstream("c0", 1)
    assert len(counters.downstream) == MAX_DOWNSTREAM_CLUSTERS and counters.downstream["c0"] == [0, 2]


# ------------------------------------------------------------------------------------------- runtime


def with_runtime(config: FaultConfig, **entries: int | FractionalPercent) -> FaultConfig:
    return dataclasses.replace(config, runtime=tuple(sorted((k.replace("__", "."), v) for k, v in entries.items())))


def test_runtime_percent_overrides() -> None:
    n = 10_000
    base = FaultConfig(abort=abort_http(percentage=pct(100)))
    off = with_runtime(base, fault__http__abort__abort_percent=0)
    assert aborted(fault_filter(off), FakeEnv(), 1_000) == 0
    always = with_runtime(FaultConfig(abort=abort_http(percentage=pct(0))), fault__http__abort__abort_percent=101)
    assert aborted(fault_filter(always), FakeEnv(), 1_000) == 1_000
    # An integer is a percentage (denominator 100) whatever the configured denominator is.
    as_percent = with_runtime(FaultConfig(abort=abort_http(percentage=pct(0, 1_000_000))),
                              fault__http__abort__abort_percent=20)
    assert within(aborted(fault_filter(as_percent), FakeEnv(1), n), n, 0.20, 5)
    fractional = with_runtime(base, fault__http__abort__abort_percent=FractionalPercent(500, 10_000))
    assert within(aborted(fault_filter(fractional), FakeEnv(2), n), n, 0.05, 5)


def test_runtime_keys_named_by_the_config_and_per_downstream_cluster() -> None:
    config = with_runtime(FaultConfig(abort=abort_http(503), abort_percent_runtime="my.abort"),
                          my__abort=0, fault__http__client__abort__abort_percent=100,
                          fault__http__client__abort__http_status=429, fault__http__abort__http_status=500)
    f = fault_filter(config)
    env = FakeEnv()
    assert run(f, env)[1] is CONTINUE  # my.abort = 0
    req, status = run(f, env, [("x-envoy-downstream-service-cluster", "client")])
    # The cluster's percent key replaces the config's; the cluster's status key defaults to the configured 503
    # (not to the general key's 500), as in Envoy.
    assert status is STOP and req.replies[0].http_status == 429
    other, status = run(f, env, [("x-envoy-downstream-service-cluster", "other")])
    assert status is STOP and other.replies[0].http_status == 503  # no key for "other": the 100 % configured


def test_runtime_delay_duration_status_and_max_active_faults() -> None:
    config = with_runtime(FaultConfig(delay=delay_fixed(10), abort=abort_grpc(14)),
                          fault__http__delay__fixed_duration_ms=300, fault__http__abort__grpc_status=8,
                          fault__http__max_active_faults=1)
    f = fault_filter(config)
    env = FakeEnv()
    req, status = run(f, env)
    assert status is STOP
    assert run(f, env)[1] is CONTINUE and f.counters.faults_overflow == 2  # limit 1 from the runtime
    env.advance(0.299)
    assert not req.replies
    env.advance(0.001)
    assert [(r.http_status, r.grpc_status) for r in req.replies] == [(200, 8)]
    zero = with_runtime(FaultConfig(delay=delay_fixed(10)), fault__http__delay__fixed_duration_ms=0)
    assert run(fault_filter(zero), env)[1] is CONTINUE  # 0 ms: no delay
    bad_status = with_runtime(FaultConfig(abort=abort_http(503)), fault__http__abort__http_status=42)
    assert run(fault_filter(bad_status), env)[0].replies[0].http_status == 503  # not an HTTP status: kept

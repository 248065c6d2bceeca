"""The fault injection HTTP filter (``envoy.filters.http.fault``), Envoy's semantics.

Follows Envoy's ``source/extensions/filters/http/fault/fault_filter.cc`` and
``source/extensions/filters/common/fault/fault_config.cc``, step by step, on the request headers:

1. The config: the route's (or virtual host's) ``typed_per_filter_config`` HTTPFault under this filter's name
   replaces the listener's whole config; without one the listener's applies (often empty: no fault).
2. Gates, in Envoy's order: ``upstream_cluster`` (the cluster the route picked), ``downstream_nodes`` (the
   ``x-envoy-downstream-service-node`` header), ``headers`` (all must match, as route header matchers do).
3. ``x-envoy-downstream-service-cluster``, when present, selects the per-cluster runtime keys
   (``fault.http.<cluster>.delay.fixed_delay_percent`` ... instead of the config's keys) and the counters
   ``fault.<cluster>.{delays,aborts}_injected`` (unless ``disable_downstream_cluster_stats``).
4. Delay first: one random draw against the delay percentage (for ``header_delay``, capped by
   ``x-envoy-fault-delay-request-percentage``; a runtime value overrides it); the duration is ``fixed_delay`` or
   ``x-envoy-fault-delay-request`` (ms; absent, unparsable or 0: no delay). If a delay is due and the
   active-fault limit allows, the request stops (flag DI, ``delays_injected``) and a timer resumes it; when
   the timer fires, the abort decision is taken then (one draw): abort, or resume the request.
5. Otherwise the abort decision: one draw against the abort percentage (``header_abort``: capped by
   ``x-envoy-fault-abort-request-percentage``); the status is ``http_status``, ``grpc_status`` (HTTP 200 with
   that grpc-status) or, for ``header_abort``, ``x-envoy-fault-abort-request`` (200-599) else
   ``x-envoy-fault-abort-grpc-request``. The reply is a local reply "fault filter abort" (flag FI,
   ``aborts_injected``; gRPC callers get the trailers-only form).

Each percentage decision takes exactly one value from the request's random source (``cb.env.rng``: seeded,
it replays), drawn before the runtime is consulted, as Envoy's ``featureEnabled`` does: ``random % denominator
< numerator``. ``max_active_faults`` (or its runtime key) bounds the requests with a fault in progress: a
request is counted once from its first fault until it ends (or until its delay ends without an abort); at the
limit a fault is not injected and ``faults_overflow`` counts it. The count is released and a pending delay
timer cancelled in :meth:`FaultFilter.on_stream_end`.

A route with no fault config costs one dict lookup and one test; nothing is allocated unless a fault is
injected.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from pyproxy.config.model import FaultConfig, FractionalPercent
from pyproxy.filters.api import CONTINUE, STOP, Cancellable, FilterCallbacks, HttpFilter, Status
from pyproxy.http2.hpack import Header
from pyproxy.proxy.errors import FaultAbort
from pyproxy.routing.table import _header_matches

# Envoy's header names (Filters::Common::Fault::HeaderNames, Http::Headers).
ABORT_REQUEST = b"x-envoy-fault-abort-request"
ABORT_REQUEST_PERCENTAGE = b"x-envoy-fault-abort-request-percentage"
ABORT_GRPC_REQUEST = b"x-envoy-fault-abort-grpc-request"
DELAY_REQUEST = b"x-envoy-fault-delay-request"
DELAY_REQUEST_PERCENTAGE = b"x-envoy-fault-delay-request-percentage"
DOWNSTREAM_SERVICE_CLUSTER = b"x-envoy-downstream-service-cluster"
DOWNSTREAM_SERVICE_NODE = b"x-envoy-downstream-service-node"
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
# Distinct x-envoy-downstream-service-cluster values counted separately (the header comes from the client:
# Envoy keeps a stat per value without bound; pyproxy stops adding new names past this many).
MAX_DOWNSTREAM_CLUSTERS = 1024


@dataclass(slots=True)
class FaultCounters:
    """Envoy's ``http.<stat_prefix>.fault.*`` of one connection manager (shared by its fault filters and kept
    across snapshots): counters, the ``active_faults`` gauge, and per downstream cluster
    ``fault.<cluster>.{delays,aborts}_injected`` (``downstream``: cluster -> [delays, aborts])."""

    delays_injected: int = 0
    aborts_injected: int = 0
    faults_overflow: int = 0
    response_rl_injected: int = 0  # always 0: response_rate_limit is refused by the translator
    active_faults: int = 0
    downstream: dict[str, list[int]] = field(default_factory=dict)

    def count_downstream(self, cluster: str, index: int) -> None:
        counts = self.downstream.get(cluster)
        if counts is None:
            if len(self.downstream) >= MAX_DOWNSTREAM_CLUSTERS:
                return
            counts = self.downstream[cluster] = [0, 0]
        counts[index] += 1


def _first(headers: list[Header], name: bytes) -> bytes | None:
    """The first value of ``name`` (Envoy reads only the first value of these untrusted headers)."""
    for k, v in headers:
        if k == name:
            return v
    return None


def _atoi(value: bytes | None, maximum: int) -> int | None:
    """absl's ``SimpleAtoi`` into an unsigned integer of at most ``maximum``; None if it does not parse."""
    if value is None:
        return None
    s = value.strip(b" \t\n\v\f\r")
    if s.startswith(b"+"):
        s = s[1:]
    if not s.isdigit():  # bytes.isdigit: ASCII digits only, False when empty
        return None
    n = int(s)
    return n if n <= maximum else None


class _Settings:
    """One HTTPFault compiled for requests (Envoy's ``FaultSettings``)."""

    __slots__ = ("abort", "config", "delay", "header_matchers", "max_active_faults", "nodes", "runtime",
                 "stats_per_cluster", "upstream_cluster")

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self.delay = config.delay
        self.abort = config.abort
        self.upstream_cluster = config.upstream_cluster
        self.nodes = frozenset(n.encode() for n in config.downstream_nodes)
        self.header_matchers = tuple((h.name.encode(), h) for h in config.headers)
        self.max_active_faults = config.max_active_faults if config.max_active_faults is not None else UINT64_MAX
        self.runtime: dict[str, int | FractionalPercent] = dict(config.runtime)
        self.stats_per_cluster = not config.disable_downstream_cluster_stats

    # ------------------------------------------------------------------------------------- runtime

    def _integer(self, key: str, default: int) -> int:
        """Envoy's ``Snapshot::getInteger``."""
        value = self.runtime.get(key)
        return value if isinstance(value, int) else default

    def _enabled(self, rng: random.Random, key: str, numerator: int, denominator: int) -> bool:
        """Envoy's ``Snapshot::featureEnabled(key, FractionalPercent)``: one draw, then the runtime's value (a
        FractionalPercent, or an integer percent where > 100 means always) or the given percentage."""
        draw = rng.getrandbits(64)
        if self.runtime:
            value = self.runtime.get(key)
            if isinstance(value, FractionalPercent):
                numerator, denominator = value.numerator, value.denominator
            elif value is not None:
                if value > 100:
                    return True
                numerator, denominator = value, 100
        return draw % denominator < numerator

    def active_limit(self) -> int:
        """Envoy's ``faultOverflow`` limit: the runtime key, else ``max_active_faults``, else unlimited."""
        if self.runtime:
            return self._integer(self.config.max_active_faults_runtime, self.max_active_faults)
        return self.max_active_faults

    # ------------------------------------------------------------------------------------- decisions

    def delay_ms(self, rng: random.Random, headers: list[Header], cluster: str | None) -> int | None:
        """Envoy's ``FaultFilter::delayDuration``: the delay to inject (ms), or None. Call only with a delay."""
        delay = self.delay
        assert delay is not None
        pct = delay.percentage
        numerator = pct.numerator
        header_controlled = delay.fixed_delay_ms is None
        if header_controlled:
            capped = _atoi(_first(headers, DELAY_REQUEST_PERCENTAGE), UINT32_MAX)
            if capped is not None:
                numerator = min(capped, numerator)
        config = self.config
        key = f"fault.http.{cluster}.delay.fixed_delay_percent" if cluster is not None else config.delay_percent_runtime
        if not self._enabled(rng, key, numerator, pct.denominator):
            return None
        ms = _atoi(_first(headers, DELAY_REQUEST), UINT64_MAX) if header_controlled else delay.fixed_delay_ms
        if ms is None:
            return None
        if self.runtime:
            ms = self._integer(config.delay_duration_runtime, ms)
            if cluster is not None:
                ms = self._integer(f"fault.http.{cluster}.delay.fixed_duration_ms", ms)
        return ms if ms > 0 else None

    def abort_status(self, rng: random.Random, headers: list[Header],
                     cluster: str | None) -> tuple[int, int | None] | None:
        """Envoy's ``FaultFilter::abortStatus``: (HTTP status, gRPC status or None) to abort with, or None.
        Call only with an abort."""
        abort = self.abort
        assert abort is not None
        pct = abort.percentage
        numerator = pct.numerator
        kind = abort.kind
        if kind == "header":
            capped = _atoi(_first(headers, ABORT_REQUEST_PERCENTAGE), UINT32_MAX)
            if capped is not None:
                numerator = min(capped, numerator)
        config = self.config
        key = f"fault.http.{cluster}.abort.abort_percent" if cluster is not None else config.abort_percent_runtime
        if not self._enabled(rng, key, numerator, pct.denominator):
            return None
        http: int | None = None
        if kind == "http":
            http = abort.http_status
        elif kind == "header":
            code = _atoi(_first(headers, ABORT_REQUEST), UINT64_MAX)
            if code is not None and 200 <= code < 600:
                http = code
        if http is not None:
            if self.runtime:
                # Envoy: the per-cluster key's default is the configured status, not the general key's value.
                status = (self._integer(f"fault.http.{cluster}.abort.http_status", http) if cluster is not None
                          else self._integer(config.abort_http_status_runtime, http))
                if 200 <= status < 600:  # Envoy does not check runtime statuses; pyproxy keeps a valid one
                    http = status
            return http, None
        grpc: int | None = None
        if kind == "grpc":
            grpc = abort.grpc_status
        elif kind == "header":
            grpc = _atoi(_first(headers, ABORT_GRPC_REQUEST), UINT64_MAX)
        if grpc is None:
            return None
        if self.runtime:
            grpc = (self._integer(f"fault.http.{cluster}.abort.grpc_status", grpc) if cluster is not None
                    else self._integer(config.abort_grpc_status_runtime, grpc))
        return 200, grpc


class _Fault:
    """Per-request state of a request with a fault in progress (kept in ``cb.filter_state``)."""

    __slots__ = ("active", "cluster", "settings", "timer")

    def __init__(self, settings: _Settings, cluster: str | None) -> None:
        self.settings = settings
        self.cluster = cluster
        self.active = True  # counted in active_faults (until the stream ends, or a delay ends with no abort)
        self.timer: Cancellable | None = None


class FaultFilter(HttpFilter):
    __slots__ = ("_per_route", "_settings", "config", "counters")

    wants_end = True  # release the active-fault count and cancel a pending delay

    def __init__(self, name: str, config: FaultConfig, counters: FaultCounters | None = None) -> None:
        super().__init__(name)
        self.config = config
        self.counters = counters if counters is not None else FaultCounters()
        self._settings: _Settings | None = None if config.inert else _Settings(config)
        # Per-route HTTPFault configs, compiled on first use (None: the config injects nothing).
        self._per_route: dict[int, tuple[FaultConfig, _Settings | None]] = {}

    def _route_settings(self, config: FaultConfig) -> _Settings | None:
        cached = self._per_route.get(id(config))
        if cached is not None and cached[0] is config:
            return cached[1]
        settings = None if config.inert else _Settings(config)
        if len(self._per_route) > 4096:
            self._per_route.clear()
        self._per_route[id(config)] = (config, settings)
        return settings

    def on_request_headers(self, cb: FilterCallbacks, end_stream: bool) -> Status:
        settings = self._settings
        route = cb.route
        if route is not None:
            override = route.per_filter.get(self.name)
            if isinstance(override, FaultConfig):
                settings = self._route_settings(override)
        if settings is None:
            return CONTINUE
        if settings.upstream_cluster and cb.cluster_name != settings.upstream_cluster:
            return CONTINUE
        headers = cb.request_headers
        if settings.nodes:
            node = _first(headers, DOWNSTREAM_SERVICE_NODE)
            if node is None or node not in settings.nodes:
                return CONTINUE
        for bname, matcher in settings.header_matchers:
            if not _header_matches(bname, matcher, headers):
                return CONTINUE
        raw_cluster = _first(headers, DOWNSTREAM_SERVICE_CLUSTER)
        cluster = raw_cluster.decode("latin-1") if raw_cluster is not None else None
        rng = cb.env.rng
        if settings.delay is not None:
            ms = settings.delay_ms(rng, headers, cluster)
            if ms is not None:
                fault = self._activate(cb, settings, cluster)
                if fault is not None:
                    pending = fault
                    fault.timer = cb.env.call_later(ms / 1000.0, lambda: self._delay_over(cb, pending))
                    self.counters.delays_injected += 1
                    if cluster and settings.stats_per_cluster:
                        self.counters.count_downstream(cluster, 0)
                    cb.add_flag("DI")
                    return STOP
        if settings.abort is not None:
            status = settings.abort_status(rng, headers, cluster)
            if status is not None:
                fault = self._activate(cb, settings, cluster)
                if fault is not None:
                    self._abort(cb, fault, status)
                    return STOP
        return CONTINUE

    def _activate(self, cb: FilterCallbacks, settings: _Settings, cluster: str | None) -> _Fault | None:
        """Envoy's ``tryIncActiveFaults``: count the request as an active fault, unless the limit is reached
        (``faults_overflow``). Returns the request's fault state, or None at the limit. (A request counts once:
        the abort that follows a delay is injected by the timer without coming here, as in Envoy.)"""
        counters = self.counters
        if counters.active_faults >= settings.active_limit():
            counters.faults_overflow += 1
            return None
        counters.active_faults += 1
        fault = _Fault(settings, cluster)
        state = cb.filter_state
        if state is None:
            state = cb.filter_state = {}
        state[self.name] = fault
        return fault

    def _delay_over(self, cb: FilterCallbacks, fault: _Fault) -> None:
        """Envoy's ``postDelayInjection``: the abort decision is taken now; abort, or resume the request."""
        fault.timer = None
        settings = fault.settings
        status = (settings.abort_status(cb.env.rng, cb.request_headers, fault.cluster)
                  if settings.abort is not None else None)
        if status is not None:
            self._abort(cb, fault, status)  # still counted as active: no limit check, as in Envoy
            return
        # The delay is over and nothing else is in progress: the request no longer counts as an active fault.
        if fault.active:
            fault.active = False
            self.counters.active_faults -= 1
        cb.resume_request()

    def _abort(self, cb: FilterCallbacks, fault: _Fault, status: tuple[int, int | None]) -> None:
        counters = self.counters
        counters.aborts_injected += 1
        cluster = fault.cluster
        if cluster and fault.settings.stats_per_cluster:
            counters.count_downstream(cluster, 1)
        cb.add_flag("FI")
        cb.send_local_reply(FaultAbort(status[0], status[1]))

    def on_stream_end(self, cb: FilterCallbacks) -> None:
        state = cb.filter_state
        if state is None:
            return
        fault = state.get(self.name)
        if not isinstance(fault, _Fault):
            return
        if fault.timer is not None:
            fault.timer.cancel()
            fault.timer = None
        if fault.active:
            fault.active = False
            self.counters.active_faults -= 1

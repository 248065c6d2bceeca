"""Outlier detection (Envoy's ``envoy.config.cluster.v3.OutlierDetection``): eject misbehaving hosts.

Per host, consecutive-error counters are updated as each upstream attempt ends:
- a response (HTTP status; for gRPC, a grpc-status in the response *headers* mapped with Envoy's
  ``grpcToHttpStatus`` - grpc-status in trailers is not seen, as in Envoy, REFERENCE.md section 2),
- a local-origin event (connect failure, timeout, reset). Unless ``split_external_local_origin_errors`` is
  set, these count as a gateway error (503), as Envoy does.
``consecutive_5xx`` (any 5xx) and ``consecutive_gateway_failure`` (502/503/504) eject a host when they reach
their threshold and the enforcement dice allow it; ejection lasts ``base_ejection_time x times ejected``
(capped at ``max_ejection_time``) and at most ``max_ejection_percent`` of the hosts are ejected at once, but
at least one host can always be ejected (Envoy's behaviour). Every ``interval`` the detector un-ejects hosts
whose time is up, evaluates success-rate and failure-percentage ejection from the interval's counts, and
lowers ``times ejected`` of hosts that stayed healthy.

What the admin API shows (``/clusters``, ``/stats``): each host's state records which detector ejected it
(``ejection_reason``, named as Envoy's ``OutlierEjectionType`` in lower case: ``consecutive_5xx``,
``consecutive_gateway_failure``, ``consecutive_local_origin_failure``, ``success_rate``,
``failure_percentage``) and until when; the detector keeps Envoy's ``outlier_detection.*`` counters
(``ejections_enforced_total``, ``ejections_overflow``, ``ejections_{detected,enforced}_<type>``) and the last
interval's success-rate average and ejection threshold.

Randomness: the enforcement dice and the ejection-time jitter draw from ``rng`` when a request's result
triggers the ejection (consecutive errors: the request path) and from ``background_rng`` when the interval
timer does (success rate, failure percentage), so a timer firing never shifts the per-request random stream
(``pyproxy --seed``, see :class:`pyproxy.proxy.runtime.Runtime`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from trio import current_time

from pyproxy.config.model import OutlierDetection

if TYPE_CHECKING:
    from pyproxy.timers import Timers

LOCAL_ORIGIN_STATUS = 503

# Envoy's envoy.data.cluster.v3.OutlierEjectionType, lower case (also the stats' suffixes).
CONSECUTIVE_5XX = "consecutive_5xx"
CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
CONSECUTIVE_LOCAL_ORIGIN_FAILURE = "consecutive_local_origin_failure"
SUCCESS_RATE = "success_rate"
FAILURE_PERCENTAGE = "failure_percentage"
EJECTION_TYPES = (CONSECUTIVE_5XX, SUCCESS_RATE, CONSECUTIVE_GATEWAY_FAILURE, CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
                  FAILURE_PERCENTAGE)


class HostOutlierState:
    __slots__ = ("consecutive_5xx", "consecutive_gateway", "consecutive_local", "ejected_until", "ejection_reason",
                 "interval_failure", "interval_success", "success_rate", "times_ejected")

    def __init__(self) -> None:
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.consecutive_local = 0
        self.times_ejected = 0
        self.ejected_until = 0.0  # trio.current_time() of the end of the current (or last) ejection
        self.ejection_reason = ""  # the detector of the current (or last) ejection (EJECTION_TYPES)
        self.interval_success = 0
        self.interval_failure = 0
        self.success_rate = -1.0  # percent, from the last interval that had the request volume (Envoy: -1 = none)


class OutlierHost(Protocol):
    """A host as outlier detection sees it (:class:`~pyproxy.upstream.cluster.Host`): its detection state
    (created on its first report) and whether it is ejected."""

    outlier: HostOutlierState | None
    ejected: bool


class OutlierDetector:
    def __init__(self, config: OutlierDetection, hosts_provider: Callable[[], Sequence[OutlierHost]], timers: Timers,
                 rng: random.Random, on_change: Callable[[], None],
                 background_rng: random.Random | None = None) -> None:
        self.config = config
        self._hosts = hosts_provider  # the cluster's current hosts
        self._timers = timers
        self._rng = rng  # for ejections a request's result triggers
        self._background_rng = background_rng or rng  # for those the interval timer triggers
        self._on_change = on_change  # the set of usable hosts changed
        self.ejections_total = 0  # enforced (Envoy's ejections_enforced_total)
        self.ejections_active = 0
        self.ejections_overflow = 0  # not ejected because of max_ejection_percent
        self.detected: dict[str, int] = dict.fromkeys(EJECTION_TYPES, 0)  # even if not enforced
        self.enforced: dict[str, int] = dict.fromkeys(EJECTION_TYPES, 0)
        self.success_rate_average = -1.0  # of the last interval that evaluated success rates (-1: none yet)
        self.success_rate_ejection_threshold = -1.0
        self._timer = timers.call_later(config.interval, self._on_interval)
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self._timer.cancel()

    # ---------------------------------------------------------------------------- results

    def report(self, host: OutlierHost, status: int, local_origin: bool = False) -> None:
        """One attempt ended with HTTP ``status`` (local-origin failures: pass 503, ``local_origin``)."""
        state = host.outlier
        if state is None:
            state = host.outlier = HostOutlierState()
        cfg = self.config
        if local_origin and cfg.split_external_local_origin_errors:
            state.consecutive_local += 1
            state.interval_failure += 1
            if cfg.consecutive_local_origin_failure and \
                    state.consecutive_local >= cfg.consecutive_local_origin_failure:
                self._maybe_eject(host, state, cfg.enforcing_consecutive_local_origin_failure,
                                  CONSECUTIVE_LOCAL_ORIGIN_FAILURE, self._rng)
            return
        if status < 500:
            state.consecutive_5xx = 0
            state.consecutive_gateway = 0
            state.consecutive_local = 0
            state.interval_success += 1
            return
        state.interval_failure += 1
        state.consecutive_5xx += 1
        if status in (502, 503, 504):
            state.consecutive_gateway += 1
        else:
            state.consecutive_gateway = 0
        if (cfg.consecutive_5xx and state.consecutive_5xx >= cfg.consecutive_5xx
                and self._maybe_eject(host, state, cfg.enforcing_consecutive_5xx, CONSECUTIVE_5XX, self._rng)):
            return
        if cfg.consecutive_gateway_failure and state.consecutive_gateway >= cfg.consecutive_gateway_failure:
            self._maybe_eject(host, state, cfg.enforcing_consecutive_gateway_failure, CONSECUTIVE_GATEWAY_FAILURE,
                              self._rng)

    def _maybe_eject(self, host: OutlierHost, state: HostOutlierState, enforcing: int, reason: str,
                     rng: random.Random) -> bool:
        state.consecutive_5xx = state.consecutive_gateway = state.consecutive_local = 0
        if host.ejected:
            return False
        self.detected[reason] += 1
        hosts = self._hosts()
        total = len(hosts)
        ejected = sum(1 for h in hosts if h.ejected)
        # max_ejection_percent, but one host can always be ejected; then the enforcement dice (Envoy's order).
        if ejected >= 1 and (ejected + 1) * 100 > total * self.config.max_ejection_percent:
            self.ejections_overflow += 1
            return False
        if rng.randrange(100) >= enforcing:
            return False
        state.times_ejected += 1
        duration = min(self.config.base_ejection_time * state.times_ejected,
                       max(self.config.max_ejection_time, self.config.base_ejection_time))
        if self.config.max_ejection_time_jitter:
            duration += rng.uniform(0, self.config.max_ejection_time_jitter)
        state.ejected_until = current_time() + duration
        state.ejection_reason = reason
        host.ejected = True
        self.ejections_total += 1
        self.enforced[reason] += 1
        self.ejections_active += 1
        self._on_change()
        return True

    # ---------------------------------------------------------------------------- interval

    def _on_interval(self) -> None:
        if self.closed:
            return
        now = current_time()
        hosts = self._hosts()
        changed = False
        for h in hosts:
            state = h.outlier
            if state is None:
                continue
            if h.ejected:
                if now >= state.ejected_until:
                    h.ejected = False
                    self.ejections_active -= 1
                    changed = True
            elif state.times_ejected > 0 and state.interval_failure == 0:
                state.times_ejected -= 1
        self._success_rate(hosts)
        self._failure_percentage(hosts)
        for h in hosts:
            if h.outlier is not None:
                h.outlier.interval_success = h.outlier.interval_failure = 0
        if changed:
            self._on_change()
        self._timer = self._timers.call_later(self.config.interval, self._on_interval)

    def _volumes(self, hosts: Sequence[OutlierHost], volume: int) -> list[tuple[OutlierHost, float]]:
        out = []
        for h in hosts:
            s = h.outlier
            if s is None or h.ejected:
                continue
            n = s.interval_success + s.interval_failure
            if n >= volume:
                out.append((h, s.interval_success / n))
        return out

    def _success_rate(self, hosts: Sequence[OutlierHost]) -> None:
        cfg = self.config
        if not cfg.enforcing_success_rate:
            return
        rates = self._volumes(hosts, cfg.success_rate_request_volume)
        for h, r in rates:
            if h.outlier is not None:
                h.outlier.success_rate = r * 100.0
        if len(rates) < cfg.success_rate_minimum_hosts:
            self.success_rate_average = self.success_rate_ejection_threshold = -1.0
            return
        mean = sum(r for _, r in rates) / len(rates)
        stdev = math.sqrt(sum((r - mean) ** 2 for _, r in rates) / len(rates))
        threshold = mean - (cfg.success_rate_stdev_factor / 1000.0) * stdev
        self.success_rate_average = mean * 100.0
        self.success_rate_ejection_threshold = max(threshold, 0.0) * 100.0
        for h, r in rates:
            if r < threshold and h.outlier is not None:
                self._maybe_eject(h, h.outlier, cfg.enforcing_success_rate, SUCCESS_RATE, self._background_rng)

    def _failure_percentage(self, hosts: Sequence[OutlierHost]) -> None:
        cfg = self.config
        if not cfg.enforcing_failure_percentage:
            return
        rates = self._volumes(hosts, cfg.failure_percentage_request_volume)
        if len(rates) < cfg.failure_percentage_minimum_hosts:
            return
        for h, r in rates:
            if (1.0 - r) * 100 >= cfg.failure_percentage_threshold and h.outlier is not None:
                self._maybe_eject(h, h.outlier, cfg.enforcing_failure_percentage, FAILURE_PERCENTAGE,
                                  self._background_rng)

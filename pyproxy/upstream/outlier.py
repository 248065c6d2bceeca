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


class HostOutlierState:
    __slots__ = ("consecutive_5xx", "consecutive_gateway", "consecutive_local", "ejected_until",
                 "interval_failure", "interval_success", "times_ejected")

    def __init__(self) -> None:
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.consecutive_local = 0
        self.times_ejected = 0
        self.ejected_until = 0.0
        self.interval_success = 0
        self.interval_failure = 0


class OutlierHost(Protocol):
    """A host as outlier detection sees it (:class:`~pyproxy.upstream.cluster.Host`): its detection state
    (created on its first report) and whether it is ejected."""

    outlier: HostOutlierState | None
    ejected: bool


class OutlierDetector:
    def __init__(self, config: OutlierDetection, hosts_provider: Callable[[], Sequence[OutlierHost]], timers: Timers,
                 rng: random.Random, on_change: Callable[[], None]) -> None:
        self.config = config
        self._hosts = hosts_provider  # the cluster's current hosts
        self._timers = timers
        self._rng = rng
        self._on_change = on_change  # the set of usable hosts changed
        self.ejections_total = 0
        self.ejections_active = 0
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
                self._maybe_eject(host, state, cfg.enforcing_consecutive_local_origin_failure)
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
                and self._maybe_eject(host, state, cfg.enforcing_consecutive_5xx)):
            return
        if cfg.consecutive_gateway_failure and state.consecutive_gateway >= cfg.consecutive_gateway_failure:
            self._maybe_eject(host, state, cfg.enforcing_consecutive_gateway_failure)

    def _maybe_eject(self, host: OutlierHost, state: HostOutlierState, enforcing: int) -> bool:
        state.consecutive_5xx = state.consecutive_gateway = state.consecutive_local = 0
        if host.ejected or self._rng.randrange(100) >= enforcing:
            return False
        hosts = self._hosts()
        total = len(hosts)
        ejected = sum(1 for h in hosts if h.ejected)
        # max_ejection_percent, but one host can always be ejected.
        if ejected >= 1 and (ejected + 1) * 100 > total * self.config.max_ejection_percent:
            return False
        state.times_ejected += 1
        duration = min(self.config.base_ejection_time * state.times_ejected,
                       max(self.config.max_ejection_time, self.config.base_ejection_time))
        if self.config.max_ejection_time_jitter:
            duration += self._rng.uniform(0, self.config.max_ejection_time_jitter)
        state.ejected_until = current_time() + duration
        host.ejected = True
        self.ejections_total += 1
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
        if len(rates) < cfg.success_rate_minimum_hosts:
            return
        mean = sum(r for _, r in rates) / len(rates)
        stdev = math.sqrt(sum((r - mean) ** 2 for _, r in rates) / len(rates))
        threshold = mean - (cfg.success_rate_stdev_factor / 1000.0) * stdev
        for h, r in rates:
            if r < threshold and h.outlier is not None:
                self._maybe_eject(h, h.outlier, cfg.enforcing_success_rate)

    def _failure_percentage(self, hosts: Sequence[OutlierHost]) -> None:
        cfg = self.config
        if not cfg.enforcing_failure_percentage:
            return
        rates = self._volumes(hosts, cfg.failure_percentage_request_volume)
        if len(rates) < cfg.failure_percentage_minimum_hosts:
            return
        for h, r in rates:
            if (1.0 - r) * 100 >= cfg.failure_percentage_threshold and h.outlier is not None:
                self._maybe_eject(h, h.outlier, cfg.enforcing_failure_percentage)

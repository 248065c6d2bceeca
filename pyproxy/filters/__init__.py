"""HTTP filters: Envoy's ``http_filters`` as objects, built once per snapshot.

- :mod:`pyproxy.filters.api`: the interface (hooks, statuses, what a request offers a filter).
- one module per filter: :mod:`~pyproxy.filters.rbac` (``envoy.filters.http.rbac``),
  :mod:`~pyproxy.filters.fault` (``envoy.filters.http.fault``).
- the router (``envoy.filters.http.router``) is the terminal filter; it lives with the request in
  :mod:`pyproxy.proxy.router` because it owns the upstream side.

:func:`build_filters` turns a connection manager's filter configs into filter objects, in order, without the
router. Filters are stateless and shared by all requests of a chain; counters come from the proxy's stats so
they survive snapshot swaps, as Envoy's do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from pyproxy.config.model import FaultConfig, RbacConfig
from pyproxy.config.model import HttpFilter as HttpFilterConfig
from pyproxy.filters.api import HttpFilter
from pyproxy.filters.fault import FaultCounters, FaultFilter
from pyproxy.filters.rbac import RbacCounters, RbacFilter


class FilterStats(Protocol):
    """Where filters get their (long-lived) counters."""

    def rbac_counters(self, config: RbacConfig, hcm_stat_prefix: str) -> RbacCounters: ...

    def fault_counters(self, hcm_stat_prefix: str) -> FaultCounters: ...


FilterFactory = Callable[[HttpFilterConfig, FilterStats, str], HttpFilter]


def _rbac(f: HttpFilterConfig, stats: FilterStats, stat_prefix: str) -> HttpFilter:
    assert isinstance(f.config, RbacConfig)
    return RbacFilter(f.name, f.config, stats.rbac_counters(f.config, stat_prefix))


def _fault(f: HttpFilterConfig, stats: FilterStats, stat_prefix: str) -> HttpFilter:
    assert isinstance(f.config, FaultConfig)
    return FaultFilter(f.name, f.config, stats.fault_counters(stat_prefix))


# Config type -> factory. The config translator decides which filters exist; the router is not built here.
FACTORIES: dict[type, FilterFactory] = {RbacConfig: _rbac, FaultConfig: _fault}


def build_filters(configs: Sequence[HttpFilterConfig], stats: FilterStats, stat_prefix: str) -> tuple[HttpFilter, ...]:
    """The chain's filters in configured order, without the terminal router."""
    out: list[HttpFilter] = []
    for f in configs:
        factory = FACTORIES.get(type(f.config))
        if factory is not None:
            out.append(factory(f, stats, stat_prefix))
    return tuple(out)

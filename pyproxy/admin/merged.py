"""The merged Prometheus endpoint (Istio's 15020 ``/stats/prometheus``): agent + proxy + app metrics in one answer.

Per scrape: the agent's metrics (:mod:`pyproxy.agent.metrics`, when the identity agent runs, plus the scrape
counters below), the proxy's own exposition (exactly what 15090 serves, :func:`pyproxy.admin.dumps.prometheus`)
and, with ``--app-metrics-url``, the app's metrics fetched then (:mod:`pyproxy.admin.app_scrape`: trio I/O,
bounded in time and size), joined by :func:`pyproxy.admin.merge.merge` so that no family is declared twice.

Nothing here is on the request path: the proxy's counters are the ones it keeps anyway; the work is done when
Prometheus asks. When the app cannot be scraped the answer still carries the agent's and the proxy's metrics
(status 200), and ``istio_agent_scrape_failures_total{type="application"}`` counts it, as in Istio; the first
failure after a success is logged once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from pyproxy.admin import dumps
from pyproxy.admin.app_scrape import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, AppMetricsUrl, ScrapeError, fetch
from pyproxy.admin.merge import merge

if TYPE_CHECKING:
    from pyproxy.agent.manager import SecretManager
    from pyproxy.proxy.runtime import Runtime

log = logging.getLogger("pyproxy.admin")

SCRAPE_TYPES = ("envoy", "application", "agent")


class MergedStats:
    def __init__(self, runtime: Runtime, app_url: AppMetricsUrl | None = None, *,
                 agent: SecretManager | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_bytes: int = DEFAULT_MAX_BYTES, wall: Callable[[], float] = time.time) -> None:
        self.runtime = runtime
        self.app_url = app_url
        self.agent = agent
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.wall = wall
        self.scrapes = 0
        self.failures = dict.fromkeys(SCRAPE_TYPES, 0)
        self.dropped = 0  # families left out as duplicates, in all
        self._app_failing = False

    async def render(self) -> str:
        self.scrapes += 1
        app = ""
        if self.app_url is not None:
            try:
                app = await fetch(self.app_url, timeout=self.timeout, max_bytes=self.max_bytes)
                if self._app_failing:
                    log.info("merged metrics: the app's metrics at %s are back", self.app_url)
                self._app_failing = False
            except ScrapeError as e:
                self.failures["application"] += 1
                if not self._app_failing:
                    log.warning("merged metrics: app metrics not included: %s", e)
                self._app_failing = True
        sources = [("agent", self._guarded("agent", lambda: "\n".join(self._agent_lines()))),
                   ("envoy", self._guarded("envoy", lambda: dumps.prometheus(self.runtime))),
                   ("application", app)]
        # The app's text (up to max_bytes: ~1.3 s of pure-Python cutting for 8 MiB of small families) is merged
        # in a worker thread, so a huge or hostile answer never stalls the proxy's event loop for that long.
        merged = await trio.to_thread.run_sync(merge, sources) if app else merge(sources)
        if merged.dropped:
            self.dropped += len(merged.dropped)
            log.debug("merged metrics: duplicate families left out: %s", merged.dropped)
        return merged.text

    def _guarded(self, kind: str, render: Callable[[], str]) -> str:
        """One source's text; a failure (a bug) is logged and counted, and the others are still served."""
        try:
            return render()
        except Exception:
            self.failures[kind] += 1
            log.exception("merged metrics: the %s metrics failed", kind)
            return ""

    def _agent_lines(self) -> list[str]:
        out = ["# HELP istio_agent_scrapes_total The total number of scrapes.",
               "# TYPE istio_agent_scrapes_total counter",
               f"istio_agent_scrapes_total {self.scrapes}",
               "# HELP istio_agent_scrape_failures_total The total number of failed scrapes.",
               "# TYPE istio_agent_scrape_failures_total counter"]
        out += [f'istio_agent_scrape_failures_total{{type="{kind}"}} {n}' for kind, n in self.failures.items()]
        if self.agent is not None:
            from pyproxy.agent.metrics import lines

            out += lines(self.agent, self.wall())
        return out

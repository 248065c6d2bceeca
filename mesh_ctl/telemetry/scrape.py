"""Fetch the sidecars' ``/stats/prometheus`` (blocking; callers on an event loop run it in a thread), and
:func:`window`: a sample now, with the rows since an earlier one."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Sequence

from mesh_ctl.telemetry.sample import Sample, parse
from mesh_ctl.telemetry.window import Row, delta

Target = tuple[str, str]  # (sidecar's workload, its stats address host:port)
STATS_PATH = "/stats/prometheus"


def scrape(targets: Sequence[Target], timeout: float = 2.0) -> tuple[list[str], list[dict[str, str]]]:
    """The exposition texts of the targets that answered, and ``{"sidecar", "address", "error"}`` per other."""
    texts, bad = [], []
    for name, addr in targets:
        try:
            with urllib.request.urlopen(f"http://{addr}{STATS_PATH}", timeout=timeout) as r:
                texts.append(r.read().decode())
        except OSError as e:
            bad.append({"sidecar": name, "address": addr, "error": str(e)})
    return texts, bad


def sample(targets: Sequence[Target], timeout: float = 2.0) -> tuple[tuple[Sample, float], list[dict[str, str]]]:
    """One parsed scrape of every target and its monotonic time; the unreachable targets."""
    texts, bad = scrape(targets, timeout)
    at = time.monotonic()
    return (parse(texts), at), bad


def window(targets: Sequence[Target], interval: float, before: tuple[Sample, float] | None = None
           ) -> tuple[tuple[Sample, float], list[Row], list[dict[str, str]], float]:
    """The rows between ``before`` (or a first scrape, then ``interval`` s of sleep) and a scrape now; rates
    use the measured time between the two scrapes, returned last."""
    if before is None:
        before, _ = sample(targets)
        time.sleep(interval)
    after, bad = sample(targets)
    elapsed = max(after[1] - before[1], 1e-3)
    return after, delta(before[0], after[0], elapsed), bad, elapsed

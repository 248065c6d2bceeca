"""Rates over a window: two :mod:`.sample` s -> per-edge rows (rps, success %, p50/p99), and aggregates.

Rates use the measured time between the two scrapes; a counter that went down (a restarted sidecar) counts
from 0. Quantiles are interpolated from the bucket deltas exactly as Prometheus's ``histogram_quantile``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mesh_ctl.telemetry.sample import KEY_FIELDS, EdgeKey, EdgeSample, Sample


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus's histogram_quantile over cumulative ``(le, count)`` buckets (sorted, +Inf last).

    None without observations. Linear interpolation inside the bucket; the lowest bucket starts at 0;
    a quantile in the +Inf bucket is the highest finite bound.
    """
    if not buckets:
        return None
    buckets = sorted(buckets, key=lambda b: b[0])
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return buckets[-1][0]


@dataclass
class Row:
    key: EdgeKey
    requests: float
    ok: float
    buckets: dict[float, float]
    interval: float
    mtls: bool = False

    def as_dict(self) -> dict[str, Any]:
        b = sorted(self.buckets.items())
        d: dict[str, Any] = dict(zip(KEY_FIELDS, self.key, strict=True))
        p50, p99 = histogram_quantile(0.5, b), histogram_quantile(0.99, b)
        d.update(requests=round(self.requests), rps=round(self.requests / self.interval, 3) if self.interval else 0.0,
                 success_pct=round(100.0 * self.ok / self.requests, 2) if self.requests else None,
                 p50_ms=None if p50 is None else round(p50, 3), p99_ms=None if p99 is None else round(p99, 3))
        return d


def delta(before: Sample, after: Sample, interval: float) -> list[Row]:
    """Per-edge rows over the window (counter resets, i.e. a restarted sidecar, count from 0)."""
    rows = []
    for k in sorted(after):
        a, b = after[k], before.get(k, EdgeSample())
        reset = a.requests < b.requests
        base = EdgeSample() if reset else b
        buckets = {le: c - base.buckets.get(le, 0.0) for le, c in a.buckets.items()}
        rows.append(Row(k, a.requests - base.requests, a.ok - base.ok, buckets, interval, a.mtls))
    return rows


def aggregate(rows: Sequence[Row], keep: Sequence[int]) -> list[Row]:
    """Sum rows over the key fields not in ``keep`` (indices into KEY_FIELDS), which become ""."""
    out: dict[EdgeKey, Row] = {}
    for r in rows:
        k: EdgeKey = tuple(v if i in keep else "" for i, v in enumerate(r.key))  # type: ignore[assignment]
        acc = out.setdefault(k, Row(k, 0.0, 0.0, {}, r.interval))
        acc.requests += r.requests
        acc.ok += r.ok
        for le, c in r.buckets.items():
            acc.buckets[le] = acc.buckets.get(le, 0.0) + c
    return [out[k] for k in sorted(out)]


def document(rows: Sequence[Row], interval: float, unreachable: Sequence[Mapping[str, str]],
             hide_idle: bool = False) -> dict[str, Any]:
    """`mesh_ctl top -o json`'s document: edges, services and versions."""
    shown = [r for r in rows if r.requests > 0 or not hide_idle]
    return {"interval_s": interval, "unreachable": list(unreachable),
            "edges": [r.as_dict() for r in shown],
            "services": [r.as_dict() for r in aggregate(rows, (2,))],
            "versions": [r.as_dict() for r in aggregate(rows, (2, 4))]}

"""What the load generator measured: counts by version and status, a latency histogram, the JSON shape.

Latencies go into a log-bucketed histogram (:class:`LatencyHistogram`): memory stays bounded however
long the run, and a percentile is within 0.5% of the exact nearest-rank value (clamped to the observed
min/max). :func:`exact_percentile` is the nearest-rank definition itself (used as the test oracle):
the smallest sample such that at least q% of the samples are <= it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PERCENTILES = (50, 90, 99)
_MIN_S = 1e-6  # 1 us: anything faster falls in the first bucket
_GROWTH = 1.01  # bucket i covers [_MIN_S * 1.01**i, _MIN_S * 1.01**(i+1))
_LOG_GROWTH = math.log(_GROWTH)


def exact_percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``samples`` (any order); ``q`` in (0, 100]."""
    if not samples:
        raise ValueError("no samples")
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class LatencyHistogram:
    """Latencies in seconds, bucketed on a 1% geometric grid from 1 us."""

    __slots__ = ("_buckets", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._buckets: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0

    def record(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        index = 0 if seconds <= _MIN_S else int(math.log(seconds / _MIN_S) / _LOG_GROWTH)
        self._buckets[index] += 1
        self.count += 1
        self.total += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile in seconds (geometric middle of its bucket, within [min, max])."""
        if not self.count:
            raise ValueError("no samples")
        if not 0 < q <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {q}")
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                middle = _MIN_S * _GROWTH ** (index + 0.5)
                return float(min(max(middle, self.min), self.max))
        return self.max  # unreachable: the counts add up to self.count

    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


@dataclass
class Stats:
    """Counts for a set of calls. ``by_version`` keys: ``v1``, ``v2``, ... or ``unknown``."""

    requests: int = 0
    by_version: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    first_error: dict[str, str] = field(default_factory=dict)  # status -> first grpc-message seen

    def record(self, status: str, version: str, latency_s: float, message: str = "") -> None:
        self.requests += 1
        self.by_version[version] += 1
        self.by_status[status] += 1
        self.latency.record(latency_s)
        if status != "OK" and status not in self.first_error:
            self.first_error[status] = message

    @property
    def ok(self) -> int:
        return self.by_status["OK"]

    def percentile_ms(self, q: float) -> float | None:
        return self.latency.percentile(q) * 1000 if self.requests else None

    def latency_ms(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {f"p{q}": _round(self.percentile_ms(q)) for q in PERCENTILES}
        out["max"] = _round(self.latency.max * 1000) if self.requests else None
        out["mean"] = _round(self.latency.mean() * 1000) if self.requests else None
        return out

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        """The counting part of the JSON schema (see :mod:`payment_service.client`)."""
        return {
            "requests": self.requests,
            "by_version": dict(sorted(self.by_version.items())),
            "by_status": dict(sorted(self.by_status.items())),
            "latency_ms": self.latency_ms(),
            "rps": round(self.requests / elapsed_s, 3) if elapsed_s > 0 else 0.0,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

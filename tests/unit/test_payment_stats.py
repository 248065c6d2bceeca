"""Latency percentiles and counts of the load generator (payment_service.stats)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payment_service.stats import LatencyHistogram, Stats, exact_percentile


def test_exact_percentile_is_nearest_rank() -> None:
    samples = [float(x) for x in range(1, 101)]  # 1..100
    assert exact_percentile(samples, 50) == 50
    assert exact_percentile(samples, 90) == 90
    assert exact_percentile(samples, 99) == 99
    assert exact_percentile(samples, 100) == 100
    assert exact_percentile([3.0, 1.0, 2.0], 50) == 2  # order does not matter
    assert exact_percentile([5.0], 1) == 5


@pytest.mark.parametrize("q", [0, -1, 100.5])
def test_percentile_out_of_range(q: float) -> None:
    with pytest.raises(ValueError):
        exact_percentile([1.0], q)
    h = LatencyHistogram()
    h.record(1.0)
    with pytest.raises(ValueError):
        h.percentile(q)


def test_empty_histogram_has_no_percentiles() -> None:
    with pytest.raises(ValueError):
        LatencyHistogram().percentile(50)


@given(
    st.lists(st.floats(min_value=1e-5, max_value=100.0), min_size=1, max_size=400),
    st.sampled_from([1, 10, 50, 90, 99, 99.9, 100]),
)
def test_histogram_percentile_within_half_a_percent(samples: list[float], q: float) -> None:
    h = LatencyHistogram()
    for s in samples:
        h.record(s)
    exact = exact_percentile(samples, q)
    assert math.isclose(h.percentile(q), exact, rel_tol=0.006), (h.percentile(q), exact)
    assert h.count == len(samples)
    assert h.max == max(samples)
    assert h.min == min(samples)
    assert math.isclose(h.mean(), sum(samples) / len(samples), rel_tol=1e-9)


def test_histogram_stays_small_for_many_samples() -> None:
    h = LatencyHistogram()
    for i in range(200_000):
        h.record(0.001 + (i % 1000) * 1e-5)  # 1 .. 11 ms
    assert len(h._buckets) < 300  # bounded by the value range, not the sample count
    assert math.isclose(h.percentile(50), 0.006, rel_tol=0.01)


def test_stats_counts_and_summary() -> None:
    stats = Stats()
    for i in range(10):
        stats.record("OK", "v1" if i < 8 else "v2", 0.001 * (i + 1))
    stats.record("UNAVAILABLE", "v2", 0.5, "injected by payment-server")
    stats.record("UNAVAILABLE", "v2", 0.5, "another message")
    summary = stats.summary(2.0)
    assert summary["requests"] == 12
    assert summary["by_version"] == {"v1": 8, "v2": 4}
    assert summary["by_status"] == {"OK": 10, "UNAVAILABLE": 2}
    assert summary["rps"] == 6.0
    assert set(summary["latency_ms"]) == {"p50", "p90", "p99", "max", "mean"}
    assert math.isclose(summary["latency_ms"]["p50"], 6.0, rel_tol=0.006)
    assert summary["latency_ms"]["max"] == 500.0
    assert stats.ok == 10
    assert stats.first_error == {"UNAVAILABLE": "injected by payment-server"}


def test_empty_stats_summary_uses_null_latencies() -> None:
    summary = Stats().summary(0.0)
    assert summary == {
        "requests": 0,
        "by_version": {},
        "by_status": {},
        "rps": 0.0,
        "latency_ms": {"p50": None, "p90": None, "p99": None, "max": None, "mean": None},
    }

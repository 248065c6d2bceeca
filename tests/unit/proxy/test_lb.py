"""Load balancers: P2C least-request prefers idle hosts, round robin is even, weights are honoured."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from pyproxy.config.model import LbPolicy
from pyproxy.upstream.lb import LeastRequest, Random, RoundRobin, make_load_balancer


@dataclass(eq=False)
class H:
    name: str
    weight: int = 1
    active_requests: int = 0


def test_round_robin_is_even_and_weighted_rr_interleaves() -> None:
    hosts = [H("a"), H("b"), H("c")]
    rr = RoundRobin()
    picks = [rr.pick(hosts, random.Random(0)).name for _ in range(9)]  # type: ignore[attr-defined]
    assert picks == ["a", "b", "c"] * 3
    weighted = [H("a", 3), H("b", 1)]
    rr = RoundRobin()
    seq = [rr.pick(weighted, random.Random(0)).name for _ in range(8)]  # type: ignore[attr-defined]
    assert Counter(seq) == {"a": 6, "b": 2}
    assert "bb" not in "".join(seq)  # smooth: never two b's in a row


def test_p2c_least_request_prefers_less_loaded_hosts() -> None:
    busy, idle = H("busy", active_requests=50), H("idle", active_requests=0)
    others = [H(f"h{i}", active_requests=10) for i in range(3)]
    hosts = [busy, idle, *others]
    lb = LeastRequest()
    rng = random.Random(1)
    counts = Counter(lb.pick(hosts, rng).name for _ in range(10000))  # type: ignore[attr-defined]
    # With P2C, the busiest host is only picked when both choices land on it: 1/25 of the time.
    assert counts["busy"] / 10000 == pytest.approx(1 / 25, abs=0.01)
    # The idle host wins every pair it is in: 1 - (4/5)^2 = 36%.
    assert counts["idle"] / 10000 == pytest.approx(0.36, abs=0.02)


def test_least_request_weighted_uses_active_request_bias() -> None:
    a, b = H("a", weight=2, active_requests=3), H("b", weight=1, active_requests=0)
    lb = LeastRequest(active_request_bias=1.0)
    rng = random.Random(3)
    counts = Counter(lb.pick([a, b], rng).name for _ in range(20000))  # type: ignore[attr-defined]
    # effective weights: a = 2/4 = 0.5, b = 1/1 = 1 -> b gets 2/3.
    assert counts["b"] / 20000 == pytest.approx(2 / 3, abs=0.015)


def test_random_and_factory() -> None:
    hosts = [H("a"), H("b")]
    rng = random.Random(5)
    lb = Random()
    counts = Counter(lb.pick(hosts, rng).name for _ in range(10000))  # type: ignore[attr-defined]
    assert counts["a"] / 10000 == pytest.approx(0.5, abs=0.02)
    assert isinstance(make_load_balancer(LbPolicy.LEAST_REQUEST), LeastRequest)
    assert isinstance(make_load_balancer(LbPolicy.ROUND_ROBIN), RoundRobin)
    assert isinstance(make_load_balancer(LbPolicy.RANDOM), Random)

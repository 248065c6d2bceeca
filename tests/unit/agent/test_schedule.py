"""When the agent renews (Istio's grace ratio 0.5 +- 0.01) and how it backs off (pyproxy.agent.schedule)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyproxy.agent.schedule import Backoff, renewal_time


def test_renewal_at_half_the_lifetime_with_one_percent_jitter() -> None:
    rng = random.Random(7)
    received, lifetime = 1_000_000.0, 86_400.0
    ratios = [(received + lifetime - renewal_time(received, received + lifetime, rng)) / lifetime
              for _ in range(2000)]
    assert all(0.49 <= r <= 0.51 for r in ratios)
    # Jitter goes both ways and spreads over the whole band (a 24 h certificate: 12 h +- ~15 min).
    assert min(ratios) < 0.492 and max(ratios) > 0.508
    assert abs(sum(ratios) / len(ratios) - 0.5) < 0.001
    spread_minutes = (max(ratios) - min(ratios)) * lifetime / 60
    assert 25 < spread_minutes <= 28.8


def test_lifetime_counts_from_receipt_not_from_a_backdated_not_before() -> None:
    # A 5 s certificate backdated 2 minutes by the CA is renewed ~2.5 s after it arrived, not at once.
    rng = random.Random(1)
    at = renewal_time(received_at=100.0, not_after=105.0, rng=rng)
    assert 102.45 <= at <= 102.55


def test_an_already_expired_certificate_is_renewed_now() -> None:
    assert renewal_time(received_at=100.0, not_after=90.0, rng=random.Random()) == 100.0


@given(received=st.floats(0, 2e9), lifetime=st.floats(0, 1e8), seed=st.integers(0, 2**32))
def test_renewal_is_always_inside_the_validity(received: float, lifetime: float, seed: int) -> None:
    at = renewal_time(received, received + lifetime, random.Random(seed))
    assert received <= at <= received + lifetime
    if lifetime > 1:
        assert at - received == pytest.approx(lifetime * 0.5, rel=0.021, abs=1e-6)


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    b = Backoff(random.Random(3), base=1.0, cap=8.0)
    delays = [b.next_delay() for _ in range(6)]
    bounds = [1, 2, 4, 8, 8, 8]
    for delay, high in zip(delays, bounds, strict=True):
        assert high / 2 <= delay <= high
    b.reset()
    assert 0.5 <= b.next_delay() <= 1.0


@pytest.mark.parametrize("ttl, base, cap", [(86_400, 1.0, 30.0), (5, 0.5, 1.25), (1, 0.1, 0.25), (60, 1.0, 15.0)])
def test_backoff_scales_with_short_ttls(ttl: float, base: float, cap: float) -> None:
    b = Backoff.for_ttl(random.Random(), ttl)
    assert (b.base, b.cap) == (base, cap)

"""The load generator's rate schedule (payment_service.rate): exact, drift-free, no bursts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payment_service.rate import RateSchedule


def test_slots_are_evenly_spaced_from_the_start() -> None:
    s = RateSchedule(50, start=100.0)
    dues = [s.next_slot(now=100.0) for _ in range(5)]
    assert dues == pytest.approx([100.0, 100.02, 100.04, 100.06, 100.08])


def test_no_drift_after_a_million_slots() -> None:
    s = RateSchedule(3, start=0.0, max_lag=1e9)
    due = 0.0
    for _ in range(1_000_000):
        due = s.next_slot(now=0.0)
    # Summing 1/3 a million times would be off by ~1e-10 or more; k / rate is exact to one rounding.
    assert due == 999_999 / 3
    assert s.skipped == 0


def test_late_wakeups_do_not_shift_later_slots() -> None:
    s = RateSchedule(10, start=0.0)
    assert s.next_slot(now=0.0) == 0.0
    assert s.next_slot(now=0.15) == pytest.approx(0.1)  # woke 50 ms late: this slot is late ...
    assert s.next_slot(now=0.15) == pytest.approx(0.2)  # ... the next one is not


def test_falling_behind_skips_instead_of_bursting() -> None:
    s = RateSchedule(100, start=0.0, max_lag=0.25)
    s.next_slot(now=0.0)
    # Every worker was stuck for 2 s: 200 slots are overdue. Firing them now would be a burst.
    due = s.next_slot(now=2.0)
    assert due == pytest.approx(2.0)
    assert s.skipped == 199
    assert s.next_slot(now=2.0) == pytest.approx(2.01)


def test_small_lag_is_caught_up() -> None:
    s = RateSchedule(100, start=0.0, max_lag=0.25)
    dues = [s.next_slot(now=0.2) for _ in range(21)]  # 200 ms behind: within max_lag, no slot lost
    assert dues[0] == 0.0
    assert dues[-1] == pytest.approx(0.2)
    assert s.skipped == 0


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
def test_bad_rate(rate: float) -> None:
    with pytest.raises(ValueError):
        RateSchedule(rate, start=0.0)


@given(
    rate=st.floats(min_value=1, max_value=5000),
    lateness=st.lists(st.floats(min_value=0, max_value=0.9), min_size=50, max_size=300),
)
def test_simulated_worker_keeps_the_average_rate(rate: float, lateness: list[float]) -> None:
    """A worker that sleeps until each slot and wakes up late (by less than one interval each time)
    still starts call n at slot n's due time plus that one delay: errors do not add up."""
    s = RateSchedule(rate, start=0.0, max_lag=1.0)
    now = 0.0
    for n, late_fraction in enumerate(lateness):
        due = s.next_slot(now)
        assert due == n / rate
        now = max(now, due) + late_fraction / rate
        assert now == pytest.approx(n / rate + late_fraction / rate)
    assert s.skipped == 0

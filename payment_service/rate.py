"""A drift-free rate schedule for the load generator (pure: the caller passes the clock in).

Slot ``k`` is due at ``start + k / rate``, computed from the integer ``k`` each time, never by adding
intervals up, so rounding and late wake-ups never accumulate: after ten minutes at 50/s slot 30000 is
still due at exactly start + 600 s. A caller that wakes up a little late simply starts that call late;
the next slot keeps its own due time, so the average rate stays exact.

If the caller falls behind by more than ``max_lag`` seconds (all workers busy, a long pause), the missed
slots are skipped (and counted in :attr:`RateSchedule.skipped`) instead of being fired in a burst: the
load stays smooth, and the shortfall shows in the achieved rate.
"""

from __future__ import annotations

import math

DEFAULT_MAX_LAG = 0.25


class RateSchedule:
    def __init__(self, rate: float, start: float, max_lag: float = DEFAULT_MAX_LAG) -> None:
        if rate <= 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number, got {rate}")
        if max_lag < 0:
            raise ValueError(f"max_lag must not be negative, got {max_lag}")
        self.rate = rate
        self.start = start
        self.max_lag = max_lag
        self.issued = 0  # slots handed out (the next slot's index)
        self.skipped = 0

    def due(self, k: int) -> float:
        return self.start + k / self.rate

    def next_slot(self, now: float) -> float:
        """Claim the next slot; returns the absolute time it is due (may be in the past, by <= max_lag)."""
        due = self.due(self.issued)
        if now - due > self.max_lag:
            latest = math.floor((now - self.start) * self.rate)  # newest slot not in the future
            self.skipped += latest - self.issued
            self.issued = latest
            due = self.due(latest)
        self.issued += 1
        return due

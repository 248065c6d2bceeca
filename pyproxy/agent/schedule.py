"""When to renew, and how long to wait after a failure (pure; randomness is passed in).

Renewal follows istio-agent (``security/pkg/nodeagent/cache/secretcache.go`` ``rotateTime``): the lifetime is
measured from when the certificate was *received* (not its not-before, which CAs backdate for clock skew)
to its not-after, and the certificate is renewed when ``ratio * lifetime`` is left, with ``ratio`` =
``SECRET_GRACE_PERIOD_RATIO`` 0.5 +- ``SECRET_GRACE_PERIOD_RATIO_JITTER`` 0.01 drawn per certificate, so
sidecars started together do not all call the CA at once. A 24 h certificate is renewed after 12 h +- ~15 min.

Failures are retried with jittered exponential back-off; the base and the cap shrink with the TTL so that a
certificate of a few seconds still gets several attempts before it expires.
"""

from __future__ import annotations

import random

GRACE_RATIO = 0.5
GRACE_RATIO_JITTER = 0.01
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0


def renewal_time(received_at: float, not_after: float, rng: random.Random, ratio: float = GRACE_RATIO,
                 jitter: float = GRACE_RATIO_JITTER) -> float:
    """The wall-clock time (seconds since the epoch) at which to ask for the next certificate."""
    lifetime = max(0.0, not_after - received_at)
    grace = (ratio + rng.uniform(-jitter, jitter)) * lifetime
    return max(received_at, not_after - grace)


class Backoff:
    """Jittered exponential back-off: attempt n waits U[d/2, d] with d = base * 2^n, at most ``cap``."""

    def __init__(self, rng: random.Random, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> None:
        self.rng = rng
        self.base = base
        self.cap = max(cap, base)
        self._current = base

    @classmethod
    def for_ttl(cls, rng: random.Random, ttl: float) -> Backoff:
        """Base min(1 s, TTL/10), cap min(30 s, TTL/4): a 24 h certificate gets 1 s .. 30 s, a 5 s one
        0.5 s .. 1.25 s."""
        base = min(BACKOFF_BASE, ttl / 10)
        return cls(rng, base, min(BACKOFF_CAP, max(base, ttl / 4)))

    def next_delay(self) -> float:
        delay = self.rng.uniform(self._current / 2, self._current)
        self._current = min(self._current * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._current = self.base

"""Per-request retry *state* (Envoy's ``RetryStateImpl``): what the router keeps to be able to try again.

The *policy* questions (would this outcome be retried, how long to back off) are answered by
:mod:`pyproxy.retry`; this object holds what one request accumulates: the request body kept for replay
(up to :data:`RETRY_BUFFER_LIMIT`; beyond it the request is no longer retriable), the hosts already tried
(``retry_host_predicate: previous_hosts``) and the back-off timer. The router owns one only when the route
has a retry policy with retries left, so a request without retries pays nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyproxy.config.model import RetryPolicy

if TYPE_CHECKING:
    from pyproxy.timers import TimerHandle
    from pyproxy.upstream.cluster import Host

RETRY_BUFFER_LIMIT = 1 << 20  # request bytes kept for replay (Envoy: the per-request buffer limit, 1 MiB)


class RetryState:
    __slots__ = ("body", "body_bytes", "outstanding", "policy", "timer", "tried_hosts")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.body: list[bytes] | None = []  # None: too big to replay, or the response is committed
        self.body_bytes = 0
        self.timer: TimerHandle | None = None  # the back-off before the next attempt
        self.tried_hosts: list[Host] = []
        # A retry counts against the cluster's max_retries from when it is scheduled until the attempt it
        # made has ended (Envoy's RetryStateImpl: retries().inc() when scheduled, dec() in resetRetry()).
        self.outstanding = False

    def keep(self, data: bytes) -> None:
        """Keep request bytes for a replay (the request stops being retriable past the buffer limit)."""
        body = self.body
        if body is None:
            return
        self.body_bytes += len(data)
        if self.body_bytes > RETRY_BUFFER_LIMIT:
            self.body = None
        else:
            body.append(data)

    @property
    def retriable(self) -> bool:
        return self.body is not None

    def commit(self) -> None:
        """The response is going downstream: no more retries, the body need not be kept."""
        self.body = None

    def attempts_left(self, attempts: int) -> bool:
        """``attempts`` tries made so far; Envoy allows 1 + num_retries."""
        return attempts <= self.policy.num_retries

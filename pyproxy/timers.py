"""Timers as data: one heap and one trio task for the whole proxy.

Per-request deadlines (route timeouts, grpc-timeout, idle timeouts) are scheduled with :meth:`Timers.call_at`
and cancelled by flipping a flag (lazy deletion), so a request costs a heap push and no task of its own. The
single runner task sleeps until the earliest deadline; scheduling an earlier one moves its wake-up time.
Callbacks run synchronously in the runner task; they must not block (they queue output, like everything on
the proxy's request path), and the runner flushes the output they produced.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable

import trio


def _noop() -> None:
    pass


class TimerHandle:
    __slots__ = ("_owner", "callback", "cancelled", "deadline")

    def __init__(self, owner: Timers, deadline: float, callback: Callable[[], None]) -> None:
        self._owner = owner
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            # A cancelled entry stays in the heap until its deadline or a compaction: it must not keep what
            # the callback refers to alive (a closed connection's engine and buffers, for up to an hour).
            self.callback = _noop
            self._owner._cancelled_one()


class Timers:
    def __init__(self, after_callbacks: Callable[[], None] | None = None) -> None:
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._scope: trio.CancelScope | None = None
        self._after = after_callbacks
        self._cancelled = 0

    def _cancelled_one(self) -> None:
        # Lazy deletion keeps cancel O(1); compact when cancelled entries dominate so memory stays
        # proportional to live timers, not to request rate x timeout.
        self._cancelled += 1
        heap = self._heap
        if self._cancelled > 1024 and self._cancelled * 2 > len(heap):
            self._heap = heap = [entry for entry in heap if not entry[2].cancelled]
            heapq.heapify(heap)
            self._cancelled = 0

    def call_at(self, deadline: float, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(self, deadline, callback)
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._seq), handle))
        if heap[0][2] is handle and self._scope is not None and deadline < self._scope.deadline:
            self._scope.deadline = deadline
        return handle

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self.call_at(trio.current_time() + delay, callback)

    def __len__(self) -> int:
        return len(self._heap)

    async def run(self) -> None:
        while True:
            heap = self._heap
            deadline = heap[0][0] if heap else math.inf
            with trio.CancelScope(deadline=deadline) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            fired = False
            while heap and heap[0][0] <= now:
                _, _, handle = heapq.heappop(heap)
                if handle.cancelled:
                    self._cancelled -= 1
                else:
                    handle.cancelled = True
                    handle.callback()
                    fired = True
                heap = self._heap  # a callback may have compacted the heap
            if fired and self._after is not None:
                self._after()

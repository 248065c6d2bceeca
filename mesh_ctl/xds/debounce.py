"""Debounce config changes before a push, as istiod does (``PILOT_DEBOUNCE_AFTER`` / ``PILOT_DEBOUNCE_MAX``).

A change starts a batch; the batch is flushed once no change arrived for ``quiet`` seconds, or ``max_delay``
seconds after its first change, whichever comes first, so a burst of applies becomes one push and a steady
stream of changes still pushes at least every ``max_delay``. Istio's defaults are 100 ms and 10 s; minimesh
uses 100 ms and 1 s (a laptop mesh is small, and a demo should react within a second).

The flush (an async callable given the batch's reasons) runs in the debouncer's own task, one at a time;
changes that arrive during a flush start the next batch. While it runs, :attr:`Debouncer.batch_started` is the
loop time (``time.monotonic()``) of the batch's first change: istiod's ``pilot_debounce_time`` ends at the
flush, its ``pilot_proxy_convergence_time`` starts there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

DEBOUNCE_AFTER = 0.1
DEBOUNCE_MAX = 1.0

Flush = Callable[[list[str]], Awaitable[None]]


class Debouncer:
    def __init__(self, flush: Flush, *, quiet: float = DEBOUNCE_AFTER, max_delay: float = DEBOUNCE_MAX) -> None:
        if quiet <= 0 or max_delay < quiet:
            raise ValueError(f"need 0 < quiet <= max_delay (got {quiet}, {max_delay})")
        self._flush = flush
        self.quiet = quiet
        self.max_delay = max_delay
        self._reasons: list[str] = []
        self._first: float | None = None
        self._last = 0.0
        self._changed = asyncio.Event()
        self.flushes = 0
        self.batch_started: float | None = None

    def trigger(self, reason: str) -> None:
        """Record a change (from the event loop's thread; use ``loop.call_soon_threadsafe`` elsewhere)."""
        now = asyncio.get_running_loop().time()
        if self._first is None:
            self._first = now
        self._last = now
        self._reasons.append(reason)
        self._changed.set()

    @property
    def pending(self) -> bool:
        return self._first is not None

    async def run(self) -> None:
        """Flush batches forever (cancel to stop)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._changed.wait()
            while True:
                assert self._first is not None
                deadline = min(self._last + self.quiet, self._first + self.max_delay)
                delay = deadline - loop.time()
                if delay <= 0:
                    break
                await asyncio.sleep(delay)
            reasons, self._reasons = self._reasons, []
            self.batch_started, self._first = self._first, None
            self._changed.clear()
            self.flushes += 1
            await self._flush(reasons)

"""The graph's one scraping loop, owned by the control plane: it runs only while someone watches.

A subscriber (a page's event stream, a snapshot request) gets a queue; the first one starts the loop's task,
the last one to leave cancels it. Each tick (``interval``, 1 s) the sidecars are scraped and the document
built in a worker thread (blocking HTTP with a per-target timeout; the control plane's event loop never
waits on a sidecar); rates are over the samples of the last ``window`` seconds. Each document goes to every
subscriber's queue (a slow reader loses older documents, never blocks the loop). :meth:`GraphFeed.close`
(control plane stopping) cancels the task and ends every stream with ``None``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from mesh_ctl.telemetry.sample import Sample
from mesh_ctl.telemetry.scrape import Target, sample
from mesh_ctl.telemetry.window import Row, delta

log = logging.getLogger("mesh_ctl.graph")

Build = Callable[[list[Row], float, Sequence[Mapping[str, str]]], dict[str, Any]]
Document = dict[str, Any] | None  # None: the stream is over


class TooManyWatchers(Exception):
    pass


class GraphFeed:
    def __init__(self, targets: Callable[[], Sequence[Target]], build: Build, interval: float = 1.0,
                 window: float = 10.0, scrape_timeout: float = 1.0, max_subscribers: int = 16) -> None:
        self.targets = targets
        self.build = build
        self.interval = interval
        self.window = window
        self.scrape_timeout = scrape_timeout
        self.max_subscribers = max_subscribers
        self.latest: dict[str, Any] | None = None
        self.ticks = 0
        self._subscribers: set[asyncio.Queue[Document]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def watchers(self) -> int:
        return len(self._subscribers)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Document]]:
        """A queue of documents (``None`` at the end) while inside; starts the loop if it is not running."""
        if self._closed:
            raise TooManyWatchers("the control plane is stopping")
        if len(self._subscribers) >= self.max_subscribers:
            raise TooManyWatchers(f"{self.max_subscribers} graph pages are open already")
        queue: asyncio.Queue[Document] = asyncio.Queue(maxsize=2)
        self._subscribers.add(queue)
        if self.latest is not None and self.running:
            queue.put_nowait(self.latest)
        if not self.running:
            self.latest = None
            self._task = asyncio.create_task(self._run(), name="graph-feed")
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
            if not self._subscribers:
                await self._stop_task()

    async def snapshot(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """The latest document (waiting for the first one, ``timeout`` at most); None if none came."""
        async with self.subscribe() as queue:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(queue.get(), timeout)
        return None

    async def close(self) -> None:
        self._closed = True
        await self._stop_task()
        for queue in list(self._subscribers):
            _offer(queue, None)

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                # The loop's own cancellation ends here; the caller's (it was cancelled while waiting) goes on.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    async def _run(self) -> None:
        history: deque[tuple[Sample, float]] = deque()
        while True:
            started = time.monotonic()
            try:
                doc = await asyncio.to_thread(self._tick, history)
            except Exception:
                log.exception("building the graph failed; trying again in %.1f s", self.interval)
                doc = None
            if doc is not None:
                self.latest = doc
                self.ticks += 1
                for queue in list(self._subscribers):
                    _offer(queue, doc)
            await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - started)))

    def _tick(self, history: deque[tuple[Sample, float]]) -> dict[str, Any] | None:
        """In a worker thread: scrape, keep the window's samples, build the document (None: first sample)."""
        now, bad = sample(list(self.targets()), self.scrape_timeout)
        history.append(now)
        while len(history) > 2 and now[1] - history[1][1] >= self.window:
            history.popleft()
        if len(history) < 2:
            return None
        before = history[0]
        elapsed = max(now[1] - before[1], 1e-3)
        return self.build(delta(before[0], now[0], elapsed), elapsed, bad)


def _offer(queue: asyncio.Queue[Document], doc: Document) -> None:
    """Put without waiting: a full queue drops its oldest document first."""
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(doc)

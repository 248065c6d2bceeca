"""Accepted connections that have not sent a byte yet, parked in one epoll set instead of one task each.

Issue 9.7: 3,000 connections that never send anything each held a trio task, a coroutine frame, a cancel
scope and (once a filter chain was chosen) a TLS engine, an HTTP/2 engine and a writer task: about 12 KB per
connection before, 47 KB with TLS, and most of it stayed in the process after they closed (Python's small
object arenas and the C heap are only returned to the system when wholly free, and a burst of per-connection
objects interleaved with a few long-lived ones pins them).

A parked connection costs its socket and one :class:`Parked` record, nothing else: no timer entry either (a
cancelled entry would stay in the timer heap until its deadline, an hour later, and pin the memory around it).
One task waits on the epoll descriptor (through trio, so it is cancelled like any other task) or the earliest
deadline; when a parked socket becomes readable (data, EOF or an error) it leaves the set and gets its task
(:meth:`Runtime._serve`). Deadlines are found by a sweep of the set, at most every :data:`SWEEP_INTERVAL`
(0.1 s; the sweep costs well under a millisecond for a few thousand parked connections), so a timeout fires up
to that much late. When a deadline comes first, ``on_timeout`` decides (close the connection, or serve it
anyway: ``continue_on_listener_filters_timeout``).

Envoy has no such phase: its per-connection state before the first byte is small C++ objects. The timers are
Envoy's: the listener filters' timeout when the listener inspects the first bytes, else the filter chain's
``transport_socket_connect_timeout`` (TLS) and the HCM's ``idle_timeout`` / ``max_connection_duration``, which
run from the connection's creation (accept, when there is no listener filter).
"""

from __future__ import annotations

import math
import select
import socket
from collections.abc import Callable
from typing import Any

import trio

_EVENTS = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLERR | select.EPOLLHUP
_BATCH = 256  # readiness events handled per wake-up before a scheduling point
SWEEP_INTERVAL = 0.1


class Parked:
    """One parked connection: its socket, its deadline, and what its owner needs to go on with it (``info``)."""

    __slots__ = ("deadline", "info", "sock")

    def __init__(self, sock: socket.socket, deadline: float, info: Any) -> None:
        self.sock = sock
        self.deadline = deadline
        self.info = info


class FirstBytes:
    """The set of parked connections (see the module docstring). ``on_ready`` / ``on_timeout`` are called
    with a connection that has left the set."""

    def __init__(self, on_ready: Callable[[Parked], None], on_timeout: Callable[[Parked], None]) -> None:
        self._on_ready = on_ready
        self._on_timeout = on_timeout
        self._epoll = select.epoll()
        self._parked: dict[int, Parked] = {}
        self._next_deadline = math.inf
        self._last_sweep = -math.inf
        self._scope: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._parked)

    def park(self, parked: Parked) -> None:
        fd = parked.sock.fileno()
        self._epoll.register(fd, _EVENTS)
        self._parked[fd] = parked
        if parked.deadline < self._next_deadline:
            self._next_deadline = parked.deadline
            scope = self._scope
            if scope is not None:
                scope.deadline = max(parked.deadline, self._last_sweep + SWEEP_INTERVAL)

    def _unpark(self, fd: int) -> Parked | None:
        parked = self._parked.pop(fd, None)
        if parked is not None:
            try:
                self._epoll.unregister(fd)
            except OSError:
                pass
        return parked

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        expired = [fd for fd, p in self._parked.items() if p.deadline <= now]
        for fd in expired:
            parked = self._unpark(fd)
            if parked is not None:
                self._on_timeout(parked)
        self._next_deadline = min((p.deadline for p in self._parked.values()), default=math.inf)

    def close_all(self, on_close: Callable[[Parked], None]) -> None:
        """Shutting down: every parked connection leaves the set and goes to ``on_close``."""
        for fd in list(self._parked):
            parked = self._unpark(fd)
            if parked is not None:
                on_close(parked)

    async def run(self) -> None:
        epoll = self._epoll
        try:
            while True:
                deadline = self._next_deadline
                if deadline != math.inf:
                    deadline = max(deadline, self._last_sweep + SWEEP_INTERVAL)
                with trio.CancelScope(deadline=deadline) as scope:
                    self._scope = scope
                    await trio.lowlevel.wait_readable(epoll)
                self._scope = None
                for fd, _ in epoll.poll(0, _BATCH):
                    parked = self._unpark(fd)
                    if parked is not None:
                        self._on_ready(parked)
                now = trio.current_time()
                if self._next_deadline <= now and now >= self._last_sweep + SWEEP_INTERVAL:
                    self._sweep(now)
                await trio.lowlevel.checkpoint()
        finally:
            self._scope = None
            try:
                trio.lowlevel.notify_closing(epoll)
            except Exception:
                pass
            epoll.close()

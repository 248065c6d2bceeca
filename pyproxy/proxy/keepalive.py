"""HTTP/2 connection keepalive (``Http2ProtocolOptions.connection_keepalive``), for both sides.

Every ``interval`` (+- ``interval_jitter`` percent) a PING goes out; if no PING ACK arrives within
``timeout`` the connection is closed. As in Envoy, any frame received meanwhile also proves the connection is
alive (so head-of-line blocking behind a large transfer does not kill it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from trio import current_time

from pyproxy.http2.connection import H2Connection

if TYPE_CHECKING:
    from pyproxy.timers import TimerHandle
    from pyproxy.upstream.interfaces import KeepaliveRuntime


class Keepalive:
    __slots__ = ("_close", "_engine", "_interval", "_jitter", "_last_rx", "_mark_dirty", "_outstanding",
                 "_runtime", "_timeout", "_timer", "stopped")

    def __init__(self, runtime: KeepaliveRuntime, engine: H2Connection, mark_dirty: Callable[[], None],
                 close: Callable[[], None], interval: float, timeout: float | None, jitter_percent: float) -> None:
        self._runtime = runtime
        self._engine = engine
        self._mark_dirty = mark_dirty
        self._close = close
        self._interval = interval
        self._timeout = timeout or 20.0
        self._jitter = jitter_percent / 100.0
        self._outstanding: bytes | None = None
        self._last_rx = current_time()
        self._timer: TimerHandle | None = None
        self.stopped = False
        self._schedule_ping()

    def _schedule_ping(self) -> None:
        delay = self._interval
        if self._jitter:
            delay += self._runtime.background_rng.uniform(0, self._interval * self._jitter)
        self._timer = self._runtime.timers.call_later(delay, self._send_ping)

    def _send_ping(self) -> None:
        if self.stopped:
            return
        payload = os.urandom(8)
        self._outstanding = payload
        self._engine.ping(payload)
        self._mark_dirty()
        self._timer = self._runtime.timers.call_later(self._timeout, self._check_timeout)

    def _check_timeout(self) -> None:
        if self.stopped or self._outstanding is None:
            return
        if current_time() - self._last_rx < self._timeout:
            # Frames arrived meanwhile: the connection is alive; wait for the ACK a while longer.
            self._timer = self._runtime.timers.call_at(self._last_rx + self._timeout, self._check_timeout)
            return
        self._runtime.log.info("keepalive: no PING ACK within %.1fs, closing connection", self._timeout)
        self.stop()
        self._close()

    def frame_received(self) -> None:
        self._last_rx = current_time()

    def ping_acknowledged(self, payload: bytes) -> None:
        if payload == self._outstanding and not self.stopped:
            self._outstanding = None
            if self._timer is not None:
                self._timer.cancel()
            self._schedule_ping()

    def stop(self) -> None:
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

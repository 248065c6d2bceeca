"""What the upstream side (clusters, host pools, upstream connections, keepalive, mirroring) needs of the runtime.

:class:`pyproxy.proxy.runtime.Runtime` satisfies every protocol here; mypy checks it where the runtime hands
itself to a :class:`~pyproxy.upstream.cluster.ClusterManager`. The protocols exist so that these modules
depend on the few things they use (timers, randomness, output coalescing, task spawning, SSL contexts)
rather than on the runtime, which imports them: a leaf module, importing nothing from ``pyproxy.proxy`` or
``pyproxy.upstream``. Typing only: nothing here runs on the request path.

Each protocol extends the one of the objects it creates and hands the runtime to (a cluster makes host pools,
a pool makes connections, a connection makes its keepalive).
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeVarTuple

if TYPE_CHECKING:
    from pyproxy.config.model import TlsContext
    from pyproxy.timers import Timers

Ts = TypeVarTuple("Ts")


class Flushable(Protocol):
    """A connection whose queued frames go out when the runtime flushes (see :meth:`OutputCoalescing.flush`)."""

    dirty: bool

    def flush(self) -> None: ...


class OutputCoalescing(Protocol):
    """Handlers never write to sockets: they mark connections dirty, and the read loop that triggered them
    flushes once per batch of input (see :mod:`pyproxy.proxy.runtime`). All a mirrored request
    (:class:`~pyproxy.proxy.shadow.ShadowStream`) needs of the runtime."""

    def mark_dirty(self, conn: Flushable) -> None: ...

    def flush(self) -> None: ...


class KeepaliveRuntime(Protocol):
    """What an HTTP/2 :class:`~pyproxy.proxy.keepalive.Keepalive` needs: timers for its PINGs and their
    timeout, randomness for the interval's jitter (the background stream: a PING's timing must not shift the
    requests' random decisions, see :class:`~pyproxy.proxy.runtime.Runtime`), a log."""

    @property
    def timers(self) -> Timers: ...

    @property
    def background_rng(self) -> random.Random: ...

    @property
    def log(self) -> logging.Logger: ...


class UpstreamConnectionRuntime(KeepaliveRuntime, OutputCoalescing, Protocol):
    """What an :class:`~pyproxy.upstream.connection.UpstreamConnection` needs: output coalescing, timers for
    its lingering close, a log, and what its keepalive needs."""


class HostPoolRuntime(UpstreamConnectionRuntime, Protocol):
    """What a :class:`~pyproxy.upstream.pool.HostPool` needs: a task for each connection it opens, and what
    its connections need."""

    def spawn(self, fn: Callable[[*Ts], Awaitable[object]], *args: *Ts) -> None: ...


class UpstreamRuntime(HostPoolRuntime, Protocol):
    """What clusters (:class:`~pyproxy.upstream.cluster.ClusterManager`,
    :class:`~pyproxy.upstream.cluster.ClusterState`) need: SSL contexts shared across snapshots, tasks for DNS
    resolution, timers and randomness for outlier detection (the per-request stream for ejections a request's
    result triggers, the background one for the interval's), and what their host pools need."""

    @property
    def rng(self) -> random.Random: ...

    def ssl_context(self, tls: TlsContext) -> ssl.SSLContext: ...

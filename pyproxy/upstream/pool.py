"""Connection pool for one upstream host: multiplexed HTTP/2 connections and a queue of waiting streams.

Decisions are synchronous and made in one place (:meth:`HostPool.attach`, :meth:`HostPool._assign`): use a
connection with room for another stream; otherwise queue the stream and open a connection, within the
cluster's circuit breakers (max_connections, max_pending_requests). Opening is the only I/O and runs in its
own task (:meth:`HostPool._connect`), which then becomes the connection's read loop.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

from pyproxy.proxy.errors import Overflow, UpstreamConnectFailure
from pyproxy.upstream.connection import (
    ConnectError,
    ConnectionHost,
    UpstreamConnection,
    UpstreamStreamOwner,
    connect,
)

if TYPE_CHECKING:
    import ssl

    from pyproxy.config.model import Cluster
    from pyproxy.http2.connection import H2Settings
    from pyproxy.proxy.errors import ProxyError
    from pyproxy.upstream.interfaces import HostPoolRuntime


class PooledStreamOwner(UpstreamStreamOwner, Protocol):
    """What :meth:`HostPool.attach` takes: an :class:`UpstreamStreamOwner` that may have to wait in the pool's
    queue for a connection (``pool`` says which pool it waits in, so it can :meth:`~HostPool.cancel`), and
    is told when it gets no stream at all."""

    pool: HostPool | None

    def on_upstream_failure(self, err: ProxyError) -> None: ...


class PoolCounters(Protocol):
    """The cluster's counters a pool counts (:class:`~pyproxy.upstream.cluster.ClusterStats`)."""

    upstream_rq_pending_overflow: int
    upstream_cx_total: int
    upstream_cx_connect_fail: int
    upstream_cx_overflow: int


class PoolCluster(Protocol):
    """The cluster a pool belongs to (:class:`~pyproxy.upstream.cluster.ClusterState`), as the pool and its
    connections see it: configuration (circuit breakers, connect settings), what connecting needs, the
    count of open connections it shares with the cluster's other pools, counters."""

    open_connections: int

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> Cluster: ...

    @property
    def stats(self) -> PoolCounters: ...

    @property
    def ssl_context(self) -> ssl.SSLContext | None: ...

    @property
    def address_family(self) -> int: ...

    @property
    def h2_settings(self) -> H2Settings: ...


class PoolHost(ConnectionHost, Protocol):
    """The host a pool connects to (:class:`~pyproxy.upstream.cluster.Host`), as the pool sees it (and hands it
    to its connections)."""

    connect_failures: int
    cx_total: int


class HostPool:
    __slots__ = ("cluster", "connecting", "connections", "host", "pending", "runtime")

    def __init__(self, runtime: HostPoolRuntime, cluster: PoolCluster, host: PoolHost) -> None:
        self.runtime = runtime
        self.cluster = cluster
        self.host = host
        self.connections: list[UpstreamConnection] = []
        self.pending: deque[PooledStreamOwner] = deque()
        self.connecting = 0

    def __repr__(self) -> str:
        active = sum(len(c.streams) for c in self.connections)
        return (f"<HostPool {self.host.address} [Requests: {active} active, {len(self.pending)} queued | "
                f"Connections: {len(self.connections)} open, {self.connecting} connecting]>")

    def attach(self, stream: PooledStreamOwner) -> None:
        """Start ``stream`` on a connection now, or queue it until one is ready."""
        for conn in self.connections:
            if conn.available:
                conn.open_stream(stream)
                return
        cluster = self.cluster
        if len(self.pending) >= cluster.config.circuit_breakers.max_pending_requests:
            cluster.stats.upstream_rq_pending_overflow += 1
            stream.on_upstream_failure(Overflow())
            return
        self.pending.append(stream)
        stream.pool = self
        if self.connecting == 0 or len(self.pending) > self.connecting * self._stream_capacity():
            if cluster.open_connections >= cluster.config.circuit_breakers.max_connections:
                cluster.stats.upstream_cx_overflow += 1
                if self.connecting == 0 and not self.connections:
                    self.pending.remove(stream)
                    stream.pool = None
                    stream.on_upstream_failure(Overflow())
                return
            self.connecting += 1
            cluster.open_connections += 1
            self.runtime.spawn(self._connect)

    def _stream_capacity(self) -> int:
        return 100  # before SETTINGS arrive, assume a new connection can take this many streams

    def cancel(self, stream: PooledStreamOwner) -> None:
        """``stream`` no longer waits (its caller went away)."""
        try:
            self.pending.remove(stream)
        except ValueError:
            pass

    def _assign(self) -> None:
        pending = self.pending
        while pending:
            conn = next((c for c in self.connections if c.available), None)
            if conn is None:
                return
            stream = pending.popleft()
            stream.pool = None
            conn.open_stream(stream)

    async def _connect(self) -> None:
        cluster = self.cluster
        host = self.host
        cluster.stats.upstream_cx_total += 1
        host.cx_total += 1
        try:
            transport = await connect(host.address.host, host.address.port, cluster.config.tls,
                                      cluster.ssl_context, cluster.config.connect_timeout, cluster.address_family,
                                      cluster.config.source_address)
        except ConnectError as e:
            self.connecting -= 1
            cluster.open_connections -= 1
            cluster.stats.upstream_cx_connect_fail += 1
            host.connect_failures += 1
            self.runtime.log.warning("upstream connect to %s (cluster %s) failed: %s",
                                     host.address, cluster.name, e)
            if self.connecting == 0 and not self.connections:
                failed = list(self.pending)
                self.pending.clear()
                for stream in failed:
                    stream.pool = None
                    stream.on_upstream_failure(UpstreamConnectFailure(str(e)))
                self.runtime.flush()
            return
        except BaseException:
            self.connecting -= 1
            cluster.open_connections -= 1
            raise
        self.connecting -= 1
        conn = UpstreamConnection(self.runtime, self, transport, cluster.h2_settings)
        self.connections.append(conn)
        self._assign()
        try:
            await conn.run()
        finally:
            cluster.open_connections -= 1

    # -------------------------------------------------------------------------------- connection events

    def connection_idle(self, conn: UpstreamConnection) -> None:
        if conn.closing:
            conn.close_gracefully()
        elif self.pending:
            self._assign()

    def connection_draining(self, conn: UpstreamConnection) -> None:
        """GOAWAY received: move waiting streams to another (possibly new) connection."""
        if self.pending:
            self._reopen_for_pending()

    def connection_closed(self, conn: UpstreamConnection) -> None:
        try:
            self.connections.remove(conn)
        except ValueError:
            pass
        if self.pending:
            self._reopen_for_pending()

    def _reopen_for_pending(self) -> None:
        if any(c.available for c in self.connections):
            self._assign()
            return
        if self.connecting == 0:
            cluster = self.cluster
            self.connecting += 1
            cluster.open_connections += 1
            self.runtime.spawn(self._connect)

    def drain(self) -> None:
        """The host left the cluster: finish current streams, open nothing new."""
        for conn in list(self.connections):
            conn.shutdown()

    @property
    def active_streams(self) -> int:
        return sum(len(c.streams) for c in self.connections)



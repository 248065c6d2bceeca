"""What a filter chain's connections and requests, and the code that serves accepted sockets, need of the runtime;
what a request needs of its downstream connection.

A :class:`~pyproxy.proxy.context.ChainContext` holds the runtime as ``ctx.runtime`` (a :class:`ChainRuntime`);
downstream connections and requests reach it through their context. ``handle_connection`` gets it as a
:class:`ListenerRuntime`. :class:`pyproxy.proxy.runtime.Runtime` satisfies both; mypy checks it where the
runtime builds chain contexts and serves connections. A request holds its downstream connection as a
:class:`StreamConnection`, which :class:`~pyproxy.proxy.downstream.DownstreamConnection` satisfies (checked
where the connection creates its requests).

A leaf module: it names configuration, routing, RBAC, timer and upstream types only, never
``pyproxy.proxy.context``, ``downstream``, ``stream``, ``router`` or ``runtime``, ``pyproxy.stats`` or
``pyproxy.accesslog`` (``context`` imports this module, so naming one of them would make an import cycle).
Typing only: nothing here runs on the request path.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, MutableSet, Sized
from typing import TYPE_CHECKING, Protocol, TypeVar

from pyproxy.filters.api import FilterEnv, PeerFacts
from pyproxy.upstream.interfaces import Flushable, KeepaliveRuntime, OutputCoalescing

if TYPE_CHECKING:
    from pyproxy.config.model import FilterChain, Listener, RbacConfig
    from pyproxy.filters.fault import FaultCounters
    from pyproxy.filters.rbac import RbacCounters
    from pyproxy.http2.connection import H2Connection
    from pyproxy.io.transport import Transport
    from pyproxy.routing.table import RouteTable
    from pyproxy.timers import Timers
    from pyproxy.upstream.cluster import ClusterState

# The chain context type (ChainContext), a parameter because this module cannot name it.
ContextT_co = TypeVar("ContextT_co", covariant=True)


# ------------------------------------------------------------------------------------------ requests

class ClusterLookup(Protocol):
    """The clusters of the installed snapshot, by name (:class:`~pyproxy.upstream.cluster.ClusterManager`)."""

    def get(self, name: str) -> ClusterState | None: ...


class RequestRuntime(OutputCoalescing, FilterEnv, Protocol):
    """What a request (:class:`~pyproxy.proxy.stream.ProxyStream`) reaches through ``ctx.runtime``: output
    coalescing, timers, randomness (weighted clusters, load balancing, retry back-off, mirroring), clusters.
    A mirrored request gets it as its :class:`~pyproxy.upstream.interfaces.OutputCoalescing`."""

    @property
    def timers(self) -> Timers: ...

    @property
    def clusters(self) -> ClusterLookup: ...


class StreamConnection(PeerFacts, Flushable, Protocol):
    """The downstream connection as a request (:class:`~pyproxy.proxy.stream.ProxyStream`) holds it
    (:class:`~pyproxy.proxy.downstream.DownstreamConnection`): the HTTP/2 engine its responses are written
    to, its transport (backpressure, and the local address and TLS for the record), a flushable connection to
    mark dirty, the end of a stream to report. Its filters see it as :class:`~pyproxy.filters.api.PeerFacts`,
    the access log and the metrics as a :class:`~pyproxy.proxy.record.RecordConnection`."""

    @property
    def engine(self) -> H2Connection: ...

    @property
    def transport(self) -> Transport: ...

    @property
    def requested_server_name(self) -> str | None: ...

    def stream_done(self, sid: int) -> None: ...


# ------------------------------------------------------------------------------------------ connections

class ServedChain(Protocol):
    """The filter chain a downstream connection was accepted under, as the runtime compares it with the chains
    of a new snapshot (:class:`~pyproxy.proxy.context.ChainContext`)."""

    @property
    def listener(self) -> Listener: ...

    @property
    def chain(self) -> FilterChain: ...


class ServedConnection(Protocol):
    """A downstream connection as the runtime keeps track of it
    (:class:`~pyproxy.proxy.downstream.DownstreamConnection`): drained when its filter chain changes or the
    proxy shuts down, its streams counted while the proxy waits for them to end."""

    @property
    def ctx(self) -> ServedChain: ...

    @property
    def streams(self) -> Sized: ...

    def drain(self) -> None: ...


class DownstreamCounters(Protocol):
    """The proxy-wide counters a downstream connection counts (:class:`~pyproxy.stats.ProxyStats`)."""

    downstream_rq_too_many_premature_resets: int


class DownstreamRuntime(KeepaliveRuntime, OutputCoalescing, Protocol):
    """What a downstream connection (:class:`~pyproxy.proxy.downstream.DownstreamConnection`) reaches through
    ``ctx.runtime``: output coalescing, timers (idle, duration, header and drain timeouts, lingering close),
    what its keepalive needs, the set of open connections it joins while it runs, a counter."""

    @property
    def stats(self) -> DownstreamCounters: ...

    @property
    def downstream_connections(self) -> MutableSet[ServedConnection]: ...


# ------------------------------------------------------------------------------------------ chain contexts

class ConnectionManagerCounters(Protocol):
    """Envoy's ``http.<stat_prefix>.*`` connection timeout counters of one connection manager, shared by the
    contexts of its filter chain across snapshots (:class:`~pyproxy.stats.HcmCounters`)."""

    downstream_cx_idle_timeout: int
    downstream_cx_max_duration_reached: int
    downstream_rq_header_timeout: int


class ChainStats(DownstreamCounters, Protocol):
    """The proxy-wide counters as a chain context and its connections see them
    (:class:`~pyproxy.stats.ProxyStats`): the shared counters of its RBAC and fault filters and connection
    manager."""

    def rbac_counters(self, config: RbacConfig, hcm_stat_prefix: str) -> RbacCounters: ...

    def fault_counters(self, hcm_stat_prefix: str) -> FaultCounters: ...

    def hcm_counters(self, stat_prefix: str) -> ConnectionManagerCounters: ...


class ChainRuntime(RequestRuntime, DownstreamRuntime, Protocol):
    """``ctx.runtime``: what a chain context (:class:`~pyproxy.proxy.context.ChainContext`) holds for its
    connections and requests, and itself uses: counters, and the RDS route tables currently installed."""

    @property
    def stats(self) -> ChainStats: ...

    @property
    def route_tables(self) -> Mapping[str, RouteTable]: ...


# ------------------------------------------------------------------------------------------ accepted sockets

class HandshakeCounters(Protocol):
    """The proxy-wide counters of connections refused before they reach a connection manager
    (:class:`~pyproxy.stats.ProxyStats`)."""

    downstream_tls_failures: int
    downstream_plaintext_refused: int


class ServedListener(Protocol[ContextT_co]):
    """A listener as a socket accepted on it is served (:class:`~pyproxy.proxy.runtime.ListenerEntry`): its
    configuration, and the chain context and SSL context of each filter chain, by ``id()`` of the chain."""

    @property
    def listener(self) -> Listener: ...

    @property
    def contexts(self) -> Mapping[int, ContextT_co]: ...

    @property
    def ssl_contexts(self) -> Mapping[int, ssl.SSLContext]: ...


class ListenerRuntime(Protocol[ContextT_co]):
    """What serving an accepted socket (``pyproxy.proxy.downstream.handle_connection``) needs of the runtime:
    the listener it was accepted on, as currently installed, and counters. The connection it then creates
    reaches the runtime through its chain context."""

    def listener_entry(self, name: str) -> ServedListener[ContextT_co] | None: ...

    @property
    def stats(self) -> HandshakeCounters: ...

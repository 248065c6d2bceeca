"""What the access log and the metrics read of a finished request: its record.

A request (:class:`~pyproxy.proxy.stream.ProxyStream`) is its own record: when it finishes, its chain context
(:meth:`~pyproxy.proxy.context.ChainContext.record`) hands it to the metrics recorder
(:meth:`~pyproxy.stats.ProxyStats.recorder`) and to the access loggers (:mod:`pyproxy.accesslog`), which see it
as a :class:`RequestRecord`: route, cluster, host, attempts, response flags and details, timings, byte counts,
identities, response code and grpc-status, and, as :class:`RecordConnection` and :class:`RecordChain`, what
they read of its downstream connection and of its filter chain. mypy checks ``ProxyStream`` where it is
recorded.

A leaf module: it names configuration, routing, TLS, transport and upstream types only, never
``pyproxy.proxy.context``, ``downstream``, ``stream`` or ``router``, ``pyproxy.stats`` or ``pyproxy.accesslog``
(they all import this module). Typing only: nothing here runs on the request path. Every member is read-only:
readers of a record do not change it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pyproxy.http2.hpack import Header
    from pyproxy.io.transport import Transport
    from pyproxy.routing.table import CompiledRoute
    from pyproxy.tls import PeerIdentity
    from pyproxy.upstream.cluster import ClusterState, Host


class RecordChain(Protocol):
    """The filter chain a request was served under, as its record is read
    (:class:`~pyproxy.proxy.context.ChainContext`): its direction and this proxy's identity on it."""

    @property
    def inbound(self) -> bool: ...

    @property
    def local_principal(self) -> str: ...


class RecordConnection(Protocol):
    """The downstream connection a request came on, as its record is read
    (:class:`~pyproxy.proxy.downstream.DownstreamConnection`): addresses, the caller's identity, SNI."""

    @property
    def peer_address(self) -> tuple[str, int]: ...

    @property
    def peer(self) -> PeerIdentity: ...

    @property
    def transport(self) -> Transport: ...

    @property
    def requested_server_name(self) -> str | None: ...


class RequestRecord(Protocol):
    """A finished request (:class:`~pyproxy.proxy.stream.ProxyStream`) as the access log and the metrics read it."""

    @property
    def ctx(self) -> RecordChain: ...

    @property
    def down(self) -> RecordConnection: ...

    # Request
    @property
    def request_headers(self) -> list[Header]: ...

    @property
    def authority(self) -> bytes: ...

    @property
    def is_grpc(self) -> bool: ...

    @property
    def peer_metadata(self) -> bytes | None: ...  # the peer proxy's x-envoy-peer-metadata (Istio)

    # Routing and the upstream side
    @property
    def route(self) -> CompiledRoute | None: ...

    @property
    def cluster(self) -> ClusterState | None: ...

    @property
    def host(self) -> Host | None: ...

    @property
    def attempts(self) -> int: ...

    @property
    def upstream_principal(self) -> str: ...

    @property
    def upstream_local(self) -> tuple[str, int] | None: ...

    @property
    def failure_reason(self) -> str: ...

    # Response and outcome
    @property
    def response_code(self) -> int: ...

    @property
    def grpc_status(self) -> int | None: ...

    @property
    def response_headers(self) -> list[Header] | None: ...

    @property
    def response_trailers_seen(self) -> list[Header] | None: ...

    @property
    def flags(self) -> str: ...  # Envoy's response flags ("-": none)

    @property
    def details(self) -> str: ...  # Envoy's response code details

    @property
    def bytes_received(self) -> int: ...

    @property
    def bytes_sent(self) -> int: ...

    # Timings (trio clock, except start_wallclock)
    @property
    def start_time(self) -> float: ...

    @property
    def start_wallclock(self) -> float: ...

    @property
    def response_headers_time(self) -> float: ...  # 0.0: no response headers

    @property
    def end_time(self) -> float: ...

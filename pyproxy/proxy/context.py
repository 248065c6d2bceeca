"""Per filter chain, per snapshot: everything a request needs that can be computed once.

A :class:`ChainContext` is built when a snapshot is installed, for every filter chain of every listener. A
downstream connection keeps the context of the snapshot it was accepted under (as Envoy keeps a
connection's listener config); each request reads the route table through it when its headers arrive.
Header mutations are compiled to bytes once, and the combination for (virtual host, route, weighted cluster)
is cached, so the request path only concatenates lists.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pyproxy.accesslog import AccessLogger
from pyproxy.config.model import (
    FilterChain,
    HttpConnectionManager,
    Listener,
    NodeInfo,
    RouterConfig,
    TrafficDirection,
)
from pyproxy.filters import build_filters
from pyproxy.http2.connection import H2Settings
from pyproxy.http2.hpack import Header
from pyproxy.routing.table import RouteTable
from pyproxy.tls import local_principal

if TYPE_CHECKING:
    from pyproxy.proxy.interfaces import ChainRuntime
    from pyproxy.proxy.record import RequestRecord


class ChainContext:
    """Shared, immutable-after-build context of one filter chain under one snapshot."""

    local_principal: str

    def __init__(self, runtime: ChainRuntime, listener: Listener, chain: FilterChain, node: NodeInfo,
                 recorder: Callable[[ChainContext, RequestRecord], None],
                 peer_metadata: tuple[bytes, bytes] | None,
                 runtime_values: Mapping[str, object] | None = None) -> None:
        self.runtime = runtime
        self.listener = listener
        self.chain = chain
        self.hcm: HttpConnectionManager = chain.hcm
        self.node = node
        self.direction = listener.traffic_direction
        self.inbound = self.direction is TrafficDirection.INBOUND
        hcm = self.hcm
        h2 = hcm.http2
        self.h2_settings = H2Settings(max_concurrent_streams=h2.max_concurrent_streams,
                                      initial_window=h2.initial_stream_window_size,
                                      initial_connection_window=h2.initial_connection_window_size,
                                      max_header_list_size=hcm.max_request_headers_kb * 1024,
                                      max_consecutive_empty_frames=h2.max_consecutive_inbound_frames_with_empty_payload,
                                      max_priority_per_stream=h2.max_inbound_priority_frames_per_stream,
                                      max_window_updates_per_data=h2.max_inbound_window_update_frames_per_data_frame_sent,
                                      header_table_size=h2.hpack_table_size,
                                      **premature_reset_limits(runtime_values or {}))
        self.server_header: bytes | None = (None if hcm.server_header_transformation == "PASS_THROUGH"
                                            else hcm.server_name.encode())
        self._inline_table: RouteTable | None = None
        if hcm.route_config is not None:
            self._inline_table = RouteTable(hcm.route_config)
        self._recorder = recorder
        # Istio metadata exchange: sidecars (node metadata present) tell each other who they are in
        # request/response headers and strip the peer's headers before the application sees them.
        self.strip_peer_metadata = peer_metadata is not None
        exchange: tuple[Header, ...] = ()
        if peer_metadata is not None:
            exchange = ((b"x-envoy-peer-metadata-id", peer_metadata[0]),
                        (b"x-envoy-peer-metadata", peer_metadata[1]))
        self.upstream_request_headers: tuple[Header, ...] = () if self.inbound else exchange
        self.downstream_response_headers: tuple[Header, ...] = exchange if self.inbound else ()
        self.stream_idle_timeout = hcm.stream_idle_timeout
        self.local_principal = local_principal(chain.tls)
        self.generate_request_id = hcm.generate_request_id
        self.forwarded_proto = b"https" if chain.tls is not None else b"http"
        router = next((f.config for f in hcm.http_filters if isinstance(f.config, RouterConfig)), None)
        self.suppress_envoy_headers = bool(router and router.suppress_envoy_headers)
        self.access_loggers = tuple(AccessLogger(a) for a in hcm.access_logs)
        # The HTTP filters before the router, in order; which of them want which hooks, computed once.
        self.filters = build_filters(hcm.http_filters, runtime.stats, hcm.stat_prefix)
        self.request_body_filters = any(f.wants_request_body for f in self.filters)
        self.response_filters = tuple(f for f in reversed(self.filters) if f.wants_response)
        self.end_filters = tuple(f for f in self.filters if f.wants_end)
        self.underscores = hcm.headers_with_underscores_action
        self.use_remote_address = hcm.use_remote_address
        self.request_timeout = hcm.request_timeout
        self.max_stream_duration = hcm.max_stream_duration
        self.buffer_limit = listener.per_connection_buffer_limit_bytes
        self.hcm_counters = runtime.stats.hcm_counters(hcm.stat_prefix)

    def route_table(self) -> RouteTable | None:
        """The inline route table (fixed with the listener), or the RDS one *currently* installed: an RDS
        update applies to new streams on connections already open, as in Envoy."""
        if self._inline_table is not None:
            return self._inline_table
        name = self.hcm.rds_route_config_name
        return self.runtime.route_tables.get(name) if name else None

    def record(self, stream: RequestRecord) -> None:
        self._recorder(self, stream)
        for logger in self.access_loggers:
            logger.log(stream)


def encode_peer_metadata(node: NodeInfo) -> tuple[bytes, bytes] | None:
    """Istio's metadata exchange headers for this node (None when the node carries no Istio metadata)."""
    if not node.metadata:
        return None
    from google.protobuf import struct_pb2

    keys = ("NAME", "NAMESPACE", "WORKLOAD_NAME", "LABELS", "CLUSTER_ID", "MESH_ID", "SERVICE_ACCOUNT",
            "APP_CONTAINERS", "INSTANCE_IPS", "OWNER", "PLATFORM_METADATA")
    struct = struct_pb2.Struct()
    found = False
    for key in keys:
        value = node.meta(key)
        if value is not None:
            struct.update({key: value})  # type: ignore[dict-item]
            found = True
    if not found:
        return None
    return node.id.encode(), base64.b64encode(struct.SerializeToString())


def premature_reset_limits(values: Mapping[str, object]) -> dict[str, Any]:
    """Envoy's runtime keys for the rapid-reset defence (layered_runtime static layer), with its defaults:
    ``overload.premature_reset_total_stream_count`` (500) and
    ``overload.premature_reset_min_stream_lifetime_seconds`` (1). Unusable values keep the default, as Envoy's
    ``Runtime::Snapshot::getInteger`` does."""
    total = values.get("overload.premature_reset_total_stream_count", 500)
    lifetime = values.get("overload.premature_reset_min_stream_lifetime_seconds", 1)
    return {
        "premature_reset_total_stream_count":
            int(total) if isinstance(total, int | float) and not isinstance(total, bool) and total >= 1 else 500,
        "premature_reset_min_stream_lifetime":
            float(lifetime) if isinstance(lifetime, int | float) and not isinstance(lifetime, bool)
            and lifetime >= 0 else 1.0,
    }

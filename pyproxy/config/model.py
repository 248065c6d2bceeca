"""The frozen configuration model the proxy serves from.

Everything here is immutable and built once per snapshot (from an Envoy v3 bootstrap or, later, from xDS)
by :mod:`pyproxy.config.translate`. Work that can be done once per snapshot (compiling regexes, lower-casing
header names, indexing domains) is done when the model is built, never per request.

Names follow Envoy's API so that a reader can map each class to its proto:

- :class:`Snapshot`            <- ``envoy.config.bootstrap.v3.Bootstrap`` (+ xDS resources)
- :class:`Listener`            <- ``envoy.config.listener.v3.Listener``
- :class:`HttpConnectionManager` <- ``...network.http_connection_manager.v3.HttpConnectionManager``
- :class:`RouteConfiguration`, :class:`VirtualHost`, :class:`Route` <- ``envoy.config.route.v3``
- :class:`Cluster`, :class:`Endpoint` <- ``envoy.config.cluster.v3`` / ``envoy.config.endpoint.v3``
- :class:`TlsContext`          <- ``envoy.extensions.transport_sockets.tls.v3.{Up,Down}streamTlsContext``
- :class:`TlsSecret`, :class:`ValidationSecret` <- ``envoy.extensions.transport_sockets.tls.v3.Secret`` (SDS)
- :class:`DynamicResources`    <- ``Bootstrap.dynamic_resources`` (ADS)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

# Envoy's defaults, in seconds.
DEFAULT_CONNECT_TIMEOUT = 5.0  # Cluster.connect_timeout
DEFAULT_ROUTE_TIMEOUT = 15.0  # RouteAction.timeout when unset (Envoy); Istio always sets 0 (= disabled)
# Runtime keys of connection limits (layered_runtime static layers).
LISTENER_LIMIT_PREFIX = "envoy.resource_limits.listener."
LISTENER_LIMIT_SUFFIX = ".connection_limit"
GLOBAL_LIMIT_RUNTIME_KEY = "overload.global_downstream_max_connections"
DEFAULT_STREAM_IDLE_TIMEOUT = 300.0  # HttpConnectionManager.stream_idle_timeout
DEFAULT_MAX_CONCURRENT_STREAMS = 2147483647  # Http2ProtocolOptions.max_concurrent_streams
# Envoy's defaults are 256 MiB windows, bounded in Envoy by its watermark buffers. pyproxy bounds memory with
# flow control alone (it returns window only after bytes were forwarded), so when the bootstrap leaves the
# windows unset it advertises these smaller windows: at most 1 MiB buffered per stream, 16 MiB per connection.
# Values set explicitly in the configuration are honoured as given.
DEFAULT_INITIAL_STREAM_WINDOW = 1 << 20  # Http2ProtocolOptions.initial_stream_window_size
DEFAULT_INITIAL_CONNECTION_WINDOW = 16 << 20  # Http2ProtocolOptions.initial_connection_window_size
DEFAULT_MAX_REQUEST_HEADERS_KB = 60  # HttpConnectionManager.max_request_headers_kb
DEFAULT_PER_CONNECTION_BUFFER_LIMIT = 1048576  # Listener/Cluster per_connection_buffer_limit_bytes
UNLIMITED = 2**32 - 1


class TrafficDirection(Enum):
    UNSPECIFIED = 0
    INBOUND = 1
    OUTBOUND = 2


@dataclass(frozen=True, slots=True)
class SocketAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# --------------------------------------------------------------------------------------------- matchers


@dataclass(frozen=True, slots=True)
class StringMatcher:
    """``envoy.type.matcher.v3.StringMatcher`` (``safe_regex`` is RE2; Python ``re`` is used, anchored)."""

    kind: Literal["exact", "prefix", "suffix", "contains", "regex"]
    value: str
    ignore_case: bool = False
    compiled: re.Pattern[str] | None = field(default=None, compare=False)

    def matches(self, s: str) -> bool:
        if self.kind == "regex":
            assert self.compiled is not None
            return self.compiled.fullmatch(s) is not None
        if self.ignore_case:
            s = s.lower()
            v = self.value.lower()
        else:
            v = self.value
        if self.kind == "exact":
            return s == v
        if self.kind == "prefix":
            return s.startswith(v)
        if self.kind == "suffix":
            return s.endswith(v)
        return v in s


@dataclass(frozen=True, slots=True)
class HeaderMatcher:
    """``envoy.config.route.v3.HeaderMatcher``. ``name`` is lower-case. ``string_match`` None = presence."""

    name: str
    string_match: StringMatcher | None = None
    present_match: bool = True
    invert_match: bool = False
    treat_missing_header_as_empty: bool = False


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """``envoy.config.route.v3.RouteMatch``. Exactly one of prefix/path/safe_regex is set.

    When ``case_sensitive`` is False the translator stores ``prefix``/``path`` already lower-cased, so the
    router lower-cases the request path and compares. ``safe_regex`` must match the whole path (fullmatch).
    """

    prefix: str | None = None
    path: str | None = None
    safe_regex: re.Pattern[str] | None = None
    case_sensitive: bool = True
    headers: tuple[HeaderMatcher, ...] = ()
    grpc: bool = False  # RouteMatch.grpc: only requests with content-type application/grpc*


# --------------------------------------------------------------------------------------------- routes


@dataclass(frozen=True, slots=True)
class HeaderValueOption:
    """``envoy.config.core.v3.HeaderValueOption``; ``append_action`` mapped to overwrite or append."""

    key: str  # lower-case
    value: str
    append: bool = True  # True: APPEND_IF_EXISTS_OR_ADD (Envoy's default); False: OVERWRITE_IF_EXISTS_OR_ADD
    keep_empty_value: bool = False


@dataclass(frozen=True, slots=True)
class HeaderMutation:
    """Headers to add/remove, computed once per snapshot; applied in order remove -> add."""

    add: tuple[HeaderValueOption, ...] = ()
    remove: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.add and not self.remove


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``envoy.config.route.v3.RetryPolicy`` (policy only; per-request state lives in the router)."""

    retry_on: frozenset[str] = frozenset()
    num_retries: int = 1
    per_try_timeout: float | None = None
    retriable_status_codes: frozenset[int] = frozenset()
    base_interval: float = 0.025
    max_interval: float = 0.250
    retry_previous_hosts: bool = False
    host_selection_retry_max_attempts: int = 1


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    """``RouteAction.RequestMirrorPolicy``: ``fraction`` is in [0, 1]."""

    cluster: str
    fraction: float = 1.0


@dataclass(frozen=True, slots=True)
class WeightedCluster:
    name: str
    weight: int
    request_headers: HeaderMutation = HeaderMutation()
    response_headers: HeaderMutation = HeaderMutation()


@dataclass(frozen=True, slots=True)
class RouteAction:
    """``envoy.config.route.v3.RouteAction``. Exactly one of cluster / weighted_clusters is set.

    ``timeout`` None means disabled (0 in the proto); Envoy's default when the field is unset is 15 s and the
    translator fills that in. ``max_grpc_timeout`` None = do not honour grpc-timeout (Envoy's semantics when
    the field is unset); 0.0 = honour it without a cap.
    """

    cluster: str | None = None
    weighted_clusters: tuple[WeightedCluster, ...] = ()
    total_weight: int = 0
    timeout: float | None = DEFAULT_ROUTE_TIMEOUT
    idle_timeout: float | None = None
    max_grpc_timeout: float | None = None
    grpc_timeout_offset: float = 0.0
    retry_policy: RetryPolicy | None = None
    mirrors: tuple[MirrorPolicy, ...] = ()
    prefix_rewrite: str | None = None
    host_rewrite_literal: str | None = None
    # Added by the bootstrap translator. ``idle_timeout``: None = unset (the HCM's stream_idle_timeout
    # applies), 0.0 = disabled. ``max_stream_duration`` (RouteAction.max_stream_duration.max_stream_duration):
    # None = unset (the HCM's common_http_protocol_options.max_stream_duration applies), 0.0 = disabled.
    max_stream_duration: float | None = None
    cluster_not_found_response_code: int = 503  # only reachable when validate_clusters is false
    # True when max_grpc_timeout came from max_stream_duration.grpc_timeout_header_max (the connection manager's
    # stream duration: "downstream duration timeout", DEADLINE_EXCEEDED) rather than the deprecated router field
    # max_grpc_timeout (a route timeout: "upstream request timeout", UNAVAILABLE).
    grpc_timeout_is_stream_duration: bool = False


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: str = ""


@dataclass(frozen=True, slots=True)
class GrpcTrailersOptions:
    """minimesh's opt-in gRPC behaviours of a route, beyond Envoy (route ``metadata.filter_metadata["minimesh"]``,
    which Envoy ignores): ``retry_on_trailers`` retries a unary call on a retriable grpc-status that arrives in
    trailers after headers (envoy#11049); ``outlier_on_trailers`` lets outlier detection count that status
    (envoy#8228). Both off by default: the default behaviour is Envoy's."""

    retry_on_trailers: bool = False
    outlier_on_trailers: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    match: RouteMatch
    action: RouteAction | DirectResponse
    request_headers: HeaderMutation = HeaderMutation()
    response_headers: HeaderMutation = HeaderMutation()
    # filter name -> per-route filter config (typed_per_filter_config: HTTPFault, RBACPerRoute, ...).
    per_filter_config: tuple[tuple[str, object], ...] = ()
    grpc_trailers: GrpcTrailersOptions = GrpcTrailersOptions()


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    request_headers: HeaderMutation = HeaderMutation()
    response_headers: HeaderMutation = HeaderMutation()
    retry_policy: RetryPolicy | None = None
    include_request_attempt_count: bool = False  # x-envoy-attempt-count on upstream requests
    include_attempt_count_in_response: bool = False  # x-envoy-attempt-count on downstream responses
    # filter name -> per-virtual-host filter config (typed_per_filter_config); a route's own entry wins.
    per_filter_config: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True, slots=True)
class DomainIndex:
    """Virtual hosts by ``:authority``, built once per snapshot, in Envoy's search order.

    1. ``exact`` (lower-case domain -> vhost); 2. ``suffixes``: ``*.foo.com`` / ``*-bar.foo.com`` stored
    without the ``*``, longest first; 3. ``prefixes``: ``foo.*`` stored without the ``*``, longest first;
    4. ``wildcard`` (``*``). A wildcard never matches the empty string, so a suffix/prefix entry matches
    only a host strictly longer than it. Lower-case the host before looking it up.
    """

    exact: Mapping[str, VirtualHost] = field(default_factory=dict)
    suffixes: tuple[tuple[str, VirtualHost], ...] = ()
    prefixes: tuple[tuple[str, VirtualHost], ...] = ()
    wildcard: VirtualHost | None = None


@dataclass(frozen=True, slots=True)
class RouteConfiguration:
    name: str
    virtual_hosts: tuple[VirtualHost, ...]
    request_headers: HeaderMutation = HeaderMutation()
    response_headers: HeaderMutation = HeaderMutation()
    domain_index: DomainIndex = field(default_factory=DomainIndex, compare=False)
    ignore_port_in_host_matching: bool = False
    # RouteConfiguration.validate_clusters as Envoy defaults it: True for an inline route_config, False for
    # one delivered by RDS (a route to an unknown cluster then answers cluster_not_found_response_code).
    validate_clusters: bool = True


# --------------------------------------------------------------------------------------------- TLS


@dataclass(frozen=True, slots=True)
class CertificateSource:
    """A certificate + key, from files (inline PEM is materialised by the translator) or an SDS name.

    ``sds_name`` with the files set: a static secret (``static_resources.secrets``), already resolved.
    ``sds_name`` without files: the secret comes over SDS (ADS); the xDS client fills the files in from the
    :class:`TlsSecret` of that name before the context is used.
    """

    cert_chain_file: str | None = None
    private_key_file: str | None = None
    sds_name: str | None = None


@dataclass(frozen=True, slots=True)
class ValidationContext:
    """``CertificateValidationContext``. ``sds_name`` without ``trusted_ca_file``: the CA comes over SDS (the
    xDS client fills ``trusted_ca_file`` in from the :class:`ValidationSecret` of that name)."""

    trusted_ca_file: str | None = None
    sds_name: str | None = None
    # CertificateValidationContext.match_typed_subject_alt_names (URI/DNS SANs), any must match.
    match_subject_alt_names: tuple[
        tuple[Literal["URI", "DNS", "EMAIL", "IP_ADDRESS"], StringMatcher], ...
    ] = ()


@dataclass(frozen=True, slots=True)
class TlsContext:
    """Either side of TLS. ``server_side`` contexts come from DownstreamTlsContext."""

    server_side: bool
    certificates: tuple[CertificateSource, ...] = ()
    validation: ValidationContext | None = None
    alpn_protocols: tuple[str, ...] = ()
    require_client_certificate: bool = False
    sni: str | None = None
    min_version: str | None = None  # "TLSv1_2", "TLSv1_3" (Envoy's names)
    max_version: str | None = None
    cipher_suites: tuple[str, ...] = ()  # OpenSSL names for TLS <= 1.2 (checked with SSLContext.set_ciphers)


@dataclass(frozen=True, slots=True)
class TlsSecret:
    """An SDS ``Secret`` with a ``tls_certificate`` (e.g. istio-agent's ``default``): checked PEM files."""

    name: str
    cert_chain_file: str
    private_key_file: str


@dataclass(frozen=True, slots=True)
class ValidationSecret:
    """An SDS ``Secret`` with a ``validation_context`` (e.g. istio-agent's ``ROOTCA``).

    ``match_subject_alt_names`` are SAN matchers carried by the secret itself (rare; Istio puts them in the
    ``default_validation_context`` instead); Envoy appends them to the context's own matchers.
    """

    name: str
    trusted_ca_file: str
    match_subject_alt_names: tuple[
        tuple[Literal["URI", "DNS", "EMAIL", "IP_ADDRESS"], StringMatcher], ...
    ] = ()


# --------------------------------------------------------------------------------------------- HTTP


@dataclass(frozen=True, slots=True)
class Http2Options:
    """``envoy.config.core.v3.Http2ProtocolOptions`` (the fields we honour)."""

    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    initial_stream_window_size: int = DEFAULT_INITIAL_STREAM_WINDOW
    initial_connection_window_size: int = DEFAULT_INITIAL_CONNECTION_WINDOW
    max_outbound_frames: int = 10000
    max_outbound_control_frames: int = 1000
    max_consecutive_inbound_frames_with_empty_payload: int = 1
    max_inbound_priority_frames_per_stream: int = 100
    max_inbound_window_update_frames_per_data_frame_sent: int = 10
    connection_keepalive_interval: float | None = None
    connection_keepalive_timeout: float | None = None
    connection_keepalive_interval_jitter: float = 15.0  # percent
    hpack_table_size: int = 4096


# --------------------------------------------------------------------------------------------- RBAC


@dataclass(frozen=True, slots=True)
class RbacMatcher:
    """One node of an ``envoy.config.rbac.v3`` Permission or Principal tree.

    ``kind``: ``any``, ``and``/``or`` (``children``), ``not`` (``children[0]``), ``header`` (``header``),
    ``url_path`` (``string``: the path without query), ``destination_port`` / ``destination_port_range``
    (``ports``: [start, end)), ``authenticated`` (``string``: principal_name; None = any authenticated peer),
    ``source_ip`` / ``direct_remote_ip`` / ``remote_ip`` (``cidrs``).
    """

    kind: Literal["any", "and", "or", "not", "header", "url_path", "destination_port", "destination_port_range",
                  "authenticated", "source_ip", "direct_remote_ip", "remote_ip"]
    children: tuple[RbacMatcher, ...] = ()
    header: HeaderMatcher | None = None
    string: StringMatcher | None = None
    ports: tuple[int, int] = (0, 0)
    cidrs: tuple[str, ...] = ()  # "10.0.0.0/8" (parsed once by the filter)


@dataclass(frozen=True, slots=True)
class RbacPolicy:
    """A policy matches when any permission and any principal match."""

    name: str
    permissions: tuple[RbacMatcher, ...]
    principals: tuple[RbacMatcher, ...]


@dataclass(frozen=True, slots=True)
class RbacRules:
    action: Literal["ALLOW", "DENY", "LOG"]
    policies: tuple[RbacPolicy, ...]


@dataclass(frozen=True, slots=True)
class RbacConfig:
    """``envoy.extensions.filters.http.rbac.v3.RBAC``: enforced ``rules`` (None = allow everything) and
    ``shadow_rules`` (evaluated for stats and logs only)."""

    rules: RbacRules | None
    shadow_rules: RbacRules | None = None
    stat_prefix: str = ""
    shadow_stat_prefix: str = ""


@dataclass(frozen=True, slots=True)
class RbacPerRoute:
    """``envoy.extensions.filters.http.rbac.v3.RBACPerRoute``: ``rbac`` None turns the filter off on the route."""

    rbac: RbacConfig | None = None


# --------------------------------------------------------------------------------------------- fault injection

# Envoy's default runtime keys of the fault filter (FaultSettings::RuntimeKeyValues); an HTTPFault may rename them.
FAULT_DELAY_PERCENT_KEY = "fault.http.delay.fixed_delay_percent"
FAULT_ABORT_PERCENT_KEY = "fault.http.abort.abort_percent"
FAULT_DELAY_DURATION_KEY = "fault.http.delay.fixed_duration_ms"
FAULT_ABORT_HTTP_STATUS_KEY = "fault.http.abort.http_status"
FAULT_ABORT_GRPC_STATUS_KEY = "fault.http.abort.grpc_status"
FAULT_MAX_ACTIVE_FAULTS_KEY = "fault.http.max_active_faults"
FAULT_RUNTIME_PREFIX = "fault.http."  # per downstream cluster: fault.http.<cluster>.abort.abort_percent, ...


@dataclass(frozen=True, slots=True)
class FractionalPercent:
    """``envoy.type.v3.FractionalPercent``: ``numerator`` out of ``denominator`` (100, 10,000 or 1,000,000).

    A numerator above the denominator means always (Envoy compares ``random % denominator < numerator``)."""

    numerator: int = 0
    denominator: int = 100


@dataclass(frozen=True, slots=True)
class FaultDelay:
    """``envoy.extensions.filters.common.fault.v3.FaultDelay``. ``fixed_delay_ms`` None = ``header_delay``: the
    delay comes from the request's ``x-envoy-fault-delay-request`` (ms). Whole milliseconds, as Envoy keeps it
    (``PROTOBUF_GET_MS_REQUIRED`` truncates; a delay of 0 ms is no delay)."""

    percentage: FractionalPercent
    fixed_delay_ms: int | None = None


@dataclass(frozen=True, slots=True)
class FaultAbort:
    """``envoy.extensions.filters.http.fault.v3.FaultAbort``: ``kind`` says which of the ``error_type`` oneof is
    set. ``header``: the status comes from ``x-envoy-fault-abort-request`` / ``x-envoy-fault-abort-grpc-request``."""

    kind: Literal["http", "grpc", "header"]
    percentage: FractionalPercent
    http_status: int = 0  # kind "http": 200-599
    grpc_status: int = 0  # kind "grpc"


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """``envoy.extensions.filters.http.fault.v3.HTTPFault``, as the listener's filter config or as a route's /
    virtual host's ``typed_per_filter_config`` (which replaces the listener's config for that route).

    ``runtime``: the entries of the static runtime layer this config may read (its ``*_runtime`` keys and every
    ``fault.http.*`` key, for the per-downstream-cluster overrides), each already in the form Envoy's runtime
    snapshot reads it: an ``int`` (a non-negative integer value) or a :class:`FractionalPercent`.
    """

    delay: FaultDelay | None = None
    abort: FaultAbort | None = None
    headers: tuple[HeaderMatcher, ...] = ()  # all must match
    downstream_nodes: frozenset[str] = frozenset()  # x-envoy-downstream-service-node values (empty = any)
    upstream_cluster: str = ""  # only requests routed to this cluster ("" = any)
    max_active_faults: int | None = None  # None = unlimited
    delay_percent_runtime: str = FAULT_DELAY_PERCENT_KEY
    abort_percent_runtime: str = FAULT_ABORT_PERCENT_KEY
    delay_duration_runtime: str = FAULT_DELAY_DURATION_KEY
    abort_http_status_runtime: str = FAULT_ABORT_HTTP_STATUS_KEY
    abort_grpc_status_runtime: str = FAULT_ABORT_GRPC_STATUS_KEY
    max_active_faults_runtime: str = FAULT_MAX_ACTIVE_FAULTS_KEY
    disable_downstream_cluster_stats: bool = False
    runtime: tuple[tuple[str, int | FractionalPercent], ...] = ()

    @property
    def inert(self) -> bool:
        """Neither a delay nor an abort: the filter can do nothing with this config."""
        return self.delay is None and self.abort is None


@dataclass(frozen=True, slots=True)
class HttpFilter:
    """One entry of ``HttpConnectionManager.http_filters``; ``config`` is the filter's own frozen config."""

    name: str
    type_url: str
    config: object = None


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """``envoy.extensions.filters.http.router.v3.Router`` (the ``config`` of the router ``HttpFilter``)."""

    suppress_envoy_headers: bool = False


@dataclass(frozen=True, slots=True)
class AccessLog:
    """``envoy.access_loggers.{stdout,stderr,file}``; ``format`` None = Envoy's default text format."""

    sink: Literal["stdout", "stderr", "file"]
    path: str | None = None
    format: str | None = None
    json_format: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class HttpConnectionManager:
    stat_prefix: str
    route_config: RouteConfiguration | None = None
    rds_route_config_name: str | None = None  # filled when routes come from RDS (issue 3)
    http_filters: tuple[HttpFilter, ...] = ()
    http2: Http2Options = Http2Options()
    codec_type: Literal["AUTO", "HTTP2"] = "AUTO"
    stream_idle_timeout: float | None = DEFAULT_STREAM_IDLE_TIMEOUT
    request_timeout: float | None = None
    max_request_headers_kb: int = DEFAULT_MAX_REQUEST_HEADERS_KB
    server_name: str = "envoy"
    server_header_transformation: Literal["OVERWRITE", "APPEND_IF_ABSENT", "PASS_THROUGH"] = "OVERWRITE"
    access_logs: tuple[AccessLog, ...] = ()
    drain_timeout: float = 5.0
    # Added by the bootstrap translator (Envoy's defaults).
    generate_request_id: bool = True
    use_remote_address: bool = False
    xff_num_trusted_hops: int = 0
    # common_http_protocol_options.idle_timeout: the connection has had no active stream for this long
    # (the timer starts when the connection is created, before any byte or TLS handshake, as in Envoy's
    # ConnectionManagerImpl::initializeReadFilterCallbacks). None = disabled (0s).
    idle_timeout: float | None = 3600.0
    max_stream_duration: float | None = None  # common_http_protocol_options.max_stream_duration
    max_connection_duration: float | None = None  # common_http_protocol_options.max_connection_duration
    # request_headers_timeout: from the first byte of a request's header block to its last (None = disabled,
    # Envoy's default).
    request_headers_timeout: float | None = None
    headers_with_underscores_action: Literal["ALLOW", "REJECT_REQUEST", "DROP_HEADER"] = "ALLOW"


# --------------------------------------------------------------------------------------------- listeners


@dataclass(frozen=True, slots=True)
class FilterChainMatch:
    transport_protocol: str | None = None  # "tls" / "raw_buffer"
    application_protocols: tuple[str, ...] = ()
    destination_port: int | None = None
    server_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FilterChain:
    name: str
    match: FilterChainMatch
    tls: TlsContext | None
    hcm: HttpConnectionManager
    # transport_socket_connect_timeout: how long the TLS handshake may take (None = no bound of its own, as in
    # Envoy; the HCM's idle_timeout, running since the connection was created, still applies).
    transport_socket_connect_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    address: SocketAddress
    filter_chains: tuple[FilterChain, ...]
    default_filter_chain: FilterChain | None = None
    traffic_direction: TrafficDirection = TrafficDirection.UNSPECIFIED
    tls_inspector: bool = False
    per_connection_buffer_limit_bytes: int = DEFAULT_PER_CONNECTION_BUFFER_LIMIT
    ipv4_compat: bool = False  # an IPv6 "::" listener also accepts IPv4 (v4-mapped)
    listener_filters_timeout: float | None = 15.0  # None = no timeout
    continue_on_listener_filters_timeout: bool = False
    ignore_global_conn_limit: bool = False  # not counted against the overload manager's global limit


# --------------------------------------------------------------------------------------------- clusters


class LbPolicy(Enum):
    ROUND_ROBIN = 0
    LEAST_REQUEST = 1
    RANDOM = 3


class HealthStatus(Enum):
    UNKNOWN = 0
    HEALTHY = 1
    UNHEALTHY = 2
    DRAINING = 3
    TIMEOUT = 4
    DEGRADED = 5


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: SocketAddress
    load_balancing_weight: int = 1
    health_status: HealthStatus = HealthStatus.UNKNOWN
    hostname: str = ""
    # Flattened filter metadata, e.g. {"istio": {"workload": "payment-v1;default;payment;v1;Kubernetes"}}.
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class LocalityLbEndpoints:
    endpoints: tuple[Endpoint, ...]
    region: str = ""
    zone: str = ""
    sub_zone: str = ""
    load_balancing_weight: int | None = None
    priority: int = 0


@dataclass(frozen=True, slots=True)
class ClusterLoadAssignment:
    cluster_name: str
    localities: tuple[LocalityLbEndpoints, ...]


@dataclass(frozen=True, slots=True)
class CircuitBreakers:
    """``envoy.config.cluster.v3.CircuitBreakers`` thresholds for the DEFAULT priority."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    track_remaining: bool = False


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_5xx: int = 5
    consecutive_gateway_failure: int = 5
    consecutive_local_origin_failure: int = 5
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10
    enforcing_consecutive_5xx: int = 100
    enforcing_consecutive_gateway_failure: int = 0
    enforcing_success_rate: int = 100
    split_external_local_origin_errors: bool = False
    # Added by the bootstrap translator (Envoy's defaults).
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    success_rate_stdev_factor: int = 1900
    enforcing_consecutive_local_origin_failure: int = 100
    enforcing_local_origin_success_rate: int = 100
    failure_percentage_threshold: int = 85
    enforcing_failure_percentage: int = 0
    enforcing_failure_percentage_local_origin: int = 0
    failure_percentage_minimum_hosts: int = 5
    failure_percentage_request_volume: int = 50
    max_ejection_time_jitter: float = 0.0


@dataclass(frozen=True, slots=True)
class Cluster:
    name: str
    discovery_type: Literal["STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS"]
    load_assignment: ClusterLoadAssignment | None
    eds_service_name: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    lb_policy: LbPolicy = LbPolicy.ROUND_ROBIN
    least_request_choice_count: int = 2
    active_request_bias: float = 1.0
    http2: Http2Options = Http2Options()
    tls: TlsContext | None = None
    circuit_breakers: CircuitBreakers = CircuitBreakers()
    outlier_detection: OutlierDetection | None = None
    healthy_panic_threshold: float = 50.0
    per_connection_buffer_limit_bytes: int = DEFAULT_PER_CONNECTION_BUFFER_LIMIT
    max_requests_per_connection: int | None = None
    idle_timeout: float | None = 3600.0  # HttpProtocolOptions.common_http_protocol_options.idle_timeout
    dns_refresh_rate: float = 5.0
    # Istio's cluster metadata (e.g. services/subset) flattened, for metrics labels.
    metadata: tuple[tuple[str, str], ...] = ()
    # Added by the bootstrap translator.
    dns_lookup_family: Literal["AUTO", "V4_ONLY", "V6_ONLY", "V4_PREFERRED", "ALL"] = "AUTO"
    respect_dns_ttl: bool = False
    high_priority_circuit_breakers: CircuitBreakers = CircuitBreakers()
    # upstream_bind_config.source_address.address: the local IP upstream connections are made from.
    source_address: str | None = None


# --------------------------------------------------------------------------------------------- snapshot


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """``envoy.config.core.v3.Node`` plus the Istio node metadata keys the stats use."""

    id: str = ""
    cluster: str = ""
    # Istio's node metadata: NAME, NAMESPACE, WORKLOAD_NAME, LABELS (app, version, ...), CLUSTER_ID, ...
    metadata: tuple[tuple[str, object], ...] = ()
    region: str = ""
    zone: str = ""
    sub_zone: str = ""

    def meta(self, key: str, default: object = None) -> object:
        for k, v in self.metadata:
            if k == key:
                return v
        return default


@dataclass(frozen=True, slots=True)
class AdminConfig:
    address: SocketAddress | None
    access_log_path: str | None = None
    access_logs: tuple[AccessLog, ...] = ()  # Admin.access_log (the newer field)


@dataclass(frozen=True, slots=True)
class DynamicResources:
    """``Bootstrap.dynamic_resources``: xDS over one ADS stream (state of the world, gRPC, v3).

    ``ads_cluster`` is the static cluster the stream goes to. ``lds``/``cds``: listeners/clusters come from
    LDS/CDS (wildcard subscriptions). ``initial_fetch_timeout``: how long to wait for the first LDS/CDS
    answers before serving what there is (the longest of the lds/cds config sources' ``initial_fetch_timeout``,
    Envoy's default 15 s each; None = wait indefinitely, which a ``0s`` on either asks for, as Istio does).
    ``grpc_timeout``: ``grpc_services[0].timeout`` (None = unset).
    """

    ads_cluster: str
    lds: bool = False
    cds: bool = False
    initial_fetch_timeout: float | None = 15.0
    set_node_on_first_message_only: bool = False
    grpc_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent, immutable view of the whole configuration.

    ``clusters`` and ``route_configs`` are looked up by name at request time; the consistency check in the
    translator guarantees every name referenced by a listener or route exists.
    """

    version: str
    node: NodeInfo
    admin: AdminConfig
    listeners: dict[str, Listener]
    clusters: dict[str, Cluster]
    route_configs: dict[str, RouteConfiguration] = field(default_factory=dict)
    # Raw resources as JSON-able dicts, for /config_dump (kept so the dump shows what was configured).
    source: dict[str, object] = field(default_factory=dict)
    # layered_runtime static layers merged (later layers win), keys flattened with dots as Envoy does.
    runtime: Mapping[str, object] = field(default_factory=dict)
    # Things accepted but worth telling the operator (e.g. an optional http filter that was skipped).
    warnings: tuple[str, ...] = ()
    # Bootstrap.dynamic_resources: None for a static bootstrap.
    dynamic: DynamicResources | None = None
    # The overload manager's envoy.resource_monitors.global_downstream_max_connections
    # (max_active_downstream_connections), else the runtime key overload.global_downstream_max_connections;
    # None = no global limit.
    max_downstream_connections: int | None = None

    def listener_connection_limit(self, listener_name: str) -> int | None:
        """The runtime key ``envoy.resource_limits.listener.<name>.connection_limit`` (validated when the
        bootstrap was read), None when unset."""
        value = self.runtime.get(f"{LISTENER_LIMIT_PREFIX}{listener_name}{LISTENER_LIMIT_SUFFIX}")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

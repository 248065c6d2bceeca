"""DestinationRule ``trafficPolicy`` -> cluster settings, following Istio's ``cluster_traffic_policy.go``.

Which policy applies (Istio's ``GetPortLevelTrafficPolicy`` / ``MergeSubsetTrafficPolicy``): a
``portLevelSettings`` entry for the service port *replaces* the DR-level policy (its omitted parts take the
defaults, they are not inherited); a subset's policy overrides the DR-level one part by part
(``connectionPool``, ``loadBalancer``, ``outlierDetection``, ``tls``), and a subset's own
``portLevelSettings`` entry replaces all four.

What each part becomes:

- ``loadBalancer.simple``: unset/``LEAST_REQUEST``/``LEAST_CONN`` -> LEAST_REQUEST (Istio's default),
  ``ROUND_ROBIN``, ``RANDOM``. ``PASSTHROUGH``, ``consistentHash``, ``localityLbSetting`` and ``warmup`` are
  refused (pyproxy has no such balancer).
- ``connectionPool`` (always applied, Istio's defaults otherwise): circuit-breaker thresholds (every limit
  2^32-1 and ``track_remaining``, then ``tcp.maxConnections``, ``http.http1MaxPendingRequests``,
  ``http.http2MaxRequests``, ``http.maxRetries``), ``tcp.connectTimeout`` (default 10s),
  ``http.idleTimeout`` (else ``tcp.idleTimeout``), ``http.maxRequestsPerConnection``,
  ``http.maxConcurrentStreams``, ``http.useClientProtocol``. ``h2UpgradePolicy`` changes nothing for gRPC
  (always HTTP/2). ``tcpKeepalive`` and ``maxConnectionDuration`` are refused.
- ``outlierDetection``: ``consecutive5xxErrors``/``consecutiveGatewayErrors`` with enforcing 100 when > 0,
  ``enforcing_success_rate: 0``, ``interval``, ``baseEjectionTime``, ``maxEjectionPercent``,
  ``splitExternalLocalOriginErrors`` + ``consecutiveLocalOriginFailures``, and ``healthy_panic_threshold``
  = ``minHealthPercent`` (default 0).
- ``tls.mode``: ``ISTIO_MUTUAL`` -> the mesh mTLS; ``DISABLE`` -> plaintext; unset -> auto-mTLS (decided
  from the destination's PeerAuthentication, :mod:`.tls`); ``SIMPLE``/``MUTUAL`` (user certificates) are
  refused for now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh_ctl.translate.errors import TranslationError
from mesh_ctl.translate.values import (
    ANY_KEY,
    Json,
    array,
    boolean,
    duration,
    integer,
    join,
    obj,
    proto_duration,
    string,
    wrapped_int,
)

UNLIMITED = 2**32 - 1
CONNECT_TIMEOUT = 10.0  # Istio's MeshConfig.connectTimeout default
_PARTS = ("connectionPool", "loadBalancer", "outlierDetection", "tls")
_POLICY_FIELDS = {*_PARTS, "portLevelSettings"}
_POLICY_REASONS = {
    "tunnel": "tunneling (HTTP CONNECT) is not supported by pyproxy",
    "proxyProtocol": "the PROXY protocol is not supported by pyproxy",
    "retryBudget": "retry budgets are not supported by pyproxy (use connectionPool.http.maxRetries)",
}
_PORT_POLICY_FIELDS = {"port", *_PARTS}
_LB_FIELDS = {"simple", "localityLbSetting"}
_LB_REASONS = {
    "consistentHash": "consistent-hash load balancing (ring hash, maglev) is not supported by pyproxy",
    "warmupDurationSecs": "slow start (warmup) is not supported by pyproxy",
    "warmup": "slow start (warmup) is not supported by pyproxy",
}
_LB_POLICIES = {"UNSPECIFIED": "LEAST_REQUEST", "LEAST_CONN": "LEAST_REQUEST", "LEAST_REQUEST": "LEAST_REQUEST",
                "ROUND_ROBIN": "ROUND_ROBIN", "RANDOM": "RANDOM"}
_LB_ENUM = {0: "UNSPECIFIED", 1: "LEAST_CONN", 2: "RANDOM", 3: "PASSTHROUGH", 4: "ROUND_ROBIN", 5: "LEAST_REQUEST"}
_TCP_FIELDS = {"maxConnections", "connectTimeout", "idleTimeout"}
_TCP_REASONS = {
    "tcpKeepalive": "TCP keepalive settings are not supported by pyproxy",
    "maxConnectionDuration": "maxConnectionDuration is not supported by pyproxy",
}
_HTTP_FIELDS = {"http1MaxPendingRequests", "http2MaxRequests", "maxRequestsPerConnection", "maxRetries",
                "idleTimeout", "h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams"}
_OUTLIER_FIELDS = {"consecutive5xxErrors", "consecutiveGatewayErrors", "interval", "baseEjectionTime",
                   "maxEjectionPercent", "minHealthPercent", "splitExternalLocalOriginErrors",
                   "consecutiveLocalOriginFailures"}
_OUTLIER_REASONS = {
    "consecutiveErrors": "deprecated in Istio; use consecutive5xxErrors",
    "outlierDetectionHttpErrorCodes": "custom outlier error codes are not supported by pyproxy",
}
_TLS_FIELDS = ("clientCertificate", "privateKey", "caCertificates", "credentialName", "subjectAltNames", "sni",
               "insecureSkipVerify", "caCrl")
_NO_LOCALITY_LB = "locality-aware load balancing is not supported by pyproxy"
_TLS_MODES = {0: "DISABLE", 1: "SIMPLE", 2: "MUTUAL", 3: "ISTIO_MUTUAL"}


@dataclass(frozen=True, slots=True)
class Part:
    value: Mapping[str, Any]
    path: str


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    """The four parts of a traffic policy that apply to one cluster, each with its field path."""

    connection_pool: Part | None = None
    load_balancer: Part | None = None
    outlier_detection: Part | None = None
    tls: Part | None = None


def _parts(policy: Mapping[str, Any], path: str) -> TrafficPolicy:
    def part(key: str) -> Part | None:
        return Part(obj(policy[key], join(path, key), ANY_KEY), join(path, key)) if key in policy else None

    return TrafficPolicy(part("connectionPool"), part("loadBalancer"), part("outlierDetection"), part("tls"))


def port_policy(policy: object, path: str, port: int) -> tuple[TrafficPolicy, bool]:
    """The policy for ``port`` (Istio's ``GetPortLevelTrafficPolicy``) and whether it is port-level."""
    p = obj(policy, path, _POLICY_FIELDS, _POLICY_REASONS)
    for i, pls in enumerate(array(p.get("portLevelSettings"), join(path, "portLevelSettings"))):
        ppath = join(join(path, "portLevelSettings"), i)
        entry = obj(pls, ppath, _PORT_POLICY_FIELDS, _POLICY_REASONS)
        number = obj(entry.get("port"), join(ppath, "port"), {"number"}).get("number")
        if number is not None and integer(number, join(join(ppath, "port"), "number"), 1, 65535) == port:
            return _parts(entry, ppath), True
    return _parts(p, path), False


def merge_subset(dr_policy: object, dr_path: str, subset_policy: object, subset_path: str, port: int,
                 ) -> TrafficPolicy:
    """Istio's ``MergeSubsetTrafficPolicy``."""
    base = port_policy(dr_policy, dr_path, port)[0] if dr_policy is not None else TrafficPolicy()
    if subset_policy is None:
        return base
    sub, port_level = port_policy(subset_policy, subset_path, port)
    return TrafficPolicy(
        connection_pool=sub.connection_pool if sub.connection_pool is not None or port_level
        else base.connection_pool,
        load_balancer=sub.load_balancer if sub.load_balancer is not None or port_level else base.load_balancer,
        outlier_detection=sub.outlier_detection if sub.outlier_detection is not None or port_level
        else base.outlier_detection,
        tls=sub.tls if sub.tls is not None or port_level else base.tls,
    )


def check_policy(policy: object, path: str) -> None:
    """Translate every part of a traffic policy (all port levels) just to find what pyproxy cannot do."""
    p = obj(policy, path, _POLICY_FIELDS, _POLICY_REASONS)
    policies = [_parts(p, path)]
    for i, pls in enumerate(array(p.get("portLevelSettings"), join(path, "portLevelSettings"))):
        ppath = join(join(path, "portLevelSettings"), i)
        entry = obj(pls, ppath, _PORT_POLICY_FIELDS, _POLICY_REASONS)
        obj(entry.get("port"), join(ppath, "port"), {"number"})
        policies.append(_parts(entry, ppath))
    for tp in policies:
        load_balancer(tp)
        connection_pool(tp)
        outlier_detection(tp)
        tls_mode(tp)


# --------------------------------------------------------------------------------------------- the parts


def load_balancer(tp: TrafficPolicy) -> str:
    """The Envoy ``lb_policy`` name."""
    if tp.load_balancer is None:
        return "LEAST_REQUEST"
    lb = obj(tp.load_balancer.value, tp.load_balancer.path, _LB_FIELDS, _LB_REASONS)
    if "localityLbSetting" in lb:
        lpath = join(tp.load_balancer.path, "localityLbSetting")
        setting = obj(lb["localityLbSetting"], lpath, {"enabled"},
                      dict.fromkeys(("distribute", "failover", "failoverPriority"), _NO_LOCALITY_LB))
        enabled = setting.get("enabled", True)
        if isinstance(enabled, Mapping):
            enabled = enabled.get("value", True)
        if enabled is not False:
            raise TranslationError(lpath, _NO_LOCALITY_LB)
    simple = lb.get("simple", "UNSPECIFIED")
    if isinstance(simple, int) and not isinstance(simple, bool):
        simple = _LB_ENUM.get(simple, str(simple))
    name = string(simple, join(tp.load_balancer.path, "simple")).upper()
    if name not in _LB_POLICIES:
        reason = ("PASSTHROUGH (original destination) is not supported by pyproxy" if name == "PASSTHROUGH"
                  else f"{name!r} is not a load balancer pyproxy has (ROUND_ROBIN, LEAST_REQUEST, RANDOM)")
        raise TranslationError(join(tp.load_balancer.path, "simple"), reason)
    return _LB_POLICIES[name]


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    connect_timeout: float = CONNECT_TIMEOUT
    thresholds: Mapping[str, int | bool] | None = None  # circuit breaker thresholds (DEFAULT priority)
    idle_timeout: float | None = None
    max_requests_per_connection: int | None = None
    max_concurrent_streams: int | None = None
    use_client_protocol: bool = False


def default_thresholds() -> dict[str, int | bool]:
    """Istio's ``getDefaultCircuitBreakerThresholds``: no limits (Envoy's own defaults are 1024/3)."""
    return {"max_connections": UNLIMITED, "max_pending_requests": UNLIMITED, "max_requests": UNLIMITED,
            "max_retries": UNLIMITED, "track_remaining": True}


def connection_pool(tp: TrafficPolicy) -> ConnectionPool:
    thresholds = default_thresholds()
    if tp.connection_pool is None:
        return ConnectionPool(thresholds=thresholds)
    path = tp.connection_pool.path
    cp = obj(tp.connection_pool.value, path, {"tcp", "http"})
    connect_timeout = CONNECT_TIMEOUT
    idle: float | None = None
    per_connection = streams = None
    use_client = False
    if "http" in cp:
        hpath = join(path, "http")
        http = obj(cp["http"], hpath, _HTTP_FIELDS)
        for key, field in (("http2MaxRequests", "max_requests"), ("http1MaxPendingRequests", "max_pending_requests"),
                           ("maxRetries", "max_retries")):
            if key in http:
                value = integer(http[key], join(hpath, key), 0, 2**31 - 1)
                if value > 0:  # Istio: 0 cannot be told from unset, so it means the default
                    thresholds[field] = value
        if "idleTimeout" in http:
            idle = duration(http["idleTimeout"], join(hpath, "idleTimeout"))
        if "maxRequestsPerConnection" in http:
            per_connection = integer(http["maxRequestsPerConnection"], join(hpath, "maxRequestsPerConnection"),
                                     0, 2**31 - 1) or None
        if "maxConcurrentStreams" in http:
            streams = integer(http["maxConcurrentStreams"], join(hpath, "maxConcurrentStreams"),
                              0, 2**31 - 1) or None
        if "useClientProtocol" in http:
            use_client = boolean(http["useClientProtocol"], join(hpath, "useClientProtocol"))
        if "h2UpgradePolicy" in http:
            policy = http["h2UpgradePolicy"]
            if policy not in ("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE", 0, 1, 2):
                raise TranslationError(join(hpath, "h2UpgradePolicy"), f"unknown policy {policy!r}")
    if "tcp" in cp:
        tpath = join(path, "tcp")
        tcp = obj(cp["tcp"], tpath, _TCP_FIELDS, _TCP_REASONS)
        if "connectTimeout" in tcp:
            connect_timeout = duration(tcp["connectTimeout"], join(tpath, "connectTimeout"))
            if connect_timeout <= 0:
                raise TranslationError(join(tpath, "connectTimeout"), "must be greater than 0")
        if "maxConnections" in tcp:
            value = integer(tcp["maxConnections"], join(tpath, "maxConnections"), 0, 2**31 - 1)
            if value > 0:
                thresholds["max_connections"] = value
        if idle is None and "idleTimeout" in tcp:
            idle = duration(tcp["idleTimeout"], join(tpath, "idleTimeout"))
    return ConnectionPool(connect_timeout, thresholds, idle, per_connection, streams, use_client)


def outlier_detection(tp: TrafficPolicy) -> tuple[Json, float] | None:
    """(Envoy ``outlier_detection``, ``healthy_panic_threshold``), or None without ``outlierDetection``."""
    if tp.outlier_detection is None:
        return None
    path = tp.outlier_detection.path
    od = obj(tp.outlier_detection.value, path, _OUTLIER_FIELDS, _OUTLIER_REASONS)
    out: Json = {"enforcing_success_rate": 0}
    for key, field, enforcing in (("consecutive5xxErrors", "consecutive_5xx", "enforcing_consecutive_5xx"),
                                  ("consecutiveGatewayErrors", "consecutive_gateway_failure",
                                   "enforcing_consecutive_gateway_failure")):
        value = wrapped_int(od.get(key), join(path, key))
        if value is not None:
            out[field] = value
            out[enforcing] = 100 if value > 0 else 0
    for key, field in (("interval", "interval"), ("baseEjectionTime", "base_ejection_time")):
        if key in od:
            seconds = duration(od[key], join(path, key))
            if seconds < 0.001:
                raise TranslationError(join(path, key), "must be at least 1ms")
            out[field] = proto_duration(seconds)
    if "maxEjectionPercent" in od:
        value = integer(od["maxEjectionPercent"], join(path, "maxEjectionPercent"), 0, 100)
        if value > 0:
            out["max_ejection_percent"] = value
    if od.get("splitExternalLocalOriginErrors"):
        out["split_external_local_origin_errors"] = boolean(od["splitExternalLocalOriginErrors"],
                                                            join(path, "splitExternalLocalOriginErrors"))
        local = wrapped_int(od.get("consecutiveLocalOriginFailures"), join(path, "consecutiveLocalOriginFailures"))
        if local:
            out["consecutive_local_origin_failure"] = local
            out["enforcing_consecutive_local_origin_failure"] = 100
        out["enforcing_local_origin_success_rate"] = 0
    panic = integer(od.get("minHealthPercent", 0), join(path, "minHealthPercent"), 0, 100)
    return out, float(panic)


def tls_mode(tp: TrafficPolicy) -> str | None:
    """``ISTIO_MUTUAL``, ``DISABLE``, or None when the policy has no ``tls`` (Istio's auto-mTLS decides)."""
    if tp.tls is None:
        return None
    path = tp.tls.path
    tls = obj(tp.tls.value, path, {"mode"}, dict.fromkeys(_TLS_FIELDS, "client TLS settings other than mode "
                                                          "are not supported (minimesh originates Istio mTLS "
                                                          "only: ISTIO_MUTUAL or DISABLE)"))
    mode = tls.get("mode", "DISABLE")
    if isinstance(mode, int) and not isinstance(mode, bool):
        mode = _TLS_MODES.get(mode, str(mode))
    name = string(mode, join(path, "mode")).upper()
    if name in ("SIMPLE", "MUTUAL"):
        raise TranslationError(join(path, "mode"), f"{name} (TLS with your own certificates) is not supported "
                               "yet; use ISTIO_MUTUAL or DISABLE")
    if name not in ("DISABLE", "ISTIO_MUTUAL"):
        raise TranslationError(join(path, "mode"), f"unknown TLS mode {name!r}")
    return name

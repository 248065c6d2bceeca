"""What the admin endpoints show, as plain functions of the runtime (testable without sockets)."""

from __future__ import annotations

import copy
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from pyproxy.config.model import CircuitBreakers
from pyproxy.upstream import breakers
from pyproxy.upstream.outlier import EJECTION_TYPES

if TYPE_CHECKING:
    from pyproxy.proxy.runtime import Runtime
    from pyproxy.upstream.cluster import ClusterState, Host

HELP = """pyproxy admin commands:
  /ready               200 LIVE when serving
  /server_info         version, state, uptime, node
  /config_dump         the live configuration (Envoy's ConfigDump shape); ?resource=static_clusters etc.
  /clusters            upstream clusters, hosts, their counters, health and outlier state (?format=json)
  /listeners           listeners and their addresses (?format=json)
  /stats               counters (?format=json|prometheus)
  /stats/prometheus    Istio standard metrics and proxy counters in Prometheus text format
  /certs               certificates in use (Envoy's shape; + root_fingerprints_sha256, secret_names)
  /quitquitquit        POST: shut down gracefully
"""

_ADMIN_TYPES = "type.googleapis.com/envoy.admin.v3."
_PROM_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")  # Envoy sanitizes Prometheus names to [a-zA-Z0-9_]


def config_dump(rt: Runtime, resource: str | None = None) -> dict[str, Any]:
    snap = rt.snapshot
    source: dict[str, Any] = dict(snap.source) if isinstance(snap.source, dict) else {}
    bootstrap = source.get("bootstrap") or {k: v for k, v in source.items() if k != "dynamic"}
    static = bootstrap.get("static_resources", {}) if isinstance(bootstrap, dict) else {}
    dynamic_source = source.get("dynamic")
    if callable(dynamic_source):
        dynamic_source = dynamic_source()
    dynamic: dict[str, Any] = dynamic_source if isinstance(dynamic_source, dict) else {}
    configs: list[dict[str, Any]] = [
        {"@type": _ADMIN_TYPES + "BootstrapConfigDump", "bootstrap": copy.deepcopy(bootstrap)},
        {"@type": _ADMIN_TYPES + "ClustersConfigDump", "version_info": snap.version,
         "static_clusters": [{"cluster": c} for c in static.get("clusters", [])],
         "dynamic_active_clusters": [{"version_info": snap.version, "cluster": c}
                                     for c in dynamic.get("clusters", [])]},
        {"@type": _ADMIN_TYPES + "ListenersConfigDump", "version_info": snap.version,
         "static_listeners": [{"listener": li} for li in static.get("listeners", [])],
         "dynamic_listeners": [{"name": li.get("name", ""), "active_state": {"version_info": snap.version,
                                                                               "listener": li}}
                               for li in dynamic.get("listeners", [])]},
        {"@type": _ADMIN_TYPES + "RoutesConfigDump",
         "static_route_configs": [], "dynamic_route_configs": [
             {"version_info": snap.version, "route_config": r} for r in dynamic.get("routes", [])]},
        {"@type": _ADMIN_TYPES + "EndpointsConfigDump",
         "dynamic_endpoint_configs": [{"version_info": snap.version, "endpoint_config": e}
                                      for e in dynamic.get("endpoints", [])]},
    ]
    if resource:
        out = []
        for cfg in configs:
            if resource in cfg:
                for item in cfg[resource]:
                    out.append({"@type": cfg["@type"], **item} if isinstance(item, dict) else item)
        return {"configs": out}
    return {"configs": configs}


def _static_cluster_names(rt: Runtime) -> set[str]:
    """Clusters of the bootstrap's static_resources (the others came from CDS: Envoy's ``added_via_api``)."""
    source = rt.snapshot.source if isinstance(rt.snapshot.source, dict) else {}
    bootstrap = source.get("bootstrap") or source
    static = bootstrap.get("static_resources", {}) if isinstance(bootstrap, dict) else {}
    clusters = static.get("clusters", []) if isinstance(static, dict) else []
    return {str(c.get("name", "")) for c in clusters if isinstance(c, dict)}


def _clock() -> tuple[float, float]:
    """(trio's clock, the wall clock) now: outlier detection keeps time on trio's clock."""
    return trio.current_time(), time.time()


def _thresholds(cb: CircuitBreakers, priority: str) -> dict[str, Any]:
    """``envoy.config.cluster.v3.CircuitBreakers.Thresholds`` as Envoy's /clusters?format=json prints it."""
    out: dict[str, Any] = {} if priority == "DEFAULT" else {"priority": priority}
    out.update(max_connections=cb.max_connections, max_pending_requests=cb.max_pending_requests,
               max_requests=cb.max_requests, max_retries=cb.max_retries)
    return out


def _eds_health(h: Host) -> str:
    # Envoy reports a host whose EDS health is UNKNOWN as HEALTHY.
    return "HEALTHY" if h.health.name == "UNKNOWN" else h.health.name


def _host_counters(h: Host) -> list[tuple[str, int]]:
    """Envoy's per-host counters, in Envoy's order (pyproxy does not count rq_timeout per host)."""
    return [("cx_connect_fail", h.connect_failures), ("cx_total", h.cx_total), ("rq_error", h.rq_error),
            ("rq_success", h.rq_success), ("rq_total", h.rq_total)]


def _host_gauges(h: Host) -> list[tuple[str, int]]:
    pool = h.pool
    return [("cx_active", len(pool.connections) if pool else 0), ("rq_active", h.active_requests)]


def _metric(name: str, value: int, gauge: bool) -> dict[str, Any]:
    """``envoy.admin.v3.SimpleMetric`` in proto3 JSON: uint64 as a string, defaults (0, COUNTER) left out."""
    out: dict[str, Any] = {"type": "GAUGE"} if gauge else {}
    if value:
        out["value"] = str(value)
    out["name"] = name
    return out


def host_outlier(h: Host, clock: tuple[float, float]) -> dict[str, Any]:
    """pyproxy's extension: a host's outlier detection state, for people learning what ejected it and until
    when (``ejected_until`` is wall-clock RFC 3339 UTC; the detector lets the host back at its first interval
    check at or after that time)."""
    state = h.outlier
    out: dict[str, Any] = {"ejected": h.ejected, "times_ejected": state.times_ejected if state else 0,
                           "consecutive_5xx": state.consecutive_5xx if state else 0,
                           "consecutive_gateway_failure": state.consecutive_gateway if state else 0,
                           "consecutive_local_origin_failure": state.consecutive_local if state else 0}
    if h.ejected and state is not None:
        mono, wall = clock
        left = state.ejected_until - mono
        out["ejection_reason"] = state.ejection_reason
        out["ejected_until"] = _rfc3339_ms(wall + left)
        out["ejection_time_left_s"] = round(max(0.0, left), 3)
    return out


def circuit_breaker_state(state: ClusterState) -> dict[str, dict[str, Any]]:
    """pyproxy's extension: the DEFAULT priority's circuit breakers now (in use, maximum, remaining, open)."""
    return {r.name: {"current": r.current, "max": r.max, "remaining": r.remaining, "open": r.open}
            for r in breakers.resources(state)}


def clusters_json(rt: Runtime, clock: tuple[float, float] | None = None) -> dict[str, Any]:
    """Envoy's ``/clusters?format=json`` (``envoy.admin.v3.Clusters`` as proto3 JSON with field names as in
    the proto), plus pyproxy's extensions: per cluster ``circuit_breaker_state``, per host of a cluster with
    outlier detection ``outlier_detection`` (see :func:`host_outlier`)."""
    clock = clock or _clock()
    static = _static_cluster_names(rt)
    out = []
    for name, state in sorted(rt.clusters.clusters.items()):
        cfg = state.config
        cluster: dict[str, Any] = {"name": name, "circuit_breakers": {"thresholds": [
            _thresholds(cfg.circuit_breakers, "DEFAULT"), _thresholds(cfg.high_priority_circuit_breakers, "HIGH")]}}
        detector = state.outlier
        if detector is not None and detector.success_rate_ejection_threshold > 0:
            cluster["success_rate_ejection_threshold"] = {"value": detector.success_rate_ejection_threshold}
        if name not in static:
            cluster["added_via_api"] = True
        hosts = []
        for h in state.hosts:
            host: dict[str, Any] = {
                "address": {"socket_address": {"address": h.address.host, "port_value": h.address.port}},
                "stats": [*(_metric(k, v, False) for k, v in _host_counters(h)),
                          *(_metric(k, v, True) for k, v in _host_gauges(h))],
                "health_status": {**({"failed_outlier_check": True} if h.ejected else {}),
                                  "eds_health_status": _eds_health(h)},
                "weight": h.weight,
            }
            if h.hostname:
                host["hostname"] = h.hostname
            host["locality"] = {}
            if h.outlier is not None and h.outlier.success_rate >= 0:
                host["success_rate"] = {"value": h.outlier.success_rate}
            if detector is not None:
                host["outlier_detection"] = host_outlier(h, clock)
            hosts.append(host)
        cluster["host_statuses"] = hosts
        cluster["circuit_breaker_state"] = circuit_breaker_state(state)
        out.append(cluster)
    return {"cluster_statuses": out}


def _health_flags(h: Host) -> str:
    """Envoy's ``HostUtility::healthFlagsToString``: ``healthy``, else each flag that is set."""
    flags = ""
    if h.ejected:
        flags += "/failed_outlier_check"
    health = h.health.name
    if health in ("UNHEALTHY", "TIMEOUT"):
        flags += "/failed_eds_health"
    elif health == "DEGRADED":
        flags += "/degraded_eds_health"
    elif health == "DRAINING":
        flags += "/eds_status_draining"
    return flags or "healthy"


def clusters_text(rt: Runtime, clock: tuple[float, float] | None = None) -> str:
    """Envoy's ``/clusters`` text (``<cluster>::<host>::<stat>::<value>`` lines), plus, per host of a cluster
    with outlier detection, pyproxy's ``outlier_times_ejected`` and, while ejected, ``outlier_ejection_reason``
    and ``outlier_ejected_until``."""
    clock = clock or _clock()
    static = _static_cluster_names(rt)
    lines = []
    for name, state in sorted(rt.clusters.clusters.items()):
        detector = state.outlier
        if detector is not None:
            lines.append(f"{name}::outlier::success_rate_average::{detector.success_rate_average:g}")
            lines.append(f"{name}::outlier::success_rate_ejection_threshold::"
                         f"{detector.success_rate_ejection_threshold:g}")
            lines.append(f"{name}::outlier::local_origin_success_rate_average::-1")
            lines.append(f"{name}::outlier::local_origin_success_rate_ejection_threshold::-1")
        for priority, cb in (("default", state.config.circuit_breakers),
                             ("high", state.config.high_priority_circuit_breakers)):
            lines.append(f"{name}::{priority}_priority::max_connections::{cb.max_connections}")
            lines.append(f"{name}::{priority}_priority::max_pending_requests::{cb.max_pending_requests}")
            lines.append(f"{name}::{priority}_priority::max_requests::{cb.max_requests}")
            lines.append(f"{name}::{priority}_priority::max_retries::{cb.max_retries}")
        lines.append(f"{name}::added_via_api::{'false' if name in static else 'true'}")
        for h in state.hosts:
            prefix = f"{name}::{h.address}"
            for key, value in sorted([*_host_counters(h), *_host_gauges(h)]):
                lines.append(f"{prefix}::{key}::{value}")
            lines.append(f"{prefix}::hostname::{h.hostname}")
            lines.append(f"{prefix}::health_flags::{_health_flags(h)}")
            lines.append(f"{prefix}::weight::{h.weight}")
            lines += [f"{prefix}::region::", f"{prefix}::zone::", f"{prefix}::sub_zone::",
                      f"{prefix}::canary::false", f"{prefix}::priority::0"]
            rate = h.outlier.success_rate if h.outlier is not None else -1.0
            lines.append(f"{prefix}::success_rate::{rate:g}")
            lines.append(f"{prefix}::local_origin_success_rate::-1")
            if detector is not None:
                o = host_outlier(h, clock)
                lines.append(f"{prefix}::outlier_times_ejected::{o['times_ejected']}")
                if h.ejected:
                    lines.append(f"{prefix}::outlier_ejection_reason::{o['ejection_reason']}")
                    lines.append(f"{prefix}::outlier_ejected_until::{o['ejected_until']}")
    return "\n".join(lines) + "\n"


def listeners_json(rt: Runtime) -> dict[str, Any]:
    return {"listener_statuses": [
        {"name": name, "local_address": {"socket_address": {"address": e.listener.address.host,
                                                            "port_value": _bound_port(e)}}}
        for name, e in sorted(rt.listeners.items())]}


def listeners_text(rt: Runtime) -> str:
    return "".join(f"{name}::{e.listener.address.host}:{_bound_port(e)}\n"
                   for name, e in sorted(rt.listeners.items()))


def _bound_port(entry: Any) -> int:
    sock = entry.socket
    if sock is not None:
        try:
            return int(sock.getsockname()[1])
        except OSError:
            pass
    return int(entry.listener.address.port)


def counters(rt: Runtime) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = [
        ("http.downstream_rq_total", rt.stats.downstream_rq_total),
        ("http.downstream_rq_too_many_premature_resets", rt.stats.downstream_rq_too_many_premature_resets),
        ("listener.downstream_tls_failures", rt.stats.downstream_tls_failures),
        ("listener.downstream_plaintext_refused", rt.stats.downstream_plaintext_refused),
        ("http.downstream_cx_active", len(rt.downstream_connections)),
    ]
    for name, state in sorted(rt.clusters.clusters.items()):
        for key in state.stats.__slots__:
            out.append((f"cluster.{name}.{key}", getattr(state.stats, key)))
        out += [(f"cluster.{name}.{key}", value) for key, value in cluster_gauges(state)]
    out += [(f"http.{hcm}.rbac.{name}", value) for hcm, name, value in rt.stats.rbac_stats()]
    out += [(f"http.{hcm}.fault.{cluster}.{name}" if cluster else f"http.{hcm}.fault.{name}", value)
            for hcm, cluster, name, value in rt.stats.fault_stats()]
    out += [(f"listener.{address}.{key}", value) for address, key, value in _listener_stats(rt)]
    out += [(f"http.{prefix}.{key}", getattr(c, key))
            for prefix, c in sorted(rt.stats.hcms.items()) for key in c.__slots__]
    return out


def cluster_gauges(state: ClusterState) -> list[tuple[str, int]]:
    """A cluster's stats derived when asked (nothing per request): Envoy's ``circuit_breakers.<priority>.*``
    gauges and, with outlier detection, its ``outlier_detection.*`` stats; names after ``cluster.<name>.``."""
    out = [(f"circuit_breakers.{key}", value) for key, value in breakers.gauges(state)]
    detector = state.outlier
    if detector is not None:
        out += [("outlier_detection.ejections_enforced_total", detector.ejections_total),
                ("outlier_detection.ejections_active", detector.ejections_active),
                ("outlier_detection.ejections_overflow", detector.ejections_overflow)]
        for kind in EJECTION_TYPES:
            out.append((f"outlier_detection.ejections_enforced_{kind}", detector.enforced[kind]))
            out.append((f"outlier_detection.ejections_detected_{kind}", detector.detected[kind]))
    return out


_GAUGE_SUFFIXES = ("_active", "_open")


def _is_gauge(name: str) -> bool:
    return name.endswith(_GAUGE_SUFFIXES) or name.startswith("envoy_cluster_circuit_breakers_")


def _listener_stats(rt: Runtime) -> list[tuple[str, str, int]]:
    """``(address, counter, value)`` of every installed listener, the address as Envoy names its listener
    stats (``127.0.0.1_15001``)."""
    out = []
    for _name, entry in sorted(rt.listeners.items()):
        address = f"{entry.listener.address.host}_{_bound_port(entry)}"
        c = entry.counters
        out += [(address, key, getattr(c, key)) for key in c.__slots__]
    return out


def stats_text(rt: Runtime) -> str:
    return "".join(f"{k}: {v}\n" for k, v in counters(rt))


def stats_json(rt: Runtime) -> dict[str, Any]:
    return {"stats": [{"name": k, "value": v} for k, v in counters(rt)]}


def prometheus(rt: Runtime) -> str:
    lines = list(rt.stats.prometheus_lines())
    by_metric: dict[str, list[str]] = {}
    for name, state in sorted(rt.clusters.clusters.items()):
        esc = name.replace("\\", "\\\\").replace('"', '\\"')
        for key in state.stats.__slots__:
            by_metric.setdefault(f"envoy_cluster_{key}", []).append(
                f'envoy_cluster_{key}{{envoy_cluster_name="{esc}"}} {getattr(state.stats, key)}')
        for key, value in cluster_gauges(state):
            metric = "envoy_cluster_" + _PROM_UNSAFE.sub("_", key)
            by_metric.setdefault(metric, []).append(f'{metric}{{envoy_cluster_name="{esc}"}} {value}')
    for metric, samples in by_metric.items():
        kind = "gauge" if _is_gauge(metric) else "counter"
        lines.append(f"# TYPE {metric} {kind}")
        lines.extend(samples)
    rbac: dict[str, list[str]] = {}
    for hcm, name, value in rt.stats.rbac_stats():
        esc = hcm.replace("\\", "\\\\").replace('"', '\\"')
        rbac.setdefault(f"envoy_http_rbac_{_PROM_UNSAFE.sub('_', name)}", []).append(
            f'{{envoy_http_conn_manager_prefix="{esc}"}} {value}')
    for metric, samples in rbac.items():
        lines.append(f"# TYPE {metric} counter")
        lines.extend(metric + sample for sample in samples)
    # Envoy's tag extractors: http.<prefix>.fault.[<downstream cluster>.]<name> ->
    # envoy_http_fault_<name>{envoy_http_conn_manager_prefix, envoy_fault_downstream_cluster}.
    fault: dict[str, list[str]] = {}
    for hcm, cluster, name, value in rt.stats.fault_stats():
        labels = f'envoy_http_conn_manager_prefix="{_prom_escape(hcm)}"'
        if cluster:
            labels += f',envoy_fault_downstream_cluster="{_prom_escape(cluster)}"'
        fault.setdefault(f"envoy_http_fault_{name}", []).append(f"{{{labels}}} {value}")
    for metric, samples in fault.items():
        lines.append(f"# TYPE {metric} {'gauge' if metric.endswith('active_faults') else 'counter'}")
        lines.extend(metric + sample for sample in samples)
    by_listener: dict[str, list[str]] = {}
    for address, key, value in _listener_stats(rt):
        by_listener.setdefault(f"envoy_listener_{key}", []).append(f'{{envoy_listener_address="{address}"}} {value}')
    for prefix, c in sorted(rt.stats.hcms.items()):
        esc = prefix.replace("\\", "\\\\").replace('"', '\\"')
        for key in c.__slots__:
            by_listener.setdefault(f"envoy_http_{key}", []).append(
                f'{{envoy_http_conn_manager_prefix="{esc}"}} {getattr(c, key)}')
    for metric, samples in by_listener.items():
        lines.append(f"# TYPE {metric} {'gauge' if metric.endswith('_active') else 'counter'}")
        lines.extend(metric + sample for sample in samples)
    lines.append("# TYPE envoy_http_downstream_rq_total counter")
    lines.append(f"envoy_http_downstream_rq_total {rt.stats.downstream_rq_total}")
    lines.append("# TYPE envoy_http_downstream_rq_too_many_premature_resets counter")
    lines.append("envoy_http_downstream_rq_too_many_premature_resets "
                 f"{rt.stats.downstream_rq_too_many_premature_resets}")
    lines.append("# TYPE envoy_http_downstream_cx_active gauge")
    lines.append(f"envoy_http_downstream_cx_active {len(rt.downstream_connections)}")
    lines.append("# TYPE envoy_listener_downstream_tls_failures counter")
    lines.append(f"envoy_listener_downstream_tls_failures {rt.stats.downstream_tls_failures}")
    lines.append("# HELP envoy_listener_downstream_plaintext_refused plaintext connections to a TLS-only listener")
    lines.append("# TYPE envoy_listener_downstream_plaintext_refused counter")
    lines.append(f"envoy_listener_downstream_plaintext_refused {rt.stats.downstream_plaintext_refused}")
    return "\n".join(lines) + "\n"


def _prom_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def server_info(rt: Runtime, uptime: float) -> dict[str, Any]:
    from pyproxy import __version__

    node = rt.snapshot.node
    return {
        "version": f"pyproxy/{__version__}",
        "state": "DRAINING" if rt.shutting_down else ("LIVE" if rt.ready.is_set() else "PRE_INITIALIZING"),
        "uptime_current_epoch": f"{int(uptime)}s",
        "node": {"id": node.id, "cluster": node.cluster, "metadata": dict(node.metadata)},
        "config_version": rt.snapshot.version,
        # pyproxy's: the --seed of its random decisions (None: seeded from the OS).
        "seed": rt.seed,
    }


# --------------------------------------------------------------------------------------------- /certs


def certs(rt: Runtime) -> dict[str, Any]:
    """Envoy's ``/certs`` (``envoy.admin.v3.Certificates``): per TLS context in use, its CA bundle
    (``ca_cert``) and certificate chain (``cert_chain``) as ``CertificateDetails``. Contexts naming the same
    files are listed once (every outbound cluster shares the sidecar's certificate). Extensions:
    ``root_fingerprints_sha256`` (SHA-256 of each certificate in the CA bundle: two during a root rotation)
    and ``secret_names`` (the SDS names the files came from, e.g. ``default``/``ROOTCA``)."""
    snap = rt.snapshot
    contexts: list[Any] = [c.tls for _, c in sorted(snap.clusters.items())]
    for _, listener in sorted(snap.listeners.items()):
        contexts.extend(chain.tls for chain in listener.filter_chains)
        if listener.default_filter_chain is not None:
            contexts.append(listener.default_filter_chain.tls)
    now = time.time()
    seen: dict[tuple[tuple[str, ...], str | None], dict[str, Any]] = {}
    for tls in contexts:
        if tls is None:
            continue
        chain_files = tuple(c.cert_chain_file for c in tls.certificates if c.cert_chain_file)
        ca_file = tls.validation.trusted_ca_file if tls.validation is not None else None
        names = {c.sds_name for c in tls.certificates if c.sds_name}
        if tls.validation is not None and tls.validation.sds_name:
            names.add(tls.validation.sds_name)
        key = (chain_files, ca_file)
        if key == ((), None):
            continue
        entry = seen.get(key)
        if entry is None:
            ca_certs = _pem_certs(ca_file)
            entry = seen[key] = {
                "ca_cert": [_details(c, ca_file or "", now) for c in ca_certs],
                "cert_chain": [_details(c, path, now) for path in chain_files for c in _pem_certs(path)],
                "root_fingerprints_sha256": [c.fingerprint(hashes.SHA256()).hex() for c in ca_certs],
                "secret_names": [],
            }
        entry["secret_names"] = sorted(set(entry["secret_names"]) | names)
    return {"certificates": list(seen.values())}


def _pem_certs(path: str | None) -> list[x509.Certificate]:
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError):
        return []  # e.g. replaced between the snapshot and this request: show nothing rather than fail


def _details(cert: x509.Certificate, path: str, now: float) -> dict[str, Any]:
    """``envoy.admin.v3.CertificateDetails`` as Envoy's admin prints it (uint64 as a string, RFC 3339 times)."""
    sans: list[dict[str, str]] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        ext = None
    for name in ext or ():
        if isinstance(name, x509.UniformResourceIdentifier):
            sans.append({"uri": name.value})
        elif isinstance(name, x509.DNSName):
            sans.append({"dns": name.value})
        elif isinstance(name, x509.IPAddress):
            sans.append({"ip_address": str(name.value)})
    serial = format(cert.serial_number, "x")
    expires = cert.not_valid_after_utc.timestamp()
    return {
        "path": path,
        "serial_number": serial if len(serial) % 2 == 0 else "0" + serial,
        "subject_alt_names": sans,
        "days_until_expiration": str(max(0, int((expires - now) // 86400))),
        "valid_from": _rfc3339(cert.not_valid_before_utc.timestamp()),
        "expiration_time": _rfc3339(expires),
    }


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc3339_ms(ts: float) -> str:
    return datetime.fromtimestamp(round(ts, 3), UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

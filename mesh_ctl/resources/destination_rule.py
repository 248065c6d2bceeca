"""Istio's semantic checks for a DestinationRule (``ValidateDestinationRule``, ``validateTrafficPolicy``).

trafficPolicy (loadBalancer, connectionPool, outlierDetection, tls, portLevelSettings) is validated and
stored in full; which parts the proxies enforce is the translator's and a later issue's business.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mesh_ctl.resources.common import (
    Report,
    check_export_to,
    check_workload_selector,
    duration_precision,
    percent_problem,
    port_problem,
)
from mesh_ctl.resources.names import is_dns1123_label, istio_labels_problem, wildcard_domain_problem
from mesh_ctl.resources.schema import child

_POLICY_FIELDS = (
    "outlierDetection",
    "connectionPool",
    "loadBalancer",
    "tls",
    "portLevelSettings",
    "tunnel",
    "proxyProtocol",
    "retryBudget",
)
_PORT_POLICY_FIELDS = ("outlierDetection", "connectionPool", "loadBalancer", "tls")


def check_destination_rule(spec: Mapping[str, Any], namespace: str) -> Report:
    report = Report()
    report.error("spec.host", wildcard_domain_problem(spec.get("host", "")))
    _check_traffic_policy(report, spec.get("trafficPolicy"), "spec.trafficPolicy", namespace)
    names: set[str] = set()
    for i, subset in enumerate(spec.get("subsets") or ()):
        path = f"spec.subsets[{i}]"
        name = subset.get("name", "")
        if name in names:
            report.error(child(path, "name"), f"duplicate subset names: {name}")
        names.add(name)
        if not name:
            report.error(child(path, "name"), "subset name cannot be empty")
        elif not is_dns1123_label(name):
            report.error(child(path, "name"), f"subset name is invalid: {name}")
        if subset.get("labels"):
            report.error(child(path, "labels"), istio_labels_problem(subset["labels"]))
        _check_traffic_policy(report, subset.get("trafficPolicy"), child(path, "trafficPolicy"), namespace)
    selector = spec.get("workloadSelector")
    check_export_to(report, spec.get("exportTo"), namespace, "spec.exportTo", has_selector=selector is not None)
    check_workload_selector(report, selector, "spec.workloadSelector", "matchLabels")
    return report


def _check_traffic_policy(report: Report, policy: Mapping[str, Any] | None, path: str, namespace: str) -> None:
    if policy is None:
        return
    if not any(policy.get(f) is not None for f in _POLICY_FIELDS):
        report.error(path, "traffic policy must have at least one field")
        return
    if "tunnel" in policy and "proxyProtocol" in policy:
        report.error(path, "tunnel and proxyProtocol must not be set together")
    _check_outlier(report, policy.get("outlierDetection"), child(path, "outlierDetection"))
    _check_pool(report, policy.get("connectionPool"), child(path, "connectionPool"))
    _check_load_balancer(
        report, policy.get("loadBalancer"), child(path, "loadBalancer"), policy.get("outlierDetection")
    )
    _check_tls(report, policy.get("tls"), child(path, "tls"))
    tunnel = policy.get("tunnel")
    if tunnel is not None:
        tp = child(path, "tunnel")
        if tunnel.get("protocol", "") not in ("", "CONNECT", "POST"):
            report.error(child(tp, "protocol"), 'tunnel protocol must be "CONNECT" or "POST"')
        report.error(child(tp, "targetPort"), port_problem(tunnel.get("targetPort", 0)))
    for i, port_policy in enumerate(policy.get("portLevelSettings") or ()):
        pp = f"{child(path, 'portLevelSettings')}[{i}]"
        if "port" not in port_policy:
            report.error(child(pp, "port"), "portTrafficPolicy must have valid port")
        elif "number" in (port_policy["port"] or {}):
            report.error(child(child(pp, "port"), "number"), port_problem(port_policy["port"]["number"]))
        if not any(port_policy.get(f) is not None for f in _PORT_POLICY_FIELDS):
            report.error(pp, "port traffic policy must have at least one field")
            continue
        _check_outlier(report, port_policy.get("outlierDetection"), child(pp, "outlierDetection"))
        _check_pool(report, port_policy.get("connectionPool"), child(pp, "connectionPool"))
        _check_load_balancer(
            report, port_policy.get("loadBalancer"), child(pp, "loadBalancer"), port_policy.get("outlierDetection")
        )
        _check_tls(report, port_policy.get("tls"), child(pp, "tls"))


def _check_outlier(report: Report, outlier: Mapping[str, Any] | None, path: str) -> None:
    if outlier is None:
        return
    for f in ("baseEjectionTime", "interval"):
        if f in outlier:
            duration_precision(report, outlier[f], child(path, f))
    if outlier.get("consecutiveErrors"):
        report.warn(
            child(path, "consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use "
            "consecutiveGatewayErrors or consecutive5xxErrors instead",
        )
    if not outlier.get("splitExternalLocalOriginErrors") and (outlier.get("consecutiveLocalOriginFailures") or 0) > 0:
        report.error(
            child(path, "consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin "
            "failures is specified, but split external local origin errors is set to false",
        )
    for f in ("maxEjectionPercent", "minHealthPercent"):
        if f in outlier:
            report.error(child(path, f), percent_problem(outlier[f]))


def _check_pool(report: Report, pool: Mapping[str, Any] | None, path: str) -> None:
    if pool is None:
        return
    http, tcp = pool.get("http"), pool.get("tcp")
    if http is None and tcp is None:
        report.error(path, "connection pool must have at least one field")
        return
    if http is not None:
        hp = child(path, "http")
        for f, what in (
            ("http1MaxPendingRequests", "http1 max pending requests"),
            ("http2MaxRequests", "http2 max requests"),
            ("maxRequestsPerConnection", "max requests per connection"),
            ("maxRetries", "max retries"),
            ("maxConcurrentStreams", "max concurrent streams"),
        ):
            if http.get(f, 0) < 0:
                report.error(child(hp, f), f"{what} must be non-negative")
        if "idleTimeout" in http:
            duration_precision(report, http["idleTimeout"], child(hp, "idleTimeout"))
        if http.get("h2UpgradePolicy") == "UPGRADE" and http.get("useClientProtocol"):
            report.error(
                child(hp, "useClientProtocol"), "use client protocol must not be true when H2UpgradePolicy is UPGRADE"
            )
    if tcp is not None:
        tp = child(path, "tcp")
        if tcp.get("maxConnections", 0) < 0:
            report.error(child(tp, "maxConnections"), "max connections must be non-negative")
        for f in ("connectTimeout", "maxConnectionDuration"):
            if f in tcp:
                duration_precision(report, tcp[f], child(tp, f))
        idle = tcp.get("idleTimeout")
        if isinstance(idle, str) and idle not in ("0", "0s", "0ms"):
            duration_precision(report, idle, child(tp, "idleTimeout"))
        keepalive = tcp.get("tcpKeepalive") or {}
        for f in ("time", "interval"):
            if f in keepalive:
                duration_precision(report, keepalive[f], child(child(tp, "tcpKeepalive"), f))


def _is_prime(x: int) -> bool:
    if 0 < x < 4:
        return True
    if x % 2 == 0:
        return False
    return all(x % f for f in range(3, math.isqrt(x) + 1, 2))


def _check_load_balancer(report: Report, lb: Mapping[str, Any] | None, path: str, outlier: Any) -> None:
    if lb is None:
        return
    ch = lb.get("consistentHash")
    if ch is not None:
        cp = child(path, "consistentHash")
        if "httpCookie" in ch and not ch["httpCookie"].get("name"):
            report.error(child(child(cp, "httpCookie"), "name"), "name required for HttpCookie")
        if ch.get("minimumRingSize"):
            report.warn(
                child(cp, "minimumRingSize"),
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
            )
            if "ringHash" in ch or "maglev" in ch:
                report.error(cp, "only one of MinimumRingSize or Maglev/Ringhash can be specified")
        if "maglev" in ch:
            size = (ch["maglev"] or {}).get("tableSize", 0)
            mp = child(child(cp, "maglev"), "tableSize")
            if size == 0:
                report.error(mp, "tableSize must be set for maglev")
            elif size >= 5000011:
                report.error(mp, "tableSize must be less than 5000011 for maglev")
            elif not _is_prime(size):
                report.error(mp, "tableSize must be a prime number for maglev")
    locality = lb.get("localityLbSetting")
    if locality is not None:
        lp = child(path, "localityLbSetting")
        if locality.get("distribute") and locality.get("failover"):
            report.error(lp, "can not simultaneously specify 'distribute' and 'failover'")
        for i, d in enumerate(locality.get("distribute") or ()):
            weights = list((d.get("to") or {}).values())
            dp = f"{child(lp, 'distribute')}[{i}].to"
            if any(w <= 0 or w > 100 for w in weights):
                report.error(dp, "locality weight must be in range [1, 100]")
            elif sum(weights) != 100:
                report.error(dp, f"total locality weight {sum(weights)} != 100")
        for i, f in enumerate(locality.get("failover") or ()):
            fp = f"{child(lp, 'failover')}[{i}]"
            src, dst = f.get("from", ""), f.get("to", "")
            if src == dst:
                report.error(fp, "locality lb failover settings must specify different regions")
            if "/" in src or "/" in dst:
                report.error(fp, "locality lb failover only specify region")
            if "*" in src or "*" in dst:
                report.error(fp, "locality lb failover region should not contain '*' wildcard")
        if (locality.get("failover") or locality.get("failoverPriority")) and outlier is None:
            report.warn(lp, "outlier detection policy must be provided for failover")
    warmup = lb.get("warmup")
    if warmup is not None:
        wp = child(path, "warmup")
        duration_precision(report, warmup.get("duration"), child(wp, "duration"))
        if (warmup.get("minimumPercent") or 0) > 100:
            report.error(child(wp, "minimumPercent"), "minimumPercent value should be less than or equal to 100")
        if warmup.get("aggression") is not None and warmup["aggression"] < 1:
            report.error(child(wp, "aggression"), "aggression should be greater than or equal to 1")


def _check_tls(report: Report, tls: Mapping[str, Any] | None, path: str) -> None:
    """Istio ``agent.ValidateTLS`` (client side TLS settings)."""
    if tls is None:
        return
    mode = tls.get("mode", "DISABLE")
    if tls.get("insecureSkipVerify"):
        if mode == "SIMPLE" and any(tls.get(f) for f in ("caCertificates", "credentialName", "subjectAltNames")):
            report.error(
                path,
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when "
                "InsecureSkipVerify is set true",
            )
        if mode == "MUTUAL" and any(tls.get(f) for f in ("caCertificates", "subjectAltNames")):
            report.error(path, "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true")
    if mode in ("SIMPLE", "MUTUAL") and tls.get("credentialName"):
        if any(tls.get(f) for f in ("clientCertificate", "caCertificates", "privateKey", "caCrl")):
            report.error(
                path, "cannot specify client certificates or CA certificate or CA CRL If credentialName is set"
            )
        return
    if mode == "MUTUAL":
        if not tls.get("clientCertificate"):
            report.error(child(path, "clientCertificate"), "client certificate required for mutual tls")
        if not tls.get("privateKey"):
            report.error(child(path, "privateKey"), "private key required for mutual tls")

"""Istio's semantic checks for a VirtualService (``ValidateVirtualService``, ``validateHTTPRoute``).

Runs on a spec that already passed the CRD schema, so types are right; this is what the schema cannot say:
hosts, route/redirect conflicts, weights, regexes, header operations, retries, faults and mirrors.
Cross-resource checks (subsets, host conflicts) live in :mod:`mesh_ctl.resources.crossref`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from mesh_ctl.resources.common import (
    Report,
    check_export_to,
    check_header_operations,
    duration_precision,
    header_match_name_problem,
    is_jwt_claim_route,
    percent_problem,
    percentage_problem,
    port_problem,
)
from mesh_ctl.resources.names import host_matches, is_dns1123_label, istio_labels_problem, wildcard_domain_problem
from mesh_ctl.resources.regex import regex_problem
from mesh_ctl.resources.schema import child, entry

MESH_GATEWAY = "mesh"

# Envoy x-envoy-retry-on / x-envoy-retry-grpc-on values Istio accepts (supportedRetryOnPolicies).
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "envoy-ratelimited",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
# Status codes Go's http.StatusText knows (a bare code in retryOn must be one of them).
HTTP_STATUS_CODES = frozenset(
    {
        100,
        101,
        102,
        103,
        200,
        201,
        202,
        203,
        204,
        205,
        206,
        207,
        208,
        226,
        300,
        301,
        302,
        303,
        304,
        305,
        307,
        308,
        400,
        401,
        402,
        403,
        404,
        405,
        406,
        407,
        408,
        409,
        410,
        411,
        412,
        413,
        414,
        415,
        416,
        417,
        418,
        421,
        422,
        423,
        424,
        425,
        426,
        428,
        429,
        431,
        451,
        500,
        501,
        502,
        503,
        504,
        505,
        506,
        507,
        508,
        510,
        511,
    }
)
GRPC_STATUS_NAMES = frozenset(
    {
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    }
)
CORS_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*"})


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_virtual_service(spec: Mapping[str, Any], namespace: str) -> Report:
    report = Report()
    hosts: list[str] = spec.get("hosts") or []
    gateways: list[str] = spec.get("gateways") or []
    applies_to_mesh = not gateways or MESH_GATEWAY in gateways
    if not hosts:
        # Istio reads a VirtualService without hosts as a delegate; minimesh has no delegation.
        report.error("spec.hosts", "at least one host is required (delegate VirtualServices are not supported)")
    if gateways and not applies_to_mesh:
        report.warn("spec.gateways", "bound only to gateways, which minimesh does not have: no sidecar uses it")
    all_valid = True
    for i, host in enumerate(hosts):
        problem = None if _is_ip(host) else wildcard_domain_problem(host)
        if problem is None and applies_to_mesh and host == "*":
            problem = "wildcard host * is not allowed for virtual services bound to the mesh gateway"
        if problem:
            all_valid = False
            report.error(f"spec.hosts[{i}]", problem)
    if all_valid:
        for i, a in enumerate(hosts):
            for j in range(i + 1, len(hosts)):
                b = hosts[j]
                if host_matches(a, b) or host_matches(b, a):
                    report.error(f"spec.hosts[{j}]", f"duplicate hosts in virtual service: {a} & {b}")
    if not spec.get("http") and not spec.get("tcp") and not spec.get("tls"):
        report.error("spec", "http, tcp or tls must be provided in virtual service")
    for i, route in enumerate(spec.get("http") or ()):
        _check_http_route(report, route, f"spec.http[{i}]", applies_to_gateway=not applies_to_mesh)
    for kind in ("tcp", "tls"):
        for i, route in enumerate(spec.get(kind) or ()):
            path = f"spec.{kind}[{i}]"
            if not route.get("route"):
                report.error(child(path, "route"), f"{kind.upper()} route is required")
            _check_destinations(report, route.get("route") or (), child(path, "route"), http=False)
        if spec.get(kind):
            report.warn(f"spec.{kind}", f"{kind} routes are stored but not served: minimesh proxies HTTP/2 (gRPC) only")
    check_export_to(report, spec.get("exportTo"), namespace, "spec.exportTo")
    _check_unreachable(report, spec.get("http") or ())
    return report


def _check_http_route(report: Report, http: Mapping[str, Any], path: str, applies_to_gateway: bool) -> None:
    route = http.get("route") or []
    if "delegate" in http:
        report.error(child(path, "delegate"), "delegate is not supported by minimesh")
    if "redirect" in http:
        for other, message in (
            ("route", "HTTP route cannot contain both route and redirect"),
            ("fault", "HTTP route cannot contain both fault and redirect"),
            ("rewrite", "HTTP route rule cannot contain both rewrite and redirect"),
            ("directResponse", "HTTP route rule cannot contain both direct_response and redirect"),
        ):
            if http.get(other):
                report.error(path, message)
    elif "directResponse" in http:
        for other, message in (
            ("route", "HTTP route cannot contain both route and direct_response"),
            ("fault", "HTTP route cannot contain both fault and direct_response"),
            ("rewrite", "HTTP route rule cannot contain both rewrite and direct_response"),
        ):
            if http.get(other):
                report.error(path, message)
    elif not route and "delegate" not in http:
        report.error(path, "HTTP route, redirect or direct_response is required")
    if "mirror" in http and http.get("mirrors"):
        report.error(path, "HTTP route cannot contain both mirror and mirrors")

    names: set[str] = set()
    for j, match in enumerate(http.get("match") or ()):
        mpath = f"{child(path, 'match')}[{j}]"
        name = match.get("name")
        if name:
            if name in names:
                report.error(child(mpath, "name"), f"duplicate match name {name!r} in this route")
            names.add(name)
        _check_match(report, match, mpath, applies_to_gateway)

    check_header_operations(report, http.get("headers"), child(path, "headers"))
    _check_authority_rewrite(report, http, path)
    _check_cors(report, http.get("corsPolicy"), child(path, "corsPolicy"))
    _check_fault(report, http.get("fault"), child(path, "fault"))
    for deprecated in ("mirrorPercent", "mirror_percent"):
        if http.get(deprecated) is not None:
            if http[deprecated] > 100:
                report.error(
                    child(path, deprecated), f"mirror_percent must have a max value of 100 (it has {http[deprecated]})"
                )
            report.warn(
                child(path, deprecated), 'using deprecated setting "mirrorPercent", use "mirrorPercentage" instead'
            )
    percentage = (http.get("mirrorPercentage") or {}).get("value")
    if percentage is not None and not 0 <= percentage <= 100:
        report.error(
            child(child(path, "mirrorPercentage"), "value"), f"must be between 0 and 100 (it has {percentage})"
        )
    if "mirror" in http:
        _check_destination(report, http["mirror"], child(path, "mirror"))
    for k, mirror in enumerate(http.get("mirrors") or ()):
        mp = f"{child(path, 'mirrors')}[{k}]"
        _check_destination(report, mirror.get("destination") or {}, child(mp, "destination"))
        value = (mirror.get("percentage") or {}).get("value")
        if value is not None and not 0 <= value <= 100:
            report.error(child(child(mp, "percentage"), "value"), f"must be between 0 and 100 (it has {value})")
    _check_redirect(report, http.get("redirect"), child(path, "redirect"))
    _check_direct_response(report, http.get("directResponse"), child(path, "directResponse"))
    _check_retries(report, http.get("retries"), child(path, "retries"))
    _check_rewrite(report, http.get("rewrite"), child(path, "rewrite"))
    _check_destinations(report, route, child(path, "route"), http=True)
    if "timeout" in http:
        duration_precision(report, http["timeout"], child(path, "timeout"))


def _check_string_match(report: Report, sm: Mapping[str, Any] | None, path: str, allow_empty_prefix: bool) -> None:
    if not sm:
        return
    if "prefix" in sm and sm["prefix"] == "" and not allow_empty_prefix:
        report.error(child(path, "prefix"), "prefix string match should not be empty")
    if "regex" in sm:
        report.error(child(path, "regex"), regex_problem(sm["regex"]))


def _check_match(report: Report, match: Mapping[str, Any], path: str, applies_to_gateway: bool) -> None:
    for field_name in ("headers", "withoutHeaders"):
        for name, sm in (match.get(field_name) or {}).items():
            p = entry(child(path, field_name), name)
            if is_jwt_claim_route(name):
                if not applies_to_gateway:
                    report.error(p, f"JWT claim based routing (key: {name}) is only supported for gateway")
                continue
            report.error(p, header_match_name_problem(name))
            if field_name == "withoutHeaders" and (sm or {}).get("regex") == "*":
                continue  # "*" means "present", not an RE2 regex
            _check_string_match(report, sm, p, allow_empty_prefix=False)
    _check_string_match(report, match.get("uri"), child(path, "uri"), allow_empty_prefix=True)
    for field_name in ("scheme", "method", "authority"):
        _check_string_match(report, match.get(field_name), child(path, field_name), allow_empty_prefix=False)
    for name, sm in (match.get("queryParams") or {}).items():
        _check_string_match(report, sm, entry(child(path, "queryParams"), name), allow_empty_prefix=False)
    if match.get("port"):
        report.error(child(path, "port"), port_problem(match["port"]))
    if match.get("sourceLabels"):
        report.error(child(path, "sourceLabels"), istio_labels_problem(match["sourceLabels"]))
    source_ns = match.get("sourceNamespace")
    if source_ns and not is_dns1123_label(source_ns):
        report.error(child(path, "sourceNamespace"), f"sourceNamespace match {source_ns} is invalid")


def _check_authority_rewrite(report: Report, http: Mapping[str, Any], path: str) -> None:
    current = (http.get("rewrite") or {}).get("authority") or ""
    request = (http.get("headers") or {}).get("request") or {}
    for op in ("set", "add"):
        for name, value in (request.get(op) or {}).items():
            if name.lower() not in (":authority", "host"):
                continue
            if current:
                report.error(
                    entry(child(child(child(path, "headers"), "request"), op), name),
                    f"authority header cannot be set multiple times: have {current!r}, attempting to set {value!r}",
                )
                return
            current = value


def _check_cors(report: Report, cors: Mapping[str, Any] | None, path: str) -> None:
    if not cors:
        return
    for i, origin in enumerate(cors.get("allowOrigins") or ()):
        p = f"{child(path, 'allowOrigins')}[{i}]"
        value = next((origin[k] for k in ("exact", "prefix", "regex") if k in origin), "")
        if value == "":
            report.error(p, "'' is not a valid match type for CORS allow origins")
        elif "regex" in origin:
            report.error(child(p, "regex"), regex_problem(value))
    for i, method in enumerate(cors.get("allowMethods") or ()):
        if method not in CORS_METHODS:
            report.error(f"{child(path, 'allowMethods')}[{i}]", f"{method!r} is not a supported HTTP method")
    for field_name in ("allowHeaders", "exposeHeaders"):
        for i, name in enumerate(cors.get(field_name) or ()):
            if name != "*":
                report.error(f"{child(path, field_name)}[{i}]", header_match_name_problem(name))
    if "maxAge" in cors:
        duration_precision(report, cors["maxAge"], child(path, "maxAge"))


def _check_fault(report: Report, fault: Mapping[str, Any] | None, path: str) -> None:
    if fault is None:
        return
    abort, delay = fault.get("abort"), fault.get("delay")
    if abort is None and delay is None:
        report.error(path, "HTTP fault injection must have an abort and/or a delay")
    if abort is not None:
        ap = child(path, "abort")
        if "percentage" in abort:
            report.error(
                child(child(ap, "percentage"), "value"), percentage_problem(abort["percentage"].get("value", 0))
            )
        if "grpcStatus" in abort:
            status = abort["grpcStatus"]
            if status not in GRPC_STATUS_NAMES:
                report.error(
                    child(ap, "grpcStatus"),
                    f"gRPC status {status!r} is not supported: use a name such as "
                    "'UNAVAILABLE' or 'NOT_FOUND' (https://github.com/grpc/grpc/blob/master/doc/statuscodes.md)",
                )
        elif "http2Error" in abort:
            report.error(child(ap, "http2Error"), "HTTP/2 abort fault injection not supported yet")
        elif "httpStatus" in abort:
            status = abort["httpStatus"]
            if not 200 <= status <= 599:
                report.error(child(ap, "httpStatus"), f"HTTP status {status} is not in range 200-599")
        else:
            report.warn(ap, "abort configured, but error type not set")
    if delay is not None:
        dp = child(path, "delay")
        if "percentage" in delay:
            report.error(
                child(child(dp, "percentage"), "value"), percentage_problem(delay["percentage"].get("value", 0))
            )
        if "percent" in delay:
            report.error(child(dp, "percent"), percent_problem(delay["percent"]))
        if "fixedDelay" in delay:
            duration_precision(report, delay["fixedDelay"], child(dp, "fixedDelay"))
        if "exponentialDelay" in delay:
            report.error(child(dp, "exponentialDelay"), "exponentialDelay not supported yet")


def _check_destination(report: Report, dest: Mapping[str, Any], path: str) -> None:
    """Istio ``validateDestination``."""
    host = dest.get("host", "")
    if host == "*":
        report.error(child(path, "host"), f"invalid destination host {host}")
    else:
        report.error(child(path, "host"), wildcard_domain_problem(host))
    if "subset" in dest:
        subset = dest["subset"]
        if not subset:
            report.error(child(path, "subset"), "subset name cannot be empty")
        elif not is_dns1123_label(subset):
            report.error(child(path, "subset"), f"subset name is invalid: {subset}")
    if "port" in dest and "number" in (dest["port"] or {}):
        report.error(child(child(path, "port"), "number"), port_problem(dest["port"]["number"]))


def _check_destinations(report: Report, routes: Any, path: str, http: bool) -> None:
    total = 0
    for i, r in enumerate(routes):
        rp = f"{path}[{i}]"
        _check_destination(report, r.get("destination") or {}, child(rp, "destination"))
        if http:
            check_header_operations(report, r.get("headers"), child(rp, "headers"))
        weight = r.get("weight", 0)
        if weight < 0:
            report.error(child(rp, "weight"), "must be >= 0")  # Istio: "weight %d < 0"
        total += max(weight, 0)
    if len(routes) > 1 and total == 0:
        report.error(
            path, "total destination weight = 0: with more than one destination, at least one weight must be > 0"
        )


def _check_retries(report: Report, retries: Mapping[str, Any] | None, path: str) -> None:
    if retries is None:
        return
    attempts = retries.get("attempts", 0)
    if attempts < 0:
        report.error(child(path, "attempts"), "attempts cannot be negative")
    if attempts == 0 and ("perTryTimeout" in retries or retries.get("retryOn") or "retryRemoteLocalities" in retries):
        report.error(path, "http retry policy configured when attempts are set to 0 (disabled)")
    for duration_field in ("perTryTimeout", "backoff"):
        if duration_field in retries:
            duration_precision(report, retries[duration_field], child(path, duration_field))
    retry_on = retries.get("retryOn", "")
    if retry_on:
        for policy in retry_on.split(","):
            code = int(policy) if policy.isdigit() else -1
            if policy not in RETRY_ON and code not in HTTP_STATUS_CODES:
                report.error(child(path, "retryOn"), f"{policy!r} is not a valid retryOn policy")


def _check_redirect(report: Report, redirect: Mapping[str, Any] | None, path: str) -> None:
    if redirect is None:
        return
    if not any(redirect.get(k) for k in ("uri", "authority", "port", "derivePort", "scheme")):
        report.error(path, "redirect must specify URI, authority, scheme, or port")
    code = redirect.get("redirectCode", 0)
    if code and not 300 <= code <= 399:
        report.error(child(path, "redirectCode"), f"{code} is not a valid redirect code, must be 3xx")
    if redirect.get("scheme") not in (None, "", "http", "https"):
        report.error(child(path, "scheme"), 'invalid redirect scheme, must be "http" or "https"')
    if redirect.get("port"):
        report.error(child(path, "port"), port_problem(redirect["port"]))


def _check_direct_response(report: Report, direct: Mapping[str, Any] | None, path: str) -> None:
    if direct is None:
        return
    status = direct.get("status", 0)
    if not 200 <= status <= 599:
        report.error(child(path, "status"), f"HTTP status {status} is not in range 200-599")
    body = direct.get("body") or {}
    size = len(body.get("string", "")) + len(body.get("bytes", "")) * 3 // 4
    if size > 1024 * 1024:
        report.error(
            child(path, "body"), "large direct_responses may impact control plane performance, must be less than 1MB"
        )


def _check_rewrite(report: Report, rewrite: Mapping[str, Any] | None, path: str) -> None:
    if rewrite is None:
        return
    uri, regex_rewrite = rewrite.get("uri", ""), rewrite.get("uriRegexRewrite")
    if uri and regex_rewrite is not None:
        report.error(path, "rewrite may only contain one of URI or UriRegexRewrite")
    if not uri and regex_rewrite is None and not rewrite.get("authority"):
        report.error(path, "rewrite must specify at least one of URI, UriRegexRewrite, or authority")
    if regex_rewrite is not None:
        if not regex_rewrite.get("match"):
            report.error(child(child(path, "uriRegexRewrite"), "match"), "UriRegexRewrite requires Match to be set")
        else:
            report.error(child(child(path, "uriRegexRewrite"), "match"), regex_problem(regex_rewrite["match"]))


def _check_unreachable(report: Report, routes: Any) -> None:
    """Istio's ``analyzeUnreachableHTTPRules`` warnings (exact duplicate matches, rules after a catch-all)."""
    seen: dict[str, int] = {}
    catch_all = -1
    for i, route in enumerate(routes):
        path = f"spec.http[{i}]"
        matches = route.get("match") or []
        if not matches:
            if catch_all >= 0:
                report.warn(path, "rule not used (only the last rule can have no matches)")
            catch_all = i
            continue
        if catch_all >= 0:
            report.warn(path, f"rule not used (route without matches defined before, at spec.http[{catch_all}])")
            continue
        duplicates = 0
        for j, match in enumerate(matches):
            key = repr(sorted((k, repr(v)) for k, v in match.items() if k != "name"))
            if key in seen:
                duplicates += 1
                report.warn(f"{path}.match[{j}]", f"match not used (duplicate of a match in spec.http[{seen[key]}])")
            else:
                seen[key] = i
        if duplicates == len(matches):
            report.warn(path, "rule not used (all matches used by prior rules)")

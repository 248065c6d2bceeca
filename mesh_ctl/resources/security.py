"""Istio's semantic checks for PeerAuthentication and AuthorizationPolicy (``security.istio.io``).

Istio's rules (``ValidatePeerAuthentication``, ``ValidateAuthorizationPolicy``, ``pkg/config/security``),
plus three places where minimesh refuses what it cannot enforce, because a security policy that is stored
but silently not enforced is worse than an error:

- ``action: CUSTOM`` (ext_authz providers): "CUSTOM authorization (ext_authz providers) is not supported".
- ``targetRef``/``targetRefs`` bind a policy to waypoints and gateways, which minimesh does not have.
- principals written with ``spiffe://``: Istio adds that prefix itself, so such a principal never matches.

The CRD's CEL rules already cover: ``portLevelMtls`` needs a selector, ports 1-65535, selector keys/values
without ``*``, one of selector/targetRef(s), serviceAccounts without principals/namespaces.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from mesh_ctl.resources.common import Report, check_workload_selector
from mesh_ctl.resources.schema import child

SPIFFE_PREFIX = "spiffe://"
DRY_RUN_ANNOTATION = "istio.io/dry-run"

_SOURCE_FIELDS = (
    "principals",
    "requestPrincipals",
    "namespaces",
    "ipBlocks",
    "remoteIpBlocks",
    "serviceAccounts",
    "notPrincipals",
    "notRequestPrincipals",
    "notNamespaces",
    "notIpBlocks",
    "notRemoteIpBlocks",
    "notServiceAccounts",
)
_OPERATION_FIELDS = ("hosts", "ports", "methods", "paths", "notHosts", "notPorts", "notMethods", "notPaths")
_IP_FIELDS = ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks")


def check_peer_authentication(spec: Mapping[str, Any], namespace: str) -> Report:
    report = Report()
    check_workload_selector(report, spec.get("selector"), "spec.selector", "matchLabels")
    return report


def _ip_problem(value: str) -> str | None:
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        return f"bad CIDR range ({value})" if "/" in value else f"bad IP address ({value})"
    return None


def _port_problem(value: str) -> str | None:
    if not value.isdigit() or int(value) > 65535:
        return f"bad port ({value}): must be a number in 0..65535"
    return None


def _service_account_problem(value: str, key: str) -> str | None:
    """``security.CheckServiceAccount``."""
    if "*" in value:
        return f"wildcard not allowed, found in {key}"
    if value.count("/") > 1:
        return f"expected format 'serviceAccount' or 'namespace/serviceAccount', found {value!r} in {key}"
    ns, slash, sa = value.partition("/")
    if slash and (not ns or not sa):
        return f"expected format 'serviceAccount' or 'namespace/serviceAccount', found {value!r} in {key}"
    return None


def _path_template_problem(path: str) -> str | None:
    """``security.CheckValidPathTemplate``: ``{*}`` and a final ``{**}`` only."""
    found_any = False
    has_template = "{*}" in path or "{**}" in path
    for glob in path.strip("/").split("/"):
        if glob in ("{*}", "{**}"):
            if found_any:
                return f"invalid or unsupported path {path}: {{**}} is not the last operator"
            found_any = glob == "{**}"
            continue
        if "{" in glob or "}" in glob:
            return f"invalid or unsupported path {path}: contains '{{' or '}}' beyond a supported path template"
        if has_template and not all(c.isalnum() or c in "-._~%!$&'()+,;:@=" for c in glob):
            return f"invalid or unsupported path {path}: contains segment {glob} with invalid string literal"
    return None


_KNOWN_KEYS = (
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
)
_MAP_KEYS = (
    "request.headers",
    "request.experimental.inline.headers",
    "request.auth.claims",
    "experimental.envoy.filters.",
)


def _attribute_problem(key: str, values: Sequence[str]) -> str | None:
    """``security.ValidateAttribute`` for ``when`` conditions."""
    if any(v == "" for v in values):
        return f"empty value not allowed, found in {key}"
    if key.startswith(_MAP_KEYS):
        if key.endswith("]") and 0 < key.find("[") < len(key) - 2:
            return None
        return f"bad key ({key}): should have format a[b]"
    if key in ("source.ip", "remote.ip", "destination.ip"):
        return next((p for p in map(_ip_problem, values) if p), None)
    if key == "destination.port":
        return next((p for p in map(_port_problem, values) if p), None)
    if key == "source.serviceAccount":
        return next((p for v in values if (p := _service_account_problem(v, key))), None)
    if key in _KNOWN_KEYS:
        return None
    if key == "destination.namespace":
        return f"attribute {key} is replaced by the metadata.namespace"
    if key.startswith("destination.labels"):
        return f"attribute {key} is replaced by the workload selector"
    if key in ("destination.name", "destination.user"):
        return f"deprecated attribute {key}: only supported in v1alpha1"
    return f"unknown attribute: {key}"


def check_authorization_policy(
    spec: Mapping[str, Any], namespace: str, annotations: Mapping[str, Any] | None = None
) -> Report:
    report = Report()
    action = spec.get("action", "ALLOW")
    if action == "CUSTOM":
        report.error("spec.action", "CUSTOM authorization (ext_authz providers) is not supported")
    if "provider" in spec and action != "CUSTOM":
        report.error("spec.provider", f"`provider` must not be with non CUSTOM action, found {action}")
    for f in ("targetRef", "targetRefs"):
        if f in spec:
            report.error(
                f"spec.{f}",
                f"{f} binds a policy to waypoints or gateways, which minimesh does not have: use selector.matchLabels",
            )
    check_workload_selector(report, spec.get("selector"), "spec.selector", "matchLabels")
    rules = spec.get("rules")
    if action == "DENY" and rules is None:
        report.error(
            "spec.rules",
            "DENY action without `rules` is meaningless as it will never be triggered, "
            "add an empty rule `{}` if you want it be triggered for every request",
        )
    for i, rule in enumerate(rules or ()):
        _check_rule(report, rule or {}, f"spec.rules[{i}]")
    dry_run = (annotations or {}).get(DRY_RUN_ANNOTATION)
    if dry_run is not None:
        if action not in ("ALLOW", "DENY"):
            report.error(
                f"metadata.annotations[{DRY_RUN_ANNOTATION}]",
                f"the annotation {DRY_RUN_ANNOTATION} currently only supports action ALLOW/DENY, found {action}",
            )
        elif str(dry_run).lower() not in ("true", "false", "1", "0", "t", "f"):
            report.error(f"metadata.annotations[{DRY_RUN_ANNOTATION}]", f"invalid value {dry_run!r}: must be a boolean")
    return report


def _check_rule(report: Report, rule: Mapping[str, Any], path: str) -> None:
    if "from" in rule and not rule["from"]:
        report.error(child(path, "from"), "`from` must not be empty")
    for j, src in enumerate(rule.get("from") or ()):
        sp = f"{child(path, 'from')}[{j}]"
        source = (src or {}).get("source")
        if source is None:
            report.error(child(sp, "source"), "`from.source` must not be nil")
            continue
        sp = child(sp, "source")
        if not any(source.get(f) for f in _SOURCE_FIELDS):
            report.error(sp, "`from.source` must not be empty")
        for f in _SOURCE_FIELDS:
            values = source.get(f) or []
            for k, value in enumerate(values):
                vp = f"{child(sp, f)}[{k}]"
                if value == "":
                    report.error(vp, f"empty value not allowed, found in {f}")
                elif f in _IP_FIELDS:
                    report.error(vp, _ip_problem(value))
                elif f in ("serviceAccounts", "notServiceAccounts"):
                    report.error(vp, _service_account_problem(value, f))
                elif f in ("principals", "notPrincipals") and value.startswith(SPIFFE_PREFIX):
                    report.error(
                        vp,
                        f"principals are written without {SPIFFE_PREFIX!r} (Istio adds it, so this never "
                        f"matches): use {value[len(SPIFFE_PREFIX) :]!r}",
                    )
        if source.get("requestPrincipals") or source.get("notRequestPrincipals"):
            report.warn(sp, "minimesh has no RequestAuthentication (JWT): requests never carry a request principal")
    if "to" in rule and not rule["to"]:
        report.error(child(path, "to"), "`to` must not be empty")
    for j, to in enumerate(rule.get("to") or ()):
        tp = f"{child(path, 'to')}[{j}]"
        operation = (to or {}).get("operation")
        if operation is None:
            report.error(child(tp, "operation"), "`to.operation` must not be nil")
            continue
        op = child(tp, "operation")
        if not any(operation.get(f) for f in _OPERATION_FIELDS):
            report.error(op, "`to.operation` must not be empty")
        for f in _OPERATION_FIELDS:
            for k, value in enumerate(operation.get(f) or ()):
                vp = f"{child(op, f)}[{k}]"
                if value == "":
                    report.error(vp, f"empty value not allowed, found in {f}")
                elif f in ("ports", "notPorts"):
                    report.error(vp, _port_problem(value))
                elif f in ("paths", "notPaths"):
                    report.error(vp, _path_template_problem(value))
    for j, condition in enumerate(rule.get("when") or ()):
        wp = f"{child(path, 'when')}[{j}]"
        key = condition.get("key", "")
        if not key:
            report.error(child(wp, "key"), "`key` must not be empty")
            continue
        values, not_values = condition.get("values") or [], condition.get("notValues") or []
        if not values and not not_values:
            report.error(wp, f"at least one of `values` or `notValues` must be set for key {key}")
            continue
        for f, vs in (("values", values), ("notValues", not_values)):
            if vs:
                report.error(child(wp, f), _attribute_problem(key, vs))
        if key.startswith("request.auth."):
            report.warn(child(wp, "key"), "minimesh has no RequestAuthentication (JWT): request.auth.* never matches")

"""One AuthorizationPolicy rule -> one Envoy RBAC ``Policy`` (Istio's ``authz/model``: ``New`` + ``Generate``).

Shape (as Istio emits it): ``permissions`` has one ``and_rules`` per ``to`` entry (one for the whole rule
without ``to``), ``principals`` one ``and_ids`` per ``from`` entry; each field adds ``or`` of its values and
``not(or)`` of its ``not*`` values; an empty ``and`` holds ``any: true``. ``when`` conditions are appended to
every permission (``destination.port``) or principal (the rest). Field order: hosts, methods, paths, ports
(then when); principals, requestPrincipals, serviceAccounts, namespaces, remoteIpBlocks, ipBlocks (then when).

Value -> matcher (Istio's ``matcher`` package): ``*`` alone means "present" (``.+`` / ``present_match``),
``x*`` prefix, ``*x`` suffix, else exact.

- ``principals``, ``source.principal``: ``authenticated.principal_name`` with ``spiffe://`` added (a
  suffix becomes the regex ``spiffe://.*<suffix>``, since a suffix cannot carry the prefix);
- ``namespaces``, ``source.namespace``: ``principal_name`` regex ``.*/ns/<ns>/.*``;
- ``serviceAccounts``, ``source.serviceAccount``: regex ``spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`` (the
  policy's namespace when only ``<sa>`` is given);
- ``ipBlocks``, ``source.ip``: ``direct_remote_ip``; ``remoteIpBlocks``, ``remote.ip``: ``remote_ip``;
- ``request.headers[X]``: ``header`` X; ``methods``: header ``:method`` (gRPC is always POST); ``hosts``:
  header ``:authority`` (case-insensitive); ``paths``: ``url_path`` (gRPC: ``/pkg.Service/Method``).
- ``ports``, ``destination.port``: resolved here for the one workload port the inbound listener serves (in
  local mode pyproxy's inbound listener is not on the service port, so ``destination_port`` would compare
  against 15006): a value equal to the port drops the condition, otherwise the permission never matches;
  ``notPorts`` the other way round. Istio does the same for waypoints (``AmbientDestinationPortAdaptations``).
  Without a port (``check_resource``) Istio's ``destination_port`` form is produced.
- ``requestPrincipals``, ``request.auth.*``: minimesh has no RequestAuthentication (JWT), so a request never
  has a request principal: a condition on them never matches, a ``not*`` condition always does.

Refused (TranslationError): path templates (``{*}``, ``{**}``), ``destination.ip``, ``connection.sni``,
``experimental.envoy.filters.*`` and inline-header conditions: pyproxy's RBAC filter implements only
``any``, ``and/or/not``, ``header``, ``url_path``, ``destination_port(_range)`` permissions and ``any``,
``and/or/not``, ``authenticated.principal_name``, ``header``, ``url_path``, ``direct_remote_ip``,
``source_ip``, ``remote_ip`` principals.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mesh_ctl.translate.errors import TranslationError
from mesh_ctl.translate.values import Json, array, join, obj, string

SPIFFE = "spiffe://"
ANY_PERMISSION: Json = {"any": True}
ANY_PRINCIPAL: Json = {"any": True}
NEVER_PERMISSION: Json = {"not_rule": {"any": True}}
NEVER_PRINCIPAL: Json = {"not_id": {"any": True}}
# Istio's rbacPolicyMatchNever: what an ALLOW policy without rules (``spec: {}``) contributes.
MATCH_NEVER: Json = {"permissions": [NEVER_PERMISSION], "principals": [NEVER_PRINCIPAL]}

_SOURCE_FIELDS = {"principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces",
                  "notNamespaces", "serviceAccounts", "notServiceAccounts", "ipBlocks", "notIpBlocks",
                  "remoteIpBlocks", "notRemoteIpBlocks"}
_OPERATION_FIELDS = {"hosts", "notHosts", "ports", "notPorts", "methods", "notMethods", "paths", "notPaths"}
_RULE_FIELDS = {"from", "to", "when"}
_WHEN_FIELDS = {"key", "values", "notValues"}
_NO_MATCHER = "pyproxy's RBAC filter has no {} matcher, so this condition cannot be enforced"
_REFUSED_KEYS = {
    "destination.ip": _NO_MATCHER.format("destination_ip"),
    "connection.sni": _NO_MATCHER.format("requested_server_name"),
}
_META = re.compile(r"([\\.^$|?*+()\[\]{}])")


def _escape(text: str) -> str:
    """Escape regex metacharacters (Istio writes the value unescaped; a '.' would then match anything)."""
    return _META.sub(r"\\\1", text)


def _regex(pattern: str) -> Json:
    return {"safe_regex": {"regex": pattern}}


def string_matcher(value: str, prefix: str = "") -> Json:
    """Istio's ``StringMatcherWithPrefix``: ``*`` -> regex ``.+``, ``*x`` -> suffix, ``x*`` -> prefix."""
    if value == "*":
        return _regex(".+")
    if value.startswith("*"):
        if not prefix:
            return {"suffix": value[1:]}
        return _regex(_escape(prefix) + ".*" + _escape(value[1:]))
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1]}
    return {"exact": prefix + value}


def header_matcher(name: str, value: str, *, ignore_case: bool = False) -> Json:
    """Istio's ``HeaderMatcher`` / ``HostMatcher``: ``*`` = present, else a string match."""
    if value == "*":
        return {"name": name, "present_match": True}
    if value.startswith("*"):
        sm: Json = {"suffix": value[1:]}
    elif value.endswith("*"):
        sm = {"prefix": value[:-1]}
    else:
        sm = {"exact": value}
    if ignore_case:
        sm["ignore_case"] = True
    return {"name": name, "string_match": sm}


def _cidr(value: str, path: str) -> Json:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise TranslationError(path, f"{value!r} is not an IP address or CIDR range") from None
    return {"address_prefix": str(net.network_address), "prefix_len": net.prefixlen}


def _authenticated(matcher: Json) -> Json:
    return {"authenticated": {"principal_name": matcher}}


def service_account_regex(default_namespace: str, value: str) -> str:
    ns, slash, sa = value.partition("/")
    if not slash:
        ns, sa = default_namespace, value
    return f"spiffe://.+/ns/{_escape(ns)}/(.+/|)sa/{_escape(sa)}(/.+)?"


# A generator turns one value into one matcher (permission or principal); it gets the value's path.
Gen = Callable[[str, str], Json]


def _principal_gen(value: str, _: str) -> Json:
    return _authenticated(string_matcher(value, SPIFFE))


def _namespace_gen(value: str, _: str) -> Json:
    namespace = _escape(value).replace("\\*", ".*")  # Istio: a '*' in a namespace matches anything
    return _authenticated(_regex(f".*/ns/{namespace}/.*"))


def _ip_gen(kind: str) -> Gen:
    return lambda value, path: {kind: _cidr(value, path)}


def _header_gen(name: str, *, ignore_case: bool = False) -> Gen:
    return lambda value, _: {"header": header_matcher(name, value, ignore_case=ignore_case)}


def _path_gen(value: str, path: str) -> Json:
    if "{*}" in value or "{**}" in value:
        raise TranslationError(path, "path templates ({*}, {**}) are not supported: pyproxy's RBAC filter has "
                                     "no uri_template matcher (use a prefix such as /pkg.Service/*)")
    return {"url_path": {"path": string_matcher(value)}}


def _port_gen(value: str, path: str) -> Json:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise TranslationError(path, f"bad port {value!r}: must be a number in 0..65535")
    return {"destination_port": int(value)}


def _strings(value: object, path: str) -> list[str]:
    return [string(v, join(path, i)) for i, v in enumerate(array(value, path))]


class _Rule:
    """Builds one and-list: each condition adds ``or(values)`` and ``not(or(notValues))``."""

    def __init__(self, *, permission: bool) -> None:
        self.items: list[Json] = []
        self._or, self._not = ("or_rules", "not_rule") if permission else ("or_ids", "not_id")
        self._list = "rules" if permission else "ids"
        self._never = NEVER_PERMISSION if permission else NEVER_PRINCIPAL

    def add(self, gen: Gen, values: Sequence[str], not_values: Sequence[str], path: str, not_path: str) -> None:
        if values:
            self.items.append({self._or: {self._list: [gen(v, join(path, i)) for i, v in enumerate(values)]}})
        if not_values:
            matchers = [gen(v, join(not_path, i)) for i, v in enumerate(not_values)]
            self.items.append({self._not: {self._or: {self._list: matchers}}})

    def never_if(self, condition: bool) -> None:
        if condition:
            self.items.append(self._never)

    def build(self) -> Json:
        items = self.items or [ANY_PERMISSION if self._list == "rules" else ANY_PRINCIPAL]
        return {"and_rules": {"rules": items}} if self._list == "rules" else {"and_ids": {"ids": items}}


def _ports(rule: _Rule, values: list[str], not_values: list[str], path: str, not_path: str,
           port: int | None) -> None:
    """``ports`` / ``destination.port``: resolved against the workload port (see the module docstring)."""
    for i, v in enumerate(values):
        _port_gen(v, join(path, i))
    for i, v in enumerate(not_values):
        _port_gen(v, join(not_path, i))
    if port is None:
        rule.add(_port_gen, values, not_values, path, not_path)
        return
    if values and str(port) not in {str(int(v)) for v in values}:
        rule.never_if(True)
    if not_values and str(port) in {str(int(v)) for v in not_values}:
        rule.never_if(True)


def _no_request_auth(rule: _Rule, values: list[str]) -> None:
    """No JWT ever: a request principal/claim condition never matches (its ``not`` form always does)."""
    rule.never_if(bool(values))


class _When:
    """The ``when`` conditions of a rule, split into permission and principal conditions."""

    def __init__(self, when: object, path: str, policy_namespace: str, port: int | None) -> None:
        self.conditions: list[tuple[str, str, list[str], list[str], str]] = []
        for i, cond in enumerate(array(when, path)):
            cpath = join(path, i)
            c = obj(cond, cpath, _WHEN_FIELDS)
            key = string(c.get("key", ""), join(cpath, "key"))
            values = _strings(c.get("values"), join(cpath, "values"))
            not_values = _strings(c.get("notValues"), join(cpath, "notValues"))
            self.conditions.append((cpath, key, values, not_values, policy_namespace))
            self._check(key, join(cpath, "key"))
        self.port = port

    @staticmethod
    def _check(key: str, path: str) -> None:
        if key in _REFUSED_KEYS:
            raise TranslationError(path, f"{key}: {_REFUSED_KEYS[key]}")
        if key.startswith("experimental.envoy.filters."):
            raise TranslationError(path, f"{key}: {_NO_MATCHER.format('metadata')}")
        if key.startswith("request.experimental.inline.headers"):
            raise TranslationError(path, f"{key}: inline-header conditions are not supported (use request.headers)")
        known = ("request.headers[", "request.auth.")
        if key.startswith(known) or key in ("source.ip", "remote.ip", "source.namespace", "source.principal",
                                            "source.serviceAccount", "destination.port"):
            return
        raise TranslationError(path, f"unknown attribute {key!r}")

    def permissions(self, rule: _Rule) -> None:
        for cpath, key, values, not_values, _ in self.conditions:
            if key == "destination.port":
                _ports(rule, values, not_values, join(cpath, "values"), join(cpath, "notValues"), self.port)

    def principals(self, rule: _Rule) -> None:
        for cpath, key, values, not_values, ns in self.conditions:
            vpath, npath = join(cpath, "values"), join(cpath, "notValues")
            gen: Gen | None = None
            if key.startswith("request.headers["):
                name = key[len("request.headers["):]
                if not name.endswith("]") or len(name) < 2:
                    raise TranslationError(join(cpath, "key"), f"bad key ({key}): should have format a[b]")
                gen = _header_gen(name[:-1])
            elif key == "source.ip":
                gen = _ip_gen("direct_remote_ip")
            elif key == "remote.ip":
                gen = _ip_gen("remote_ip")
            elif key == "source.namespace":
                gen = _namespace_gen
            elif key == "source.principal":
                gen = _principal_gen
            elif key == "source.serviceAccount":
                gen = _service_account_gen(ns)
            elif key.startswith("request.auth."):
                _no_request_auth(rule, values)
            if gen is not None:
                rule.add(gen, values, not_values, vpath, npath)


def _service_account_gen(namespace: str) -> Gen:
    return lambda value, _: _authenticated(_regex(service_account_regex(namespace, value)))


def rbac_policy(rule: Mapping[str, Any] | None, path: str, policy_namespace: str, port: int | None) -> Json:
    """The RBAC ``Policy`` of one rule (``path`` is the rule's, e.g. ``spec.rules[0]``)."""
    r = obj(rule, path, _RULE_FIELDS)
    when = _When(r.get("when"), join(path, "when"), policy_namespace, port)
    permissions: list[Json] = []
    tos = array(r.get("to"), join(path, "to"))
    for i, to in enumerate(tos or [None]):
        tpath = join(join(path, "to"), i)
        perm = _Rule(permission=True)
        if to is not None:
            opath = join(tpath, "operation")
            op = obj(obj(to, tpath, {"operation"}).get("operation"), opath, _OPERATION_FIELDS)

            def field(name: str, o: Mapping[str, Any] = op, p: str = opath) -> tuple[list[str], str]:
                return _strings(o.get(name), join(p, name)), join(p, name)

            for key, gen in (("hosts", _header_gen(":authority", ignore_case=True)),
                             ("methods", _header_gen(":method")), ("paths", _path_gen)):
                (values, vpath), (not_values, npath) = field(key), field("not" + key.capitalize())
                perm.add(gen, values, not_values, vpath, npath)
            (values, vpath), (not_values, npath) = field("ports"), field("notPorts")
            _ports(perm, values, not_values, vpath, npath, port)
        when.permissions(perm)
        permissions.append(perm.build())
    principals: list[Json] = []
    froms = array(r.get("from"), join(path, "from"))
    for i, src in enumerate(froms or [None]):
        fpath = join(join(path, "from"), i)
        princ = _Rule(permission=False)
        if src is not None:
            spath = join(fpath, "source")
            s = obj(obj(src, fpath, {"source"}).get("source"), spath, _SOURCE_FIELDS)

            def sfield(name: str, o: Mapping[str, Any] = s, p: str = spath) -> tuple[list[str], str]:
                return _strings(o.get(name), join(p, name)), join(p, name)

            (values, vpath), (not_values, npath) = sfield("principals"), sfield("notPrincipals")
            princ.add(_principal_gen, values, not_values, vpath, npath)
            _no_request_auth(princ, sfield("requestPrincipals")[0])
            (values, vpath), (not_values, npath) = sfield("serviceAccounts"), sfield("notServiceAccounts")
            princ.add(_service_account_gen(policy_namespace), values, not_values, vpath, npath)
            (values, vpath), (not_values, npath) = sfield("namespaces"), sfield("notNamespaces")
            princ.add(_namespace_gen, values, not_values, vpath, npath)
            (values, vpath), (not_values, npath) = sfield("remoteIpBlocks"), sfield("notRemoteIpBlocks")
            princ.add(_ip_gen("remote_ip"), values, not_values, vpath, npath)
            (values, vpath), (not_values, npath) = sfield("ipBlocks"), sfield("notIpBlocks")
            princ.add(_ip_gen("direct_remote_ip"), values, not_values, vpath, npath)
        when.principals(princ)
        principals.append(princ.build())
    return {"permissions": permissions, "principals": principals}

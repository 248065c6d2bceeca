"""AuthorizationPolicy -> RBAC filters: Istio's shapes, which workloads a policy selects, what is refused,
and a simulation table: each call (source identity, path, method, headers, peer address, workload) is
allowed or denied by evaluating the emitted RBAC filters with the small reference evaluator below, written
from Envoy's RBAC semantics (``envoy.config.rbac.v3``), independent of the translator and of pyproxy."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh_ctl.registry import Registry
from mesh_ctl.translate import LISTENER_TYPE, TranslationError, check_resource
from mesh_ctl.translate.rbac import _namespace_gen, string_matcher
from pyproxy.config.material import MaterialStore
from tests.unit.translate.helpers import as_dict, pyproxy_problems, sidecar

Json = dict[str, Any]
CLIENT = "spiffe://cluster.local/ns/default/sa/client"
LEDGER = "spiffe://cluster.local/ns/billing/sa/ledger"
AUDIT = "spiffe://cluster.local/ns/default/sa/audit"
SVC = "/payment.PaymentService"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


def ap(name: str, spec: Json | None, namespace: str = "default", dry_run: bool = False) -> Json:
    meta: Json = {"name": name, "namespace": namespace}
    if dry_run:
        meta["annotations"] = {"istio.io/dry-run": "true"}
    doc: Json = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": meta}
    if spec is not None:
        doc["spec"] = spec
    return doc


def http_filters(registry: Registry, resources: list[Json], workload: str = "payment-v1",
                 namespace: str = "default") -> list[Json]:
    lst = as_dict(sidecar(registry, resources, workload, namespace).of(LISTENER_TYPE)["virtualInbound"])
    chains = lst["filter_chains"]
    filters: list[Json] = chains[0]["filters"][0]["typed_config"]["http_filters"]
    assert all(c["filters"][0]["typed_config"]["http_filters"] == filters for c in chains)  # mTLS and plaintext
    assert filters[-1]["name"] == "envoy.filters.http.router"
    return filters[:-1]


def rbac_configs(registry: Registry, resources: list[Json], workload: str = "payment-v1",
                 namespace: str = "default") -> list[Json]:
    filters = http_filters(registry, resources, workload, namespace)
    assert all(f["name"] == "envoy.filters.http.rbac" and f["typed_config"]["@type"] == RBAC_TYPE for f in filters)
    return [f["typed_config"] for f in filters]


# --------------------------------------------------------------------------------------------- the evaluator


@dataclass(frozen=True)
class Call:
    """A request as RBAC sees it at the server sidecar."""

    identity: str | None = CLIENT  # the peer certificate's URI SAN; None = plaintext
    path: str = f"{SVC}/Charge"
    method: str = "POST"  # gRPC is always POST
    headers: Mapping[str, str] = field(default_factory=dict)
    authority: str = "payment:8080"
    peer: str = "127.0.0.12"

    def header(self, name: str) -> str | None:
        values = {":method": self.method, ":path": self.path, ":authority": self.authority, **self.headers}
        return values.get(name.lower())


def _string(m: Json, value: str) -> bool:
    ignore = bool(m.get("ignore_case"))
    v = value.lower() if ignore else value
    for kind in ("exact", "prefix", "suffix", "contains"):
        if kind in m:
            want = str(m[kind]).lower() if ignore else str(m[kind])
            return {"exact": v == want, "prefix": v.startswith(want), "suffix": v.endswith(want),
                    "contains": want in v}[kind]
    return re.fullmatch(m["safe_regex"]["regex"], value) is not None


def _header(h: Json, call: Call) -> bool:
    value = call.header(h["name"])
    if value is None:
        result = False
    elif "present_match" in h:
        result = bool(h["present_match"])
    else:
        result = _string(h["string_match"], value)
    return result != bool(h.get("invert_match"))


def _ip(cidr: Json, call: Call) -> bool:
    net = ipaddress.ip_network(f"{cidr['address_prefix']}/{cidr.get('prefix_len', 0)}", strict=False)
    return ipaddress.ip_address(call.peer) in net


def permission(p: Json, call: Call, port: int) -> bool:
    if "any" in p:
        return True
    if "and_rules" in p:
        return all(permission(x, call, port) for x in p["and_rules"]["rules"])
    if "or_rules" in p:
        return any(permission(x, call, port) for x in p["or_rules"]["rules"])
    if "not_rule" in p:
        return not permission(p["not_rule"], call, port)
    if "header" in p:
        return _header(p["header"], call)
    if "url_path" in p:
        return _string(p["url_path"]["path"], call.path.split("?", 1)[0])
    if "destination_port" in p:
        return bool(port == p["destination_port"])
    raise AssertionError(f"permission outside what pyproxy implements: {p}")


def principal(p: Json, call: Call) -> bool:
    if "any" in p:
        return True
    if "and_ids" in p:
        return all(principal(x, call) for x in p["and_ids"]["ids"])
    if "or_ids" in p:
        return any(principal(x, call) for x in p["or_ids"]["ids"])
    if "not_id" in p:
        return not principal(p["not_id"], call)
    if "authenticated" in p:
        name = p["authenticated"].get("principal_name")
        return call.identity is not None and (name is None or _string(name, call.identity))
    if "header" in p:
        return _header(p["header"], call)
    for kind in ("direct_remote_ip", "source_ip", "remote_ip"):
        if kind in p:
            return _ip(p[kind], call)
    raise AssertionError(f"principal outside what pyproxy implements: {p}")


def allowed(configs: Sequence[Json], call: Call, port: int) -> bool:
    """Envoy: the filters in order; ALLOW denies what no policy matches, DENY what one does, LOG nothing;
    ``rules`` unset allows; ``shadow_rules`` never decide."""
    for config in configs:
        rules = config.get("rules")
        if rules is None:
            continue
        matched = any(any(permission(x, call, port) for x in policy["permissions"])
                      and any(principal(x, call) for x in policy["principals"])
                      for policy in rules.get("policies", {}).values())
        action = rules.get("action", "ALLOW")
        if (action == "ALLOW" and not matched) or (action == "DENY" and matched):
            return False
    return True


# --------------------------------------------------------------------------------------------- the table

ALLOW_ALL = ap("allow-all", {"rules": [{}]})
PORTS = {"payment-v1": 8080, "payment-v2": 8080, "audit-1": 9090, "ledger-1": 7070}
NS = {"ledger-1": "billing"}

# (scenario, policies, [(call, workload, allowed)])
TABLE: list[tuple[str, list[Json], list[tuple[Call, str, bool]]]] = [
    ("no policy: everything is allowed", [], [(Call(), "payment-v1", True), (Call(identity=None), "payment-v1", True)]),
    ("spec {} denies everything (in its namespace)", [ap("deny-all", {})], [
        (Call(), "payment-v1", False), (Call(identity=None), "payment-v1", False), (Call(), "audit-1", False),
        (Call(identity=CLIENT), "ledger-1", True)]),
    ("no spec at all is spec {}", [ap("deny-all", None)], [(Call(), "payment-v1", False)]),
    ("rules [{}] allows everything", [ALLOW_ALL], [(Call(), "payment-v1", True),
                                                   (Call(identity=None), "payment-v1", True)]),
    ("ALLOW from a principal", [ap("p", {"rules": [{"from": [{"source": {
        "principals": ["cluster.local/ns/default/sa/client"]}}]}]})], [
        (Call(), "payment-v1", True), (Call(identity=LEDGER), "payment-v1", False),
        (Call(identity=None), "payment-v1", False)]),
    ("principal prefix, suffix and *", [ap("p", {"rules": [{"from": [{"source": {
        "principals": ["cluster.local/ns/billing/*", "*/sa/audit"]}}]}, {"from": [{"source": {"principals": ["*"]}}],
                                                                    "to": [{"operation": {"paths": ["/x"]}}]}]})], [
        (Call(identity=LEDGER), "payment-v1", True), (Call(identity=AUDIT), "payment-v1", True),
        (Call(), "payment-v1", False), (Call(path="/x"), "payment-v1", True),
        (Call(identity=None, path="/x"), "payment-v1", False)]),
    ("DENY beats ALLOW", [ALLOW_ALL, ap("block", {"action": "DENY", "rules": [{"when": [
        {"key": "request.headers[x-block]", "values": ["yes"]}]}]})], [
        (Call(headers={"x-block": "yes"}), "payment-v1", False), (Call(headers={"x-block": "no"}), "payment-v1", True),
        (Call(), "payment-v1", True)]),
    ("DENY beats ALLOW for the same principal", [
        ap("a", {"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/client"]}}]}]}),
        ap("d", {"action": "DENY", "rules": [{"from": [{"source": {"principals": [
            "cluster.local/ns/default/sa/client"]}}]}]})], [(Call(), "payment-v1", False)]),
    ("only DENY policies: the rest is allowed", [ap("no-refunds", {"action": "DENY", "rules": [{"to": [
        {"operation": {"paths": [f"{SVC}/Refund"]}}]}]})], [
        (Call(path=f"{SVC}/Refund"), "payment-v1", False), (Call(), "payment-v1", True),
        (Call(identity=None), "payment-v1", True)]),
    ("namespaces", [ap("ns", {"rules": [{"from": [{"source": {"namespaces": ["billing"]}}]}]})], [
        (Call(identity=LEDGER), "payment-v1", True), (Call(), "payment-v1", False),
        (Call(identity=None), "payment-v1", False)]),
    ("notNamespaces", [ap("ns", {"rules": [{"from": [{"source": {"notNamespaces": ["billing"]}}]}]})], [
        (Call(identity=LEDGER), "payment-v1", False), (Call(), "payment-v1", True),
        (Call(identity=None), "payment-v1", True)]),
    ("DENY notPrincipals: only the client gets in, plaintext neither", [ap("only-client", {
        "action": "DENY",
        "rules": [{"from": [{"source": {"notPrincipals": ["cluster.local/ns/default/sa/client"]}}]}]})],
     [(Call(), "payment-v1", True), (Call(identity=LEDGER), "payment-v1", False),
      (Call(identity=None), "payment-v1", False)]),
    ("serviceAccounts", [ap("sa", {"rules": [{"from": [{"source": {
        "serviceAccounts": ["billing/ledger", "client"]}}]}]})],
     [(Call(identity=LEDGER), "payment-v1", True), (Call(), "payment-v1", True),
      (Call(identity=AUDIT), "payment-v1", False)]),
    ("paths with *", [ap("paths", {"rules": [{"to": [{"operation": {"paths": [f"{SVC}/Get*", "*/Charge"]}}]}]})], [
        (Call(path=f"{SVC}/GetPayment"), "payment-v1", True), (Call(path=f"{SVC}/Charge"), "payment-v1", True),
        (Call(path=f"{SVC}/Refund"), "payment-v1", False), (Call(path=f"{SVC}/Charge?x=1"), "payment-v1", True)]),
    ("notPaths", [ap("paths", {"rules": [{"to": [{"operation": {"notPaths": [f"{SVC}/Refund"]}}]}]})], [
        (Call(path=f"{SVC}/Refund"), "payment-v1", False), (Call(), "payment-v1", True)]),
    ("methods: gRPC is POST", [ap("post", {"rules": [{"to": [{"operation": {"methods": ["POST"]}}]}]})], [
        (Call(), "payment-v1", True), (Call(method="GET"), "payment-v1", False)]),
    ("methods: a gRPC method name in methods never matches", [ap("m", {"rules": [{"to": [{"operation": {
        "methods": ["Charge"]}}]}]})], [(Call(), "payment-v1", False)]),
    ("when request headers", [ap("tenant", {"rules": [{"when": [
        {"key": "request.headers[x-tenant]", "values": ["beta-*"], "notValues": ["beta-blocked"]}]}]})], [
        (Call(headers={"x-tenant": "beta-7"}), "payment-v1", True),
        (Call(headers={"x-tenant": "beta-blocked"}), "payment-v1", False),
        (Call(headers={"x-tenant": "alpha"}), "payment-v1", False), (Call(), "payment-v1", False)]),
    ("when source.principal and source.namespace", [ap("w", {"rules": [{"when": [
        {"key": "source.namespace", "values": ["default"]},
        {"key": "source.principal", "notValues": ["cluster.local/ns/default/sa/audit"]}]}]})], [
        (Call(), "payment-v1", True), (Call(identity=AUDIT), "payment-v1", False),
        (Call(identity=LEDGER), "payment-v1", False)]),
    ("AUDIT changes nothing", [ap("audit", {"action": "AUDIT", "rules": [{}]})], [
        (Call(), "payment-v1", True), (Call(identity=None), "payment-v1", True)]),
    ("AUDIT does not undo a deny", [ap("audit", {"action": "AUDIT", "rules": [{}]}), ap("deny-all", {})], [
        (Call(), "payment-v1", False)]),
    ("dry-run changes nothing", [ap("deny-all", {}, dry_run=True),
                                 ap("d", {"action": "DENY", "rules": [{}]}, dry_run=True)],
     [(Call(), "payment-v1", True)]),
    ("ports: the workload port", [ap("p", {"rules": [{"to": [{"operation": {"ports": ["8080"]}}]}]}, "istio-system")], [
        (Call(), "payment-v1", True), (Call(), "audit-1", False), (Call(identity=LEDGER), "ledger-1", False)]),
    ("notPorts", [ap("p", {"action": "DENY", "rules": [{"to": [{"operation": {"notPorts": ["8080"]}}]}]},
                     "istio-system")], [(Call(), "payment-v1", True), (Call(), "audit-1", False)]),
    ("when destination.port", [ap("p", {"rules": [{"when": [{"key": "destination.port", "values": ["9090"]}]}]},
                                  "istio-system")], [(Call(), "payment-v1", False), (Call(), "audit-1", True)]),
    ("root namespace: every namespace", [ap("deny-all", {}, "istio-system")], [
        (Call(), "payment-v1", False), (Call(identity=CLIENT), "ledger-1", False)]),
    ("root namespace selector: matching workloads of every namespace", [
        ap("ledger-only", {"selector": {"matchLabels": {"app": "ledger"}}}, "istio-system")], [
        (Call(), "payment-v1", True), (Call(identity=CLIENT), "ledger-1", False)]),
    ("workload selector", [ap("v1-nothing", {"selector": {"matchLabels": {"version": "v1"}}})], [
        (Call(), "payment-v1", False), (Call(), "payment-v2", True)]),
    ("ipBlocks and remoteIpBlocks", [ap("ip", {"rules": [{"from": [{"source": {"ipBlocks": ["127.0.0.0/8"]}}]},
                                                         {"from": [{"source": {"remoteIpBlocks": ["10.1.2.3"]}}]}]})], [
        (Call(peer="127.0.0.12"), "payment-v1", True), (Call(peer="10.1.2.3"), "payment-v1", True),
        (Call(peer="10.1.2.4"), "payment-v1", False)]),
    ("hosts", [ap("h", {"rules": [{"to": [{"operation": {"hosts": ["PAYMENT*"]}}]}]})], [
        (Call(authority="payment:8080"), "payment-v1", True), (Call(authority="audit:9090"), "payment-v1", False)]),
    ("no JWT: requestPrincipals never match, notRequestPrincipals always do", [
        ap("jwt", {"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}),
        ap("no-jwt", {"action": "DENY", "rules": [{"from": [{"source": {"notRequestPrincipals": ["*"]}}],
                                                  "to": [{"operation": {"paths": ["/denied"]}}]}]})], [
        (Call(), "payment-v1", False), (Call(path="/denied"), "payment-v1", False)]),
    ("one rule: from AND to AND when; rules OR", [ap("combo", {"rules": [
        {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/client"]}}],
         "to": [{"operation": {"paths": [f"{SVC}/Charge"], "methods": ["POST"]}}],
         "when": [{"key": "request.headers[x-ok]", "values": ["1"]}]},
        {"from": [{"source": {"namespaces": ["billing"]}}]}]})], [
        (Call(headers={"x-ok": "1"}), "payment-v1", True), (Call(), "payment-v1", False),
        (Call(path=f"{SVC}/Refund", headers={"x-ok": "1"}), "payment-v1", False),
        (Call(identity=LEDGER, path="/anything"), "payment-v1", True)]),
]


@pytest.mark.parametrize(("policies", "calls"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_simulation(registry: Registry, policies: list[Json], calls: list[tuple[Call, str, bool]]) -> None:
    for call, workload, expected in calls:
        configs = rbac_configs(registry, policies, workload, NS.get(workload, "default"))
        assert allowed(configs, call, PORTS[workload]) == expected, (call, workload)


@pytest.mark.parametrize("policies", [t[1] for t in TABLE], ids=[t[0] for t in TABLE])
def test_every_table_policy_is_accepted_by_pyproxy(registry: Registry, material: MaterialStore,
                                                   policies: list[Json]) -> None:
    for workload in PORTS:
        _, others = pyproxy_problems(sidecar(registry, policies, workload, NS.get(workload, "default")), material)
        assert others == [], workload


# --------------------------------------------------------------------------------------------- shapes


def test_no_policy_no_rbac_filter(registry: Registry) -> None:
    assert http_filters(registry, []) == []
    assert http_filters(registry, [ap("x", {}, "billing")]) == []  # another namespace's policy


def test_allow_nothing_is_istios_match_never_policy(registry: Registry) -> None:
    (config,) = rbac_configs(registry, [ap("deny-all", {})])
    assert config == {"@type": RBAC_TYPE, "rules": {"policies": {"ns[default]-policy[deny-all]-rule[0]": {
        "permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}}},
        "shadow_rules_stat_prefix": "istio_dry_run_allow_"}


def test_filters_are_audit_deny_allow_with_istios_policy_names(registry: Registry) -> None:
    policies = [ap("z-allow", {"rules": [{}, {"to": [{"operation": {"methods": ["POST"]}}]}]}),
                ap("deny", {"action": "DENY", "rules": [{}]}), ap("audit", {"action": "AUDIT", "rules": [{}]}),
                ap("a-allow", {"rules": [{}]}, "istio-system")]
    audit, deny, allow = rbac_configs(registry, policies)
    assert audit["rules"]["action"] == "LOG"
    assert list(audit["rules"]["policies"]) == ["ns[default]-policy[audit]-rule[0]"]
    assert deny["rules"]["action"] == "DENY"
    assert "action" not in allow["rules"]  # ALLOW is the zero value
    assert sorted(allow["rules"]["policies"]) == ["ns[default]-policy[z-allow]-rule[0]",
                                                  "ns[default]-policy[z-allow]-rule[1]",
                                                  "ns[istio-system]-policy[a-allow]-rule[0]"]
    assert allow["rules"]["policies"]["ns[default]-policy[z-allow]-rule[0]"] == {
        "permissions": [{"and_rules": {"rules": [{"any": True}]}}],
        "principals": [{"and_ids": {"ids": [{"any": True}]}}]}
    assert allow["rules"]["policies"]["ns[default]-policy[z-allow]-rule[1]"]["permissions"] == [{"and_rules": {
        "rules": [{"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "POST"}}}]}}]}}]


def test_istio_matcher_shapes(registry: Registry) -> None:
    (config,) = rbac_configs(registry, [ap("shapes", {"rules": [{
        "from": [{"source": {"principals": ["cluster.local/ns/default/sa/client", "p-*", "*-s", "*"],
                             "notPrincipals": ["bad"], "namespaces": ["billing", "te*"],
                             "ipBlocks": ["10.0.0.0/8", "127.0.0.1"], "remoteIpBlocks": ["::1"]}}],
        "to": [{"operation": {"paths": ["/exact", "/prefix/*", "*/suffix", "*"], "methods": ["POST", "*"],
                              "hosts": ["payment"]}}],
        "when": [{"key": "request.headers[X-Tenant]", "values": ["a", "*"]}]}]})])
    policy = config["rules"]["policies"]["ns[default]-policy[shapes]-rule[0]"]
    (perm,) = policy["permissions"]
    hosts, methods, paths = perm["and_rules"]["rules"]
    assert hosts == {"or_rules": {"rules": [{"header": {"name": ":authority", "string_match": {
        "exact": "payment", "ignore_case": True}}}]}}
    assert methods == {"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "POST"}}},
                                              {"header": {"name": ":method", "present_match": True}}]}}
    assert [r["url_path"]["path"] for r in paths["or_rules"]["rules"]] == [
        {"exact": "/exact"}, {"prefix": "/prefix/"}, {"suffix": "/suffix"}, {"safe_regex": {"regex": ".+"}}]
    (princ,) = policy["principals"]
    principals, not_principals, namespaces, remote, direct, header = princ["and_ids"]["ids"]
    assert [i["authenticated"]["principal_name"] for i in principals["or_ids"]["ids"]] == [
        {"exact": CLIENT}, {"prefix": "spiffe://p-"}, {"safe_regex": {"regex": "spiffe://.*-s"}},
        {"safe_regex": {"regex": ".+"}}]
    assert not_principals == {"not_id": {"or_ids": {"ids": [
        {"authenticated": {"principal_name": {"exact": "spiffe://bad"}}}]}}}
    assert [i["authenticated"]["principal_name"]["safe_regex"]["regex"] for i in namespaces["or_ids"]["ids"]] == [
        ".*/ns/billing/.*", ".*/ns/te.*/.*"]
    assert remote == {"or_ids": {"ids": [{"remote_ip": {"address_prefix": "::1", "prefix_len": 128}}]}}
    assert direct == {"or_ids": {"ids": [{"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}},
                                         {"direct_remote_ip": {"address_prefix": "127.0.0.1", "prefix_len": 32}}]}}
    assert header == {"or_ids": {"ids": [{"header": {"name": "X-Tenant", "string_match": {"exact": "a"}}},
                                         {"header": {"name": "X-Tenant", "present_match": True}}]}}


def test_dry_run_goes_to_shadow_rules(registry: Registry) -> None:
    (deny, allow) = rbac_configs(registry, [ap("d", {"action": "DENY", "rules": [{}]}, dry_run=True),
                                            ap("a", {"rules": [{}]}), ap("a2", {}, dry_run=True)])
    assert "rules" not in deny and deny["shadow_rules"]["action"] == "DENY"
    assert deny["shadow_rules_stat_prefix"] == "istio_dry_run_deny_"
    assert list(allow["rules"]["policies"]) == ["ns[default]-policy[a]-rule[0]"]
    assert list(allow["shadow_rules"]["policies"]) == ["ns[default]-policy[a2]-rule[0]"]
    assert allow["shadow_rules_stat_prefix"] == "istio_dry_run_allow_"


# --------------------------------------------------------------------------------------------- refused


@pytest.mark.parametrize(("spec", "path", "words"), [
    ({"action": "CUSTOM", "provider": {"name": "ext"}, "rules": [{}]}, "spec.action",
     "CUSTOM authorization (ext_authz providers) is not supported"),
    ({"action": 3, "rules": [{}]}, "spec.action", "CUSTOM authorization (ext_authz providers) is not supported"),
    ({"targetRefs": [{"kind": "Gateway", "name": "g"}]}, "spec.targetRefs", "waypoints"),
    ({"rules": [{"to": [{"operation": {"paths": ["/a/{*}/b"]}}]}]}, "spec.rules[0].to[0].operation.paths[0]",
     "path templates"),
    ({"rules": [{"when": [{"key": "destination.ip", "values": ["1.2.3.4"]}]}]}, "spec.rules[0].when[0].key",
     "destination_ip"),
    ({"rules": [{"when": [{"key": "connection.sni", "values": ["a"]}]}]}, "spec.rules[0].when[0].key", "server_name"),
    ({"rules": [{"when": [{"key": "experimental.envoy.filters.a.b[c]", "values": ["a"]}]}]},
     "spec.rules[0].when[0].key", "metadata"),
    ({"rules": [{"when": [{"key": "source.color", "values": ["red"]}]}]}, "spec.rules[0].when[0].key",
     "unknown attribute"),
    ({"rules": [{"from": [{"source": {"ipBlocks": ["not-an-ip"]}}]}]}, "spec.rules[0].from[0].source.ipBlocks[0]",
     "not an IP"),
    ({"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}, "spec.rules[0].to[0].operation.ports[0]", "bad port"),
    ({"rules": [{"sparkles": True}]}, "spec.rules[0].sparkles", "not supported"),
    ({"action": "SOMETIMES"}, "spec.action", "unknown action"),
])
def test_what_cannot_be_enforced_is_refused(spec: Json, path: str, words: str) -> None:
    with pytest.raises(TranslationError) as info:
        check_resource(ap("p", spec))
    assert info.value.path == path and words in info.value.reason
    assert info.value.resource == "AuthorizationPolicy default/p"


@pytest.mark.parametrize("spec", [
    {}, {"rules": [{}]}, {"action": "DENY", "rules": [{"from": [{"source": {"notPrincipals": ["a/b"]}}]}]},
    {"action": "AUDIT", "rules": [{"to": [{"operation": {"paths": ["/x"], "ports": ["80"]}}]}]},
    {"selector": {"matchLabels": {"app": "payment"}}, "rules": [{"when": [
        {"key": "request.auth.claims[group]", "values": ["admin"]}, {"key": "remote.ip", "values": ["1.2.3.4"]},
        {"key": "source.serviceAccount", "values": ["default/client"]}]}]},
])
def test_supported_policies_pass(spec: Json) -> None:
    check_resource(ap("p", spec))


# --------------------------------------------------------------------------------------------- properties

# Principal-ish text with every regex metacharacter (but no '*': that one is Istio's glob).
_TEXT = st.text(alphabet="ab.-_/:+?()[]{}|^$\\", min_size=1, max_size=10)


@settings(max_examples=300, deadline=None)
@given(body=_TEXT, kind=st.sampled_from(["exact", "prefix", "suffix", "any"]), candidate=_TEXT)
def test_principal_globs_mean_what_istio_means(body: str, kind: str, candidate: str) -> None:
    """``x``, ``x*``, ``*x``, ``*`` with ``spiffe://`` added, whatever characters x holds."""
    value = {"exact": body, "prefix": body + "*", "suffix": "*" + body, "any": "*"}[kind]
    expected = {"exact": candidate == body, "prefix": candidate.startswith(body),
                "suffix": candidate.endswith(body), "any": True}[kind]
    assert _string(string_matcher(value, "spiffe://"), "spiffe://" + candidate) == expected


@settings(max_examples=200, deadline=None)
@given(namespace=st.text(alphabet="ab.-+()", min_size=1, max_size=8),
       other=st.text(alphabet="ab.-+()", min_size=1, max_size=8))
def test_namespace_regexes_match_exactly_that_namespace(namespace: str, other: str) -> None:
    principal = _namespace_gen(namespace, "")["authenticated"]["principal_name"]
    assert _string(principal, f"spiffe://cluster.local/ns/{namespace}/sa/x")
    assert _string(principal, f"spiffe://cluster.local/ns/{other}/sa/x") == (other == namespace)

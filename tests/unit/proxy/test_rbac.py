"""The RBAC filter: Envoy's RBAC config (as Istio emits it) translated and evaluated."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from google.protobuf import json_format

from pyproxy.config.errors import Problems
from pyproxy.config.material import default_store
from pyproxy.config.translate.common import Ctx
from pyproxy.config.translate.rbac import rbac_filter
from pyproxy.filters.rbac import RbacFilter, RequestFacts

CLIENT = "spiffe://cluster.local/ns/default/sa/client"
INTRUDER = "spiffe://cluster.local/ns/other/sa/intruder"


def compile_rbac(d: dict[str, Any]) -> RbacFilter:
    ctx = Ctx(problems=Problems(), material=default_store())
    config = rbac_filter(ctx, json_format.ParseDict(d, rbac_pb2.RBAC()), "typed_config")
    ctx.problems.raise_if_any()
    return RbacFilter("rbac", config)


def facts(principal: str | None = CLIENT, path: str = "/payment.PaymentService/Charge", method: str = "POST",
          headers: dict[str, str] | None = None, port: int = 15006, ip: str = "127.0.0.12") -> RequestFacts:
    hs = [(b":method", method.encode()), (b":path", path.encode()), (b":authority", b"payment:8080")]
    hs += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    return RequestFacts(headers=hs, path=path, destination_port=port, peer_ip=ip,
                        uri_sans=(principal,) if principal else (), dns_sans=(), subject="",
                        authenticated=principal is not None)


# Istio's translation of: ALLOW from principal cluster.local/ns/default/sa/client to paths
# /payment.PaymentService/* with method POST, when request.headers[x-team] == payments.
ISTIO_ALLOW = {"rules": {"action": "ALLOW", "policies": {"ns[default]-policy[allow-client]-rule[0]": {
    "permissions": [{"and_rules": {"rules": [
        {"or_rules": {"rules": [{"url_path": {"path": {"prefix": "/payment.PaymentService/"}}}]}},
        {"or_rules": {"rules": [{"header": {"name": ":method", "string_match": {"exact": "POST"}}}]}}]}}],
    "principals": [{"and_ids": {"ids": [
        {"or_ids": {"ids": [{"authenticated": {"principal_name": {"exact": CLIENT}}}]}},
        {"or_ids": {"ids": [{"header": {"name": "x-team", "string_match": {"exact": "payments"}}}]}}]}}],
}}}}


def test_allow_policy_matches_principal_path_method_and_header() -> None:
    f = compile_rbac(ISTIO_ALLOW)
    assert f.evaluate(facts(headers={"x-team": "payments"})).allowed
    assert not f.evaluate(facts(headers={"x-team": "other"})).allowed
    assert not f.evaluate(facts(principal=INTRUDER, headers={"x-team": "payments"})).allowed
    assert not f.evaluate(facts(principal=None, headers={"x-team": "payments"})).allowed  # plaintext
    assert not f.evaluate(facts(path="/other.Service/M", headers={"x-team": "payments"})).allowed
    assert not f.evaluate(facts(method="GET", headers={"x-team": "payments"})).allowed
    assert f.counters.allowed == 1 and f.counters.denied == 5


def test_deny_namespace_regex_and_not_id() -> None:
    deny_other_ns = compile_rbac({"rules": {"action": "DENY", "policies": {"deny-other": {
        "permissions": [{"any": True}],
        "principals": [{"and_ids": {"ids": [
            {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/other/.*"}}}},
            {"not_id": {"authenticated": {"principal_name": {"exact": INTRUDER + "-trusted"}}}}]}}]}}}})
    decision = deny_other_ns.evaluate(facts(principal=INTRUDER))
    assert not decision.allowed and decision.policy == "deny-other"
    assert deny_other_ns.evaluate(facts(principal=CLIENT)).allowed
    assert deny_other_ns.evaluate(facts(principal=INTRUDER + "-trusted")).allowed


def test_allow_with_no_policies_denies_everything_and_no_rules_allows() -> None:
    assert not compile_rbac({"rules": {"action": "ALLOW"}}).evaluate(facts()).allowed  # Istio "spec: {}"
    assert compile_rbac({}).evaluate(facts()).allowed
    assert compile_rbac({"rules": {"action": "DENY"}}).evaluate(facts()).allowed


def test_log_action_and_shadow_rules_never_deny() -> None:
    f = compile_rbac({"rules": {"action": "LOG", "policies": {"audit": {"permissions": [{"any": True}],
                                                                         "principals": [{"any": True}]}}},
                      "shadow_rules": {"action": "ALLOW"}})
    d = f.evaluate(facts())
    assert d.allowed and d.policy == "audit" and d.shadow_allowed is False
    assert f.counters.logged == 1 and f.counters.shadow_denied == 1


def test_ports_ips_and_query_strings() -> None:
    f = compile_rbac({"rules": {"action": "ALLOW", "policies": {"p": {
        "permissions": [{"and_rules": {"rules": [{"destination_port": 15006},
                                                  {"url_path": {"path": {"exact": "/a.B/C"}}}]}}],
        "principals": [{"direct_remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}}]}}}})
    assert f.evaluate(facts(path="/a.B/C")).allowed
    assert not f.evaluate(facts(path="/a.B/C", port=15007)).allowed
    assert not f.evaluate(facts(path="/a.B/C", ip="10.1.2.3")).allowed


@pytest.mark.parametrize(("config", "expected"), [
    ({"rules": {"policies": {"p": {"permissions": [{"metadata": {}}], "principals": [{"any": True}]}}}},
     "typed_config.rules.policies[p].permissions[0].metadata: permission 'metadata' is not supported"),
    ({"rules": {"policies": {"p": {"permissions": [{"any": True}], "principals": [{"any": True}],
                                   "condition": {"const_expr": {"bool_value": True}}}}}},
     "typed_config.rules.policies[p].condition: condition (CEL) is not supported"),
])
def test_unsupported_rbac_fields_are_refused_with_their_path(config: dict[str, Any], expected: str) -> None:
    ctx = Ctx(problems=Problems(), material=default_store())
    rbac_filter(ctx, json_format.ParseDict(config, rbac_pb2.RBAC()), "typed_config")
    assert any(f"{p.path}: {p.reason}".startswith(expected) for p in ctx.problems), [
        f"{p.path}: {p.reason}" for p in ctx.problems]

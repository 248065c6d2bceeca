"""The policy verbs' edits as pure functions (mesh_ctl.edits): which routes a block goes on, what else of the
resource is kept, what is refused and why, and that every document they make is valid Istio that translates
(the store's own validator and the translator's check are the oracles)."""

from __future__ import annotations

import copy
import textwrap
from typing import Any

import pytest

from mesh_ctl.edits import Edit, EditRefused, set_route_policy, set_traffic_policy
from mesh_ctl.edits.describe import fault, policy_rows, retries
from mesh_ctl.edits.flags import (
    FlagError,
    abort_status,
    duration,
    fault_block,
    lb_policy,
    outlier_block,
    percent,
    retries_block,
    retry_on,
)
from mesh_ctl.edits.lookup import HostConfig, host_config
from mesh_ctl.registry import ServiceEntry, SubsetEntry
from mesh_ctl.resources import Resource, load_documents, normalized, validate_batch
from mesh_ctl.translate import check_resource

SERVICE = ServiceEntry("payment", "default", 8080, {"app": "payment"}, subsets=(
    SubsetEntry("v1", {"version": "v1"}, 50), SubsetEntry("v2", {"version": "v2"}, 50)))
ABORT = {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 30}}}
DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment, namespace: default}
spec:
  host: payment
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""
CANARY = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment, namespace: default, labels: {team: pay}, resourceVersion: "7", uid: x}
spec:
  hosts: [payment]
  http:
  - name: canary
    match: [{headers: {x-canary: {exact: "true"}}}]
    route: [{destination: {host: payment, subset: v2}}]
    timeout: 2s
  - name: legacy
    match: [{uri: {prefix: /legacy.}}]
    directResponse: {status: 404}
  - name: split
    route:
    - {destination: {host: payment, subset: v1}, weight: 90, headers: {request: {set: {x-w: "90"}}}}
    - {destination: {host: payment, subset: v2}, weight: 10}
    retries: {attempts: 5, retryOn: 5xx}
"""


def docs(*texts: str) -> list[Resource]:
    return [r for t in texts for r in load_documents(textwrap.dedent(t), "test.yaml")]


def config(*texts: str) -> HostConfig:
    return host_config(docs(*texts), SERVICE)


def valid(edit: Edit, *others: str) -> dict[str, Any]:
    """The edit's document, after checking it the way the store does (validator + translator)."""
    doc = edit.document
    assert doc is not None
    resource = Resource(doc["apiVersion"], doc["kind"], doc["metadata"], doc["spec"], "edit", 0, doc)
    existing = {r.key: r for r in docs(*others)}
    report = validate_batch([resource], existing, implicit_subsets=lambda _: ("v1", "v2"))
    assert report.errors == [], [str(e) for e in report.errors]
    check_resource(normalized(resource))
    return doc


# --------------------------------------------------------------------------------------------- routes


def test_without_a_virtual_service_one_is_created_that_keeps_the_topology_split() -> None:
    edit = set_route_policy("fault", ABORT, config())
    doc = valid(edit)
    assert edit.created and edit.before_source == "topology" and edit.resource == "VirtualService default/payment"
    assert doc["spec"] == {"hosts": ["payment"], "http": [{
        "route": [{"destination": {"host": "payment", "subset": "v1"}, "weight": 50},
                  {"destination": {"host": "payment", "subset": "v2"}, "weight": 50}],
        "fault": ABORT}]}
    [change] = edit.changes
    assert (change.path, change.label, change.to, change.before, change.after) == (
        "spec.http[0]", "http[0]", "v1 50%, v2 50%", None, ABORT)


def test_the_default_split_follows_the_destination_rule_and_weights() -> None:
    lone = ServiceEntry("payment", "default", 8080, {"app": "payment"}, subsets=(
        SubsetEntry("v1", {"version": "v1"}, 100), SubsetEntry("v2", {"version": "v2"}, 0)))
    doc = valid(set_route_policy("retries", {"attempts": 3}, host_config([], lone)))
    assert doc["spec"]["http"][0]["route"] == [{"destination": {"host": "payment", "subset": "v1"}}]
    bare = ServiceEntry("payment", "default", 8080, {"app": "payment"})
    doc = valid(set_route_policy("retries", {"attempts": 3}, host_config([], bare)))
    assert doc["spec"]["http"][0]["route"] == [{"destination": {"host": "payment"}}]


def test_every_forwarding_route_gets_the_block_and_nothing_else_changes() -> None:
    before = docs(CANARY)[0].to_dict()
    edit = set_route_policy("fault", ABORT, config(DR, CANARY))
    doc = valid(edit, DR)
    assert doc["metadata"] == {"name": "payment", "namespace": "default", "labels": {"team": "pay"}}
    expected = copy.deepcopy(before["spec"])
    expected["http"][0]["fault"] = ABORT
    expected["http"][2]["fault"] = ABORT
    assert doc["spec"] == expected  # matches, weights, headers, timeouts, retries, the direct response: kept
    assert [(c.label, c.to) for c in edit.changes] == [("http[0] canary", "v2"), ("http[2] split", "v1 90%, v2 10%")]
    assert edit.notes == ("http[1] legacy ((direct response)) is left as it is: it answers by itself (direct "
                          "response)", "http[2] split also has a retry policy: the fault filter answers before the "
                          "router, so an injected abort is never retried")


ALL_V1 = CANARY.replace("weight: 10}", "weight: 0}").replace("weight: 90", "weight: 100")


def test_a_subset_means_the_routes_whose_calls_all_go_to_it() -> None:
    edit = set_route_policy("fault", ABORT, config(DR, ALL_V1), subset="v2")
    doc = valid(edit, DR)
    assert [h.get("fault") for h in doc["spec"]["http"]] == [ABORT, None, None]
    assert [c.label for c in edit.changes] == ["http[0] canary"]
    assert "http[2] split (v1) is left as it is: it does not send calls to v2" in edit.notes
    # A route whose other destinations get no traffic (weight 0) sends every call to v2.
    shifted = CANARY.replace("weight: 90", "weight: 0").replace("weight: 10", "weight: 100")
    doc = valid(set_route_policy("fault", ABORT, config(DR, shifted), subset="v2"), DR)
    assert [h.get("fault") for h in doc["spec"]["http"]] == [ABORT, None, ABORT]


def test_a_route_that_sends_calls_to_the_subset_and_elsewhere_is_refused() -> None:
    with pytest.raises(EditRefused) as e:
        set_route_policy("fault", ABORT, config(DR, CANARY), subset="v1")
    assert str(e.value) == (
        "route http[2] split of VirtualService default/payment sends calls to v1 90%, v2 10%, not only to subset "
        "v1. An Istio fault belongs to a whole http route, not to one of its destinations, so it would also hit "
        "the calls that go elsewhere. To put it on v1 alone, shift that route to v1 alone first (mesh_ctl "
        "set-weight payment v1=100); or leave out --subset to put it on every call")
    # Without a VirtualService, the topology's 50/50 split is such a route.
    with pytest.raises(EditRefused, match=r"sends calls to v1 50%, v2 50%, not only to subset v2"):
        set_route_policy("retries", {"attempts": 1}, config(), subset="v2")
    # A route to the whole service reaches every subset; a matched one is fixed by editing it.
    whole = CANARY.replace("route: [{destination: {host: payment, subset: v2}}]",
                           "route: [{destination: {host: payment}}]")
    with pytest.raises(EditRefused, match=r"http\[0\] canary .* payment \(all subsets\), not only to subset v2.*"
                                          r"give that route subset v2 as its only destination"):
        set_route_policy("fault", ABORT, config(DR, whole), subset="v2")


def test_no_route_for_the_subset_and_unknown_subsets_are_refused() -> None:
    only_v1 = CANARY.replace("subset: v2}}]\n    timeout", "subset: v1}}]\n    timeout").replace(
        "weight: 10", "weight: 0")
    with pytest.raises(EditRefused, match=r"^no route of VirtualService default/payment sends calls to subset v2 "
                                          r"alone \(http\[0\] canary: v1; http\[2\] split: v1\)"):
        set_route_policy("fault", ABORT, config(DR, only_v1), subset="v2")
    with pytest.raises(EditRefused, match=r"^subset v3 of payment does not exist \(subsets from DestinationRule "
                                          r"default/payment: v1, v2\)$"):
        set_route_policy("fault", ABORT, config(DR, CANARY), subset="v3")
    with pytest.raises(EditRefused, match=r"subsets from the topology \(no DestinationRule\): v1, v2"):
        set_route_policy("fault", ABORT, config(), subset="v3")
    direct = CANARY.split("  - name: canary", maxsplit=1)[0] + "  - directResponse: {status: 503}\n"
    with pytest.raises(EditRefused, match="has no route that forwards calls"):
        set_route_policy("fault", ABORT, config(direct))


def test_clearing_removes_the_block_only_where_chosen_and_never_creates() -> None:
    faulty = docs(ALL_V1)[0].to_dict()
    for h in faulty["spec"]["http"]:
        if "route" in h:
            h["fault"] = ABORT
    resource = Resource("networking.istio.io/v1", "VirtualService", faulty["metadata"], faulty["spec"], "t", 0)
    edit = set_route_policy("fault", None, host_config([resource], SERVICE), subset="v2")
    doc = valid(edit, DR)
    assert [h.get("fault") for h in doc["spec"]["http"]] == [None, None, ABORT]
    assert [(c.before, c.after) for c in edit.changes] == [(ABORT, None)]
    nothing = set_route_policy("fault", None, config())
    assert nothing.document is None and nothing.notes == ("payment has no VirtualService: there is no fault to clear",)


def test_a_virtual_service_named_after_the_service_for_other_hosts_is_not_overwritten() -> None:
    with pytest.raises(EditRefused, match="VirtualService default/payment exists but is not for host payment"):
        set_route_policy("fault", ABORT, config(), name_taken=True)


# --------------------------------------------------------------------------------------------- destination rules


def test_a_destination_rule_is_created_with_the_topology_subsets() -> None:
    edit = set_traffic_policy("loadBalancer", {"simple": "ROUND_ROBIN"}, config())
    doc = valid(edit)
    assert doc["spec"] == {"host": "payment", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                          {"name": "v2", "labels": {"version": "v2"}}],
                           "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}}
    assert edit.created and edit.notes == ("created with the topology's subsets (v1, v2), which acted as its "
                                           "DestinationRule until now",)
    nothing = set_traffic_policy("outlierDetection", None, config())
    assert nothing.document is None


def test_the_rest_of_the_destination_rule_is_kept_and_overrides_are_named() -> None:
    rich = DR.replace("  - {name: v1, labels: {version: v1}}", """  - name: v1
    labels: {version: v1}
    trafficPolicy: {loadBalancer: {simple: RANDOM}}""") + """  trafficPolicy:
    connectionPool: {http: {http2MaxRequests: 10}}
    loadBalancer: {simple: LEAST_REQUEST}
    portLevelSettings:
    - port: {number: 8080}
      connectionPool: {tcp: {maxConnections: 5}}
"""
    edit = set_traffic_policy("loadBalancer", {"simple": "ROUND_ROBIN"}, config(rich))
    doc = valid(edit)
    policy = doc["spec"]["trafficPolicy"]
    assert policy["loadBalancer"] == {"simple": "ROUND_ROBIN"}
    assert policy["connectionPool"] == {"http": {"http2MaxRequests": 10}} and len(policy["portLevelSettings"]) == 1
    assert doc["spec"]["subsets"][0]["trafficPolicy"] == {"loadBalancer": {"simple": "RANDOM"}}
    assert [(c.before, c.after) for c in edit.changes] == [({"simple": "LEAST_REQUEST"}, {"simple": "ROUND_ROBIN"})]
    assert edit.notes == (
        "portLevelSettings for port 8080 replaces the DestinationRule-level policy for the service's calls, and "
        "has no loadBalancer: they get Istio's default loadBalancer, not this one",
        "subset v1 has its own loadBalancer (RANDOM): calls to v1 keep it (a subset's policy overrides the "
        "DestinationRule's)")
    cleared = valid(set_traffic_policy("loadBalancer", None, config(DR)))
    assert "trafficPolicy" not in cleared["spec"]  # an empty trafficPolicy is removed with its last block


def test_outlier_detection_as_the_verb_writes_it_is_valid() -> None:
    block = outlier_block("3", None, "5s", "30s", "50")
    assert block == {"consecutiveGatewayErrors": 3, "consecutive5xxErrors": 0, "interval": "5s",
                     "baseEjectionTime": "30s", "maxEjectionPercent": 50}
    doc = valid(set_traffic_policy("outlierDetection", block, config(DR)))
    assert doc["spec"]["trafficPolicy"] == {"outlierDetection": block}
    assert outlier_block(None, "7", None, None, None) == {"consecutiveGatewayErrors": 5, "consecutive5xxErrors": 7}


# --------------------------------------------------------------------------------------------- flags


@pytest.mark.parametrize(("text", "value"), [("30", 30), ("0.5", 0.5), ("0", 0), ("100", 100), ("12.25", 12.25)])
def test_percentages(text: str, value: float) -> None:
    assert percent(text, "--percent") == value


@pytest.mark.parametrize("text", ["150", "-1", "100.01", "nan", "inf", "abc", "0.00001"])
def test_bad_percentages(text: str) -> None:
    with pytest.raises(FlagError, match=rf"^--percent {text}: ") as e:
        percent(text, "--percent")
    assert not e.value.usage


def test_durations() -> None:
    assert duration("200ms", "--delay") == "200ms" and duration("1m30s", "--delay") == "1m30s"
    for text, why in (("-1s", "at least 1ms"), ("0s", "at least 1ms"), ("500us", "at least 1ms"),
                      ("1.0005s", "whole milliseconds"), ("soon", "not a duration"), ("10", "not a duration")):
        with pytest.raises(FlagError, match=rf"^--delay {text}: .*{why}"):
            duration(text, "--delay")


def test_abort_statuses() -> None:
    assert abort_status("UNAVAILABLE") == {"grpcStatus": "UNAVAILABLE"}
    assert abort_status("unavailable") == abort_status("Unavailable") == {"grpcStatus": "UNAVAILABLE"}
    assert abort_status("deadline-exceeded") == {"grpcStatus": "DEADLINE_EXCEEDED"}
    assert abort_status("503") == {"httpStatus": 503}
    with pytest.raises(FlagError, match="for gRPC status 14 give its name, UNAVAILABLE"):
        abort_status("14")
    with pytest.raises(FlagError, match="an HTTP status is from 200 to 599"):
        abort_status("600")
    with pytest.raises(FlagError, match="not a gRPC status name nor an HTTP status"):
        abort_status("BROKEN")


def test_retry_conditions() -> None:
    assert retry_on("unavailable,cancelled") == "unavailable,cancelled"
    assert retry_on("UNAVAILABLE, deadline_exceeded,503,5xx") == "unavailable,deadline-exceeded,503,5xx"
    with pytest.raises(FlagError, match="unknown retry condition 'sometimes'"):
        retry_on("unavailable,sometimes")
    with pytest.raises(FlagError, match="a comma too many"):
        retry_on("unavailable,")
    with pytest.raises(FlagError, match="unknown retry condition '999'"):
        retry_on("999")


def test_blocks_from_flags() -> None:
    assert fault_block("UNAVAILABLE", None, "30", None, None) == ABORT
    assert fault_block(None, "200ms", None, None, None) == {"delay": {"fixedDelay": "200ms",
                                                                      "percentage": {"value": 100}}}
    both = fault_block("503", "1s", "10", "2.5", None)
    assert both == {"delay": {"fixedDelay": "1s", "percentage": {"value": 10}},
                    "abort": {"httpStatus": 503, "percentage": {"value": 2.5}}}
    for args, message in (((None, None, "10", None, None), "give --abort"),
                          (("INTERNAL", None, None, None, "5"), "--delay-percent needs --delay"),
                          ((None, "1s", None, "5", None), "--abort-percent needs --abort")):
        with pytest.raises(FlagError, match=message) as e:
            fault_block(*args)
        assert e.value.usage
    assert retries_block("3", "unavailable", "200ms") == {"attempts": 3, "retryOn": "unavailable",
                                                          "perTryTimeout": "200ms"}
    assert retries_block("0", None, None) == {"attempts": 0}
    with pytest.raises(FlagError, match="--attempts 0 turns retries off"):
        retries_block("0", "unavailable", None)
    with pytest.raises(FlagError, match="--attempts -1: must be from 0"):
        retries_block("-1", None, None)
    assert lb_policy("round-robin") == lb_policy("ROUND_ROBIN") == "ROUND_ROBIN"
    with pytest.raises(FlagError, match="deprecated name for least-request"):
        lb_policy("least_conn")
    with pytest.raises(FlagError, match="--consecutive-errors 0: must be from 1"):
        outlier_block("0", None, None, None, None)


def test_blocks_from_flags_are_valid_istio() -> None:
    for field, block in (("fault", fault_block("503", "1s", "10", "2.5", None)),
                         ("retries", retries_block("3", "unavailable,cancelled,503", "200ms")),
                         ("retries", retries_block("0", None, None))):
        valid(set_route_policy(field, block, config(DR, CANARY)), DR)


# --------------------------------------------------------------------------------------------- words


def test_blocks_in_words() -> None:
    assert fault(None) == "-"
    assert fault(ABORT) == "abort UNAVAILABLE 30%"
    assert fault({"delay": {"fixedDelay": "200ms", "percentage": {"value": 0.5}}, "abort": {"httpStatus": 503}}) == \
        "delay 200ms 0.5%, abort HTTP 503 0% (no percentage)"
    assert fault({"delay": {"fixedDelay": "1s", "percent": 7}}) == "delay 1s 7%"
    assert retries(None) == "Istio's default (2 retries)"
    assert retries({"attempts": 0}) == "off (attempts: 0)"
    assert retries({"attempts": 1, "perTryTimeout": "1s", "backoff": "10ms"}) == \
        "1 retry on the default conditions, 1s per try, backoff: 10ms"
    assert policy_rows("loadBalancer", None, {"simple": "RANDOM"}) == [
        ["trafficPolicy.loadBalancer.simple", "default (LEAST_REQUEST)", "RANDOM"]]
    rows = policy_rows("outlierDetection", {"consecutive5xxErrors": 5, "minHealthPercent": 10},
                       {"consecutiveGatewayErrors": 3})
    assert rows == [["trafficPolicy.outlierDetection", "on", "on"],
                    ["  consecutiveGatewayErrors", "default (off)", "3"],
                    ["  consecutive5xxErrors", "5", "default (5)"],
                    ["  interval", "default (10s)", "default (10s)"],
                    ["  baseEjectionTime", "default (30s)", "default (30s)"],
                    ["  maxEjectionPercent", "default (10%)", "default (10%)"],
                    ["  minHealthPercent", "10", "-"]]

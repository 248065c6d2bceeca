"""Durations, hosts, names; the translator's normalised dict; the set-weight helper."""

from __future__ import annotations

from typing import Any

import pytest

from mesh_ctl.resources import InvalidConfig, load_documents, normalized, parse_duration, weights_virtual_service
from mesh_ctl.resources.names import (
    istio_duration_problem,
    k8s_name_problem,
    parse_duration_ns,
    resolve_host,
    wildcard_domain_problem,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("100ms", 0.1),
        ("1.5h", 5400.0),
        ("1m30s", 90.0),
        ("0.5s", 0.5),
        (".5s", 0.5),
        ("0", 0.0),
        ("-1s", -1.0),
        ("300us", 0.0003),
        ("1h2m3s4ms", 3723.004),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "1 s", "1sec", "s", "1.2.3s", "10d", "1e3s", "300000000h"])
def test_not_durations(text: str) -> None:
    assert parse_duration_ns(text) is None


def test_istio_duration_rules() -> None:
    assert istio_duration_problem("1ms") is None
    assert istio_duration_problem("999us") == "duration must be greater than 1ms"
    assert istio_duration_problem("1.0001s") == "only durations to ms precision are supported"


def test_hosts_and_names() -> None:
    assert resolve_host("payment", "default") == "payment.default.svc.cluster.local"
    assert resolve_host("payment.default", "x") == "payment.default"  # dotted names are taken as written
    assert resolve_host("*", "x") == "*"
    assert wildcard_domain_problem("*.example.com") is None
    # Istio's wording names the part after the first label.
    assert wildcard_domain_problem("a.*.com") == "domain name '*.com' invalid (label '*' invalid)"
    assert wildcard_domain_problem("example.123") == (
        "domain name '123' invalid (top level domain '123' cannot be all-numeric)"
    )
    assert k8s_name_problem("a" * 254) == "must be no more than 253 characters"
    assert k8s_name_problem("payment.v1") is None


def test_normalized_view() -> None:
    (vs,) = load_documents(
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: p}\n"
        "spec:\n  hosts: [p]\n  http:\n  - route: [{destination: {host: p}}]\n    mirror_percent: 5\n"
        "    timeout: null\n",
        "vs.yaml",
    )
    n = normalized(vs)
    assert n == {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "p", "namespace": "default", "labels": {}, "annotations": {}},
        "spec": {"hosts": ["p"], "http": [{"route": [{"destination": {"host": "p"}}], "mirrorPercent": 5}]},
    }
    assert vs.api_version == "networking.istio.io/v1alpha3"  # the document keeps what was written
    assert "mirror_percent" in vs.spec["http"][0]  # and normalized() did not change it


EXISTING: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "payment", "namespace": "default", "resourceVersion": "7", "uid": "u"},
    "spec": {
        "hosts": ["payment"],
        "http": [
            {
                "name": "canary",
                "match": [{"headers": {"x-canary": {"exact": "true"}}}],
                "route": [{"destination": {"host": "payment", "subset": "v2"}}],
            },
            {
                "name": "default",
                "timeout": "2s",
                "route": [
                    {"destination": {"host": "payment", "subset": "v1", "port": {"number": 8080}}, "weight": 100}
                ],
            },
        ],
    },
}


def test_weights_keep_everything_but_the_default_route() -> None:
    vs = weights_virtual_service("payment", "default", {"v1": 90, "v2": 10}, EXISTING, known_subsets={"v1", "v2"})
    assert vs["metadata"] == {"name": "payment", "namespace": "default"}
    assert vs["spec"]["http"][0] == EXISTING["spec"]["http"][0]
    assert vs["spec"]["http"][1] == {
        "name": "default",
        "timeout": "2s",
        "route": [
            {"destination": {"host": "payment", "subset": "v1", "port": {"number": 8080}}, "weight": 90},
            {"destination": {"host": "payment", "subset": "v2"}, "weight": 10},
        ],
    }
    assert EXISTING["spec"]["http"][1]["route"][0]["weight"] == 100  # the input is not modified


def test_weights_new_virtual_service() -> None:
    vs = weights_virtual_service("payment", "default", {"v2": 100})
    assert vs == {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "payment", "namespace": "default"},
        "spec": {
            "hosts": ["payment"],
            "http": [{"route": [{"destination": {"host": "payment", "subset": "v2"}, "weight": 100}]}],
        },
    }


@pytest.mark.parametrize(
    ("weights", "known", "reason"),
    [
        ({"v3": 10}, {"v1", "v2"}, "subset v3 not found in the DestinationRule of host payment (subsets: v1, v2)"),
        ({"v1": -5}, None, "a weight is a percentage from 0 to 100, got -5"),
        ({"v1": 150}, None, "a weight is a percentage from 0 to 100, got 150"),
        ({"v1": 150, "v2": 0}, None, "a weight is a percentage from 0 to 100, got 150"),
        ({"v1": 0, "v2": 0}, None, "all weights are 0: at least one subset must get traffic (Istio refuses a route "
                                   "whose total weight is 0)"),
        ({"V 1": 5}, None, "subset name is invalid: V 1"),
        ({"v1": 60, "v2": 30}, None, "the weights add up to 90 (60 + 30), not 100. Istio would accept them and give "
         "each subset its weight divided by the total (v1 66.7 %, v2 33.3 %); set-weight refuses them so that a "
         "typo cannot move traffic. Give weights that add up to 100, or pass --relative to mean the shares above"),
        ({"v1": 50}, None, "the weights add up to 50 (50), not 100. Istio would accept them and give each subset "
         "its weight divided by the total (v1 100 %); set-weight refuses them so that a typo cannot move traffic. "
         "Give weights that add up to 100, or pass --relative to mean the shares above"),
    ],
)
def test_weights_errors(weights: dict[str, int], known: set[str] | None, reason: str) -> None:
    with pytest.raises(InvalidConfig) as err:
        weights_virtual_service("payment", "default", weights, known_subsets=known)
    assert err.value.problems[0].reason == reason
    assert err.value.problems[0].path in ("weights", f"weights[{next(iter(weights))}]")


def test_relative_weights_are_what_istio_does() -> None:
    """--relative: any sum of weights from 0 to 100, each subset gets weight / total (Istio's rule)."""
    vs = weights_virtual_service("payment", "default", {"v1": 60, "v2": 30}, relative=True)
    assert [d["weight"] for d in vs["spec"]["http"][0]["route"]] == [60, 30]
    with pytest.raises(InvalidConfig):  # still 0 to 100 each
        weights_virtual_service("payment", "default", {"v1": 150, "v2": 30}, relative=True)

"""The demo's Istio YAML in ``examples/`` validates, alone and on top of the DestinationRule."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh_ctl.resources import load_path, validate_batch

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_the_demo_examples_are_all_there() -> None:
    assert {f.name for f in FILES} == {
        "destination-rule.yaml",
        "vs-50-50.yaml",
        "vs-100-v2.yaml",
        "vs-header-canary.yaml",
        "vs-mirror.yaml",
        "peer-authentication-strict.yaml",
        "authorization-policy-allow-client.yaml",
    }


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_example_validates_without_errors_or_warnings(path: Path) -> None:
    dr = {r.key: r for r in load_path(EXAMPLES / "destination-rule.yaml")}
    resources = load_path(path)
    report = validate_batch(resources, {} if path.name == "destination-rule.yaml" else dr)
    assert report.errors == []
    assert report.warnings == []
    for r in resources:
        assert r.namespace == "default"
        assert r.api_version in ("networking.istio.io/v1", "security.istio.io/v1")


def test_destination_rule_uses_least_request_and_the_two_subsets() -> None:
    (dr,) = load_path(EXAMPLES / "destination-rule.yaml")
    assert dr.spec["host"] == "payment"
    assert dr.spec["trafficPolicy"]["loadBalancer"] == {"simple": "LEAST_REQUEST"}
    assert [(s["name"], s["labels"]) for s in dr.spec["subsets"]] == [
        ("v1", {"version": "v1"}),
        ("v2", {"version": "v2"}),
    ]


def test_virtual_services_route_as_their_names_say() -> None:
    def routes(name: str) -> list[list[tuple[str, int | None]]]:
        (vs,) = load_path(EXAMPLES / name)
        return [[(d["destination"]["subset"], d.get("weight")) for d in h["route"]] for h in vs.spec["http"]]

    assert routes("vs-50-50.yaml") == [[("v1", 50), ("v2", 50)]]
    assert routes("vs-100-v2.yaml") == [[("v2", 100)]]
    assert routes("vs-header-canary.yaml") == [[("v2", None)], [("v1", None)]]
    (canary,) = load_path(EXAMPLES / "vs-header-canary.yaml")
    assert canary.spec["http"][0]["match"] == [{"headers": {"x-canary": {"exact": "true"}}}]
    (mirror,) = load_path(EXAMPLES / "vs-mirror.yaml")
    assert mirror.spec["http"][0]["mirror"] == {"host": "payment", "subset": "v2"}
    assert mirror.spec["http"][0]["mirrorPercentage"] == {"value": 100.0}


def test_the_whole_directory_is_refused_because_four_virtual_services_share_a_name() -> None:
    report = validate_batch(load_path(EXAMPLES))
    assert {e.path for e in report.errors} == {"metadata.name"}
    assert len(report.errors) == 3

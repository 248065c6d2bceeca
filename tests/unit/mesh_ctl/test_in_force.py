"""`mesh_ctl up` shows the configuration in force: the stored resources' effect, not the topology's 50/50
(issue 8.3: a canary VirtualService and STRICT mTLS from an earlier run were in force while the banner drew
the topology's split)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mesh_ctl.addressing import plan
from mesh_ctl.resources import load_documents
from mesh_ctl.runtime.in_force import in_force
from mesh_ctl.runtime.render import traffic_lines
from mesh_ctl.runtime.state import RunDir, set_store_aside
from mesh_ctl.store import ConfigStore
from mesh_ctl.topology import default_topology

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def docs(*names: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in names:
        out += [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]
    return out


STRICT = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
          "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}


def test_nothing_stored_means_the_topology_split_and_no_lines() -> None:
    t = default_topology()
    force = in_force(t, [])
    assert force.lines == () and force.splits == {}
    p = plan(t, probe=lambda _: True)
    assert traffic_lines(t, p, force=force) == traffic_lines(t, p)


def test_a_stored_canary_and_strict_mtls_are_what_the_banner_shows() -> None:
    t = default_topology()
    p = plan(t, probe=lambda _: True)
    stored = [*docs("destination-rule.yaml", "vs-100-v2.yaml"), STRICT]
    force = in_force(t, stored, outside_caller_target="payment-v1")
    assert force.split("client", t.service("payment")) == (("v2", 100),)
    lines = traffic_lines(t, p, force=force)
    assert [line.rsplit("[", 1)[1] for line in lines] == ["payment v1: 0%]", "payment v2: 100%]"]
    text = "\n".join(force.lines)
    assert force.lines[0].startswith("in force (the config store keeps what was applied across runs; "
                                     "`mesh_ctl up --fresh` starts without it): 3 Istio resources")
    assert "  VirtualService default/payment: payment -> v2 100%; the topology says v1 50%, v2 50%" in text
    assert "  mTLS STRICT for payment-v1, payment-v2, client (PeerAuthentication istio-system/default)" in text
    assert "so the client outside the mesh is refused by payment-v1" in text
    assert "DestinationRule default/payment: host payment, subsets v1, v2" in text


def test_header_routes_and_policies_are_named() -> None:
    t = default_topology()
    allow = docs("authorization-policy-allow-client.yaml")
    force = in_force(t, [*docs("destination-rule.yaml", "vs-header-canary.yaml"), *allow])
    text = "\n".join(force.lines)
    assert "(and 1 route with a match before it)" in text, text
    name = allow[0]["metadata"]["name"]
    assert f"authorization for payment-v1: AuthorizationPolicy default/{name} (ALLOW)" in text, text


def test_fresh_sets_the_store_aside_and_it_can_be_applied_back(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    assert set_store_aside(run_dir) is None  # nothing stored yet: nothing to do
    store = ConfigStore(tmp_path / "store")
    store.apply(load_documents(yaml.safe_dump_all([*docs("destination-rule.yaml", "vs-100-v2.yaml"), STRICT]),
                               "x.yaml"))
    kept = set_store_aside(run_dir)
    assert kept is not None and kept.name.startswith("store.before-fresh-") and not (tmp_path / "store").exists()
    back = load_documents((kept / "resources.yaml").read_text(), str(kept / "resources.yaml"))
    assert sorted((r.kind, r.name) for r in back) == [("DestinationRule", "payment"), ("PeerAuthentication", "default"),
                                                      ("VirtualService", "payment")]
    fresh = ConfigStore(tmp_path / "store")
    assert fresh.revision == 0 and fresh.list() == []
    assert fresh.apply(back).changed  # what was set aside applies back as it was


def test_a_resource_it_cannot_read_is_reported_not_raised() -> None:
    """The banner is a report: `up` goes on whatever the store holds."""
    odd = {"apiVersion": "networking.istio.io/v1", "kind": "Gateway", "metadata": {"name": "g", "namespace": "x"},
           "spec": {}}
    force = in_force(default_topology(), [odd])
    [line] = force.lines
    assert line.startswith("in force: 1 stored Istio resources, which could not be read here (") and not force.splits

"""Versions: deterministic per resource, so a change moves exactly the resources it touches."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from mesh_ctl.registry import Registry
from mesh_ctl.translate import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, index_resources
from tests.support.procs import REPO_ROOT
from tests.unit.translate.conftest import RICH, V1, dest, subsets_dr, virtual_service
from tests.unit.translate.helpers import proxyless, sidecar


def _split(w1: int, w2: int) -> list[dict[str, Any]]:
    return [virtual_service([{"name": "split", "route": [dest("v1", w1), dest("v2", w2)]}]), subsets_dr("v1", "v2")]


def test_translating_twice_gives_identical_versions(registry: Registry) -> None:
    for w in registry.workloads:
        a, b = sidecar(registry, _split(80, 20), w.name, w.namespace), sidecar(registry, _split(80, 20), w.name,
                                                                               w.namespace)
        assert a.versions == b.versions
        assert a.changed(b) == {}
        assert all(len(v) == 16 for names in a.versions.values() for v in names.values())
    assert proxyless(registry, _split(80, 20)).versions == proxyless(registry, _split(80, 20)).versions


def test_an_indexed_config_gives_the_same_result(registry: Registry) -> None:
    indexed = index_resources(_split(80, 20))
    assert sidecar(registry, indexed).versions == sidecar(registry, _split(80, 20)).versions  # type: ignore[arg-type]


def test_changing_only_weights_changes_only_the_route_configuration(registry: Registry) -> None:
    before, after = sidecar(registry, _split(80, 20)), sidecar(registry, _split(50, 50))
    assert after.changed(before) == {ROUTE_TYPE: {"virtualOutbound"}}
    for type_url in (LISTENER_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE):
        assert after.versions[type_url] == before.versions[type_url]
        assert after.type_version(type_url) == before.type_version(type_url)
    assert after.type_version(ROUTE_TYPE) != before.type_version(ROUTE_TYPE)
    # The servers' sidecars are not concerned at all.
    for name in ("payment-v1", "payment-v2"):
        assert sidecar(registry, _split(50, 50), name).versions == sidecar(registry, _split(80, 20), name).versions
    # A proxyless client: only its route configuration for payment.
    pl_before, pl_after = proxyless(registry, _split(80, 20)), proxyless(registry, _split(50, 50))
    assert pl_after.changed(pl_before) == {ROUTE_TYPE: {"outbound|8080||payment.default.svc.cluster.local"}}


def test_other_changes_move_what_they_touch(registry: Registry) -> None:
    base = sidecar(registry, _split(80, 20))
    lb = _split(80, 20)
    lb[1] = subsets_dr("v1", "v2", trafficPolicy={"loadBalancer": {"simple": "ROUND_ROBIN"}})
    changed = sidecar(registry, lb).changed(base)
    assert set(changed) == {CLUSTER_TYPE}
    assert len(changed[CLUSTER_TYPE]) == 3
    fewer = _split(80, 20)
    fewer[1] = subsets_dr("v1", "v2", "v3")
    changed = sidecar(registry, fewer).changed(base)
    assert changed == {CLUSTER_TYPE: {"outbound|8080|v3|payment.default.svc.cluster.local"},
                       ENDPOINT_TYPE: {"outbound|8080|v3|payment.default.svc.cluster.local"}}
    assert sidecar(registry, _split(80, 20)).changed(None)[CLUSTER_TYPE] >= {V1}


def test_versions_do_not_depend_on_the_process(registry: Registry, tmp_path: Any) -> None:
    """Hash seeds and dict orders differ between processes; versions must not (the control plane restarts)."""
    code = """
import json, sys
from pathlib import Path
from mesh_ctl.addressing import plan
from mesh_ctl.ca.files import CertFiles
from mesh_ctl.registry import Registry
from mesh_ctl.topology import topology_from_dict
from mesh_ctl.translate import translate_for_proxy
t = topology_from_dict(json.loads(sys.argv[1]))
certs = {k: CertFiles(*map(Path, v)) for k, v in json.loads(sys.argv[2]).items()}
r = Registry.from_topology(t, plan(t, probe=lambda _: True), certs)
pr = translate_for_proxy(r, json.loads(sys.argv[3]), r.workload("client", "default").node_id)
print(json.dumps({k: dict(v) for k, v in pr.versions.items()}))
"""
    certs = {w.name: [str(w.certs.cert_chain), str(w.certs.private_key), str(w.certs.root_cert)]
             for w in registry.workloads if w.certs is not None}
    resources = _split(70, 30)
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code, json.dumps(RICH), json.dumps(certs), json.dumps(resources)],
                             capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
                             env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)},
                             check=False)
        assert out.returncode == 0, out.stderr
        versions = json.loads(out.stdout)
        assert versions == {k: dict(v) for k, v in sidecar(registry, resources).versions.items()}

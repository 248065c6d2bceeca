"""The proof for proxyless: a real grpcio client (``xds:///`` target, bootstrap from ``grpc_xds_bootstrap``)
fed our translation over ADS accepts every resource (no NACK) and routes real calls to two real
payment-server processes by the VirtualService's weights and header match.

Processes: two payment servers and the client, all on loopback, stopped by the ``procs`` fixture; the ADS
stub runs in this process. Bounded: the client has a 20 s deadline for its first call, 5 s for the others,
and is waited for at most 90 s.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from mesh_ctl.addressing import plan
from mesh_ctl.registry import Registry
from mesh_ctl.topology import default_topology
from mesh_ctl.translate import grpc_xds_bootstrap, translate_for_proxy
from tests.support.procs import ProcessGroup, free_port, wait_for_port
from tests.unit.translate.ads_stub import AdsStub, serve
from tests.unit.translate.conftest import dest, subsets_dr, virtual_service
from tests.unit.translate.grpc_xds_client import INJECTED
from tests.unit.translate.test_translate_pyproxy import EVERYTHING

BASIC = [
    virtual_service([
        {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "true"}}}], "route": [dest("v2")]},
        {"name": "split", "route": [dest("v1", 80), dest("v2", 20)], "timeout": "10s"},
    ]),
    subsets_dr("v1", "v2"),
]
FAULTS = [
    virtual_service([
        {"name": "abort", "match": [{"headers": {"x-fault": {"exact": "abort"}}}], "route": [dest("v1")],
         "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}}},
        {"name": "half", "match": [{"headers": {"x-fault": {"exact": "half"}}}], "route": [dest("v1")],
         "fault": {"abort": {"grpcStatus": "RESOURCE_EXHAUSTED", "percentage": {"value": 50}}}},
        {"name": "split", "route": [dest("v1", 80), dest("v2", 20)]},
    ]),
    subsets_dr("v1", "v2"),
]
HALF = f"error:RESOURCE_EXHAUSTED:{INJECTED}"
FQDN_TARGET = "xds:///payment.default.svc.cluster.local:8080"


def _half_aborted(counts: dict[str, int]) -> bool:
    """400 calls, half aborted: 200 +- 50 (5 standard deviations of Binomial(400, 0.5), sd 10)."""
    return set(counts) == {"v1", HALF} and sum(counts.values()) == 400 and abs(counts[HALF] - 200) <= 50


Expected = dict[str, int] | Callable[[dict[str, int]], bool] | None
# (resources, client call plans, expected replies per plan (None: 80/20 over v1/v2 within 5 points)).
SCENARIOS: dict[str, tuple[list[dict[str, Any]], list[str], list[Expected]]] = {
    "weights and header match": (BASIC, ["xds:///payment.default.svc.cluster.local:8080:1000",
                                         "xds:///payment:8080:100:x-canary=true"], [None, {"v2": 100}]),
    # Everything the translator emits (retries, mirrors, header mutations, regexes, inverted matches, a direct
    # response, circuit breakers...): grpcio must take it all (it ignores what it does not implement).
    "every feature": (EVERYTHING, ["xds:///payment.default.svc.cluster.local:8080:1000"], [None]),
    # grpcio runs the fault filter Istio gives proxyless clients (gRFC A33) with our per-route HTTPFault.
    "fault injection": (FAULTS, [f"{FQDN_TARGET}:20:x-fault=abort", f"{FQDN_TARGET}:400:x-fault=half",
                                 f"{FQDN_TARGET}:1000"],
                        [{f"error:UNAVAILABLE:{INJECTED}": 20}, _half_aborted, None]),
}


def _registry_with_free_ports() -> Registry:
    """The default mesh placed as ``mesh_ctl up`` would (own loopback addresses where the OS allows), but
    with app ports the kernel says are free, so a mesh running beside the test does not clash."""
    t = default_topology()
    reg = Registry.from_topology(t, plan(t))
    workloads = tuple(dataclasses.replace(w, app_port=free_port(w.address)) if w.app_port else w
                      for w in reg.workloads)
    return dataclasses.replace(reg, workloads=workloads)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_grpcio_accepts_the_translation_and_routes_by_it(procs: ProcessGroup, scenario: str) -> None:
    resources, plans, expected = SCENARIOS[scenario]
    registry = _registry_with_free_ports()
    for w in registry.workloads:
        if w.app_port is not None:
            proc = procs.python(w.name, "payment_service.server", "--version", w.labels["version"],
                                "--listen", f"{w.address}:{w.app_port}", "--name", w.name, "--grace", "0")
            wait_for_port(w.address, w.app_port, timeout=20, proc=proc.popen)

    def resources_for(node: Any) -> Any:
        return translate_for_proxy(registry, resources, node)

    stub = AdsStub(resources_for)
    ads_port = free_port()
    server = serve(stub, f"127.0.0.1:{ads_port}")
    try:
        bootstrap = grpc_xds_bootstrap(f"127.0.0.1:{ads_port}", "proxyless-test-client", "default")
        client = procs.python("client", "tests.unit.translate.grpc_xds_client", *plans,
                              env={"GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(bootstrap)})
        assert client.popen.wait(timeout=90) == 0, procs.logs()
        result = json.loads(client.output().strip().splitlines()[-1])
    finally:
        server.stop(grace=None)
    assert stub.nacks == [], stub.nacks
    for run, want in zip(result["runs"], expected, strict=True):
        counts = run["counts"]
        if callable(want):
            assert want(counts), result
            continue
        if want is not None:
            assert counts == want, result
            continue
        assert set(counts) == {"v1", "v2"}, result
        assert sum(counts.values()) == 1000
        assert abs(counts["v1"] / 10 - 80) <= 5, counts  # 1000 calls: 5 points is about 4 standard deviations
    # grpcio asked for our names: the listener it dials, the route configuration and the subset clusters.
    asked = {name for _, names in stub.requests for name in names}
    assert {"payment.default.svc.cluster.local:8080",
            "outbound|8080||payment.default.svc.cluster.local",
            "outbound|8080|v1|payment.default.svc.cluster.local",
            "outbound|8080|v2|payment.default.svc.cluster.local"} <= asked

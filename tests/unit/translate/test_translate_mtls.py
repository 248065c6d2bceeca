"""PeerAuthentication -> inbound filter chains, precedence, portLevelMtls, SDS references and the client's
choice of mTLS or plaintext (auto-mTLS), checked on the translation and with pyproxy's own translator and
filter-chain selection (the client cluster's ALPN against the server listener's chains)."""

from __future__ import annotations

from typing import Any

import pytest

from mesh_ctl.registry import Registry
from mesh_ctl.translate import CLUSTER_TYPE, LISTENER_TYPE, ProxyResources, TranslationError, check_resource
from mesh_ctl.translate.istio import index_resources
from pyproxy.config import model as m
from pyproxy.config.errors import Problems
from pyproxy.config.material import MaterialStore
from pyproxy.config.translate.clusters import cluster as pyproxy_cluster
from pyproxy.config.translate.common import Ctx
from pyproxy.config.translate.listeners import listener as pyproxy_listener
from pyproxy.io.sniff import ClientHelloInfo
from pyproxy.proxy.downstream import select_filter_chain
from tests.unit.translate.conftest import ALL, FQDN, V1, V2, subsets_dr
from tests.unit.translate.helpers import as_dict, clusters, pyproxy_problems, sidecar

MESH_ALPNS = ["istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2"]
SDS = {"ads": {}, "resource_api_version": "V3"}


def pa(mode: str | int | None, namespace: str = "istio-system", name: str = "default",
       selector: dict[str, str] | None = None, ports: dict[Any, Any] | None = None,
       created: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    if selector is not None:
        spec["selector"] = {"matchLabels": selector}
    if ports is not None:
        spec["portLevelMtls"] = ports
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created is not None:
        meta["creationTimestamp"] = created
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": meta, "spec": spec}


def inbound(pr: ProxyResources) -> dict[str, Any]:
    return as_dict(pr.of(LISTENER_TYPE)["virtualInbound"])


def mode_of(registry: Registry, resources: list[dict[str, Any]], workload: str = "payment-v1",
            namespace: str = "default") -> str:
    """The mode the inbound listener's chains implement."""
    lst = inbound(sidecar(registry, resources, workload, namespace))
    transports = [(c["filter_chain_match"].get("transport_protocol"), "transport_socket" in c)
                  for c in lst["filter_chains"]]
    return {(("tls", True),): "STRICT", (("tls", True), ("raw_buffer", False)): "PERMISSIVE",
            (("raw_buffer", False),): "DISABLE"}[tuple(transports)]


# --------------------------------------------------------------------------------------------- chains


def test_permissive_is_the_default_with_tls_inspector_and_two_chains(registry: Registry) -> None:
    lst = inbound(sidecar(registry, [], "payment-v1"))
    assert lst["listener_filters"] == [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]
    mtls, plain = lst["filter_chains"]
    assert (mtls["name"], plain["name"]) == ("inbound|8080||", "inbound|8080||-plaintext")  # unique names
    assert mtls["filter_chain_match"] == {"transport_protocol": "tls", "application_protocols": MESH_ALPNS}
    assert plain["filter_chain_match"] == {"transport_protocol": "raw_buffer"}
    assert "transport_socket" not in plain
    assert mtls["filters"] == plain["filters"]  # both route to the local app
    tls = mtls["transport_socket"]["typed_config"]
    assert tls["@type"].endswith("DownstreamTlsContext") and tls["require_client_certificate"] is True
    common = tls["common_tls_context"]
    assert common["tls_certificate_sds_secret_configs"] == [{"name": "default", "sds_config": SDS}]
    assert common["combined_validation_context"] == {
        "default_validation_context": {"match_typed_subject_alt_names": [
            {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}]},
        "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": SDS}}
    assert common["alpn_protocols"] == ["h2", "http/1.1"]
    assert common["tls_params"]["tls_minimum_protocol_version"] == "TLSv1_2"
    assert common["tls_params"]["tls_maximum_protocol_version"] == "TLSv1_3"


def test_strict_is_one_tls_chain(registry: Registry) -> None:
    lst = inbound(sidecar(registry, [pa("STRICT")], "payment-v1"))
    (chain,) = lst["filter_chains"]
    assert chain["filter_chain_match"] == {"transport_protocol": "tls"}
    assert chain["transport_socket"]["typed_config"]["require_client_certificate"] is True
    assert len(lst["listener_filters"]) == 1


def test_disable_is_one_plaintext_chain(registry: Registry) -> None:
    lst = inbound(sidecar(registry, [pa("DISABLE")], "payment-v1"))
    (chain,) = lst["filter_chains"]
    assert chain["filter_chain_match"] == {"transport_protocol": "raw_buffer"}
    assert "transport_socket" not in chain and "listener_filters" not in lst


def test_files_mode_uses_the_workload_files_on_the_inbound_side(registry: Registry) -> None:
    w = registry.workload("payment-v1", "default")
    assert w is not None and w.certs is not None
    lst = inbound(sidecar(registry, [pa("STRICT")], "payment-v1", tls="files"))
    common = lst["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert common["tls_certificates"][0]["private_key"] == {"filename": str(w.certs.private_key)}
    assert common["validation_context"]["trusted_ca"] == {"filename": str(w.certs.root_cert)}


def _pyproxy(pr: ProxyResources, material: MaterialStore) -> tuple[dict[str, m.Listener], dict[str, m.Cluster]]:
    ctx = Ctx(problems=Problems(), material=material)
    listeners = {n: pyproxy_listener(ctx, p, n) for n, p in pr.of(LISTENER_TYPE).items()}
    cs = {n: pyproxy_cluster(ctx, p, n) for n, p in pr.of(CLUSTER_TYPE).items()}
    assert list(ctx.problems) == []
    return ({n: v for n, v in listeners.items() if v is not None}, {n: v for n, v in cs.items() if v is not None})


# (mode, what connects) -> does a chain take it, and does it terminate TLS?
CONNECTIONS = {
    "client sidecar (mTLS, Istio ALPN)": (True, ("istio-peer-exchange", "istio", "h2")),
    "plaintext h2c": (False, ()),
    "TLS without Istio ALPN": (True, ("h2",)),
}
EXPECTED_CHAINS = {
    "STRICT": {"client sidecar (mTLS, Istio ALPN)": "tls", "plaintext h2c": None, "TLS without Istio ALPN": "tls"},
    "PERMISSIVE": {"client sidecar (mTLS, Istio ALPN)": "tls", "plaintext h2c": "plain",
                   "TLS without Istio ALPN": None},
    "DISABLE": {"client sidecar (mTLS, Istio ALPN)": None, "plaintext h2c": "plain", "TLS without Istio ALPN": None},
}


@pytest.mark.parametrize("mode", ["STRICT", "PERMISSIVE", "DISABLE"])
def test_pyproxy_selects_the_chains_as_istio_does(registry: Registry, material: MaterialStore, mode: str) -> None:
    """pyproxy's own filter-chain selection on the translated listener, for what may connect to it."""
    listeners, _ = _pyproxy(sidecar(registry, [pa(mode)], "payment-v1"), material)
    lst = listeners["virtualInbound"]
    assert lst.tls_inspector == (mode != "DISABLE")
    for what, (is_tls, alpn) in CONNECTIONS.items():
        chain = select_filter_chain(lst, lst.address.port, is_tls, ClientHelloInfo(None, alpn) if is_tls else None)
        got = None if chain is None else ("tls" if chain.tls is not None else "plain")
        assert got == EXPECTED_CHAINS[mode][what], (mode, what)
        if chain is not None and chain.tls is not None:
            assert chain.tls.require_client_certificate
            assert chain.tls.certificates[0].sds_name == "default"
            assert chain.tls.validation is not None and chain.tls.validation.sds_name == "ROOTCA"


def test_the_client_clusters_alpn_selects_the_servers_mtls_chain(registry: Registry, material: MaterialStore) -> None:
    _, cs = _pyproxy(sidecar(registry, []), material)
    upstream = cs[V1].tls
    assert upstream is not None and upstream.sni == f"outbound_.8080_.v1_.{FQDN}"
    listeners, _ = _pyproxy(sidecar(registry, [], "payment-v1"), material)
    lst = listeners["virtualInbound"]
    chain = select_filter_chain(lst, lst.address.port, True, ClientHelloInfo(upstream.sni, upstream.alpn_protocols))
    assert chain is not None and chain.tls is not None
    # ...and the two sides agree on h2.
    assert "h2" in upstream.alpn_protocols and chain.tls.alpn_protocols[0] == "h2"


# --------------------------------------------------------------------------------------------- precedence

LATER = "2026-01-02T00:00:00Z"
EARLIER = "2026-01-01T00:00:00Z"
V1_LABELS = {"app": "payment", "version": "v1"}
PRECEDENCE: list[tuple[str, list[dict[str, Any]], dict[tuple[str, str], str]]] = [
    ("nothing: PERMISSIVE", [], {("payment-v1", "default"): "PERMISSIVE", ("ledger-1", "billing"): "PERMISSIVE"}),
    ("mesh-wide", [pa("STRICT")], {("payment-v1", "default"): "STRICT", ("ledger-1", "billing"): "STRICT"}),
    ("namespace beats mesh", [pa("STRICT"), pa("DISABLE", "default")],
     {("payment-v1", "default"): "DISABLE", ("ledger-1", "billing"): "STRICT"}),
    ("namespace UNSET inherits the mesh", [pa("STRICT"), pa("UNSET", "default")],
     {("payment-v1", "default"): "STRICT"}),
    ("no mtls at all is UNSET", [pa("DISABLE"), pa(None, "default")], {("payment-v1", "default"): "DISABLE"}),
    ("workload beats namespace", [pa("STRICT", "default"), pa("PERMISSIVE", "default", "v1", V1_LABELS)],
     {("payment-v1", "default"): "PERMISSIVE", ("payment-v2", "default"): "STRICT"}),
    ("workload UNSET inherits", [pa("DISABLE", "default"), pa("UNSET", "default", "v1", V1_LABELS)],
     {("payment-v1", "default"): "DISABLE"}),
    ("a selector that does not match", [pa("STRICT", "default", "x", {"app": "nope"})],
     {("payment-v1", "default"): "PERMISSIVE"}),
    ("a selector in the root namespace applies to nothing", [pa("STRICT", selector={"app": "payment"})],
     {("payment-v1", "default"): "PERMISSIVE"}),
    ("a namespace policy elsewhere", [pa("STRICT", "billing")],
     {("payment-v1", "default"): "PERMISSIVE", ("ledger-1", "billing"): "STRICT"}),
    ("empty matchLabels is namespace-wide", [pa("STRICT", "default", selector={})],
     {("payment-v1", "default"): "STRICT"}),
    ("the oldest mesh policy wins", [pa("DISABLE", name="b", created=LATER), pa("STRICT", name="a", created=EARLIER)],
     {("payment-v1", "default"): "STRICT"}),
    ("equal times: the first stored wins", [pa("DISABLE", "default", "b", created=EARLIER),
                                            pa("STRICT", "default", "a", created=EARLIER)],
     {("payment-v1", "default"): "DISABLE"}),
    ("the oldest workload policy wins", [pa("STRICT", "default", "new", V1_LABELS, created=LATER),
                                         pa("DISABLE", "default", "old", {"app": "payment"}, created=EARLIER)],
     {("payment-v1", "default"): "DISABLE", ("payment-v2", "default"): "DISABLE"}),
    ("port level beats the workload mode", [pa("STRICT", "default", "v1", V1_LABELS, {8080: {"mode": "DISABLE"}})],
     {("payment-v1", "default"): "DISABLE"}),
    ("port level for another port", [pa("STRICT", "default", "v1", V1_LABELS, {"9999": {"mode": "DISABLE"}})],
     {("payment-v1", "default"): "STRICT"}),
    ("port level UNSET inherits the workload's", [pa("DISABLE"), pa(None, "default", "v1", V1_LABELS,
                                                                     {"8080": {"mode": "UNSET"}})],
     {("payment-v1", "default"): "DISABLE"}),
    ("port level STRICT under a DISABLE mesh", [pa("DISABLE"), pa(None, "default", "v1", V1_LABELS,
                                                                   {8080: {"mode": "STRICT"}})],
     {("payment-v1", "default"): "STRICT", ("payment-v2", "default"): "DISABLE"}),
]


@pytest.mark.parametrize(("resources", "expected"), [c[1:] for c in PRECEDENCE], ids=[c[0] for c in PRECEDENCE])
def test_scope_and_precedence(registry: Registry, resources: list[dict[str, Any]],
                              expected: dict[tuple[str, str], str]) -> None:
    for (workload, namespace), mode in expected.items():
        assert mode_of(registry, resources, workload, namespace) == mode, (workload, namespace)


def test_the_root_namespace_is_configurable(registry: Registry) -> None:
    resources = [pa("STRICT", "mesh-root"), pa("DISABLE", "istio-system")]
    istio = index_resources(resources, root_namespace="mesh-root")
    assert istio.mtls("default", {"app": "payment"}).mode == "STRICT"  # istio-system is a plain namespace now
    assert istio.mtls("istio-system", {}).mode == "DISABLE"
    assert index_resources(resources).mtls("default", {}).mode == "DISABLE"


# --------------------------------------------------------------------------------------------- client side


def _tls_clusters(registry: Registry, resources: list[dict[str, Any]]) -> dict[str, bool]:
    pr = sidecar(registry, resources)
    return {n: "transport_socket" in c for n, c in clusters(pr).items() if n.endswith(FQDN)}


CLIENT: list[tuple[str, list[dict[str, Any]], dict[str, bool]]] = [
    ("default: mTLS (PERMISSIVE servers)", [], {ALL: True, V1: True, V2: True}),
    ("STRICT servers: mTLS", [pa("STRICT")], {ALL: True, V1: True, V2: True}),
    ("DISABLE servers: plaintext", [pa("DISABLE", "default")], {ALL: False, V1: False, V2: False}),
    ("only v2 DISABLE: v2 plaintext, the mixed service cluster mTLS", [
        pa("DISABLE", "default", "v2", {"version": "v2"})], {ALL: True, V1: True, V2: False}),
    ("port-level DISABLE on the service port", [pa("STRICT", "default", "p", {"app": "payment"},
                                                   {8080: {"mode": "DISABLE"}})], {ALL: False, V1: False}),
    ("DestinationRule DISABLE beats auto-mTLS", [pa("STRICT"), subsets_dr("v1", trafficPolicy={
        "tls": {"mode": "DISABLE"}})], {ALL: False, V1: False}),
    ("DestinationRule ISTIO_MUTUAL beats auto-mTLS", [pa("DISABLE"), subsets_dr("v1", trafficPolicy={
        "tls": {"mode": "ISTIO_MUTUAL"}})], {ALL: True, V1: True}),
    ("a subset's DISABLE", [subsets_dr("v1", "v2", subsets=[
        {"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": {"tls": {"mode": "DISABLE"}}},
        {"name": "v2", "labels": {"version": "v2"}}])], {ALL: True, V1: False, V2: True}),
    ("a subset without endpoints follows the namespace", [pa("DISABLE", "default"), subsets_dr("v1", "v9")],
     {V1: False, f"outbound|8080|v9|{FQDN}": False}),
    ("a subset without endpoints ignores workload policies", [pa("DISABLE", "default", "x", {"app": "payment"}),
                                                              subsets_dr("v1", "v9")],
     {V1: False, f"outbound|8080|v9|{FQDN}": True}),
]


@pytest.mark.parametrize(("resources", "expected"), [c[1:] for c in CLIENT], ids=[c[0] for c in CLIENT])
def test_client_side_tls_decisions(registry: Registry, resources: list[dict[str, Any]],
                                   expected: dict[str, bool]) -> None:
    got = _tls_clusters(registry, resources)
    assert {n: got[n] for n in expected} == expected


def test_mixed_endpoints_are_reported(registry: Registry) -> None:
    pr = sidecar(registry, [pa("DISABLE", "default", "v2", {"version": "v2"})])
    (warning,) = pr.warnings
    assert warning.startswith(f"{ALL}: PeerAuthentication disables mTLS on default/payment-v2")


@pytest.mark.parametrize("resources", [[pa("STRICT")], [pa("DISABLE", "default")],
                                       [pa("STRICT", "default", "v1", V1_LABELS, {8080: {"mode": "PERMISSIVE"}})]])
def test_every_mode_is_accepted_by_pyproxy(registry: Registry, material: MaterialStore,
                                           resources: list[dict[str, Any]]) -> None:
    for w in registry.workloads:
        for tls in ("sds", "files"):
            _, others = pyproxy_problems(sidecar(registry, resources, w.name, w.namespace, tls=tls), material)
            assert others == [], (w.name, tls)


# --------------------------------------------------------------------------------------------- check


@pytest.mark.parametrize("resource", [
    pa("STRICT"), pa("permissive", "default"), pa(None, "default", "x", {"app": "a"}, {8080: {"mode": "DISABLE"}}),
    pa(3, "default"), pa("DISABLE", "default", "y", {"app": "b"}, {"80": {}}),
])
def test_valid_peer_authentications_pass(resource: dict[str, Any]) -> None:
    check_resource(resource)


@pytest.mark.parametrize(("resource", "path", "words"), [
    (pa("MAYBE"), "spec.mtls.mode", "unknown mTLS mode"),
    (pa("STRICT", "default", "x", {"app": "a"}, {"http": {"mode": "STRICT"}}), "spec.portLevelMtls.http",
     "expected an integer"),
    (pa("STRICT", "default", "x", {"app": "a"}, {70000: {"mode": "STRICT"}}), "spec.portLevelMtls.70000",
     "must be in"),
    (pa("STRICT", "default", "x", None, {8080: {"mode": "STRICT"}}), "spec.portLevelMtls", "needs a selector"),
    ({**pa("STRICT"), "spec": {"mtls": {"mode": "STRICT"}, "targetRef": {"kind": "Service"}}}, "spec.targetRef",
     "selector"),
])
def test_invalid_peer_authentications_are_refused(resource: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(TranslationError) as info:
        check_resource(resource)
    assert info.value.path == path and words in info.value.reason

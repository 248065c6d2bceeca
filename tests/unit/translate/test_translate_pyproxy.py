"""Everything translated is accepted by pyproxy's own translator, references resolve within what one proxy
gets, and a mesh without Istio resources is configured like ``mesh_ctl up``'s static bootstraps (static
bootstraps take certificate files, so those comparisons translate with ``tls="files"``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import json_format

from mesh_ctl.addressing import plan
from mesh_ctl.bootstrap import build_bootstraps
from mesh_ctl.registry import Registry
from mesh_ctl.topology import default_topology
from mesh_ctl.translate import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, ProxyResources
from mesh_ctl.translate.static import static_bootstrap
from pyproxy.config import model as m
from pyproxy.config.material import MaterialStore
from pyproxy.config.translate import translate_bootstrap
from tests.unit.translate.conftest import dest, destination_rule, virtual_service
from tests.unit.translate.helpers import pyproxy_problems, sidecar

# A bit of everything the translator emits, at once.
EVERYTHING = [
    virtual_service([
        {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "true"}}, "ignoreUriCase": True,
                                      "method": {"exact": "POST"}, "scheme": {"prefix": "http"},
                                      "statPrefix": "canary", "sourceLabels": {"app": "client"}},
                                     {"withoutHeaders": {"x-stable": {}}, "uri": {"regex": "/payment\\..*/Get.*"}}],
         "route": [dest("v3")], "timeout": "3s", "retries": {"attempts": 5, "retryOn": "unavailable,503",
                                                             "perTryTimeout": "1s", "backoff": "10ms"}},
        {"name": "refunds", "match": [{"uri": {"exact": "/payment.PaymentService/Refund"},
                                       "authority": {"prefix": "payment"}}],
         "route": [dest("v2", headers={"request": {"set": {"x-route": "refunds"}}})],
         "headers": {"response": {"add": {"x-mesh": "minimesh"}, "remove": ["x-internal"]}},
         "rewrite": {"authority": "payment.default.svc.cluster.local"},
         "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 0.5}},
                   "delay": {"fixedDelay": "20ms", "percentage": {"value": 1}}}},
        {"name": "legacy", "match": [{"uri": {"prefix": "/legacy."}}],
         "directResponse": {"status": 404, "body": {"string": "gone"}}},
        {"name": "split", "route": [dest("v1", 80, headers={"response": {"set": {"x-subset": "v1"}}}),
                                    dest("v2", 20)],
         "mirror": {"host": "audit"}, "mirrorPercentage": {"value": 10},
         "mirrors": [{"destination": {"host": "payment", "subset": "v3"}, "percentage": {"value": 1.5}}],
         "retries": {"attempts": 0}},
    ]),
    destination_rule({
        "trafficPolicy": {
            "loadBalancer": {"simple": "ROUND_ROBIN"},
            "connectionPool": {"tcp": {"maxConnections": 100, "connectTimeout": "2s", "idleTimeout": "10m"},
                               "http": {"http2MaxRequests": 1000, "maxRetries": 10, "maxRequestsPerConnection": 100,
                                        "maxConcurrentStreams": 128}},
            "outlierDetection": {"consecutive5xxErrors": 3, "consecutiveGatewayErrors": 2, "interval": "2s",
                                 "baseEjectionTime": "15s", "maxEjectionPercent": 50, "minHealthPercent": 10},
        },
        "subsets": [
            {"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}}},
            {"name": "v2", "labels": {"version": "v2"},
             "trafficPolicy": {"connectionPool": {"http": {"useClientProtocol": True}}}},
            {"name": "v3", "labels": {"version": "v3"}, "trafficPolicy": {"outlierDetection": {
                "splitExternalLocalOriginErrors": True, "consecutiveLocalOriginFailures": 3}}},
        ],
    }),
    destination_rule({"trafficPolicy": {"tls": {"mode": "DISABLE"}}}, name="audit", host="audit"),
]

# minimesh's opt-in gRPC trailers behaviours: route metadata that pyproxy validates.
EVERYTHING[0]["metadata"]["annotations"] = {"minimesh.io/grpc-status-in-trailers": "retry,outlier"}

SCENARIOS = {"no resources": [], "everything": EVERYTHING}


def _consistency_problems(pr: ProxyResources) -> list[str]:
    """go-control-plane's Snapshot.Consistent(), for one proxy: every RDS name a listener names, every cluster
    a route names and every EDS name a cluster names is in what this proxy gets; nothing is left over."""
    problems = []
    routes = pr.of(ROUTE_TYPE)
    wanted_routes = set()
    for listener in pr.of(LISTENER_TYPE).values():
        for chain in listener.filter_chains:
            for f in chain.filters:
                hcm = hcm_pb2.HttpConnectionManager()
                assert f.typed_config.Unpack(hcm)
                if hcm.HasField("rds"):
                    wanted_routes.add(hcm.rds.route_config_name)
                    assert hcm.rds.config_source.HasField("ads")
    problems += [f"listener needs route {n}" for n in wanted_routes - routes.keys()]
    problems += [f"route {n} is pushed but unused" for n in routes.keys() - wanted_routes]
    for name, rc in routes.items():
        for vh in rc.virtual_hosts:
            for r in vh.routes:
                if not r.HasField("route"):
                    continue
                named = [r.route.cluster] if r.route.cluster else [c.name for c in r.route.weighted_clusters.clusters]
                named += [mp.cluster for mp in r.route.request_mirror_policies]
                problems += [f"route {name}/{r.name} names unknown cluster {c}" for c in named
                             if c not in pr.of(CLUSTER_TYPE)]
    eds = {c.eds_cluster_config.service_name for c in pr.of(CLUSTER_TYPE).values() if c.type == c.EDS}
    problems += [f"cluster needs EDS {n}" for n in eds - pr.of(ENDPOINT_TYPE).keys()]
    problems += [f"EDS {n} pushed but unused" for n in pr.of(ENDPOINT_TYPE).keys() - eds]
    return problems


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_resource_is_accepted_by_pyproxy(registry: Registry, material: MaterialStore, scenario: str) -> None:
    for w in registry.workloads:
        pr = sidecar(registry, SCENARIOS[scenario], w.name, w.namespace)
        # Refusals allowed: only the xDS plumbing (rds, EDS) of a pyproxy whose ADS client is not in yet.
        _, others = pyproxy_problems(pr, material)
        assert others == [], f"{w.name}: pyproxy refuses {others}"
        assert _consistency_problems(pr) == [], w.name
        assert pr.warnings == (), w.name


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_resolved_configuration_is_a_valid_pyproxy_snapshot(registry: Registry, material: MaterialStore,
                                                          scenario: str) -> None:
    """Folded the way an ADS client resolves rds/EDS, each sidecar's resources make a bootstrap pyproxy runs,
    cross-resource consistency check included."""
    for w in registry.workloads:
        pr = sidecar(registry, SCENARIOS[scenario], w.name, w.namespace, tls="files")
        snap = translate_bootstrap(static_bootstrap(pr, registry), material=material)
        assert set(snap.listeners) == set(pr.of(LISTENER_TYPE))
        assert set(snap.clusters) == set(pr.of(CLUSTER_TYPE))
        assert snap.node.id == w.node_id and snap.admin.address is not None


def test_everything_translates_to_the_intended_pyproxy_model(registry: Registry, material: MaterialStore) -> None:
    pr = sidecar(registry, EVERYTHING, tls="files")
    snap = translate_bootstrap(static_bootstrap(pr, registry), material=material)
    rc = snap.listeners["virtualOutbound"].filter_chains[0].hcm.route_config
    assert rc is not None
    (vh,) = rc.virtual_hosts
    canary_a, canary_b, refunds, legacy, split = vh.routes
    assert [r.name for r in vh.routes] == ["canary", "canary", "refunds", "legacy", "split"]
    assert canary_a.match.case_sensitive is False
    assert isinstance(canary_a.action, m.RouteAction)
    assert canary_a.action.timeout == 3.0 and canary_a.action.max_grpc_timeout == 3.0
    assert canary_a.action.max_stream_duration == 0.0
    assert canary_a.action.retry_policy == m.RetryPolicy(
        retry_on=frozenset({"unavailable", "retriable-status-codes"}), num_retries=5, per_try_timeout=1.0,
        retriable_status_codes=frozenset({503}), base_interval=0.01, max_interval=0.1, retry_previous_hosts=True,
        host_selection_retry_max_attempts=5)
    assert canary_b.match.headers[0].invert_match
    assert isinstance(refunds.action, m.RouteAction)
    assert refunds.action.host_rewrite_literal == "payment.default.svc.cluster.local"
    assert [h.key for h in refunds.request_headers.add] == ["x-route"]
    assert refunds.response_headers.remove == frozenset({"x-internal"})
    assert legacy.action == m.DirectResponse(status=404, body="gone")
    assert isinstance(split.action, m.RouteAction)
    assert [(c.name.split("|")[2], c.weight) for c in split.action.weighted_clusters] == [("v1", 80), ("v2", 20)]
    assert split.action.retry_policy is None
    assert split.action.mirrors == (
        m.MirrorPolicy("outbound|9090||audit.default.svc.cluster.local", 0.1),
        m.MirrorPolicy("outbound|8080|v3|payment.default.svc.cluster.local", 0.015))
    v1 = snap.clusters["outbound|8080|v1|payment.default.svc.cluster.local"]
    assert v1.lb_policy is m.LbPolicy.RANDOM and v1.connect_timeout == 2.0 and v1.idle_timeout == 600.0
    assert v1.circuit_breakers == m.CircuitBreakers(100, 2**32 - 1, 1000, 10, True)
    assert v1.outlier_detection is not None and v1.outlier_detection.consecutive_5xx == 3
    assert v1.healthy_panic_threshold == 10.0 and v1.max_requests_per_connection == 100
    assert v1.http2.max_concurrent_streams == 128
    audit = snap.clusters["outbound|9090||audit.default.svc.cluster.local"]
    assert audit.tls is None and audit.lb_policy is m.LbPolicy.LEAST_REQUEST


# --------------------------------------------------------------------------------------------- mesh_ctl up


def _tls(tls: m.TlsContext | None) -> m.TlsContext | None:
    """Istio's ALPN, TLS parameters and inbound SAN prefix are not in `mesh_ctl up`'s bootstraps."""
    if tls is None:
        return None
    validation = tls.validation
    if validation is not None and tls.server_side:
        validation = dataclasses.replace(validation, match_subject_alt_names=())
    return dataclasses.replace(tls, validation=validation, alpn_protocols=(), min_version=None, max_version=None,
                               cipher_suites=())


def _normalise(snap: m.Snapshot) -> tuple[dict[str, m.Listener], dict[str, m.Cluster], m.NodeInfo]:
    """Undo the differences that are intended: what Istio adds on top of `mesh_ctl up`'s bootstraps (PERMISSIVE
    inbound listeners keep only their mTLS chain here; the plaintext chain is checked separately)."""

    def route(r: m.Route) -> m.Route:
        assert isinstance(r.action, m.RouteAction)
        return dataclasses.replace(r, action=dataclasses.replace(r.action, retry_policy=None))

    def route_config(rc: m.RouteConfiguration | None) -> m.RouteConfiguration | None:
        if rc is None:
            return None
        vhosts = tuple(dataclasses.replace(vh, domains=tuple(sorted(vh.domains)), include_request_attempt_count=False,
                                           routes=tuple(route(r) for r in vh.routes)) for vh in rc.virtual_hosts)
        rc = dataclasses.replace(rc, virtual_hosts=vhosts)
        if any(f.name == "validate_clusters" for f in dataclasses.fields(rc)):
            # Istio's RDS route configurations say validate_clusters: false (inline ones default to true).
            rc = dataclasses.replace(rc, validate_clusters=True)  # type: ignore[call-arg,unused-ignore]
        return rc

    def http_filters(filters: tuple[m.HttpFilter, ...]) -> tuple[m.HttpFilter, ...]:
        return tuple(f for f in filters if f.name != "envoy.filters.http.fault")  # Istio's, on outbound

    listeners = {}
    for name, lst in snap.listeners.items():
        mtls = [c for c in lst.filter_chains if c.match.transport_protocol != "raw_buffer"]
        chains = tuple(dataclasses.replace(c, match=m.FilterChainMatch(), tls=_tls(c.tls), hcm=dataclasses.replace(
            c.hcm, route_config=route_config(c.hcm.route_config), http_filters=http_filters(c.hcm.http_filters)))
            for c in mtls)
        listeners[name] = dataclasses.replace(lst, filter_chains=chains, tls_inspector=False)
    clusters = {}
    for name, c in snap.clusters.items():
        # (metadata sorted: pyproxy flattens a Struct in its map order, which protobuf does not fix)
        localities = tuple(dataclasses.replace(loc, load_balancing_weight=None, endpoints=tuple(
            dataclasses.replace(e, metadata=tuple(sorted(e.metadata))) for e in loc.endpoints))
            for loc in (c.load_assignment.localities if c.load_assignment else ()))
        assignment = dataclasses.replace(c.load_assignment, localities=localities) if c.load_assignment else None
        clusters[name] = dataclasses.replace(c, circuit_breakers=m.CircuitBreakers(), load_assignment=assignment,
                                             metadata=tuple(sorted(c.metadata)), tls=_tls(c.tls))
    return listeners, clusters, snap.node


def test_without_istio_resources_sidecars_get_what_mesh_ctl_up_configures(default_registry: Registry,
                                                                        mesh_certs: dict[str, Any],
                                                                        material: MaterialStore) -> None:
    t = default_topology()
    bootstraps = build_bootstraps(t, plan(t, probe=lambda _: True), mesh_certs)
    for w in default_registry.workloads:
        static = bootstrap_pb2.Bootstrap()
        json_format.ParseDict(bootstraps[w.name], static)
        theirs = translate_bootstrap(static, material=material)
        ours = translate_bootstrap(static_bootstrap(sidecar(default_registry, [], w.name, tls="files"),
                                                    default_registry), material=material)
        assert _normalise(ours) == _normalise(theirs), w.name
        assert ours.admin == theirs.admin
        # ...and the differences are exactly what Istio adds.
        if "virtualOutbound" in ours.listeners:
            hcm = ours.listeners["virtualOutbound"].filter_chains[0].hcm
            assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.fault", "envoy.filters.http.router"]
            rc = hcm.route_config
            assert rc is not None
            (route,) = rc.virtual_hosts[0].routes
            assert isinstance(route.action, m.RouteAction) and route.action.retry_policy is not None
            assert route.action.retry_policy.num_retries == 2
            assert rc.virtual_hosts[0].include_request_attempt_count
        for c in ours.clusters.values():
            assert c.circuit_breakers.max_requests == 2**32 - 1 and c.circuit_breakers.track_remaining
            if c.tls is not None:
                assert c.tls.alpn_protocols == ("istio-peer-exchange", "istio", "h2")
        if "virtualInbound" in ours.listeners:
            inbound = ours.listeners["virtualInbound"]
            assert inbound.tls_inspector
            mtls, plaintext = inbound.filter_chains
            assert mtls.match.transport_protocol == "tls" and mtls.tls is not None
            assert mtls.tls.validation is not None and mtls.tls.validation.match_subject_alt_names[0][0] == "URI"
            assert plaintext.match.transport_protocol == "raw_buffer" and plaintext.tls is None
            assert plaintext.hcm == mtls.hcm

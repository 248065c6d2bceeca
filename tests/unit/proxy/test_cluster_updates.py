"""Cluster updates keep what they can: endpoint (EDS) and certificate (SDS) changes happen in place."""

from __future__ import annotations

import dataclasses

from pyproxy.config.model import (
    AdminConfig,
    Cluster,
    ClusterLoadAssignment,
    Endpoint,
    LbPolicy,
    LocalityLbEndpoints,
    NodeInfo,
    Snapshot,
    SocketAddress,
)
from pyproxy.proxy.runtime import Runtime


def _cluster(*ports: int, lb: LbPolicy = LbPolicy.ROUND_ROBIN) -> Cluster:
    eps = tuple(Endpoint(SocketAddress("127.0.0.1", p)) for p in ports)
    return Cluster(name="c", discovery_type="STATIC", lb_policy=lb,
                   load_assignment=ClusterLoadAssignment("c", (LocalityLbEndpoints(eps),)))


def _runtime() -> Runtime:
    return Runtime(Snapshot(version="1", node=NodeInfo(), admin=AdminConfig(None), listeners={}, clusters={}))


def test_endpoint_changes_keep_the_cluster_and_the_hosts_that_stay() -> None:
    rt = _runtime()
    rt.clusters.update({"c": _cluster(1001, 1002)})
    state = rt.clusters.get("c")
    assert state is not None
    kept = next(h for h in state.hosts if h.address.port == 1002)
    kept.active_requests = 3  # counters (and pools) belong to the host object
    rt.clusters.update({"c": _cluster(1002, 1003)})
    assert rt.clusters.get("c") is state
    assert [h.address.port for h in state.hosts] == [1002, 1003]
    assert next(h for h in state.hosts if h.address.port == 1002) is kept


def test_other_changes_replace_the_cluster() -> None:
    rt = _runtime()
    rt.clusters.update({"c": _cluster(1001)})
    state = rt.clusters.get("c")
    rt.clusters.update({"c": _cluster(1001, lb=LbPolicy.LEAST_REQUEST)})
    assert rt.clusters.get("c") is not state


def test_same_config_is_the_same_state() -> None:
    rt = _runtime()
    cfg = _cluster(1001)
    rt.clusters.update({"c": cfg})
    state = rt.clusters.get("c")
    rt.clusters.update({"c": dataclasses.replace(cfg)})
    assert rt.clusters.get("c") is state

"""What the CLI commands print, from canned control plane answers and an Envoy config dump (no I/O)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mesh_ctl.commands import get, proxy_config, proxy_status, set_weight


def _type(name: str, status: str, nack: str | None = None) -> dict[str, Any]:
    return {"type": name, "status": status, "last_nack": {"message": nack, "version": "abc", "at": 0.0} if nack
            else None}


def test_proxy_status_table_has_istioctls_columns_and_nack_reasons() -> None:
    proxies = [
        {"name": "client.default", "kind": "sidecar", "connected_at": 0.0, "types": [
            _type("CDS", "SYNCED"), _type("EDS", "SYNCED"), _type("LDS", "STALE"),
            _type("RDS", "NACKED", "route virtualOutbound: unknown cluster\n outbound|8080|v9|payment"),
            _type("SDS", "SYNCED")]},
        {"name": "grpc-1", "kind": "proxyless", "connected_at": 0.0, "types": [_type("LDS", "SYNCED")]},
    ]
    lines = proxy_status.table(proxies)
    assert lines[0].split() == ["NAME", "KIND", "CDS", "LDS", "EDS", "RDS", "SDS", "CONNECTED"]
    assert lines[1].split()[-2] == "SYNCED"  # SDS: the ROOTCA trust bundle
    assert lines[1].split()[:5] == ["client.default", "sidecar", "SYNCED", "STALE", "SYNCED"]
    assert "NACKED(route virtualOutbound: unknown cluster outbou...)" in lines[1]  # one line, cut at 48
    assert lines[2].split()[:6] == ["grpc-1", "proxyless", "NOT", "SENT", "SYNCED", "NOT"]


def test_set_weight_diff_shows_shares_before_and_after() -> None:
    lines = set_weight.diff_lines([["v1", 50], ["v2", 50]], [["v1", 9], ["v2", 1]])
    assert [line.split() for line in lines] == [["SUBSET", "BEFORE", "AFTER"], ["v1", "50%", "90%"],
                                                ["v2", "50%", "10%"]]
    lines = set_weight.diff_lines(None, [["v3", 1]])
    assert [line.split() for line in lines][1] == ["v3", "-", "100%"]


def test_set_weight_says_which_subsets_gain_keep_or_lose_traffic() -> None:
    before = [["v1", 50], ["v2", 50], ["v3", 0]]
    assert set_weight.effect_lines(before, [["v1", 100]]) == [
        "v1: now gets all the traffic", "v2: not named, so it leaves the route and gets no traffic (was 50%)",
        "v3: not named, so it leaves the route (it had no traffic)"]
    assert set_weight.effect_lines(before, [["v1", 0], ["v2", 90], ["v3", 10]]) == [
        "v1: loses all its traffic (was 50%)", "v3: starts getting traffic (10%)"]
    assert set_weight.effect_lines(before, [["v1", 50], ["v2", 50]]) == [
        "v3: not named, so it leaves the route (it had no traffic)"]


def test_age_like_kubectl() -> None:
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert get.age("2026-01-02T03:04:00Z", now) == "5s"
    assert get.age("2026-01-02T01:00:00Z", now) == "2h"
    assert get.age("2025-12-30T00:00:00Z", now) == "3d"
    assert get.age(None, now) == "<unknown>"


DUMP = {"configs": [
    {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": [
        {"name": "virtualOutbound", "active_state": {"listener": {
            "name": "virtualOutbound",
            "address": {"socket_address": {"address": "127.0.0.12", "port_value": 15001}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": {"rds": {"route_config_name": "virtualOutbound"}}}]}],
        }}}]},
    {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "dynamicRouteConfigs": [
        {"routeConfig": {"name": "virtualOutbound", "virtualHosts": [{
            "name": "payment.default.svc.cluster.local:8080", "domains": ["payment", "payment:8080"],
            "routes": [{"match": {"prefix": "/"},
                        "metadata": {"filterMetadata": {"istio": {
                            "config": "/apis/networking.istio.io/v1/namespaces/default/virtual-service/payment"}}},
                        "route": {"weightedClusters": {"clusters": [
                            {"name": "outbound|8080|v1|payment.default.svc.cluster.local", "weight": 90},
                            {"name": "outbound|8080|v2|payment.default.svc.cluster.local", "weight": 10}]}}}]}]}}]},
    {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "dynamic_active_clusters": [
        {"cluster": {"name": "outbound|8080|v1|payment.default.svc.cluster.local", "type": "EDS"}}]},
]}


def test_config_dump_tables_snake_and_camel_case() -> None:
    config = proxy_config.from_config_dump(DUMP)
    assert proxy_config.listener_rows(config["listeners"]) == [
        ["virtualOutbound", "127.0.0.12", "15001", "Route: virtualOutbound"]]
    assert proxy_config.route_rows(config["routes"]) == [
        ["virtualOutbound", "payment.default.svc.cluster.local:8080", "payment +1 more", "/*", "v1:90, v2:10",
         "payment.default"]]
    assert proxy_config.cluster_rows(config["clusters"]) == [
        ["payment.default.svc.cluster.local", "8080", "v1", "OUTBOUND", "EDS", "-"]]
    assert proxy_config.endpoint_rows(None, [{"cluster_name": "c", "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.10", "port_value": 8080}}}}]}]}]) == [
        ["127.0.0.10:8080", "HEALTHY", "-", "c"]]

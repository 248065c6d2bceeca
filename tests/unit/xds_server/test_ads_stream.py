"""The ADS server over a real grpc.aio channel, driven by hand-written DiscoveryRequests."""

from __future__ import annotations

import grpc
import grpc.aio
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from mesh_ctl.addressing import plan
from mesh_ctl.ca.files import CertFiles
from mesh_ctl.registry import Registry
from mesh_ctl.topology import Topology
from mesh_ctl.translate import translate_for_proxy
from mesh_ctl.translate.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from tests.unit.xds_server.conftest import (
    ALL,
    CLIENT_NODE,
    FQDN,
    V1,
    V1_NODE,
    V2,
    Stream,
    dr,
    generation,
    node,
    run,
    serving,
    vs,
)

PROXYLESS_LISTENER = f"{FQDN}:8080"


def names_of(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    out = []
    for a in response.resources:
        if a.Is(cluster_pb2.Cluster.DESCRIPTOR):
            c = cluster_pb2.Cluster()
            a.Unpack(c)
            out.append(c.name)
        elif a.Is(endpoint_pb2.ClusterLoadAssignment.DESCRIPTOR):
            e = endpoint_pb2.ClusterLoadAssignment()
            a.Unpack(e)
            out.append(e.cluster_name)
        else:
            out.append(a.type_url)
    return out


async def synced(stream: Stream, type_url: str, names: tuple[str, ...] = ()) -> discovery_pb2.DiscoveryResponse:
    """Subscribe to ``type_url`` and ACK the first response."""
    await stream.send(type_url, names)
    response = await stream.recv()
    assert response.type_url == type_url
    await stream.ack(response, names)
    return response


async def sync_sidecar(stream: Stream) -> dict[str, discovery_pb2.DiscoveryResponse]:
    cds = await synced(stream, CLUSTER_TYPE)
    eds_names = tuple(sorted(names_of(cds)))
    return {CLUSTER_TYPE: cds, ENDPOINT_TYPE: await synced(stream, ENDPOINT_TYPE, eds_names),
            LISTENER_TYPE: await synced(stream, LISTENER_TYPE),
            ROUTE_TYPE: await synced(stream, ROUTE_TYPE, ("virtualOutbound",))}


def status_of(harness_ads: object, name: str) -> dict[str, dict[str, object]]:
    for p in harness_ads.status():  # type: ignore[attr-defined]
        if p["name"] == name:
            return {t["type"]: t for t in p["types"]}
    raise AssertionError(f"{name} is not connected")


def test_first_request_gets_the_current_state(registry: Registry) -> None:
    gen = generation(registry)
    expected = translate_for_proxy(registry, gen.istio, node(CLIENT_NODE))

    async def scenario() -> None:
        async with serving(gen) as h:
            s = h.stream(node(CLIENT_NODE))
            await s.send(CLUSTER_TYPE)
            r = await s.recv()
            assert r.type_url == CLUSTER_TYPE
            assert sorted(names_of(r)) == sorted(expected.of(CLUSTER_TYPE)) == sorted([ALL, V1, V2])
            assert r.version_info == expected.type_version(CLUSTER_TYPE)
            assert r.nonce and r.control_plane.identifier == "test-control-plane"
            await s.send(LISTENER_TYPE)
            r = await s.recv()
            assert r.type_url == LISTENER_TYPE and len(r.resources) == 1

            p = h.stream(node("grpc-client-1", proxyless=True))
            await p.send(LISTENER_TYPE, [PROXYLESS_LISTENER])
            r = await p.recv()
            assert len(r.resources) == 1
            assert r.version_info == translate_for_proxy(registry, gen.istio, node("grpc-client-1", True)
                                                         ).type_version(LISTENER_TYPE, [PROXYLESS_LISTENER])

    run(scenario)


def test_ack_is_recorded_and_answered_with_silence(registry: Registry) -> None:
    async def scenario() -> None:
        async with serving(generation(registry)) as h:
            s = h.stream(node(CLIENT_NODE))
            await s.send(CLUSTER_TYPE)
            r = await s.recv()
            assert status_of(h.ads, "client.default")["CDS"]["status"] == "STALE"  # sent, not ACKed yet
            await s.ack(r)
            await s.silence()
            cds = status_of(h.ads, "client.default")["CDS"]
            assert cds["status"] == "SYNCED" and cds["acked_version"] == r.version_info
            assert status_of(h.ads, "client.default")["EDS"]["status"] == "NOT SENT"

    run(scenario)


def test_nack_keeps_the_old_version_records_the_error_and_is_not_resent(registry: Registry) -> None:
    async def scenario() -> None:
        async with serving(generation(registry)) as h:
            s = h.stream(node(CLIENT_NODE))
            first = await synced(s, CLUSTER_TYPE)
            report = await h.ads.update(generation(registry, [dr("ROUND_ROBIN")], "2"), "test")
            assert report.woken == 1
            second = await s.recv()
            assert second.type_url == CLUSTER_TYPE and second.version_info != first.version_info
            await s.send(CLUSTER_TYPE, version=first.version_info, nonce=second.nonce, error="cluster rejected")
            await s.silence()  # the rejected version is not sent again
            cds = status_of(h.ads, "client.default")["CDS"]
            assert cds["status"] == "NACKED" and cds["acked_version"] == first.version_info
            assert cds["last_nack"]["message"] == "cluster rejected"  # type: ignore[index]
            assert cds["last_nack"]["version"] == second.version_info  # type: ignore[index]
            assert h.ads.stats.nacks == {"CDS": 1}
            await h.ads.update(generation(registry, [dr("RANDOM")], "3"), "test")  # a new version is sent
            third = await s.recv()
            await s.ack(third)
            await s.silence()
            assert status_of(h.ads, "client.default")["CDS"]["status"] == "SYNCED"

    run(scenario)


def test_a_stale_nonce_is_ignored(registry: Registry) -> None:
    async def scenario() -> None:
        async with serving(generation(registry)) as h:
            s = h.stream(node(CLIENT_NODE))
            first = await synced(s, ROUTE_TYPE, ("virtualOutbound",))
            await h.ads.update(generation(registry, [vs({"v1": 90, "v2": 10})], "2"), "test")
            second = await s.recv()
            # An old nonce: ignored entirely, including its (different) names.
            await s.send(ROUTE_TYPE, ["something-else"], version=first.version_info, nonce=first.nonce)
            await s.silence()
            assert status_of(h.ads, "client.default")["RDS"]["status"] == "STALE"
            await s.ack(second, ("virtualOutbound",))  # the subscription did not change: nothing to send
            await s.silence()
            assert status_of(h.ads, "client.default")["RDS"]["status"] == "SYNCED"

    run(scenario)


def test_eds_subscription_changes_get_exactly_the_requested_resources(registry: Registry) -> None:
    async def scenario() -> None:
        async with serving(generation(registry)) as h:
            s = h.stream(node(CLIENT_NODE))
            await s.send(ENDPOINT_TYPE, [V1])
            r = await s.recv()
            assert names_of(r) == [V1]
            await s.ack(r, (V1, V2))
            r = await s.recv()
            assert sorted(names_of(r)) == [V1, V2]
            await s.ack(r, (V2, "outbound|8080|nope|payment.default.svc.cluster.local"))
            r = await s.recv()
            assert names_of(r) == [V2]  # a name that does not exist is simply absent
            await s.ack(r, (V2, "outbound|8080|nope|payment.default.svc.cluster.local"))
            await s.silence()
            await s.ack(r, ())  # RDS/EDS are never wildcard: no names, no resources
            r = await s.recv()
            assert names_of(r) == []

    run(scenario)


def test_only_proxies_whose_resources_changed_get_a_push(registry: Registry) -> None:
    async def scenario() -> None:
        async with serving(generation(registry, [dr()], "1")) as h:
            client = h.stream(node(CLIENT_NODE))
            await sync_sidecar(client)
            server = h.stream(node(V1_NODE))
            await synced(server, CLUSTER_TYPE)
            await synced(server, LISTENER_TYPE)
            proxyless = h.stream(node("grpc-client-1", proxyless=True))
            await synced(proxyless, LISTENER_TYPE, (PROXYLESS_LISTENER,))
            rds = await synced(proxyless, ROUTE_TYPE, (f"outbound|8080||{FQDN}",))
            assert len(rds.resources) == 1

            report = await h.ads.update(generation(registry, [dr()], "2"), "same content, new revision")
            assert (report.proxies, report.woken) == (3, 0)
            for stream in (client, server, proxyless):
                await stream.silence(0.2)

            report = await h.ads.update(generation(registry, [dr(), vs({"v1": 90, "v2": 10})], "3"), "weights")
            assert report.woken == 2
            for stream in (client, proxyless):
                r = await stream.recv()
                assert r.type_url == ROUTE_TYPE  # only the routes changed
                await stream.ack(r, ("virtualOutbound",) if stream is client else (f"outbound|8080||{FQDN}",))
                await stream.silence(0.2)
            await server.silence(0.2)
            assert h.ads.stats.pushes["RDS"] == 4  # 2 first responses + 2 pushes

    run(scenario)


def test_cds_goes_before_eds_and_waits_for_its_ack(registry: Registry, topology: Topology,
                                                    certs: dict[str, CertFiles]) -> None:
    moved = Registry.from_topology(topology, plan(topology, base_address="127.0.0.50", probe=lambda _: True), certs)

    async def scenario() -> None:
        async with serving(generation(registry, [dr()], "1")) as h:
            s = h.stream(node(CLIENT_NODE))
            await sync_sidecar(s)
            # Clusters, endpoints (new addresses) and the listener (new address) change at once.
            await h.ads.update(generation(moved, [dr("RANDOM")], "2"), "test")
            order = [(await s.recv()) for _ in range(3)]
            assert [r.type_url for r in order] == [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE]
            for r, names in zip(order, [(), (ALL, V1, V2), ()], strict=True):
                await s.ack(r, names)
            await s.silence(0.2)

            # The next CDS push is not ACKed yet: a later change waits for that ACK, EDS included.
            await h.ads.update(generation(moved, [dr("ROUND_ROBIN")], "3"), "test")
            cds = await s.recv()
            assert cds.type_url == CLUSTER_TYPE
            await h.ads.update(generation(registry, [dr("LEAST_REQUEST")], "4"), "test")
            await s.silence()
            await s.ack(cds)
            held = [(await s.recv()) for _ in range(3)]
            assert [r.type_url for r in held] == [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE]

    run(scenario)


def test_unknown_node_is_refused_and_unknown_types_are_ignored(registry: Registry) -> None:
    async def scenario() -> None:
        async with serving(generation(registry)) as h:
            s = h.stream(node("sidecar~127.0.0.99~nobody.default~default.svc.cluster.local"))
            await s.send(CLUSTER_TYPE)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await s.recv()
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            assert "not the sidecar of any workload" in (info.value.details() or "")

            ok = h.stream(node(CLIENT_NODE))
            await ok.send("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig")
            await ok.silence(0.2)
            await ok.send(CLUSTER_TYPE)
            assert (await ok.recv()).type_url == CLUSTER_TYPE

    run(scenario)


def test_a_restarted_server_sends_the_same_versions(registry: Registry) -> None:
    resources = [dr(), vs({"v1": 70, "v2": 30})]

    async def versions() -> dict[str, str]:
        async with serving(generation(registry, resources, "7")) as h:
            s = h.stream(node(CLIENT_NODE))
            return {t: r.version_info for t, r in (await sync_sidecar(s)).items()}

    before, after = run(versions), run(versions)
    assert before == after and len(set(before.values())) == 4


def test_reconnect_reports_the_version_the_proxy_already_runs(registry: Registry) -> None:
    async def scenario() -> None:
        async with serving(generation(registry)) as h:
            s = h.stream(node(CLIENT_NODE))
            first = await synced(s, CLUSTER_TYPE)
            again = h.stream(node(CLIENT_NODE))  # e.g. after a control plane restart
            await again.send(CLUSTER_TYPE, version=first.version_info)
            r = await again.recv()  # a first request is always answered...
            assert r.version_info == first.version_info  # ...with the version it already has
            streams = [p for p in h.ads.status() if p["name"] == "client.default"]
            assert len(streams) == 2

    run(scenario)

"""The control plane in one process: store -> debounce -> ADS, and the management API the CLI uses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc

from mesh_ctl.client import Client, ControlPlaneError, Endpoint
from mesh_ctl.registry import Registry
from mesh_ctl.runtime.state import RunDir, read_json
from mesh_ctl.server import DISCOVERY_FILE, ControlPlane, ServeOptions
from mesh_ctl.translate import translate_for_proxy
from mesh_ctl.translate.names import CLUSTER_TYPE, ROUTE_TYPE
from tests.unit.xds_server.conftest import CLIENT_NODE, V1_NODE, Stream, node, run

# Subsets need a DestinationRule: the store does not know the topology's implicit ones (yet).
DR_YAML = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment}
spec:
  host: payment
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""
VS_YAML = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment}
spec:
  hosts: [payment]
  http:
  - route:
    - {destination: {host: payment, subset: v1}, weight: 50}
    - {destination: {host: payment, subset: v2}, weight: 50}
"""


@contextlib.asynccontextmanager
async def control_plane(registry: Registry, tmp: Path, **options: Any,
                        ) -> AsyncIterator[tuple[ControlPlane, Client, Stream]]:
    cp = ControlPlane(ServeOptions(registry=registry, state_dir=tmp / "store", xds_address="127.0.0.1:0",
                                   api_address="127.0.0.1:0", run_dir=RunDir(tmp), **options))
    await cp.start()
    channel = grpc.aio.insecure_channel(cp.xds_address)
    try:
        stream = Stream(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel), node(CLIENT_NODE))
        yield cp, Client(Endpoint(cp.api_address, "test", token_file=cp.token_file)), stream
    finally:
        await channel.close(None)
        await cp.stop()


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """A blocking client call, off the event loop that serves it."""
    return await asyncio.to_thread(fn, *args)


async def settled(cp: ControlPlane) -> None:
    """Wait until the store's revision is the one the ADS server translates (the debounce flushed)."""
    for _ in range(100):
        if cp.ads.generation.revision == str(cp.store.revision):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"revision {cp.store.revision} not pushed after 5 s")


def test_ten_quick_changes_make_one_or_two_pushes(registry: Registry, tmp_path: Path) -> None:
    # A debounce of 1 s (not the default 0.1 s): ten API calls come closer together than that however busy the
    # machine is, so what is counted is the debounce's work, not the machine's speed (with 0.1 s, a loaded
    # machine spread the calls past it once: three pushes).
    async def scenario() -> None:
        async with control_plane(registry, tmp_path, debounce_after=1.0, debounce_max=30.0) as (cp, api, s):
            await call(api.apply, [{"origin": "dr.yaml", "text": DR_YAML}, {"origin": "vs.yaml", "text": VS_YAML}])
            await settled(cp)
            await s.send(ROUTE_TYPE, ["virtualOutbound"])
            first = await s.recv()
            await s.ack(first, ("virtualOutbound",))
            await s.silence(0.3)
            for i in range(10):
                await call(api.set_weight, "payment", "default", {"v1": 100 - i, "v2": i})
            pushes = []
            with contextlib.suppress(AssertionError):
                while True:
                    r = await s.recv(timeout=3.0)
                    pushes.append(r)
                    await s.ack(r, ("virtualOutbound",))
            assert 1 <= len(pushes) <= 2, [p.version_info for p in pushes]
            final = translate_for_proxy(registry, cp.ads.generation.istio, node(CLIENT_NODE))
            assert pushes[-1].version_info == final.type_version(ROUTE_TYPE, ["virtualOutbound"])
            assert cp.ads.generation.revision == str(cp.store.revision) == "11"  # 1 apply + 10 set-weights
            status = await call(api.proxy_status)
            [proxy] = status["proxies"]
            assert {t["type"]: t["status"] for t in proxy["types"]}["RDS"] == "SYNCED"

    run(scenario)


def route_weights(response: Any) -> list[tuple[str, int]]:
    """(cluster, weight) of the first route of the first RouteConfiguration in an RDS response."""
    from envoy.config.route.v3 import route_pb2

    config = route_pb2.RouteConfiguration()
    response.resources[0].Unpack(config)
    for vhost in config.virtual_hosts:
        for route in vhost.routes:
            if route.route.HasField("weighted_clusters"):
                return [(c.name.split("|")[2], c.weight.value) for c in route.route.weighted_clusters.clusters]
    return []


def test_a_proxy_connecting_after_apply_gets_the_applied_config(registry: Registry, tmp_path: Path) -> None:
    """Issue 8.1: `apply` returned, then a proxy connects before the debounce flushed: its first
    configuration is the applied one, not the one before (a debounce of 30 s would otherwise hold it back)."""

    async def scenario() -> None:
        async with control_plane(registry, tmp_path, debounce_after=30.0, debounce_max=30.0) as (cp, api, s):
            await call(api.apply, [{"origin": "dr.yaml", "text": DR_YAML},
                                   {"origin": "vs.yaml", "text": VS_YAML.replace("weight: 50", "weight: 100", 1)
                                    .replace("weight: 50", "weight: 0")}])
            assert cp.debouncer.pending and cp.ads.generation.revision == "0"
            await s.send(ROUTE_TYPE, ["virtualOutbound"])
            first = await s.recv()
            assert route_weights(first) == [("v1", 100)]  # Istio drops a weight-0 destination
            assert cp.ads.generation.revision == str(cp.store.revision) == "1"
            [proxy] = (await call(api.proxy_status))["proxies"]
            assert proxy["revision"] == "1"
            await s.ack(first, ("virtualOutbound",))
            # A second change while this proxy is connected waits for the debounce (30 s here) ...
            await call(api.set_weight, "payment", "default", {"v1": 0, "v2": 100})
            await s.silence(0.3)
            # ... unless another proxy connects: the change is installed for every proxy at once.
            channel = grpc.aio.insecure_channel(cp.xds_address)
            try:
                other = Stream(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel), node(V1_NODE))
                await other.send(CLUSTER_TYPE)
                await other.recv()
                pushed = await s.recv()
                assert route_weights(pushed) == [("v2", 100)]
            finally:
                await channel.close(None)

    run(scenario)


def test_a_generation_installed_during_a_connect_is_not_lost(registry: Registry, tmp_path: Path) -> None:
    """A new generation installed while a connecting proxy was being translated (the update did not see the
    connection yet) makes the connection translate again: it never starts with a superseded generation."""

    async def scenario() -> None:
        async with control_plane(registry, tmp_path, debounce_after=30.0, debounce_max=30.0) as (cp, api, s):
            await call(api.apply, [{"origin": "dr.yaml", "text": DR_YAML}, {"origin": "vs.yaml", "text": VS_YAML}])
            original = cp.ads._translate
            swapped = False

            async def translate_then_change(n: Any) -> Any:
                nonlocal swapped
                resources = await original(n)
                if not swapped:  # an apply lands and is installed while this connection is being translated
                    swapped = True
                    await call(api.set_weight, "payment", "default", {"v1": 10, "v2": 90})
                    await cp._flush(["test"])
                return resources

            cp.ads._translate = translate_then_change  # type: ignore[method-assign,assignment]
            await s.send(ROUTE_TYPE, ["virtualOutbound"])
            first = await s.recv()
            assert swapped and cp.ads.generation.revision == "2"
            assert route_weights(first) == [("v1", 10), ("v2", 90)]

    run(scenario)


def test_the_api_refuses_invalid_config_and_changes_nothing(registry: Registry, tmp_path: Path) -> None:
    bad = VS_YAML.replace("weight: 50}\n", "weight: -1}\n", 1)

    async def scenario() -> None:
        async with control_plane(registry, tmp_path) as (cp, api, _):
            with pytest.raises(ControlPlaneError) as info:
                await call(api.apply, [{"origin": "bad.yaml", "text": bad}])
            assert info.value.status == 422
            assert info.value.problems == [
                "bad.yaml: VirtualService default/payment: spec.http[0].route[0].weight: must be >= 0"]
            assert cp.store.revision == 0
            await call(api.apply, [{"origin": "dr.yaml", "text": DR_YAML}])
            with pytest.raises(ControlPlaneError) as info:
                await call(api.set_weight, "payment", "default", {"v1": 50, "v7": 50})
            assert info.value.problems == [
                "set-weight: VirtualService default/payment: weights[v7]: subset v7 not found in the "
                "DestinationRule of host payment (subsets: v1, v2)"]
            # Issue 8.2: a weight of 150, a sum other than 100, an unknown service: refused, nothing stored.
            refusals = {}
            for weights in ({"v1": 150}, {"v1": 150, "v2": 0}, {"v1": 60, "v2": 30}, {"v1": 0, "v2": 0}):
                with pytest.raises(ControlPlaneError) as info:
                    await call(api.set_weight, "payment", "default", weights)
                assert info.value.status == 422 and len(info.value.problems) == 1, (weights, info.value)
                refusals[str(weights)] = info.value.problems[0]
            assert refusals["{'v1': 150}"].endswith("weights[v1]: a weight is a percentage from 0 to 100, got 150")
            assert "the weights add up to 90 (60 + 30), not 100. Istio would accept them and give each subset its " \
                   "weight divided by the total (v1 66.7 %, v2 33.3 %)" in refusals["{'v1': 60, 'v2': 30}"]
            with pytest.raises(ControlPlaneError) as info:
                await call(api.set_weight, "nosuchsvc", "default", {"v1": 100})
            assert info.value.status == 404
            assert str(info.value) == ("there is no service 'nosuchsvc' in namespace default (host "
                                       "nosuchsvc.default.svc.cluster.local); known services: payment (namespace "
                                       "default)")
            assert cp.store.revision == 1
            result = await call(api.set_weight, "payment", "default", {"v1": 80, "v2": 20})
            assert result["before"] == [["v1", 50], ["v2", 50]]
            assert result["before_source"] == "topology"
            assert result["after"] == [["v1", 80], ["v2", 20]]
            docs = await call(api.resources, "vs", "default", "payment")
            assert docs["items"][0]["metadata"]["resourceVersion"] == "2"
            relative = await call(api.set_weight, "payment", "default", {"v1": 60, "v2": 30}, False, True)
            assert relative["after"] == [["v1", 60], ["v2", 30]]  # --relative: Istio's weight / total
            with pytest.raises(ControlPlaneError) as info:
                await call(api.resources, "vs", "default", "nope")
            assert info.value.status == 404
            discovered = read_json(tmp_path / DISCOVERY_FILE)
            assert discovered["api_address"] == cp.api_address and discovered["xds_address"] == cp.xds_address
        assert not (tmp_path / DISCOVERY_FILE).exists()  # removed on stop

    run(scenario)


def test_the_store_survives_a_restart_with_the_same_versions(registry: Registry, tmp_path: Path) -> None:
    async def versions() -> tuple[str, str]:
        async with control_plane(registry, tmp_path) as (cp, api, s):
            if cp.store.revision == 0:
                await call(api.apply, [{"origin": "dr.yaml", "text": DR_YAML}, {"origin": "vs.yaml", "text": VS_YAML}])
                await settled(cp)
            await s.send(ROUTE_TYPE, ["virtualOutbound"])
            return (await s.recv()).version_info, cp.ads.generation.revision

    first, second = run(versions), run(versions)
    assert first == second and first[1] == "1"


def test_stopping_never_waits_on_a_client_that_keeps_its_connection_open(registry: Registry, tmp_path: Path) -> None:
    """A client that never finishes its request (a stuck script, a slow-loris) does not hold up the control
    plane's shutdown: uvicorn gets 2 s for open requests, then the server task is cancelled."""

    async def scenario() -> float:
        cp = ControlPlane(ServeOptions(registry=registry, state_dir=tmp_path / "store", xds_address="127.0.0.1:0",
                                       api_address="127.0.0.1:0", run_dir=RunDir(tmp_path)))
        await cp.start()
        host, port = cp.api_address.rsplit(":", 1)
        _, writer = await asyncio.open_connection(host, int(port))
        token = cp.token_file.read_text().strip()
        writer.write(f"POST /v1/analyze HTTP/1.1\r\nHost: {cp.api_address}\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
        await writer.drain()  # a request whose body never comes
        await asyncio.sleep(0.2)  # (only so that the server has read the head; the assertion is on stop's time)
        started = asyncio.get_running_loop().time()
        await cp.stop()
        elapsed = asyncio.get_running_loop().time() - started
        writer.close()
        return elapsed

    assert run(scenario) < 8.0


def test_a_proxy_not_yet_translated_for_the_installed_generation_is_stale(registry: Registry, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The installed generation's revision is published before the proxies' translation ends (seconds for a
    big configuration): meanwhile a proxy that ACKed the previous one is STALE, not SYNCED."""
    import threading

    from mesh_ctl.xds import ads

    release = threading.Event()
    original = ads._translate_many

    def slow(*args: Any) -> Any:
        assert release.wait(10)
        return original(*args)

    async def scenario() -> None:
        async with control_plane(registry, tmp_path, debounce_after=30.0, debounce_max=30.0) as (cp, api, s):
            await call(api.apply, [{"origin": "dr.yaml", "text": DR_YAML}, {"origin": "vs.yaml", "text": VS_YAML}])
            await cp._flush(["test"])
            await s.send(ROUTE_TYPE, ["virtualOutbound"])
            await s.ack(await s.recv(), ("virtualOutbound",))
            for _ in range(100):
                [proxy] = (await call(api.proxy_status))["proxies"]
                if {t["status"] for t in proxy["types"]} == {"SYNCED", "NOT SENT"}:
                    break
                await asyncio.sleep(0.05)
            assert {t["status"] for t in proxy["types"]} == {"SYNCED", "NOT SENT"}
            await call(api.set_weight, "payment", "default", {"v1": 10, "v2": 90})
            monkeypatch.setattr(ads, "_translate_many", slow)
            flush = asyncio.create_task(cp._flush(["test"]))
            try:
                while cp.ads.generation.revision != "2":  # noqa: ASYNC110 - the installed revision, polled
                    await asyncio.sleep(0.01)
                status = await call(api.proxy_status)
                assert status["pushed_revision"] == "2"
                [proxy] = status["proxies"]
                assert proxy["revision"] == "1"
                assert "SYNCED" not in {t["status"] for t in proxy["types"]}
                assert "STALE" in {t["status"] for t in proxy["types"]}
            finally:
                release.set()
                await flush
            assert route_weights(await s.recv()) == [("v1", 10), ("v2", 90)]

    run(scenario)

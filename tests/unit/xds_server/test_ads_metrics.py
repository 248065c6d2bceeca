"""The ADS server's istiod metrics, recorded at the real points of a real grpc.aio stream: pushes by type,
connected proxies, NACKs, stale nonces, queue and convergence time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mesh_ctl.monitoring import ControlPlaneMetrics, render
from mesh_ctl.registry import Registry
from mesh_ctl.translate.names import CLUSTER_TYPE, ROUTE_TYPE
from tests.support.metrics import families, value
from tests.unit.xds_server.conftest import CLIENT_NODE, dr, generation, node, run, serving, vs
from tests.unit.xds_server.test_ads_stream import sync_sidecar, synced


def v(m: ControlPlaneMetrics, name: str, suffix: str = "", **labels: str) -> float | None:
    return value(families(render(m.registry, m.bare_counters)), name, suffix, **labels)


async def eventually(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {what}")
        await asyncio.sleep(0.02)


def test_pushes_connections_and_convergence(registry: Registry) -> None:
    m = ControlPlaneMetrics(process=False)

    async def scenario() -> None:
        async with serving(generation(registry, [dr()], "1"), metrics=m) as h:
            n = node(CLIENT_NODE)
            n.user_agent_version = "0.1.0"
            s = h.stream(n)
            await sync_sidecar(s)
            assert v(m, "pilot_xds", version="0.1.0") == 1
            for t in ("cds", "eds", "lds", "rds"):
                assert v(m, "pilot_xds_pushes", type=t) == 1, t
                assert v(m, "pilot_xds_push_time", "_count", type=t) == 1, t
                assert (v(m, "pilot_xds_config_size_bytes", "_sum", type=t) or 0) > 0, t
            assert v(m, "pilot_xds_send_time", "_count") == 4
            assert v(m, "pilot_proxy_convergence_time", "_count") == 0  # first responses are no config change
            assert v(m, "pilot_services") == len(registry.services) and v(m, "pilot_virt_services") == 0

            since = time.monotonic() - 2.0  # the change "happened" 2 s ago (the debounce's first change)
            report = await h.ads.update(generation(registry, [dr(), vs({"v1": 90, "v2": 10})], "2"), "t", since)
            assert report.woken == 1
            r = await s.recv()
            assert r.type_url == ROUTE_TYPE
            assert v(m, "pilot_xds_pushes", type="rds") == 2
            assert v(m, "pilot_proxy_queue_time", "_count") == 1
            await eventually(lambda: v(m, "pilot_proxy_convergence_time", "_count") == 1, "converged")
            assert 2.0 <= (v(m, "pilot_proxy_convergence_time", "_sum") or 0) < 3.0
            assert v(m, "pilot_virt_services") == 1
            await s.ack(r, ("virtualOutbound",))
            await s.silence(0.2)
            await s.call.done_writing()
            await eventually(lambda: v(m, "pilot_xds", version="0.1.0") == 0, "the stream closed")

    run(scenario)


def test_a_push_held_back_for_an_ack_converges_when_it_is_sent(registry: Registry) -> None:
    """Two route changes in a row: the second waits for the ACK of the first, and the proxy has converged on
    it only once it is sent."""
    m = ControlPlaneMetrics(process=False)

    async def scenario() -> None:
        async with serving(generation(registry, [dr()], "1"), metrics=m) as h:
            s = h.stream(node(CLIENT_NODE))
            await sync_sidecar(s)
            await h.ads.update(generation(registry, [dr(), vs({"v1": 90, "v2": 10})], "2"), "t")
            first = await s.recv()
            assert first.type_url == ROUTE_TYPE
            await eventually(lambda: v(m, "pilot_proxy_convergence_time", "_count") == 1, "first converged")
            await h.ads.update(generation(registry, [dr(), vs({"v1": 50, "v2": 50})], "3"), "t")
            await s.silence(0.3)  # held back: the previous RDS is not ACKed yet
            assert v(m, "pilot_proxy_queue_time", "_count") == 2  # dequeued, but nothing could be sent
            assert v(m, "pilot_proxy_convergence_time", "_count") == 1
            await s.ack(first, ("virtualOutbound",))
            second = await s.recv()
            assert second.type_url == ROUTE_TYPE and second.version_info != first.version_info
            await eventually(lambda: v(m, "pilot_proxy_convergence_time", "_count") == 2, "second converged")
            assert (v(m, "pilot_proxy_convergence_time", "_sum") or 0) >= 0.3  # it waited for the ACK

    run(scenario)


def test_nacks_and_stale_nonces(registry: Registry) -> None:
    m = ControlPlaneMetrics(process=False)

    async def scenario() -> None:
        async with serving(generation(registry), metrics=m) as h:
            s = h.stream(node(CLIENT_NODE))
            first = await synced(s, CLUSTER_TYPE)
            await h.ads.update(generation(registry, [dr("ROUND_ROBIN")], "2"), "test")
            second = await s.recv()
            await s.send(CLUSTER_TYPE, version=first.version_info, nonce=second.nonce, error="cluster rejected")
            await s.silence(0.2)
            assert v(m, "pilot_total_xds_rejects", type="cds") == 1
            assert v(m, "pilot_xds_cds_reject", node="client.default", err="InvalidArgument") == 1
            assert v(m, "pilot_total_xds_rejects", type="lds") is None
            await s.send(CLUSTER_TYPE, version=first.version_info, nonce=first.nonce)  # an old nonce
            await s.silence(0.2)
            assert v(m, "pilot_xds_expired_nonce", type="cds") == 1

    run(scenario)

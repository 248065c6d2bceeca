"""The service graph's document (mesh_ctl.graph.model) from Istio exposition text, and its feed's lifecycle
(mesh_ctl.graph.feed) against a real HTTP server standing in for sidecars: it scrapes only while watched."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mesh_ctl.addressing import plan
from mesh_ctl.graph.feed import GraphFeed, TooManyWatchers
from mesh_ctl.graph.model import build
from mesh_ctl.registry import Registry
from mesh_ctl.resources.loader import load_documents
from mesh_ctl.telemetry.sample import parse
from mesh_ctl.telemetry.window import delta
from mesh_ctl.topology import default_topology

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def series(reporter: str, version: str, status: str, n: int, mtls: bool = False) -> str:
    labels = (f'reporter="{reporter}",source_workload="client",source_version="unknown",'
              f'destination_service_name="payment",destination_workload="payment-{version}",'
              f'destination_version="{version}",request_protocol="grpc",grpc_response_status="{status}",'
              f'response_code="200",connection_security_policy="{"mutual_tls" if mtls else "none"}"')
    return (f"istio_requests_total{{{labels}}} {n}\n"
            f'istio_request_duration_milliseconds_bucket{{{labels},le="5"}} {n}\n'
            f'istio_request_duration_milliseconds_bucket{{{labels},le="+Inf"}} {n}\n')


def exposition(v1: int, v2: int, failed_v2: int = 0) -> list[str]:
    head = "# TYPE istio_requests_total counter\n# TYPE istio_request_duration_milliseconds histogram\n"
    client = head + series("source", "v1", "0", v1) + series("source", "v2", "0", v2)
    if failed_v2:
        client += series("source", "v2", "14", failed_v2)
    servers = head + series("destination", "v1", "0", v1, mtls=True) + series("destination", "v2", "0", v2)
    return [client, servers]


@pytest.fixture
def registry() -> Registry:
    t = default_topology()
    return Registry.from_topology(t, plan(t, probe=lambda _: True))


def test_edges_carry_rates_errors_mtls_and_the_split_against_the_configured_weights(registry: Registry) -> None:
    before, after = parse(exposition(100, 100)), parse(exposition(120, 190, failed_v2=10))
    vs = load_documents((EXAMPLES / "vs-50-50.yaml").read_text())
    doc = build(delta(before, after, 10.0), registry, vs, 10.0)
    edges = {e["target"]: e for e in doc["edges"]}
    assert set(edges) == {"payment-v1", "payment-v2"}
    v1, v2 = edges["payment-v1"], edges["payment-v2"]
    assert (v1["requests"], v2["requests"]) == (20, 100)
    assert v1["rps"] == 2.0 and v2["rps"] == 10.0
    assert v1["error_pct"] == 0.0 and v2["error_pct"] == 10.0
    assert v1["mtls"] is True and v2["mtls"] is False  # from the destination's series only
    assert v1["share"] == pytest.approx(20 / 120, abs=1e-4) and v2["share"] == pytest.approx(100 / 120, abs=1e-4)
    assert (v1["subset"], v1["weight"], v2["subset"], v2["weight"]) == ("v1", 50, "v2", 50)
    route = doc["routes"]["payment"]
    assert route["virtual_service"] == "default/payment" and route["weights"] == [["v1", 50], ["v2", 50]]
    assert route["http"] and "retries" in route["http"][0] and route["destination_rule"] is None
    assert {n["id"] for n in doc["nodes"]} == {"client", "payment-v1", "payment-v2"}


def test_calls_that_reached_no_workload_go_to_the_services_own_node(registry: Registry) -> None:
    aborted = series("source", "v1", "14", 7).replace('destination_workload="payment-v1"',
                                                      'destination_workload="unknown"')
    doc = build(delta({}, parse([aborted]), 1.0), registry, [], 1.0)
    [edge] = doc["edges"]
    assert edge["target"] == "payment (no workload)" and edge["error_pct"] == 100.0 and edge["weight"] is None
    assert {"id": "payment (no workload)", "workload": "", "app": "payment", "version": "", "namespace": "",
            "services": ["payment"], "known": False} in doc["nodes"]


def test_without_a_virtual_service_the_topologys_split_is_the_weight(registry: Registry) -> None:
    doc = build(delta(parse(exposition(0, 0)), parse(exposition(10, 10)), 1.0), registry, [], 1.0)
    route = doc["routes"]["payment"]
    assert route["weights_source"] == "topology" and route["virtual_service"] is None
    assert {e["weight"] for e in doc["edges"]} == {50}


class Sidecars:
    """A real HTTP server serving growing counters at /stats/prometheus; counts the scrapes."""

    def __init__(self) -> None:
        self.scrapes = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.scrapes += 1
                body = "".join(exposition(10 * outer.scrapes, 30 * outer.scrapes)).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sidecars() -> Iterator[Sidecars]:
    s = Sidecars()
    yield s
    s.close()


def test_the_feed_scrapes_only_while_watched_and_ends_streams_on_close(sidecars: Sidecars,
                                                                       registry: Registry) -> None:
    def graph(rows: Any, window: float, bad: Any) -> dict[str, Any]:
        return build(rows, registry, [], window, bad)

    async def scenario() -> None:
        feed = GraphFeed(lambda: [("stand-in", sidecars.address)], graph, interval=0.05, window=1.0,
                         max_subscribers=2)
        assert not feed.running and sidecars.scrapes == 0
        async with feed.subscribe() as queue:
            assert feed.running
            doc = await asyncio.wait_for(queue.get(), 5)
            assert doc is not None
            shares = {e["target"]: e["share"] for e in doc["edges"]}
            assert shares == {"payment-v1": 0.25, "payment-v2": 0.75}
            async with feed.subscribe():
                with pytest.raises(TooManyWatchers):
                    async with feed.subscribe():
                        pass
        assert not feed.running  # the last watcher left: the loop is cancelled
        assert await feed.snapshot(5) is not None and not feed.running
        async with feed.subscribe() as queue:
            await feed.close()
            while (item := await asyncio.wait_for(queue.get(), 5)) is not None:
                assert item["edges"]
        with pytest.raises(TooManyWatchers):
            async with feed.subscribe():
                pass

    asyncio.run(scenario())


def test_stopping_the_loop_does_not_swallow_the_callers_cancellation() -> None:
    """The last watcher leaving waits for the loop's task to end; if that watcher is itself cancelled meanwhile
    (its page closed, the server stopping), it ends cancelled, not as if nothing happened."""

    async def scenario() -> None:
        feed = GraphFeed(list, lambda *_: {})
        release = asyncio.Event()

        async def slow_to_stop() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                await release.wait()  # its cleanup takes a while

        leaving = asyncio.Event()

        async def watcher() -> None:
            async with feed.subscribe():
                assert feed._task is not None
                feed._task.cancel()  # the real loop is replaced by one slow to stop
                feed._task = asyncio.create_task(slow_to_stop())
                await asyncio.sleep(0)
                leaving.set()

        task = asyncio.create_task(watcher())
        await leaving.wait()
        for _ in range(3):  # into the watcher's wait for the loop's end
            await asyncio.sleep(0)
        task.cancel()
        for _ in range(3):
            await asyncio.sleep(0)
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(scenario())

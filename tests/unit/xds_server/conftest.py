"""Fixtures for the ADS server tests: a registry with real certificate files (sidecar translation names
them), Istio resources, and a harness that runs a real grpc.aio server and client on loopback.

grpc.aio needs asyncio while pytest runs async tests on trio, so these tests are plain functions that run
their scenario with :func:`asyncio.run` (each run is bounded by :data:`SCENARIO_TIMEOUT`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from mesh_ctl.addressing import plan
from mesh_ctl.ca.files import CertFiles, load_or_create_root, write_workload_files
from mesh_ctl.registry import Registry
from mesh_ctl.topology import Topology, default_topology
from mesh_ctl.xds.ads import AdsServer, Generation

SCENARIO_TIMEOUT = 30.0
T = TypeVar("T")

CLIENT_NODE = "sidecar~127.0.0.12~client.default~default.svc.cluster.local"
V1_NODE = "sidecar~127.0.0.10~payment-v1.default~default.svc.cluster.local"
FQDN = "payment.default.svc.cluster.local"
ALL, V1, V2 = f"outbound|8080||{FQDN}", f"outbound|8080|v1|{FQDN}", f"outbound|8080|v2|{FQDN}"


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), SCENARIO_TIMEOUT)

    return asyncio.run(bounded())


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertFiles]:
    t = default_topology()
    directory = tmp_path_factory.mktemp("xds-certs")
    ca, _ = load_or_create_root(directory / "ca", t.trust_domain)
    return {w.name: write_workload_files(directory / w.name, ca, t.spiffe_id(w)) for w in t.workloads}


@pytest.fixture(scope="session")
def topology() -> Topology:
    return default_topology()


@pytest.fixture(scope="session")
def registry(topology: Topology, certs: dict[str, CertFiles]) -> Registry:
    return Registry.from_topology(topology, plan(topology, probe=lambda _: True), certs)


def vs(weights: dict[str, int], name: str = "payment") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"hosts": ["payment"], "http": [{"route": [
                {"destination": {"host": "payment", "subset": s}, "weight": w} for s, w in weights.items()]}]}}


def dr(lb: str = "ROUND_ROBIN") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "payment", "namespace": "default"},
            "spec": {"host": "payment", "trafficPolicy": {"loadBalancer": {"simple": lb}},
                     "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                 {"name": "v2", "labels": {"version": "v2"}}]}}


def generation(registry: Registry, resources: Sequence[dict[str, Any]] = (), revision: str = "1") -> Generation:
    return Generation.build(registry, list(resources), revision)


def node(node_id: str, proxyless: bool = False) -> base_pb2.Node:
    n = base_pb2.Node(id=node_id)
    if proxyless:
        n.metadata.CopyFrom(struct_pb2.Struct())
        n.metadata.update({"GENERATOR": "grpc", "NAMESPACE": "default"})
    return n


class Stream:
    """One ADS stream from the client side: write hand-made DiscoveryRequests, read the responses."""

    def __init__(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub, node: base_pb2.Node) -> None:
        self.call = stub.StreamAggregatedResources()
        self.node = node
        self.first = True
        self._read: asyncio.Future[Any] | None = None

    async def send(self, type_url: str, names: Sequence[str] = (), *, version: str = "", nonce: str = "",
                   error: str | None = None) -> None:
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=list(names), version_info=version,
                                             response_nonce=nonce)
        if self.first:
            req.node.CopyFrom(self.node)
            self.first = False
        if error is not None:
            req.error_detail.code = 3
            req.error_detail.message = error
        await self.call.write(req)

    def _next(self) -> asyncio.Future[Any]:
        if self._read is None:
            self._read = asyncio.ensure_future(self.call.read())
        return self._read

    async def recv(self, timeout: float = 10.0) -> discovery_pb2.DiscoveryResponse:
        read = self._next()
        done, _ = await asyncio.wait({read}, timeout=timeout)
        if not done:
            raise AssertionError(f"no response within {timeout} s")
        self._read = None
        response = read.result()
        assert response is not grpc.aio.EOF, "the stream ended"  # type: ignore[attr-defined]
        assert isinstance(response, discovery_pb2.DiscoveryResponse)
        return response

    async def silence(self, duration: float = 0.4) -> None:
        """Assert that nothing arrives for ``duration`` seconds."""
        read = self._next()
        done, _ = await asyncio.wait({read}, timeout=duration)
        if done:
            self._read = None
            raise AssertionError(f"unexpected response: {read.result()}")

    async def ack(self, response: discovery_pb2.DiscoveryResponse, names: Sequence[str] = ()) -> None:
        await self.send(response.type_url, names, version=response.version_info, nonce=response.nonce)


class Harness:
    def __init__(self, ads: AdsServer, server: grpc.aio.Server, channel: grpc.aio.Channel) -> None:
        self.ads = ads
        self.server = server
        self.channel = channel
        self.stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)

    def stream(self, n: base_pb2.Node) -> Stream:
        return Stream(self.stub, n)


@contextlib.asynccontextmanager
async def serving(gen: Generation, **options: Any) -> AsyncIterator[Harness]:
    """A real grpc.aio ADS server on loopback; ``options`` go to :class:`AdsServer` (tls, trust_bundle)."""
    ads = AdsServer(gen, identifier="test-control-plane", **options)
    server = grpc.aio.server()
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(ads, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Harness(ads, server, channel)
    finally:
        await channel.close(None)
        await server.stop(0)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path

"""A minimal state-of-the-world ADS server for tests: it answers each DiscoveryRequest with the resources
``translate_for_proxy`` gives the requesting node, and records every NACK.

Not the control plane's ADS server (that is ``mesh_ctl/xds_server.py``): just enough protocol to let a real
xDS client (grpcio) judge what the translator emits. A response is sent when the subscribed names or the
version of the type changed, never in reply to an ACK of what was just sent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2

from mesh_ctl.translate import ProxyResources


class AdsStub(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self, resources_for: Callable[[Any], ProxyResources]) -> None:
        self._resources_for = resources_for
        self.lock = threading.Lock()
        self.nacks: list[str] = []
        self.requests: list[tuple[str, tuple[str, ...]]] = []

    def StreamAggregatedResources(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:  # noqa: N802
        node = None
        sent: dict[str, tuple[frozenset[str], str]] = {}
        nonce = 0
        for req in request_iterator:
            if req.HasField("node") and req.node.id:
                node = req.node
            with self.lock:
                self.requests.append((req.type_url, tuple(req.resource_names)))
                if req.HasField("error_detail") and req.error_detail.message:
                    self.nacks.append(f"{req.type_url}: {req.error_detail.message}")
            if node is None:
                continue
            pr = self._resources_for(node)
            names = frozenset(req.resource_names)
            chosen = {n: msg for n, msg in pr.of(req.type_url).items() if not names or n in names}
            version = pr.type_version(req.type_url, chosen)
            if sent.get(req.type_url) == (names, version):
                continue  # an ACK (or a repeat) of what this stream already has
            sent[req.type_url] = (names, version)
            nonce += 1
            packed = []
            for msg in chosen.values():
                a = any_pb2.Any()
                a.Pack(msg)
                packed.append(a)
            yield discovery_pb2.DiscoveryResponse(version_info=version, type_url=req.type_url, nonce=str(nonce),
                                                  resources=packed)


def serve(stub: AdsStub, address: str) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(stub, server)
    server.add_insecure_port(address)
    server.start()
    return server

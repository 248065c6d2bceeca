"""One pyproxy from a static Envoy bootstrap in front of real payment servers, for integration tests that need
clusters of their own (load balancing, outlier detection, circuit breakers):

    grpcio client --h2c--> pyproxy (listener, one virtual host per route name) --h2c--> payment-server(s)

:func:`bootstrap` builds the bootstrap from :func:`cluster` and :func:`vhost` dicts (every port free, picked by the
caller); :func:`start_proxy` writes it, starts ``pyproxy -c`` (with extra flags such as ``--seed``) in a
:class:`~tests.support.procs.ProcessGroup` and waits until its admin API answers ``/ready``; :class:`Proxy`
reads its admin API and makes channels whose ``:authority`` picks a virtual host.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.procs import ManagedProcess, ProcessGroup, free_port, wait_for_port

HOST = "127.0.0.1"
H2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def cluster(name: str, ports: list[int], lb: str = "ROUND_ROBIN", weights: list[int] | None = None,
            **extra: Any) -> dict[str, Any]:
    """A STATIC HTTP/2 cluster of local endpoints (``weights``: their load_balancing_weight)."""
    endpoints = []
    for i, port in enumerate(ports):
        e: dict[str, Any] = {"endpoint": {"address": {"socket_address": {"address": HOST, "port_value": port}}}}
        if weights is not None:
            e["load_balancing_weight"] = weights[i]
        endpoints.append(e)
    return {"name": name, "type": "STATIC", "connect_timeout": "1s", "lb_policy": lb,
            "typed_extension_protocol_options": H2,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]}, **extra}


def vhost(name: str, route: dict[str, Any]) -> dict[str, Any]:
    """A virtual host for ``:authority`` ``name``, every path to ``route`` (a RouteAction)."""
    return {"name": name, "domains": [name], "routes": [{"match": {"prefix": "/"}, "route": route}]}


def bootstrap(listen: int, admin: int, vhosts: list[dict[str, Any]], clusters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "admin": {"address": {"socket_address": {"address": HOST, "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "l", "address": {"socket_address": {"address": HOST, "port_value": listen}},
                           "filter_chains": [{"filters": [{
                               "name": "envoy.filters.network.http_connection_manager", "typed_config": {
                                   "@type": HCM, "stat_prefix": "l", "route_config": {"virtual_hosts": vhosts},
                                   "http_filters": [{"name": "envoy.filters.http.router",
                                                     "typed_config": {"@type": ROUTER}}]}}]}]}],
            "clusters": clusters,
        }}


@dataclass
class Proxy:
    proc: ManagedProcess
    listen: int
    admin_port: int

    @property
    def admin_address(self) -> str:
        return f"{HOST}:{self.admin_port}"

    def admin(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://{self.admin_address}{path}", timeout=5) as r:
            return bytes(r.read())

    def admin_json(self, path: str) -> Any:
        return json.loads(self.admin(path))

    def stats(self) -> dict[str, int]:
        return {s["name"]: int(s["value"]) for s in self.admin_json("/stats?format=json")["stats"]}

    def channel(self, authority: str) -> grpc.Channel:
        return grpc.insecure_channel(f"{HOST}:{self.listen}", options=api.channel_options(authority))

    def ready(self) -> bool:
        try:
            return self.admin("/ready").strip() == b"LIVE"
        except (OSError, urllib.error.HTTPError):
            return False


def start_server(procs: ProcessGroup, name: str, *extra: str) -> int:
    """A payment server replying with ``served_by`` = ``name``; returns its port once it listens."""
    port = free_port()
    procs.python(name, "payment_service.server", "--version", "v1", "--listen", f"{HOST}:{port}", "--name", name,
                 *extra)
    wait_for_port(HOST, port, timeout=20)
    return port


def start_proxy(procs: ProcessGroup, workdir: Path, name: str, vhosts: list[dict[str, Any]],
                clusters: list[dict[str, Any]], *flags: str, timeout: float = 20.0) -> Proxy:
    """``pyproxy -c <bootstrap> *flags``; returns once its admin API says LIVE."""
    listen, admin = free_port(), free_port()
    while admin == listen:
        admin = free_port()
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(bootstrap(listen, admin, vhosts, clusters)))
    proxy = Proxy(procs.python(name, "pyproxy", "-c", str(path), *flags), listen, admin)
    deadline = time.monotonic() + timeout
    while not proxy.ready():
        if not proxy.proc.alive():
            raise RuntimeError(f"{name} exited: {proxy.proc.output()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} not ready after {timeout}s: {proxy.proc.output()[-3000:]}")
        time.sleep(0.05)
    return proxy


def charge(channel: grpc.Channel, timeout: float = 10.0) -> pb.ChargeReply:
    """One Charge call; raises grpc.RpcError on failure."""
    request = pb.ChargeRequest(customer_id="cust-1", amount=1000, currency="EUR")
    reply: pb.ChargeReply = api.Stub(channel).Charge(request, timeout=timeout)
    return reply

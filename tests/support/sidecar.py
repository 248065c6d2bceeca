"""One real pyproxy, configured by an Envoy bootstrap a test builds, in front of real payment servers.

    grpcio client --h2c--> pyproxy --h2c--> payment-server(s)

The builders make the bootstrap pieces (:func:`cluster`, :func:`vhost`, :func:`bootstrap`); :func:`start_proxy`
writes it and starts pyproxy; :class:`Proxy` talks to it (channels by ``:authority``, the admin endpoints, the
JSON access log). :func:`charge_many` makes many calls from a few threads; :func:`server_calls` asks a payment
server how many calls it served (``GetServerStats``); :func:`wait_until` polls observable state, bounded.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
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
UNLIMITED_RETRIES = {"thresholds": [{"max_retries": 100000}]}
# The access log written by :func:`bootstrap` (one JSON object per request): what the tests read back.
ACCESS_LOG_FORMAT = {
    "authority": "%REQ(:AUTHORITY)%", "test_id": "%REQ(X-TEST-ID)%", "flags": "%RESPONSE_FLAGS%",
    "code": "%RESPONSE_CODE%", "grpc_status": "%GRPC_STATUS_NUMBER%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "upstream": "%UPSTREAM_HOST%",
}


def cluster(name: str, ports: Sequence[int], lb: str = "ROUND_ROBIN", circuit_breakers: dict[str, Any] | None = None,
            weights: Sequence[int] | None = None, **extra: Any) -> dict[str, Any]:
    """A STATIC HTTP/2 cluster of ``HOST:port`` endpoints (``weights``: their load_balancing_weight);
    ``circuit_breakers`` defaults to unlimited retries (so concurrent retries in a test never hit Envoy's
    default of 3)."""
    endpoints: list[dict[str, Any]] = [{"endpoint": {"address": {"socket_address": {"address": HOST, "port_value": p}}}}
                                       for p in ports]
    for endpoint, weight in zip(endpoints, weights or (), strict=False):
        endpoint["load_balancing_weight"] = weight
    return {"name": name, "type": "STATIC", "connect_timeout": "0.5s", "lb_policy": lb,
            "typed_extension_protocol_options": H2,
            "circuit_breakers": UNLIMITED_RETRIES if circuit_breakers is None else circuit_breakers,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]}, **extra}


def vhost(name: str, cluster_name: str, retry: dict[str, Any] | None = None,
          minimesh: dict[str, bool] | None = None, timeout: str = "5s") -> dict[str, Any]:
    """A virtual host for ``:authority`` ``name``: one route to ``cluster_name``; ``minimesh``: the route's
    ``metadata.filter_metadata["minimesh"]`` (the opt-in gRPC trailers behaviours)."""
    action: dict[str, Any] = {"cluster": cluster_name, "timeout": timeout}
    if retry is not None:
        action["retry_policy"] = retry
    route: dict[str, Any] = {"match": {"prefix": "/"}, "route": action}
    if minimesh is not None:
        route["metadata"] = {"filter_metadata": {"minimesh": minimesh}}
    return {"name": name, "domains": [name], "include_attempt_count_in_response": True, "routes": [route]}


def bootstrap(listen: int, admin: int, vhosts: list[dict[str, Any]], clusters: list[dict[str, Any]],
              access_log: Path | None = None, suppress_envoy_headers: bool = False,
              http_filters: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """A bootstrap with one listener (one HCM: the virtual hosts, ``http_filters`` then the router) and static
    clusters."""
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": "l",
        "route_config": {"virtual_hosts": vhosts},
        "http_filters": [*http_filters, {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            **({"suppress_envoy_headers": True} if suppress_envoy_headers else {})}}]}
    if access_log is not None:
        hcm["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(access_log), "log_format": {"json_format": ACCESS_LOG_FORMAT}}}]
    return {
        "admin": {"address": {"socket_address": {"address": HOST, "port_value": admin}}},
        "static_resources": {
            "listeners": [{"name": "l", "address": {"socket_address": {"address": HOST, "port_value": listen}},
                           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                           "typed_config": hcm}]}]}],
            "clusters": clusters,
        }}


class Proxy:
    def __init__(self, proc: ManagedProcess, listen: int, admin: int, access_log: Path) -> None:
        self.proc = proc
        self.listen = listen
        self.admin = admin
        self.access_log = access_log

    @property
    def admin_address(self) -> str:
        return f"{HOST}:{self.admin}"

    def channel(self, authority: str) -> grpc.Channel:
        return grpc.insecure_channel(f"{HOST}:{self.listen}", options=[("grpc.default_authority", authority)])

    def admin_get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{HOST}:{self.admin}{path}", timeout=5) as resp:
            return str(resp.read().decode())

    def stats(self) -> dict[str, int]:
        """``/stats?format=json`` as a dict."""
        return {s["name"]: s["value"] for s in json.loads(self.admin_get("/stats?format=json"))["stats"]}

    def hosts(self, cluster_name: str) -> dict[int, dict[str, Any]]:
        """``/clusters?format=json``: the cluster's hosts by port."""
        for c in json.loads(self.admin_get("/clusters?format=json"))["cluster_statuses"]:
            if c["name"] == cluster_name:
                return {h["address"]["socket_address"]["port_value"]: h for h in c["host_statuses"]}
        raise KeyError(cluster_name)

    def log_lines(self) -> list[dict[str, Any]]:
        """The access log so far (line-buffered by pyproxy: a request's line is there when its reply is)."""
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]


def start_proxy(procs: ProcessGroup, tmp: Path, listen: int, admin: int, vhosts: list[dict[str, Any]],
                clusters: list[dict[str, Any]], suppress_envoy_headers: bool = False, *,
                http_filters: Sequence[dict[str, Any]] = (), flags: Sequence[str] = (),
                name: str = "pyproxy") -> Proxy:
    """Write the bootstrap (in ``tmp``), start pyproxy (more command-line ``flags``, its log under ``name``),
    wait until it listens (listener and admin)."""
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "access.log"
    config = bootstrap(listen, admin, vhosts, clusters, access_log=log, suppress_envoy_headers=suppress_envoy_headers,
                       http_filters=http_filters)
    path = tmp / "bootstrap.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = procs.python(name, "pyproxy", "-c", str(path), *flags)
    for port in (listen, admin):
        wait_for_port(HOST, port, timeout=20, proc=proc.popen)
    return Proxy(proc, listen, admin, log)


def start_payment(procs: ProcessGroup, name: str, *args: str, version: str = "v1") -> int:
    """Start a payment server on a free port (not waited for: see :func:`wait_ports`); returns the port."""
    port = free_port()
    procs.python(name, "payment_service.server", "--version", version, "--listen", f"{HOST}:{port}",
                 "--name", name, *args)
    return port


def wait_ports(*ports: int) -> None:
    for port in ports:
        wait_for_port(HOST, port, timeout=20)


def server_calls(port: int, method: str = "/payment.PaymentService/Charge") -> int:
    with grpc.insecure_channel(f"{HOST}:{port}") as ch:
        stats = api.Stub(ch).GetServerStats(pb.ServerStatsRequest(), timeout=5)
    return int(stats.calls_by_method.get(method, 0))


def call_metadata(err: grpc.RpcError) -> dict[str, Any]:
    """Headers and trailers of a failed call (a trailers-only reply's headers are grpcio's trailing metadata)."""
    failed: Any = err  # also the finished grpc.Call
    return dict(failed.trailing_metadata() or ()) | dict(failed.initial_metadata() or ())


def charge_many(channel: grpc.Channel, n: int, threads: int = 4, request: pb.ChargeRequest | None = None,
                metadata: Sequence[tuple[str, str]] = ()) -> tuple[Counter[str], Counter[str]]:
    """``n`` Charge calls from ``threads`` threads: (status names, ``x-envoy-attempt-count`` values) counted."""
    statuses: Counter[str] = Counter()
    attempts: Counter[str] = Counter()
    lock = threading.Lock()
    stub = api.Stub(channel)
    req = request if request is not None else pb.ChargeRequest(amount=1)

    def worker(count: int) -> None:
        for _ in range(count):
            try:
                _, call = stub.Charge.with_call(req, timeout=5, metadata=tuple(metadata))
                code = "OK"
                meta = dict(call.initial_metadata())
            except grpc.RpcError as e:
                code = e.code().name
                meta = call_metadata(e)
            with lock:
                statuses[code] += 1
                attempts[str(meta.get("x-envoy-attempt-count", "?"))] += 1

    ts = [threading.Thread(target=worker, args=(n // threads,)) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return statuses, attempts


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)

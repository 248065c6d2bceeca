"""Retries through a real pyproxy with real payment servers: Envoy's retry policy, end to end.

    grpcio client --h2c--> pyproxy --h2c--> payment-server(s)

Routes (one bootstrap, selected by :authority):
- ``flaky``: one server failing half its calls with a trailers-only UNAVAILABLE; ``retry_on: unavailable``,
  3 retries. A call fails only if all four attempts fail (1/16).
- ``dead-and-alive``: a dead endpoint (nothing listens) and a live one, round robin; ``retry_on:
  connect-failure`` with the previous-hosts predicate: every call succeeds.
- ``no-retry``: the same two endpoints without a retry policy: about half the calls fail, which shows the
  previous route's result comes from retrying.
- ``slow-and-fast``: a server answering after 600 ms and a fast one; ``per_try_timeout: 150ms``,
  ``retry_on: reset`` and previous hosts: calls succeed on the second attempt, well before the slow answer.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.procs import ProcessGroup, free_port, wait_for_port

pytestmark = pytest.mark.timeout(120)
HOST = "127.0.0.1"
H2 = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "explicit_http_config": {"http2_protocol_options": {}}}}
UNLIMITED_RETRIES = {"thresholds": [{"max_retries": 100000}]}


def _cluster(name: str, ports: list[int], lb: str = "ROUND_ROBIN") -> dict[str, Any]:
    return {"name": name, "type": "STATIC", "connect_timeout": "0.5s", "lb_policy": lb,
            "typed_extension_protocol_options": H2, "circuit_breakers": UNLIMITED_RETRIES,
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": HOST, "port_value": p}}}} for p in ports]}]}}


def _vhost(name: str, cluster: str, retry: dict[str, Any] | None) -> dict[str, Any]:
    route: dict[str, Any] = {"cluster": cluster, "timeout": "5s"}
    if retry is not None:
        route["retry_policy"] = retry
    return {"name": name, "domains": [name], "include_attempt_count_in_response": True,
            "routes": [{"match": {"prefix": "/"}, "route": route}]}


class Setup:
    def __init__(self, procs: ProcessGroup, tmp: Path) -> None:
        self.flaky, self.alive, self.dead, self.slow, self.listen, self.admin = (free_port() for _ in range(6))
        procs.python("flaky", "payment_service.server", "--version", "v1", "--listen", f"{HOST}:{self.flaky}",
                     "--error-rate", "0.5")
        procs.python("alive", "payment_service.server", "--version", "v2", "--listen", f"{HOST}:{self.alive}")
        procs.python("slow", "payment_service.server", "--version", "v1", "--listen", f"{HOST}:{self.slow}",
                     "--latency", "600")
        previous_hosts = [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]
        bootstrap = {
            "admin": {"address": {"socket_address": {"address": HOST, "port_value": self.admin}}},
            "static_resources": {
                "listeners": [{"name": "l", "address": {"socket_address": {"address": HOST, "port_value": self.listen}},
                               "filter_chains": [{"filters": [{
                                   "name": "envoy.filters.network.http_connection_manager", "typed_config": {
                                       "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                                "http_connection_manager.v3.HttpConnectionManager",
                                       "stat_prefix": "l",
                                       "route_config": {"virtual_hosts": [
                                           _vhost("flaky", "flaky", {"retry_on": "unavailable", "num_retries": 3}),
                                           _vhost("dead-and-alive", "mixed", {
                                               "retry_on": "connect-failure", "num_retries": 2,
                                               "retry_host_predicate": previous_hosts,
                                               "host_selection_retry_max_attempts": 5}),
                                           _vhost("no-retry", "mixed", None),
                                           _vhost("slow-and-fast", "slowfast", {
                                               "retry_on": "reset", "num_retries": 2, "per_try_timeout": "0.15s",
                                               "retry_host_predicate": previous_hosts,
                                               "host_selection_retry_max_attempts": 5}),
                                       ]},
                                       "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                                           "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3"
                                                    ".Router"}}]}}]}]}],
                "clusters": [_cluster("flaky", [self.flaky]), _cluster("mixed", [self.dead, self.alive]),
                             _cluster("slowfast", [self.slow, self.alive])],
            }}
        path = tmp / "retries.yaml"
        path.write_text(yaml.safe_dump(bootstrap))
        self.proxy = procs.python("pyproxy", "pyproxy", "-c", str(path))
        for port in (self.flaky, self.alive, self.slow, self.listen):
            wait_for_port(HOST, port, timeout=20)

    def channel(self, authority: str) -> grpc.Channel:
        return grpc.insecure_channel(f"{HOST}:{self.listen}", options=[("grpc.default_authority", authority)])

    def server_calls(self, port: int, method: str = "/payment.PaymentService/Charge") -> int:
        with grpc.insecure_channel(f"{HOST}:{port}") as ch:
            stats = api.Stub(ch).GetServerStats(pb.ServerStatsRequest(), timeout=5)
        return int(stats.calls_by_method.get(method, 0))


@pytest.fixture
def setup(procs: ProcessGroup, tmp_path: Path) -> Setup:
    return Setup(procs, tmp_path)


def _charge_many(channel: grpc.Channel, n: int, threads: int = 4) -> tuple[Counter[str], Counter[str]]:
    statuses: Counter[str] = Counter()
    attempts: Counter[str] = Counter()
    lock = threading.Lock()
    stub = api.Stub(channel)

    def worker(count: int) -> None:
        for _ in range(count):
            try:
                _, call = stub.Charge.with_call(pb.ChargeRequest(amount=1), timeout=5)
                code = "OK"
                meta = dict(call.initial_metadata())
            except grpc.RpcError as e:
                code = e.code().name
                # A trailers-only reply's headers are the call's trailing metadata for grpcio.
                failed: Any = e  # also the finished grpc.Call
                meta = dict(failed.trailing_metadata() or ()) | dict(failed.initial_metadata() or ())
            with lock:
                statuses[code] += 1
                attempts[str(meta.get("x-envoy-attempt-count", "?"))] += 1

    ts = [threading.Thread(target=worker, args=(n // threads,)) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return statuses, attempts


def test_unavailable_is_retried_up_to_the_policy(setup: Setup) -> None:
    before = setup.server_calls(setup.flaky)
    with setup.channel("flaky") as channel:
        statuses, attempts = _charge_many(channel, 400)
    # Without retries ~200 would fail; with 3 retries ~25 (1/16): a broken retry cannot land in this band.
    assert 5 <= statuses["UNAVAILABLE"] <= 60, statuses
    assert statuses["OK"] + statuses["UNAVAILABLE"] == 400
    served = setup.server_calls(setup.flaky) - before
    # Expected attempts: 400 * (1 + 1/2 + 1/4 + 1/8) = 750.
    assert 650 <= served <= 850, served
    assert {"1", "2", "3", "4"} <= set(attempts), attempts  # x-envoy-attempt-count on responses
    assert not set(attempts) - {"1", "2", "3", "4"}


def test_client_stream_body_is_replayed_on_retry(setup: Setup) -> None:
    amounts = [pb.ChargeRequest(amount=a) for a in (100, 250, 7, 3000, 11)]
    ok = 0
    with setup.channel("flaky") as channel:
        stub = api.Stub(channel)
        for _ in range(40):
            try:
                summary = stub.ChargeBatch(iter(amounts), timeout=5)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
                continue
            ok += 1
            assert summary.count == len(amounts)  # every message arrived on the attempt that succeeded
            assert summary.total_amount == sum(a.amount for a in amounts)
    assert ok >= 30


def test_connect_failures_move_to_another_host(setup: Setup) -> None:
    with setup.channel("dead-and-alive") as channel:
        statuses, _ = _charge_many(channel, 100)
    assert statuses == Counter({"OK": 100})
    with setup.channel("no-retry") as channel:
        statuses, _ = _charge_many(channel, 100)
    assert statuses["UNAVAILABLE"] >= 25, statuses  # round robin over a dead host: about half


def test_per_try_timeout_retries_on_the_other_host(setup: Setup) -> None:
    slow_before = setup.server_calls(setup.slow)
    with setup.channel("slow-and-fast") as channel:
        stub = api.Stub(channel)
        durations = []
        for _ in range(10):
            t0 = time.perf_counter()
            reply = stub.Charge(pb.ChargeRequest(amount=1), timeout=5)
            durations.append(time.perf_counter() - t0)
            assert reply.version == "v2"  # always answered by the fast host
    assert max(durations) < 0.5, durations  # never waited for the 600 ms answer
    assert setup.server_calls(setup.slow) > slow_before  # the slow host was tried (and abandoned)

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

import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.procs import ProcessGroup, free_port
from tests.support.sidecar import charge_many, cluster, server_calls, start_payment, start_proxy, vhost, wait_ports

pytestmark = pytest.mark.timeout(120)


class Setup:
    def __init__(self, procs: ProcessGroup, tmp: Path) -> None:
        self.dead = free_port()
        self.flaky = start_payment(procs, "flaky", "--error-rate", "0.5")
        self.alive = start_payment(procs, "alive", version="v2")
        self.slow = start_payment(procs, "slow", "--latency", "600")
        previous_hosts = [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}]
        vhosts = [
            vhost("flaky", "flaky", {"retry_on": "unavailable", "num_retries": 3}),
            vhost("dead-and-alive", "mixed", {
                "retry_on": "connect-failure", "num_retries": 2, "retry_host_predicate": previous_hosts,
                "host_selection_retry_max_attempts": 5}),
            vhost("no-retry", "mixed", None),
            vhost("slow-and-fast", "slowfast", {
                "retry_on": "reset", "num_retries": 2, "per_try_timeout": "0.15s",
                "retry_host_predicate": previous_hosts, "host_selection_retry_max_attempts": 5}),
        ]
        clusters = [cluster("flaky", [self.flaky]), cluster("mixed", [self.dead, self.alive]),
                    cluster("slowfast", [self.slow, self.alive])]
        self.proxy = start_proxy(procs, tmp, free_port(), free_port(), vhosts, clusters)
        wait_ports(self.flaky, self.alive, self.slow)

    def channel(self, authority: str) -> grpc.Channel:
        return self.proxy.channel(authority)

    def server_calls(self, port: int, method: str = "/payment.PaymentService/Charge") -> int:
        return server_calls(port, method)


@pytest.fixture
def setup(procs: ProcessGroup, tmp_path: Path) -> Setup:
    return Setup(procs, tmp_path)


def test_unavailable_is_retried_up_to_the_policy(setup: Setup) -> None:
    before = setup.server_calls(setup.flaky)
    with setup.channel("flaky") as channel:
        statuses, attempts = charge_many(channel, 400)
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
        statuses, _ = charge_many(channel, 100)
    assert statuses == Counter({"OK": 100})
    with setup.channel("no-retry") as channel:
        statuses, _ = charge_many(channel, 100)
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

"""Better than Envoy for gRPC, opt-in per route (issue 10, item 4), through a real pyproxy and real servers.

A gRPC server that fails *after* sending its response headers puts its grpc-status in the trailers. Envoy
decides retries and outlier detection on the headers (HTTP 200, no grpc-status), so it neither retries such
a call nor counts it against the host (envoy#11049, envoy#8228). pyproxy does both when the route's
``metadata.filter_metadata["minimesh"]`` says ``retry_on_trailers`` / ``outlier_on_trailers``; without
it, it behaves as Envoy.

Servers (``payment-server --error-at after-headers``): ``late30`` fails 30 % of calls that way, ``late100``
every call; ``healthy`` never fails. Virtual hosts (by ``:authority``):

- ``envoy-default`` / ``trailers-retry``: ``late30``, ``retry_on: unavailable``, 3 retries; the second with
  ``retry_on_trailers``;
- ``hold`` / ``hold-envoy``: ``healthy``, the same retry policy, with / without ``retry_on_trailers`` (big
  responses, server streams, failures requested per call with the ``x-payment-fail-*`` headers);
- ``od-trailers`` / ``od-default``: ``late100`` and ``healthy`` round robin, no retries, outlier detection
  (``consecutive_5xx: 3``), each on its own cluster (own outlier state); the first with
  ``outlier_on_trailers``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.procs import ProcessGroup, free_port, process_group
from tests.support.sidecar import (
    Proxy,
    call_metadata,
    charge_many,
    cluster,
    server_calls,
    start_payment,
    start_proxy,
    vhost,
    wait_ports,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)
RETRY = {"retry_on": "unavailable", "num_retries": 3}
OUTLIER = {"consecutive_5xx": 3, "interval": "0.2s", "base_ejection_time": "3s", "max_ejection_percent": 100}
WATCH = "/payment.PaymentService/WatchPayment"


class Setup:
    def __init__(self, procs: ProcessGroup, tmp: Path) -> None:
        self.late30 = start_payment(procs, "late30", "--error-rate", "0.3", "--error-at", "after-headers")
        self.late100 = start_payment(procs, "late100", "--error-rate", "1", "--error-at", "after-headers")
        self.healthy = start_payment(procs, "healthy", version="v2")
        vhosts = [
            vhost("envoy-default", "late30", RETRY),
            vhost("trailers-retry", "late30", RETRY, minimesh={"retry_on_trailers": True}),
            vhost("hold", "healthy", RETRY, minimesh={"retry_on_trailers": True}),
            vhost("hold-envoy", "healthy", RETRY),
            vhost("od-trailers", "od-trailers", minimesh={"outlier_on_trailers": True}),
            vhost("od-default", "od-default"),
        ]
        clusters = [
            cluster("late30", [self.late30]),
            cluster("healthy", [self.healthy]),
            cluster("od-trailers", [self.late100, self.healthy], outlier_detection=OUTLIER),
            cluster("od-default", [self.late100, self.healthy], outlier_detection=OUTLIER),
        ]
        self.proxy: Proxy = start_proxy(procs, tmp, free_port(), free_port(), vhosts, clusters)
        wait_ports(self.late30, self.late100, self.healthy)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("trailers")
    with process_group(tmp) as procs:
        yield Setup(procs, tmp)


def test_status_in_trailers_is_retried_only_with_the_option(setup: Setup) -> None:
    n = 400
    with setup.proxy.channel("envoy-default") as channel:
        envoy, envoy_attempts = charge_many(channel, n)
    with setup.proxy.channel("trailers-retry") as channel:
        ours, our_attempts = charge_many(channel, n)
    # Envoy's default: a grpc-status in trailers is not retried, ~30 % fail: mean 120, sigma 9.2; [60, 180] is
    # +-6.5 sigma. With the option a call fails only when 4 attempts fail: 0.3^4 = 0.81 %, mean 3.2 (Poisson);
    # P(> 20) < 1e-9, and a route that does not retry (120) or retries once (36) is far outside.
    assert 60 <= envoy["UNAVAILABLE"] <= 180, envoy
    assert envoy["OK"] + envoy["UNAVAILABLE"] == n
    assert set(envoy_attempts) == {"1"}, envoy_attempts  # never retried
    assert ours["UNAVAILABLE"] <= 20, ours
    assert ours["OK"] + ours["UNAVAILABLE"] == n
    # ~30 % of the calls needed a second attempt (+-6.5 sigma), and the caller sees on which attempt it ended.
    assert 60 <= n - our_attempts["1"] <= 180, our_attempts
    assert set(our_attempts) <= {"1", "2", "3", "4"}, our_attempts


def test_a_response_bigger_than_the_buffer_is_not_held(setup: Setup) -> None:
    with setup.proxy.channel("hold") as channel:
        stub = api.Stub(channel)
        for size in (900 * 1024, 3 * 1024 * 1024):  # under the 1 MiB retry buffer (held whole), and over it
            reply, call = stub.Charge.with_call(pb.ChargeRequest(amount=1),
                                                metadata=(("x-payment-response-bytes", str(size)),), timeout=10)
            assert len(reply.payload) == size
            assert dict(call.initial_metadata())["x-envoy-attempt-count"] == "1"


def _watch(stub: api.Stub, updates: int, interval_ms: int, metadata: Any = (), timeout: float = 10) -> Any:
    return stub.WatchPayment(pb.WatchPaymentRequest(payment_id="p-1", updates=updates, interval_ms=interval_ms),
                             metadata=metadata, timeout=timeout)


def test_a_long_server_stream_still_flows(setup: Setup) -> None:
    # A stream of 1,000 messages 50 ms apart (50 s): if the proxy held it until its trailers (or until 1 MiB),
    # the first messages would never come before the 10 s deadline. Its messages are committed once the
    # response is evidently not unary (a second message starts), and then flow as they come.
    with setup.proxy.channel("hold") as channel:
        stream = _watch(api.Stub(channel), updates=1000, interval_ms=50)
        began = time.monotonic()
        got = [next(stream).seq for _ in range(5)]
        elapsed = time.monotonic() - began
        stream.cancel()
    assert got == [0, 1, 2, 3, 4]
    assert elapsed < 8, elapsed  # ~0.2 s of intervals; anything held would hit the 10 s deadline instead


def test_server_streams_are_retried_while_nothing_was_committed(setup: Setup) -> None:
    # late30 fails 30 % of calls after the headers and before the first message: retried like unary calls.
    failed = 0
    with setup.proxy.channel("trailers-retry") as channel:
        stub = api.Stub(channel)
        for _ in range(40):
            try:
                assert [e.seq for e in _watch(stub, updates=3, interval_ms=10)] == [0, 1, 2]
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
                failed += 1
    assert failed <= 5  # 0.81 % each: mean 0.3; without the retry ~12 (sigma 2.9)

    # One message, then UNAVAILABLE in the trailers (every attempt): with the option the whole response is
    # held (nothing reached the caller), so it is retried; the caller gets the last attempt's response as it
    # came (its message, then the error) after 4 attempts. Envoy's default relays the first one.
    fail = [("x-payment-fail-code", "14"), ("x-payment-fail-at", "after-first-reply")]
    for authority, expected_attempts in (("hold", 4), ("hold-envoy", 1)):
        before = server_calls(setup.healthy, WATCH)
        with setup.proxy.channel(authority) as channel:
            stream = _watch(api.Stub(channel), updates=3, interval_ms=10, metadata=fail)
            got: list[int] = []
            with pytest.raises(grpc.RpcError) as err:
                got.extend(e.seq for e in stream)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert got == [0], authority
        assert call_metadata(err.value)["x-envoy-attempt-count"] == str(expected_attempts)
        assert server_calls(setup.healthy, WATCH) - before == expected_attempts


def _ejected(proxy: Proxy, cluster_name: str, port: int) -> bool:
    return bool(proxy.hosts(cluster_name)[port]["health_status"].get("failed_outlier_check"))


def test_outlier_detection_counts_trailers_only_with_the_option(setup: Setup) -> None:
    proxy = setup.proxy
    # With the option: 3 consecutive failures of late100 eject it at once; round robin gives it every other
    # call, so it is ejected after about 6 calls (bounded: 40).
    with proxy.channel("od-trailers") as channel:
        stub = api.Stub(channel)
        calls = 0
        while not _ejected(proxy, "od-trailers", setup.late100):
            assert calls < 40, "late100 never ejected"
            try:
                stub.Charge(pb.ChargeRequest(amount=1), timeout=5)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
            calls += 1
        assert calls <= 8, calls
        assert not _ejected(proxy, "od-trailers", setup.healthy)
        late_before = server_calls(setup.late100)
        statuses, _ = charge_many(channel, 20, threads=2)
        assert statuses == {"OK": 20}  # all on the healthy endpoint
        assert server_calls(setup.late100) == late_before
        assert _ejected(proxy, "od-trailers", setup.late100)  # still (3 s): the 20 calls were all made during it
        # ... and it comes back after base_ejection_time.
        assert wait_until(lambda: not _ejected(proxy, "od-trailers", setup.late100), timeout=15)

    # Envoy's default: the 200 of the headers is what outlier detection sees. Make calls until late100 has
    # failed 15 of them (5x the threshold); it is never ejected, and keeps getting half the calls.
    with proxy.channel("od-default") as channel:
        stub = api.Stub(channel)
        late_before = server_calls(setup.late100)
        failures = calls = 0
        while failures < 15:
            assert calls < 60, "late100 served too few calls"
            try:
                stub.Charge(pb.ChargeRequest(amount=1), timeout=5)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE
                failures += 1
            calls += 1
            assert not _ejected(proxy, "od-default", setup.late100)
        assert server_calls(setup.late100) - late_before == 15
        assert calls <= 32, calls  # round robin: every other call

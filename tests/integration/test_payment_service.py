"""payment-server and payment-client as real processes on loopback.

Two servers (v1, v2) are shared by the module; tests that need other flags (--error-rate, --latency) or
that stop a server start their own through the ``procs`` fixture. Counters on shared servers are compared
before/after, never assumed to start at zero.
"""

from __future__ import annotations

import json
import queue
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from payment_service import api
from payment_service.behaviour import pattern_bytes
from payment_service.loadgen import run_calls
from payment_service.proto import payment_pb2 as pb
from tests.support.procs import ManagedProcess, ProcessGroup, free_port, process_group, wait_for_port

pytestmark = pytest.mark.timeout(60)

CHARGE = "/payment.PaymentService/Charge"
WATCH = "/payment.PaymentService/WatchPayment"
# grpc-message is percent-encoded on the wire; this must come back exactly as sent.
AWKWARD_MESSAGE = 'refus\u00e9: 100% s\u00fbr \u2713 %41 %% \U0001f4b3 "quoted"\nline two'


@dataclass(frozen=True)
class Server:
    proc: ManagedProcess
    target: str
    version: str
    name: str


def start_servers(group: ProcessGroup, *specs: tuple[str, tuple[str, ...]]) -> list[Server]:
    """Start one payment-server per (version, extra args), all at once, then wait for each to listen."""
    started = []
    for version, extra in specs:
        port = free_port()
        name = f"payment-{version}-{port}"
        proc = group.python(
            name,
            "payment_service.server",
            "--version",
            version,
            "--listen",
            f"127.0.0.1:{port}",
            "--name",
            name,
            *extra,
        )
        started.append(Server(proc, f"127.0.0.1:{port}", version, name))
    for server in started:
        wait_for_port("127.0.0.1", int(server.target.rsplit(":", 1)[1]), proc=server.proc.popen)
    return started


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    with process_group(tmp_path_factory.mktemp("payment")) as group:
        v1, v2 = start_servers(group, ("v1", ()), ("v2", ()))
        yield {"v1": v1, "v2": v2}


@pytest.fixture
def v1(servers: dict[str, Server]) -> Server:
    return servers["v1"]


def connect(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, options=api.channel_options())


def pairs(metadata: Any) -> list[tuple[str, str | bytes]]:
    return [(k, v) for k, v in metadata or ()]


def identity(metadata: Any) -> list[tuple[str, str | bytes]]:
    return [(k, v) for k, v in pairs(metadata) if k in ("x-payment-version", "x-served-by")]


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def server_stats(server: Server) -> pb.ServerStats:
    with connect(server.target) as channel:
        return api.Stub(channel).GetServerStats(pb.ServerStatsRequest(), timeout=5)


# ----------------------------------------------------------------------------------------- call kinds


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_every_call_kind_says_which_version_served_it(servers: dict[str, Server], version: str) -> None:
    server = servers[version]
    me = [("x-payment-version", version), ("x-served-by", server.name)]
    fee = 0 if version == "v1" else 66
    with connect(server.target) as channel:
        stub = api.Stub(channel)
        # unary
        charge, call = stub.Charge.with_call(pb.ChargeRequest(customer_id="cust-3", amount=1234), timeout=5)
        assert identity(call.initial_metadata()) == me
        assert (charge.version, charge.served_by, charge.fee, charge.currency) == (
            version,
            server.name,
            fee,
            "EUR",
        )
        assert charge.message.startswith(f"{version}: charged 12.34 EUR")
        refund, call = stub.Refund.with_call(
            pb.RefundRequest(payment_id=charge.payment_id, amount=234), timeout=5
        )
        assert identity(call.initial_metadata()) == me
        assert (refund.version, refund.payment_id, refund.amount) == (version, charge.payment_id, 234)
        payment, call = stub.GetPayment.with_call(
            pb.GetPaymentRequest(payment_id=charge.payment_id), timeout=5
        )
        assert identity(call.initial_metadata()) == me
        assert (payment.version, payment.refunded_amount, payment.state) == (version, 234, pb.REFUNDED)
        # server streaming
        listing = stub.ListPayments(pb.ListPaymentsRequest(customer_id="cust-3", limit=4), timeout=5)
        listed = list(listing)
        assert identity(listing.initial_metadata()) == me
        assert len(listed) == 4 and listed[0].payment_id == charge.payment_id  # newest first, then demo ones
        assert {p.customer_id for p in listed} == {"cust-3"}
        assert {p.version for p in listed} == {version}
        watch = stub.WatchPayment(
            pb.WatchPaymentRequest(payment_id="p1", updates=3, interval_ms=10), timeout=5
        )
        events = list(watch)
        assert [(e.seq, e.state) for e in events] == [(0, pb.AUTHORIZED), (1, pb.CAPTURED), (2, pb.SETTLED)]
        assert identity(watch.initial_metadata()) == me
        # client streaming
        batch = [pb.ChargeRequest(amount=a) for a in (1000, 2000, 3000)]
        summary, call = stub.ChargeBatch.with_call(iter(batch), timeout=5)
        assert identity(call.initial_metadata()) == me
        assert (summary.count, summary.total_amount, summary.version) == (3, 6000, version)
        assert summary.total_fee == (0 if version == "v1" else 59 + 88 + 117)
        assert len(set(summary.payment_ids)) == 3
        # bidirectional, ping-pong: each reply arrives before the next request is even written
        requests: queue.Queue[pb.ChargeRequest | None] = queue.Queue()
        replies: Any = stub.ChargeStream(iter(requests.get, None), timeout=10)  # grpc-stubs lack __next__
        for amount in (100, 200, 300):
            requests.put(pb.ChargeRequest(amount=amount))
            reply = next(replies)
            assert (reply.amount, reply.version, reply.served_by) == (amount, version, server.name)
        requests.put(None)
        assert list(replies) == []
        assert identity(replies.initial_metadata()) == me
        assert replies.code() == grpc.StatusCode.OK


def test_demo_payments_are_the_same_on_both_versions(servers: dict[str, Server]) -> None:
    found = []
    for server in servers.values():
        with connect(server.target) as channel:
            found.append(
                api.Stub(channel).GetPayment(pb.GetPaymentRequest(payment_id="pay-demo-42"), timeout=5)
            )
    assert [(p.amount, p.customer_id, p.version) for p in found] == [
        (2554, "cust-2", "v1"),
        (2554, "cust-2", "v2"),
    ]
    with connect(servers["v1"].target) as channel, pytest.raises(grpc.RpcError) as err:
        api.Stub(channel).GetPayment(pb.GetPaymentRequest(payment_id="pay-nope"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


# ------------------------------------------------------------------------------- injected behaviour


def test_error_rate_and_latency_flags(procs: ProcessGroup, v1: Server) -> None:
    flaky, slow = start_servers(procs, ("v1", ("--error-rate", "0.2")), ("v2", ("--latency", "150")))

    result = run_calls(flaky.target, 400, concurrency=8)
    unavailable = result.stats.by_status["UNAVAILABLE"]
    # 400 draws at p=0.2: mean 80, sd 8. [52, 108] is 3.5 sd; 0%, 10%, 30% or "every 5th call" off by one
    # in either direction across the run would still pass only if it hit exactly this band.
    assert 52 <= unavailable <= 108, result.stats.by_status
    assert result.stats.by_status["OK"] == 400 - unavailable
    assert result.stats.by_version == {"v1": 400}  # errors too: the version travels in the trailers
    assert result.stats.first_error == {"UNAVAILABLE": "injected by payment-server"}
    assert server_stats(flaky).injected_errors == unavailable

    with connect(flaky.target) as channel:  # an injected error is trailers-only (retriable by a mesh)
        stub = api.Stub(channel)
        for _ in range(200):
            try:
                stub.Charge(pb.ChargeRequest(amount=1), timeout=5)
            except grpc.RpcError as e:
                call: Any = e
                assert e.code() == grpc.StatusCode.UNAVAILABLE
                assert pairs(call.initial_metadata()) == []
                assert identity(call.trailing_metadata()) == [
                    ("x-payment-version", "v1"),
                    ("x-served-by", flaky.name),
                ]
                break
        else:
            pytest.fail("no injected error in 200 calls at --error-rate 0.2")

    # --error-at after-headers: the identity comes in the response headers, the status in trailers.
    (late,) = start_servers(procs, ("v1", ("--error-rate", "1", "--error-at", "after-headers")))
    with connect(late.target) as channel:
        with pytest.raises(grpc.RpcError) as err:
            api.Stub(channel).Charge(pb.ChargeRequest(amount=1), timeout=5)
        failed: Any = err.value
        assert (failed.code(), failed.details()) == (grpc.StatusCode.UNAVAILABLE, "injected by payment-server")
        assert identity(failed.initial_metadata()) == [("x-payment-version", "v1"), ("x-served-by", late.name)]
        assert identity(failed.trailing_metadata()) == []

    def timed_charges(target: str) -> list[float]:
        with connect(target) as channel:
            stub = api.Stub(channel)
            stub.GetServerStats(pb.ServerStatsRequest(), timeout=5)  # connect first
            durations = []
            for _ in range(5):
                began = time.monotonic()
                stub.Charge(pb.ChargeRequest(amount=1), timeout=5)
                durations.append(time.monotonic() - began)
            return durations

    slow_times, fast_times = timed_charges(slow.target), timed_charges(v1.target)
    assert min(slow_times) >= 0.15, slow_times
    assert sorted(slow_times)[2] < 0.15 + 0.5, slow_times  # median; generous for a busy machine
    assert sorted(fast_times)[2] < 0.1, fast_times
    with connect(slow.target) as channel:  # GetServerStats is exempt from --latency
        began = time.monotonic()
        api.Stub(channel).GetServerStats(pb.ServerStatsRequest(), timeout=5)
        assert time.monotonic() - began < 0.15


def test_metadata_echo(v1: Server) -> None:
    sent: tuple[tuple[str, str | bytes], ...] = (
        ("x-echo-a", "1"),
        ("x-other", "not echoed"),
        ("x-echo-b-bin", b"\x00\x01\xfe\xff"),
        ("x-echo-a", "2"),
        ("x-echo-c", "3"),
        ("x-echo-a", "3"),
    )
    echoed = [(k, v) for k, v in sent if k.startswith("x-echo-")]
    renamed = [("x-echo-trailer-" + k.removeprefix("x-echo-"), v) for k, v in echoed]

    def echoes(metadata: Any) -> list[tuple[str, str | bytes]]:
        return [(k, v) for k, v in pairs(metadata) if k.startswith("x-echo-")]

    with connect(v1.target) as channel:
        stub = api.Stub(channel)
        _, call = stub.Charge.with_call(pb.ChargeRequest(amount=1), metadata=sent, timeout=5)
        assert echoes(call.initial_metadata()) == echoed
        assert echoes(call.trailing_metadata()) == renamed

        stream = stub.ListPayments(pb.ListPaymentsRequest(limit=2), metadata=sent, timeout=5)
        assert len(list(stream)) == 2
        assert echoes(stream.initial_metadata()) == echoed
        assert echoes(stream.trailing_metadata()) == renamed

        failing = pb.ChargeRequest(amount=1, control=pb.Control(fail_with_code=14, fail_with_message="x"))
        with pytest.raises(grpc.RpcError) as err:  # trailers-only: everything in the one header block
            stub.Charge(failing, metadata=sent, timeout=5)
        failed: Any = err.value
        assert pairs(failed.initial_metadata()) == []
        assert echoes(failed.trailing_metadata()) == echoed + renamed


@pytest.mark.parametrize("code", list(grpc.StatusCode)[1:], ids=lambda c: c.name)
def test_fail_with_any_code_trailers_only(v1: Server, code: grpc.StatusCode) -> None:
    with connect(v1.target) as channel, pytest.raises(grpc.RpcError) as err:
        control = pb.Control(fail_with_code=code.value[0], fail_with_message=AWKWARD_MESSAGE)
        api.Stub(channel).Charge(pb.ChargeRequest(amount=1, control=control), timeout=5)
    failed: Any = err.value
    assert (failed.code(), failed.details()) == (code, AWKWARD_MESSAGE)
    assert pairs(failed.initial_metadata()) == []
    assert identity(failed.trailing_metadata()) == [("x-payment-version", "v1"), ("x-served-by", v1.name)]


def test_fail_after_headers_and_after_first_reply(v1: Server) -> None:
    me = [("x-payment-version", "v1"), ("x-served-by", v1.name)]
    with connect(v1.target) as channel:
        stub = api.Stub(channel)
        control = pb.Control(
            fail_with_code=9, fail_with_message=AWKWARD_MESSAGE, fail_at=pb.FAIL_AFTER_HEADERS
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.Charge(pb.ChargeRequest(amount=1, control=control), timeout=5)
        failed: Any = err.value
        assert (failed.code(), failed.details()) == (grpc.StatusCode.FAILED_PRECONDITION, AWKWARD_MESSAGE)
        assert identity(failed.initial_metadata()) == me
        assert identity(failed.trailing_metadata()) == []

        control = pb.Control(
            fail_with_code=8, fail_with_message="slow down", fail_at=pb.FAIL_AFTER_FIRST_REPLY
        )
        stream = stub.ListPayments(pb.ListPaymentsRequest(limit=5, control=control), timeout=5)
        got: list[pb.Payment] = []
        with pytest.raises(grpc.RpcError) as err:
            got.extend(stream)
        assert len(got) == 1
        assert (err.value.code(), err.value.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down")

        # client streaming, failure requested by headers (before any message is read)
        headers = (
            ("x-payment-fail-code", "5"),
            ("x-payment-fail-message", "gone"),
            ("x-payment-fail-at", "after-headers"),
        )
        with pytest.raises(grpc.RpcError) as err:
            stub.ChargeBatch(iter([pb.ChargeRequest(amount=1)] * 3), metadata=headers, timeout=5)
        failed = err.value
        assert (failed.code(), failed.details()) == (grpc.StatusCode.NOT_FOUND, "gone")
        assert identity(failed.initial_metadata()) == me

        # client streaming, failure requested by the second message: one reply, so "after the first reply"
        # means after the headers
        control = pb.Control(
            fail_with_code=11, fail_with_message="too far", fail_at=pb.FAIL_AFTER_FIRST_REPLY
        )
        batch = [pb.ChargeRequest(amount=1), pb.ChargeRequest(amount=2, control=control)]
        with pytest.raises(grpc.RpcError) as err:
            stub.ChargeBatch(iter(batch), timeout=5)
        failed = err.value
        assert (failed.code(), failed.details()) == (grpc.StatusCode.OUT_OF_RANGE, "too far")
        assert identity(failed.initial_metadata()) == me

        # bidi: the second message asks to fail, at once or after its own reply
        for fail_at, expected in ((pb.FAIL_BEFORE_HEADERS, [1]), (pb.FAIL_AFTER_FIRST_REPLY, [1, 2])):
            control = pb.Control(fail_with_code=10, fail_with_message="conflict", fail_at=fail_at)
            messages = [
                pb.ChargeRequest(amount=1),
                pb.ChargeRequest(amount=2, control=control),
                pb.ChargeRequest(amount=3),
            ]
            replies = stub.ChargeStream(iter(messages), timeout=5)
            got_amounts: list[int] = []
            with pytest.raises(grpc.RpcError) as err:
                got_amounts.extend(r.amount for r in replies)
            assert got_amounts == expected
            assert (err.value.code(), err.value.details()) == (grpc.StatusCode.ABORTED, "conflict")


def test_8mb_payloads_both_ways(v1: Server) -> None:
    big = pattern_bytes(8 * 1024 * 1024 + 17)
    with connect(v1.target) as channel:
        stub = api.Stub(channel)
        echoed = stub.Charge(
            pb.ChargeRequest(amount=1, payload=big, control=pb.Control(echo_payload=True)), timeout=20
        )
        assert echoed.payload == big
        not_echoed = stub.Charge(pb.ChargeRequest(amount=1, payload=big), timeout=20)
        assert not_echoed.payload == b""
        produced = stub.GetPayment(
            pb.GetPaymentRequest(payment_id="pay-demo-1", control=pb.Control(response_bytes=9 * 1024 * 1024)),
            timeout=20,
        )
        assert produced.payload == pattern_bytes(9 * 1024 * 1024)
        replies = list(
            stub.ChargeStream(
                iter([pb.ChargeRequest(amount=1, payload=big, control=pb.Control(echo_payload=True))] * 2),
                timeout=20,
            )
        )
        assert [r.payload == big for r in replies] == [True, True]


# ------------------------------------------------------------------------ deadlines and cancellation


def test_deadline_exceeded_on_time_and_seen_by_the_server(v1: Server) -> None:
    before = server_stats(v1)
    with connect(v1.target) as channel:
        stub = api.Stub(channel)
        stub.GetServerStats(pb.ServerStatsRequest(), timeout=5)  # connected: time only the call
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.Charge(pb.ChargeRequest(amount=1, control=pb.Control(delay_ms=5000)), timeout=0.3)
        took = time.monotonic() - began
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.28 <= took < 1.5, took

    def seen() -> bool:
        after = server_stats(v1)
        return (
            after.deadline_cancellations == before.deadline_cancellations + 1
            and after.cancelled_by_method[CHARGE] == before.cancelled_by_method[CHARGE] + 1
        )

    assert wait_until(seen), server_stats(v1)
    assert f"CANCELLED method={CHARGE} reason=deadline" in v1.proc.output()


def test_client_cancel_observed_by_the_server(v1: Server) -> None:
    before = server_stats(v1)
    with connect(v1.target) as channel:
        stub = api.Stub(channel)
        request = pb.WatchPaymentRequest(payment_id="p", updates=1000, interval_ms=50)
        watch: Any = stub.WatchPayment(request, timeout=30)  # grpc-stubs lack __next__ and cancel
        assert [next(watch).seq, next(watch).seq] == [0, 1]
        watch.cancel()
        slow = stub.Charge.future(pb.ChargeRequest(amount=1, control=pb.Control(delay_ms=20_000)), timeout=30)
        time.sleep(0.3)
        cancelled_at = time.monotonic()
        slow_call: Any = slow
        slow_call.cancel()

        def seen() -> bool:
            after = server_stats(v1)
            return (
                after.cancelled_by_method[WATCH] == before.cancelled_by_method[WATCH] + 1
                and after.cancelled_by_method[CHARGE] == before.cancelled_by_method[CHARGE] + 1
                and after.deadline_cancellations == before.deadline_cancellations
            )

        assert wait_until(seen), server_stats(v1)
        assert time.monotonic() - cancelled_at < 5  # well before the 20 s delay would have ended
    log = v1.proc.output()
    assert f"CANCELLED method={WATCH} reason=client" in log
    assert f"CANCELLED method={CHARGE} reason=client" in log


def test_sigterm_lets_calls_in_flight_finish_and_exits_0(procs: ProcessGroup) -> None:
    (server,) = start_servers(procs, ("v2", ("--grace", "5")))
    with connect(server.target) as channel:
        stub = api.Stub(channel)
        stub.GetServerStats(pb.ServerStatsRequest(), timeout=5)
        in_flight = stub.Charge.future(
            pb.ChargeRequest(amount=1, control=pb.Control(delay_ms=700)), timeout=10
        )
        time.sleep(0.2)
        server.proc.kill(signal.SIGTERM)
        assert in_flight.result().version == "v2"
    assert server.proc.popen.wait(timeout=10) == 0
    log = server.proc.output()
    assert f"payment-server v2 listening on {server.target}" in log
    assert "payment-server v2 stopped" in log


# --------------------------------------------------------------------------------- payment-client


FINAL_KEYS = {
    "type",
    "target",
    "method",
    "rps_target",
    "concurrency",
    "elapsed_s",
    "requests",
    "by_version",
    "by_status",
    "latency_ms",
    "rps",
    "skipped",
    "errors",
}
COUNT_KEYS = {"requests", "by_version", "by_status", "latency_ms", "rps"}
LATENCY_KEYS = {"p50", "p90", "p99", "max", "mean"}


def json_lines(proc: ManagedProcess, timeout: float) -> list[dict[str, Any]]:
    assert proc.popen.wait(timeout=timeout) == 0, proc.output()
    return [json.loads(line) for line in proc.output().splitlines() if line.startswith("{")]


def test_payment_client_json_rate_and_schema(procs: ProcessGroup, servers: dict[str, Server]) -> None:
    v2 = servers["v2"]
    client = procs.python(
        "client",
        "payment_service.client",
        "--target",
        v2.target,
        "--rps",
        "50",
        "--duration",
        "2",
        "--concurrency",
        "4",
        "--json",
        "--interval",
        "0.5",
    )
    lines = json_lines(client, timeout=30)
    *intervals, final = lines
    assert final["type"] == "final" and set(final) == FINAL_KEYS
    assert (final["target"], final["method"], final["rps_target"], final["concurrency"]) == (
        v2.target,
        "charge",
        50.0,
        4,
    )
    assert 96 <= final["requests"] <= 100, final  # 100 slots in 2 s, a few may be skipped on a busy machine
    assert final["by_version"] == {"v2": final["requests"]}
    assert final["by_status"] == {"OK": final["requests"]}
    assert final["elapsed_s"] == 2.0 and 48 <= final["rps"] <= 50
    assert set(final["latency_ms"]) == LATENCY_KEYS
    assert 0 < final["latency_ms"]["p50"] <= final["latency_ms"]["p90"] <= final["latency_ms"]["p99"]
    assert final["errors"] == {}

    assert 3 <= len(intervals) <= 4
    for report in intervals:
        assert report["type"] == "interval"
        assert set(report) == COUNT_KEYS | {"type", "elapsed_s", "interval_s", "cumulative"}
        assert set(report["cumulative"]) == COUNT_KEYS
    # No bursts: every half second carries its share (25) of the calls, not all of them up front.
    full = [r for r in intervals if abs(r["interval_s"] - 0.5) < 0.1]
    assert len(full) >= 3
    assert all(18 <= r["requests"] <= 32 for r in full), [r["requests"] for r in full]
    cumulative = [r["cumulative"]["requests"] for r in intervals]
    assert cumulative == sorted(cumulative) and cumulative[-1] <= final["requests"]


def test_payment_client_runs_until_signal_and_exits_0(procs: ProcessGroup, v1: Server) -> None:
    client = procs.python(
        "client",
        "payment_service.client",
        "--target",
        v1.target,
        "--rps",
        "20",
        "--duration",
        "0",
        "--concurrency",
        "2",
        "--method",
        "mix",
        "--json",
    )
    wait_until(lambda: "{" in client.output() or not client.alive(), timeout=1.5)  # a second of load
    client.kill(signal.SIGINT)
    (final,) = json_lines(client, timeout=15)
    assert final["type"] == "final" and final["method"] == "mix"
    assert 5 <= final["requests"] <= 60, final
    assert final["by_status"] == {"OK": final["requests"]}
    assert final["by_version"] == {"v1": final["requests"]}


def test_load_library_mix_payloads_and_unreachable_target(v1: Server, tmp_path: Path) -> None:
    result = run_calls(
        v1.target,
        40,
        method="mix",
        concurrency=4,
        payload_bytes=1000,
        echo_payload=True,
        metadata=(("x-echo-k", "v"),),
        deadline_ms=5000,
    )
    assert result.stats.by_status == {"OK": 40}
    assert result.stats.by_version == {"v1": 40}

    dead = f"127.0.0.1:{free_port()}"
    result = run_calls(dead, 5, connect_timeout_s=0.2)
    assert result.stats.by_status == {"UNAVAILABLE": 5}
    assert result.stats.by_version == {"unknown": 5}
    assert result.to_json()["requests"] == 5

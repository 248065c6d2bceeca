"""gRPC through the sidecar pair with the real payment service: every call kind, metadata, errors, big
messages, routing failures the proxy answers itself, connection pooling.

    grpcio client --h2c--> client sidecar --mTLS h2--> server sidecar --h2c--> payment-server

One pair serves the whole module (the ``mesh`` fixture checks after every test that both sidecars still
run). Server counters are compared before/after, never assumed to start at zero. Where the exact bytes
matter (trailers-only or not, the percent-encoded grpc-message), a raw h2 client reads the response through
the pair and straight from the server, and the two must be identical.
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
from typing import Any

import grpc
import pytest

from payment_service import api
from payment_service.behaviour import pattern_bytes
from payment_service.proto import payment_pb2 as pb
from tests.support.mesh import (
    CLIENT_CLUSTER,
    GONE_AUTHORITY,
    SERVER_CLUSTER,
    Mesh,
    RawResponse,
    established_to,
    pairs,
    raw_unary,
)

pytestmark = pytest.mark.timeout(60)

# grpc-message is percent-encoded on the wire (unicode, '%', newline...): it must come back as sent.
AWKWARD_MESSAGE = 'refus\u00e9: 100% s\u00fbr \u2713 %41 %% \U0001f4b3 "quoted"\nline two\ttab'
UPSTREAM_CONNECT_ERROR = ("upstream connect error or disconnect/reset before headers. "
                          "reset reason: remote connection failure")
# Request metadata with repeated keys (order matters) and binary values that are not UTF-8.
SENT_METADATA: tuple[tuple[str, str | bytes], ...] = (
    ("x-echo-a", "1"),
    ("x-other", "not echoed"),
    ("x-echo-b-bin", b"\x00\x01\xfe\xff\r\n:"),
    ("x-echo-a", "2"),
    ("x-echo-c", "with spaces, commas; and = signs"),
    ("x-echo-b-bin", bytes(range(256))),
    ("x-echo-a", "3"),
)
ECHOED = [(k, v) for k, v in SENT_METADATA if k.startswith("x-echo-")]
ECHOED_IN_TRAILERS = [("x-echo-trailer-" + k.removeprefix("x-echo-"), v) for k, v in ECHOED]


def identity(metadata: Any) -> list[tuple[str, str | bytes]]:
    return [(k, v) for k, v in pairs(metadata) if k in ("x-payment-version", "x-served-by")]


def echoes(metadata: Any) -> list[tuple[str, str | bytes]]:
    return [(k, v) for k, v in pairs(metadata) if k.startswith("x-echo-")]


def calls_of(mesh: Mesh, method: str) -> int:
    return mesh.server_stats().calls_by_method[api.path(method)]


# ------------------------------------------------------------------------------------------ call kinds


def test_every_call_kind_through_the_pair(mesh: Mesh) -> None:
    me = mesh.identity()
    before = mesh.server_stats().calls_by_method
    with mesh.channel() as channel:
        stub = api.Stub(channel)
        # unary x3
        charge, call = stub.Charge.with_call(pb.ChargeRequest(customer_id="cust-7", amount=1234), timeout=5)
        assert identity(call.initial_metadata()) == me
        assert (charge.version, charge.served_by, charge.amount, charge.state) == (
            "v1", mesh.server_name, 1234, pb.CAPTURED)
        assert charge.message == "v1: charged 12.34 EUR"
        refund = stub.Refund(pb.RefundRequest(payment_id=charge.payment_id, amount=234), timeout=5)
        assert (refund.payment_id, refund.amount, refund.served_by) == (
            charge.payment_id, 234, mesh.server_name)
        payment = stub.GetPayment(pb.GetPaymentRequest(payment_id=charge.payment_id), timeout=5)
        assert (payment.refunded_amount, payment.state) == (234, pb.REFUNDED)

        # server streaming
        listing = stub.ListPayments(pb.ListPaymentsRequest(customer_id="cust-7", limit=6), timeout=5)
        listed = list(listing)
        assert identity(listing.initial_metadata()) == me
        assert len(listed) == 6 and listed[0].payment_id == charge.payment_id
        assert {p.customer_id for p in listed} == {"cust-7"}
        watch_request = pb.WatchPaymentRequest(payment_id="p-1", updates=4, interval_ms=5)
        watch = stub.WatchPayment(watch_request, timeout=5)
        assert [(e.seq, e.state) for e in watch] == [
            (0, pb.AUTHORIZED), (1, pb.CAPTURED), (2, pb.SETTLED), (3, pb.SETTLED)]
        assert watch.code() == grpc.StatusCode.OK

        # client streaming
        batch = [pb.ChargeRequest(amount=a) for a in (100, 250, 650)]
        summary, call = stub.ChargeBatch.with_call(iter(batch), timeout=5)
        assert identity(call.initial_metadata()) == me
        assert (summary.count, summary.total_amount, len(set(summary.payment_ids))) == (3, 1000, 3)

        # bidirectional, interleaved: each reply arrives before the next request is even written
        requests: queue.Queue[pb.ChargeRequest | None] = queue.Queue()
        replies: Any = stub.ChargeStream(iter(requests.get, None), timeout=10)
        for amount in (101, 202, 303, 404):
            requests.put(pb.ChargeRequest(amount=amount))
            reply = next(replies)
            assert (reply.amount, reply.served_by) == (amount, mesh.server_name)
        requests.put(None)
        assert list(replies) == []
        assert identity(replies.initial_metadata()) == me
        assert replies.code() == grpc.StatusCode.OK

    after = mesh.server_stats().calls_by_method
    methods = ["Charge", "Refund", "GetPayment", "ListPayments", "WatchPayment", "ChargeBatch",
               "ChargeStream"]
    counted = {m: after[api.path(m)] - before[api.path(m)] for m in methods}
    assert counted == dict.fromkeys(methods, 1)  # each call reached the server once: no retries, no losses


# -------------------------------------------------------------------------------------------- metadata


def _call_kind(stub: api.Stub, kind: str, metadata: Any) -> Any:
    """Run one call of ``kind`` with ``metadata``; returns the call object (metadata accessors)."""
    three = [pb.ChargeRequest(amount=1)] * 3
    call: Any
    if kind == "unary":
        _, call = stub.Charge.with_call(pb.ChargeRequest(amount=1), metadata=metadata, timeout=5)
    elif kind == "server_stream":
        call = stub.ListPayments(pb.ListPaymentsRequest(limit=3), metadata=metadata, timeout=5)
        assert len(list(call)) == 3
    elif kind == "client_stream":
        _, call = stub.ChargeBatch.with_call(iter(three), metadata=metadata, timeout=5)
    else:
        call = stub.ChargeStream(iter(three), metadata=metadata, timeout=5)
        assert len(list(call)) == 3
    return call


@pytest.mark.parametrize("kind", ["unary", "server_stream", "client_stream", "bidi"])
def test_metadata_relayed_in_headers_and_trailers(mesh: Mesh, kind: str) -> None:
    with mesh.channel() as channel:
        call = _call_kind(api.Stub(channel), kind, SENT_METADATA)
    assert call.code() == grpc.StatusCode.OK
    assert echoes(call.initial_metadata()) == ECHOED  # order, repeats and binary values intact
    assert identity(call.initial_metadata()) == mesh.identity()
    assert echoes(call.trailing_metadata()) == ECHOED_IN_TRAILERS


def test_one_upstream_service_time_header_after_two_hops(mesh: Mesh) -> None:
    with mesh.channel() as channel:
        _, call = api.Stub(channel).Charge.with_call(pb.ChargeRequest(amount=1), timeout=5)
    values = [v for k, v in pairs(call.initial_metadata()) if k == "x-envoy-upstream-service-time"]
    assert len(values) == 1, values


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("code", list(grpc.StatusCode)[1:], ids=lambda c: c.name)
def test_trailers_only_error_relayed_untouched(mesh: Mesh, code: grpc.StatusCode) -> None:
    control = pb.Control(fail_with_code=code.value[0], fail_with_message=AWKWARD_MESSAGE)
    with mesh.channel() as channel, pytest.raises(grpc.RpcError) as err:
        api.Stub(channel).Charge(pb.ChargeRequest(amount=1, control=control), metadata=SENT_METADATA,
                                 timeout=5)
    failed: Any = err.value
    assert (failed.code(), failed.details()) == (code, AWKWARD_MESSAGE)
    assert pairs(failed.initial_metadata()) == []  # trailers-only: one header block, everything in it
    assert identity(failed.trailing_metadata()) == mesh.identity()
    assert echoes(failed.trailing_metadata()) == ECHOED + ECHOED_IN_TRAILERS


def _grpc_fields(resp: RawResponse) -> list[list[tuple[bytes, bytes]]]:
    """Each header block reduced to what must pass a proxy untouched: :status, grpc-*, x-payment-*."""
    keep = (b":status", b"content-type", b"grpc-status", b"grpc-message", b"x-payment-version",
            b"x-served-by")
    return [[(k, v) for k, v in block if k in keep] for block in resp.header_blocks]


@pytest.mark.parametrize("fail_at", ["before-headers", "after-headers"])
def test_error_bytes_identical_through_the_pair_and_direct(mesh: Mesh, fail_at: str) -> None:
    """The response through both sidecars has the same header blocks as straight from the server:
    trailers-only stays trailers-only, grpc-status/grpc-message bytes unchanged (percent-encoded as sent)."""
    point = pb.FAIL_BEFORE_HEADERS if fail_at == "before-headers" else pb.FAIL_AFTER_HEADERS
    control = pb.Control(fail_with_code=9, fail_with_message=AWKWARD_MESSAGE, fail_at=point)
    request = pb.ChargeRequest(amount=1, control=control).SerializeToString()
    direct = raw_unary(mesh.app_port, "Charge", request)
    proxied = raw_unary(mesh.client_sidecar.listen_port, "Charge", request)
    assert direct.grpc_status == 9
    assert direct.last_block()[b"grpc-message"].startswith(b"refus%C3%A9: 100%25")  # the oracle is encoded
    assert _grpc_fields(proxied) == _grpc_fields(direct)
    assert proxied.trailers_only is direct.trailers_only is (fail_at == "before-headers")
    assert proxied.end_stream_on_headers == direct.end_stream_on_headers
    assert proxied.data == direct.data == b""


def test_status_in_trailers_after_messages(mesh: Mesh) -> None:
    control = pb.Control(fail_with_code=8, fail_with_message=AWKWARD_MESSAGE,
                         fail_at=pb.FAIL_AFTER_FIRST_REPLY)
    with mesh.channel() as channel:
        stream = api.Stub(channel).ListPayments(pb.ListPaymentsRequest(limit=5, control=control), timeout=5)
        got: list[pb.Payment] = []
        with pytest.raises(grpc.RpcError) as err:
            got.extend(stream)
    assert len(got) == 1
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, AWKWARD_MESSAGE)
    assert identity(stream.initial_metadata()) == mesh.identity()


# ------------------------------------------------------------------------------------- big messages


@pytest.mark.parametrize("size_mib", [8, 16])
def test_big_messages_both_ways(mesh: Mesh, size_mib: int) -> None:
    size = size_mib << 20
    payload = random.Random(size).randbytes(size)  # not a pattern: a reordered or dropped chunk shows
    with mesh.channel() as channel:
        stub = api.Stub(channel)
        echo = pb.Control(echo_payload=True)
        reply = stub.Charge(pb.ChargeRequest(amount=1, payload=payload, control=echo), timeout=30)
        assert len(reply.payload) == size and reply.payload == payload

        # server streaming: two replies of `size` bytes each (the server's 0x00..0xff pattern)
        stream = stub.ListPayments(pb.ListPaymentsRequest(limit=2, control=pb.Control(response_bytes=size)),
                                   timeout=30)
        expected = pattern_bytes(size)
        assert [p.payload == expected for p in stream] == [True, True]

        # client streaming: two requests of `size` bytes each in, the last payload echoed
        second = payload[::-1]
        batch = [pb.ChargeRequest(amount=1, payload=payload),
                 pb.ChargeRequest(amount=2, payload=second, control=echo)]
        summary = stub.ChargeBatch(iter(batch), timeout=30)
        assert (summary.count, summary.payload == second) == (2, True)


def test_big_messages_in_bidi_interleaved(mesh: Mesh) -> None:
    size = 8 << 20
    rng = random.Random(7)
    payloads = [rng.randbytes(size) for _ in range(2)]
    requests: queue.Queue[pb.ChargeRequest | None] = queue.Queue()
    with mesh.channel() as channel:
        replies: Any = api.Stub(channel).ChargeStream(iter(requests.get, None), timeout=30)
        for amount, payload in enumerate(payloads, 1):
            echo = pb.Control(echo_payload=True)
            requests.put(pb.ChargeRequest(amount=amount, payload=payload, control=echo))
            reply = next(replies)
            assert (reply.amount, reply.payload == payload) == (amount, True)
        requests.put(None)
        assert list(replies) == []
        assert replies.code() == grpc.StatusCode.OK


# ------------------------------------------------------------------------- replies the proxy makes


def test_unknown_authority_is_unimplemented(mesh: Mesh) -> None:
    """No virtual host matches: Envoy answers 404 (NR), i.e. trailers-only grpc-status 12, at once."""
    calls_before = mesh.server_stats().total_calls
    began = time.monotonic()
    with mesh.channel(authority="nobody.example:50051") as channel, pytest.raises(grpc.RpcError) as err:
        api.Stub(channel).Charge(pb.ChargeRequest(amount=1), timeout=5)
    assert time.monotonic() - began < 1.0
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    raw = raw_unary(mesh.client_sidecar.listen_port, "Charge", pb.ChargeRequest(amount=1).SerializeToString(),
                    authority="nobody.example:50051")
    assert raw.trailers_only
    block = raw.last_block()
    assert (block[b":status"], block[b"content-type"], block[b"grpc-status"]) == (
        b"200", b"application/grpc", b"12")
    # Envoy's NR reply has an empty body, hence no grpc-message; pyproxy says why, on purpose (errors.NoRoute)
    assert block.get(b"grpc-message") in (None, b"route not found"), block
    assert mesh.server_stats().total_calls == calls_before + 1  # only the GetServerStats above reached it


def test_destination_down_is_unavailable_with_envoys_message(mesh: Mesh) -> None:
    """The destination's endpoint refuses connections: 503 UF, i.e. trailers-only 14 with Envoy's text."""
    results: list[tuple[grpc.StatusCode, str, float]] = []
    with mesh.channel(authority=GONE_AUTHORITY) as channel:
        stub = api.Stub(channel)
        futures = [(time.monotonic(), stub.Charge.future(pb.ChargeRequest(amount=1), timeout=10))
                   for _ in range(10)]
        for began, future in futures:
            err: Any = future.exception()  # blocks until the call is over (each has a 10 s deadline)
            assert isinstance(err, grpc.RpcError)
            results.append((err.code(), err.details() or "", time.monotonic() - began))
    for code, details, took in results:
        assert code == grpc.StatusCode.UNAVAILABLE
        assert details.startswith(UPSTREAM_CONNECT_ERROR), details
        assert took < 1.0, results
    raw = raw_unary(mesh.client_sidecar.listen_port, "Charge", b"", authority=GONE_AUTHORITY)
    assert raw.trailers_only and raw.grpc_status == 14
    assert raw.last_block()[b":status"] == b"200"


# ---------------------------------------------------------------------------------------- pooling


def test_streams_multiplexed_on_one_connection_per_hop(mesh: Mesh) -> None:
    """100 concurrent calls from 4 client connections: one mTLS connection client sidecar -> server
    sidecar and one connection server sidecar -> server carry them all, all at the same time."""
    delay_ms, n_channels, per_channel = 600, 4, 25
    before = calls_of(mesh, "Charge")
    options = [*api.channel_options("payment:50051"), ("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.insecure_channel(mesh.target, options=options) for _ in range(n_channels)]
    seen: dict[str, list[int]] = {"downstream": [], "client->server sidecar": [], "server sidecar->app": [],
                                  "admin cx_active": []}
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.05):
            seen["downstream"].append(established_to(os.getpid(), mesh.client_sidecar.listen_port))
            seen["client->server sidecar"].append(
                established_to(mesh.client_sidecar.proc.pid, mesh.server_sidecar.listen_port))
            seen["server sidecar->app"].append(established_to(mesh.server_sidecar.proc.pid, mesh.app_port))

    try:
        watcher = threading.Thread(target=watch)
        began = time.monotonic()
        futures = [api.Stub(ch).Charge.future(pb.ChargeRequest(amount=i + 1), metadata=(
            ("x-payment-delay-ms", str(delay_ms)),), timeout=20)
            for i, ch in enumerate(channels * per_channel)]
        watcher.start()
        time.sleep(delay_ms / 2000)
        seen["admin cx_active"] = [*mesh.client_sidecar.host_stat(CLIENT_CLUSTER, "cx_active"),
                                   *mesh.server_sidecar.host_stat(SERVER_CLUSTER, "cx_active")]
        replies = [f.result(timeout=20) for f in futures]
        elapsed = time.monotonic() - began
    finally:
        stop.set()
        for ch in channels:
            ch.close()
    assert sorted(r.amount for r in replies) == list(range(1, 101))
    assert elapsed < 4 * delay_ms / 1000, elapsed  # concurrent, not 100 x 0.6 s in sequence
    assert calls_of(mesh, "Charge") - before == 100
    assert max(seen["downstream"]) >= n_channels, seen  # the client really used 4 connections
    assert set(seen["client->server sidecar"]) == {1}, seen
    assert set(seen["server sidecar->app"]) == {1}, seen
    assert seen["admin cx_active"] == [1, 1], seen


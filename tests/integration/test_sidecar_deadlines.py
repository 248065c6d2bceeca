"""Deadlines and cancellation through the sidecar pair, seen from both ends.

- A gRPC deadline ends the call on time, and the server learns of it (it counts the call as cancelled).
- The sidecars honour the caller's ``grpc-timeout`` themselves (Istio: ``max_stream_duration``
  ``grpc_timeout_header_max: 0s``): a caller that never cancels still gets DEADLINE_EXCEEDED on time, as
  Envoy's "downstream duration timeout" local reply.
- ``grpc-timeout`` is forwarded: on a route where the proxies set no timer of their own, the deadline expires
  at the server (its ``deadline_cancellations`` counter moves).
- A client cancel (RST_STREAM CANCEL) crosses both sidecars promptly: the server's handler sees it.

One pair serves the module; server counters are compared before/after.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.mesh import HOST, Mesh, RawGrpcClient

pytestmark = pytest.mark.timeout(60)

CHARGE = api.path("Charge")
WATCH = api.path("WatchPayment")


def wait_until(predicate: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``predicate()`` held, or None if it did not within ``timeout``."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            return None
        time.sleep(0.02)
    return time.monotonic() - began


def slow_charge(delay_ms: int) -> bytes:
    return pb.ChargeRequest(amount=1, control=pb.Control(delay_ms=delay_ms)).SerializeToString()


def cancelled(mesh: Mesh, method: str) -> int:
    return mesh.server_stats().cancelled_by_method[method]


@pytest.mark.parametrize("kind", ["unary", "server_stream"])
def test_deadline_expires_on_time_and_the_server_sees_it(mesh: Mesh, kind: str) -> None:
    method = CHARGE if kind == "unary" else WATCH
    before = cancelled(mesh, method)
    with mesh.channel() as channel:
        stub = api.Stub(channel)
        began = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            if kind == "unary":
                stub.Charge(pb.ChargeRequest(amount=1, control=pb.Control(delay_ms=5000)), timeout=0.3)
            else:  # the first event comes at once, the second 5 s later
                watch = pb.WatchPaymentRequest(payment_id="p", updates=3, interval_ms=5000)
                for _ in stub.WatchPayment(watch, timeout=0.3):
                    pass
        took = time.monotonic() - began
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 <= took <= 1.5, took
    assert wait_until(lambda: cancelled(mesh, method) == before + 1, 2.0) is not None
    assert f"CANCELLED method={method} reason=" in mesh.server.output()


def test_proxy_enforces_grpc_timeout_for_a_caller_that_never_cancels(mesh: Mesh) -> None:
    """A raw client sends grpc-timeout 300m and just waits: the sidecar must answer DEADLINE_EXCEEDED itself,
    trailers-only, on time, and cancel the call upstream (the server counts it)."""
    before = cancelled(mesh, CHARGE)
    with RawGrpcClient(HOST, mesh.client_sidecar.listen_port) as client:
        began = time.monotonic()
        sid = client.start("Charge", slow_charge(5000), metadata=[("grpc-timeout", "300m")])
        resp = client.wait(sid, timeout=5)
        took = time.monotonic() - began
    assert 0.25 <= took <= 1.5, took
    assert resp.trailers_only, resp.header_blocks
    block = resp.last_block()
    assert (block[b":status"], block[b"content-type"], block[b"grpc-status"]) == (
        b"200", b"application/grpc", b"4")
    assert wait_until(lambda: cancelled(mesh, CHARGE) == before + 1, 2.0) is not None


def test_proxy_deadline_reply_has_envoys_message(mesh: Mesh) -> None:
    with RawGrpcClient(HOST, mesh.client_sidecar.listen_port) as client:
        sid = client.start("Charge", slow_charge(3000), metadata=[("grpc-timeout", "200m")])
        resp = client.wait(sid, timeout=5)
    assert resp.last_block().get(b"grpc-message") == b"downstream duration timeout"


def test_grpc_timeout_reaches_the_server(mesh: Mesh) -> None:
    """On the route without proxy timers the deadline can only expire at the server: its own deadline
    counter moves, and its DEADLINE_EXCEEDED reaches the caller through both sidecars."""
    before = mesh.server_stats().deadline_cancellations
    with RawGrpcClient(HOST, mesh.client_sidecar.listen_port) as client:
        began = time.monotonic()
        sid = client.start("Charge", slow_charge(5000),
                           metadata=[("grpc-timeout", "400m"), ("x-mesh-test-deadline", "server-only")])
        resp = client.wait(sid, timeout=5)
        took = time.monotonic() - began
    assert 0.35 <= took <= 1.5, took
    assert resp.grpc_status == 4 or resp.reset_code is not None, resp
    assert wait_until(lambda: mesh.server_stats().deadline_cancellations == before + 1, 2.0) is not None


# ------------------------------------------------------------------------------------------ cancellation


def test_client_cancel_of_a_server_stream_reaches_the_server(mesh: Mesh) -> None:
    before = cancelled(mesh, WATCH)
    with mesh.channel() as channel:
        stream: Any = api.Stub(channel).WatchPayment(
            pb.WatchPaymentRequest(payment_id="p-cancel", updates=1000, interval_ms=20), timeout=30)
        got = [next(stream).seq for _ in range(3)]
        stream.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            next(stream)
    assert got == [0, 1, 2]
    assert err.value.code() == grpc.StatusCode.CANCELLED
    seen_after = wait_until(lambda: cancelled(mesh, WATCH) == before + 1, 2.0)
    assert seen_after is not None, "the server never saw the cancel"
    assert time.monotonic() - cancelled_at < 2.0
    assert f"CANCELLED method={WATCH} reason=client" in mesh.server.output()


def test_client_cancel_of_a_unary_call_reaches_the_server(mesh: Mesh) -> None:
    before = cancelled(mesh, CHARGE)
    with mesh.channel() as channel:
        request = pb.ChargeRequest(amount=1, control=pb.Control(delay_ms=10_000))
        future: Any = api.Stub(channel).Charge.future(request, timeout=30)
        time.sleep(0.3)  # the call is at the server by now
        assert future.cancel()
    assert wait_until(lambda: cancelled(mesh, CHARGE) == before + 1, 2.0) is not None


def test_rst_stream_from_a_raw_client_crosses_both_sidecars(mesh: Mesh) -> None:
    """RST_STREAM(CANCEL) on one stream: the server sees the cancel; the connection lives on for the next."""
    before = cancelled(mesh, WATCH)
    with RawGrpcClient(HOST, mesh.client_sidecar.listen_port) as client:
        watch = pb.WatchPaymentRequest(payment_id="p-rst", updates=1000, interval_ms=20).SerializeToString()
        doomed = client.start("WatchPayment", watch)
        client.read_until(doomed, lambda r: len(r.data) > 0, timeout=5)  # the server is streaming
        client.reset(doomed, 8)
        assert wait_until(lambda: cancelled(mesh, WATCH) == before + 1, 2.0) is not None
        sid = client.start("Charge", pb.ChargeRequest(amount=42).SerializeToString())
        resp = client.wait(sid, timeout=5)
    assert resp.grpc_status == 0
    (reply,) = resp.messages()
    assert pb.ChargeReply.FromString(reply).amount == 42

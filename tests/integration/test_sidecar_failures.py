"""Things going wrong around the sidecar pair: the server killed mid-stream, the server down, the server
restarting gracefully (GOAWAY), a sidecar shut down with calls in flight.

What must hold every time: the caller gets a gRPC-correct answer promptly (UNAVAILABLE, with Envoy's
"upstream connect error ..." text when the proxy makes it), never a hang; the proxies stay up; new calls
work again as soon as a server listens again, over a new upstream connection.

Every test starts a pair of its own (``fresh_mesh``): they kill and stop things.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.mesh import Mesh, Sidecar, connections_to, pairs, terminate

pytestmark = pytest.mark.timeout(60)

UPSTREAM_CONNECT_ERROR = ("upstream connect error or disconnect/reset before headers. "
                          "reset reason: remote connection failure")


def sidecar_link(mesh: Mesh) -> set[int]:
    """The client sidecar's connections to the server sidecar (socket inodes)."""
    return connections_to(mesh.client_sidecar.proc.pid, mesh.server_sidecar.listen_port)


def concurrent_charges(mesh: Mesh, n: int, timeout: float = 10) -> list[tuple[grpc.StatusCode, str, float]]:
    """``n`` Charge calls at once; (code, details, seconds) of each."""
    with mesh.channel() as channel:
        stub = api.Stub(channel)
        began = time.monotonic()
        futures = [stub.Charge.future(pb.ChargeRequest(amount=1), timeout=timeout) for _ in range(n)]
        out = []
        for future in futures:
            err: Any = future.exception()  # returns when the call is over (it has a deadline)
            if err is None:
                out.append((grpc.StatusCode.OK, "", time.monotonic() - began))
            else:
                assert isinstance(err, grpc.RpcError)
                out.append((err.code(), err.details() or "", time.monotonic() - began))
    return out


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def ready_within(sidecar: Sidecar, timeout: float) -> tuple[int, bytes] | str:
    """``GET /ready`` (status, body), or why there was no answer within ``timeout``."""
    try:
        return sidecar.admin("/ready", timeout=timeout)
    except OSError as e:
        return f"no answer: {e!r}"


def test_server_killed_mid_stream_then_down_then_back(fresh_mesh: Mesh) -> None:
    mesh = fresh_mesh
    with mesh.channel() as channel:
        api.Stub(channel).Charge(pb.ChargeRequest(amount=1), timeout=5)
    link = sidecar_link(mesh)
    assert len(link) == 1

    # 1. killed mid-stream: the caller gets UNAVAILABLE promptly
    with mesh.channel() as channel:
        stream: Any = api.Stub(channel).WatchPayment(
            pb.WatchPaymentRequest(payment_id="p-kill", updates=1000, interval_ms=20), timeout=30)
        assert [next(stream).seq for _ in range(3)] == [0, 1, 2]
        mesh.kill_server(signal.SIGKILL)
        killed_at = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            for _ in range(1000):
                next(stream)
        took = time.monotonic() - killed_at
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (err.value.code(), err.value.details())
    assert took < 2.0, took
    assert mesh.alive()
    for sidecar in mesh.sidecars:
        assert ready_within(sidecar, 2.0) == (200, b"LIVE\n"), sidecar.name

    # 2. server down: every new call gets Envoy's connect-failure reply at once, none hangs
    results = concurrent_charges(mesh, 10)
    assert {code for code, _, _ in results} == {grpc.StatusCode.UNAVAILABLE}, results
    for _, details, took in results:
        assert details.startswith(UPSTREAM_CONNECT_ERROR), details
        assert took < 1.0, results

    # 3. a new server on the same port: the very first call works (a new upstream connection)
    mesh.start_server()
    with mesh.channel() as channel:
        charge, call = api.Stub(channel).Charge.with_call(pb.ChargeRequest(amount=77), timeout=5)
    assert (charge.amount, charge.served_by) == (77, mesh.server_name)
    identity = [(k, v) for k, v in pairs(call.initial_metadata())
                if k in ("x-payment-version", "x-served-by")]
    assert identity == mesh.identity()
    assert mesh.server_stats().calls_by_method[api.path("Charge")] == 1  # the new process served it
    # the mTLS connection between the sidecars was never disturbed
    assert sidecar_link(mesh) == link


def test_server_sidecar_killed_mid_stream_then_restarted(fresh_mesh: Mesh) -> None:
    """The mTLS connection between the sidecars is lost (the server sidecar SIGKILLed): the client sidecar
    fails the stream in flight with UNAVAILABLE at once, stays up, answers new calls with Envoy's connect
    failure, and uses a new connection once the server sidecar is back."""
    mesh = fresh_mesh
    with mesh.channel() as channel:
        stream: Any = api.Stub(channel).WatchPayment(
            pb.WatchPaymentRequest(payment_id="p-link", updates=1000, interval_ms=20), timeout=30)
        assert [next(stream).seq for _ in range(2)] == [0, 1]
        old_link = sidecar_link(mesh)
        mesh.server_sidecar.proc.kill(signal.SIGKILL)
        killed_at = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            for _ in range(1000):
                next(stream)
        took = time.monotonic() - killed_at
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (err.value.code(), err.value.details())
    assert took < 2.0, took
    assert mesh.client_sidecar.proc.alive()
    assert ready_within(mesh.client_sidecar, 2.0) == (200, b"LIVE\n")
    assert wait_until(lambda: mesh.server_stats().cancelled_by_method[api.path("WatchPayment")] == 1, 2.0), (
        "the server never learnt that its stream's caller was gone")

    results = concurrent_charges(mesh, 5)
    assert {code for code, _, _ in results} == {grpc.StatusCode.UNAVAILABLE}, results
    for _, details, took in results:
        assert details.startswith(UPSTREAM_CONNECT_ERROR) and took < 1.0, results

    mesh.server_sidecar.proc.popen.wait(timeout=5)
    mesh.restart_sidecar(mesh.server_sidecar)
    with mesh.channel() as channel:
        assert api.Stub(channel).Charge(pb.ChargeRequest(amount=3), timeout=5).served_by == mesh.server_name
    new_link = sidecar_link(mesh)
    assert len(new_link) == 1 and new_link.isdisjoint(old_link)


def test_server_graceful_restart_finishes_the_call_in_flight(fresh_mesh: Mesh) -> None:
    """SIGTERM to payment-server: it sends GOAWAY and finishes the call in flight, which must complete
    through both sidecars; meanwhile new calls fail fast; after the restart they work again."""
    mesh = fresh_mesh
    with mesh.channel() as channel:
        stub = api.Stub(channel)
        slow = pb.ChargeRequest(amount=5, control=pb.Control(delay_ms=1500))
        in_flight = stub.Charge.future(slow, timeout=10)
        time.sleep(0.4)
        mesh.server.kill(signal.SIGTERM)
        time.sleep(0.3)  # GOAWAY received; the server no longer accepts connections
        during = concurrent_charges(mesh, 5)
        reply = in_flight.result(timeout=10)
    assert reply.amount == 5 and reply.served_by == mesh.server_name
    assert mesh.server.popen.wait(timeout=10) == 0
    assert {code for code, _, _ in during} == {grpc.StatusCode.UNAVAILABLE}, during
    assert all(took < 1.0 for _, _, took in during), during
    mesh.start_server()
    with mesh.channel() as channel:
        assert api.Stub(channel).Charge(pb.ChargeRequest(amount=6), timeout=5).amount == 6
    assert mesh.alive()


@pytest.mark.parametrize("which", ["client", "server"])
def test_sigterm_lets_the_call_in_flight_finish(fresh_mesh: Mesh, which: str) -> None:
    mesh = fresh_mesh
    sidecar = mesh.client_sidecar if which == "client" else mesh.server_sidecar
    with mesh.channel() as channel:
        stub = api.Stub(channel)
        slow = pb.ChargeRequest(amount=9, control=pb.Control(delay_ms=1500))
        in_flight = stub.Charge.future(slow, timeout=5)
        time.sleep(0.4)
        sidecar.proc.kill(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.2)
        draining = sidecar.admin("/ready", timeout=2)
        reply = in_flight.result(timeout=10)
    assert reply.amount == 9 and reply.served_by == mesh.server_name
    assert draining[0] == 503, draining  # Envoy: not ready while draining
    exit_code = sidecar.proc.popen.wait(timeout=8)
    exited_after = time.monotonic() - signalled
    assert exit_code == 0
    assert exited_after < 4.0, exited_after  # right after its last stream, not the whole --drain-time-s


@pytest.mark.parametrize("stopped", ["client", "server"])
def test_a_sidecar_survives_its_peer_sidecar_shutting_down(fresh_mesh: Mesh, stopped: str) -> None:
    """One sidecar of the pair shuts down gracefully (closing the mTLS connection with close_notify): the
    other must stay responsive and still shut down cleanly itself."""
    mesh = fresh_mesh
    with mesh.channel() as channel:
        api.Stub(channel).Charge(pb.ChargeRequest(amount=1), timeout=5)  # the mTLS link exists
    gone, survivor = mesh.sidecars if stopped == "client" else mesh.sidecars[::-1]
    assert terminate(gone.proc, 5.0) == 0
    time.sleep(0.3)
    assert ready_within(survivor, 2.0) == (200, b"LIVE\n")
    if stopped == "server":  # the client sidecar still answers callers, gRPC-correctly
        (code, details, took), = concurrent_charges(mesh, 1)
        assert (code, took < 1.0) == (grpc.StatusCode.UNAVAILABLE, True), (code, details, took)
    assert terminate(survivor.proc, 5.0) == 0

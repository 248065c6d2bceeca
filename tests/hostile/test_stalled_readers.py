"""Issue 9.3, reproduced: a local client opened 100 streams through the client sidecar and never read the
responses. All callers share one upstream connection per endpoint, and the connection-level window held by
the stalled streams starved every other call (throughput ~0), sometimes for good after the attacker left.

Now each stream holds only its own window (the proxy returns the connection's window on receipt, the
stream's once forwarded, as Envoy's codecs do): legitimate calls go on while 100 never-read streams are
open (no failure, p99 within 2x of the quiet one), and nothing is left stuck once the attacker is gone.
"""

from __future__ import annotations

import socket
import statistics
import time

import grpc
import h2.config
import h2.connection
import h2.settings
import pytest

from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.mesh import CLIENT_CLUSTER, HOST, PAYMENT_AUTHORITY, Mesh, grpc_frame

pytestmark = pytest.mark.timeout(300)

STREAMS = 100
REPLY_BYTES = 65536  # per message; 4 messages a stream: 100 streams hold 25 MiB, past the 16 MiB connection window
REPETITIONS = 20
STALL_S = 1.0  # no call under attack may take this long (a wedged path takes the whole 5 s deadline)


def stalled_reader(port: int) -> socket.socket:
    """A client that opens STREAMS ListPayments streams with a stream window of 0 and never reads."""
    sock = socket.create_connection((HOST, port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    body = grpc_frame(pb.ListPaymentsRequest(limit=4).SerializeToString())
    for _ in range(STREAMS):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", PAYMENT_AUTHORITY),
                                (":path", "/payment.PaymentService/ListPayments"), ("content-type", "application/grpc"),
                                ("te", "trailers"), ("x-payment-response-bytes", str(REPLY_BYTES))])
        conn.send_data(sid, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    return sock


def latencies(stub: api.Stub, n: int) -> tuple[list[float], list[str]]:
    """``n`` unary calls one after the other: their latencies (s) and the failures' status names (it stops at
    the third failure)."""
    out, failed = [], []
    for _ in range(n):
        t0 = time.monotonic()
        try:
            stub.Charge(pb.ChargeRequest(customer_id="c", amount=100, currency="EUR"), timeout=5)
            out.append(time.monotonic() - t0)
        except grpc.RpcError as e:
            failed.append(e.code().name)
            if len(failed) >= 3:  # a wedged path: say so now, not after n deadlines
                break
    return out, failed


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def active_requests(mesh: Mesh) -> int:
    return sum(mesh.client_sidecar.host_stat(CLIENT_CLUSTER, "rq_active"))


def answered_by_server_sidecar(mesh: Mesh) -> float:
    """Requests the server sidecar has answered in full (Istio's istio_requests_total, reporter destination)."""
    status, body = mesh.server_sidecar.admin("/stats/prometheus")
    assert status == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if line.startswith("istio_requests_total{"))


def test_never_read_streams_stall_only_themselves(fresh_mesh: Mesh) -> None:
    mesh = fresh_mesh
    with mesh.channel() as channel:
        stub = api.Stub(channel)
        quiet, failed = latencies(stub, 200)
        assert not failed
        baseline = p99(quiet)
        figures: list[float] = []
        pooled: list[float] = []
        for rep in range(REPETITIONS):
            answered = answered_by_server_sidecar(mesh)
            attacker = stalled_reader(mesh.client_sidecar.listen_port)
            try:
                # The stalled state: the 100 streams are open at the client sidecar and their replies have been
                # sent all the way to it (the server sidecar answered them in full; the client sidecar holds
                # them, since the attacker reads nothing). What is measured is that state, not the burst of
                # 25 MiB moving there, which costs CPU as it would in any proxy.
                deadline = time.monotonic() + 20
                while (active_requests(mesh) < STREAMS or answered_by_server_sidecar(mesh) < answered + STREAMS) \
                        and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert active_requests(mesh) >= STREAMS, f"repetition {rep}: the attack did not start"
                assert answered_by_server_sidecar(mesh) >= answered + STREAMS, f"repetition {rep}: replies stuck"
                during, failed = latencies(stub, 100)
            finally:
                attacker.close()
            assert not failed, f"repetition {rep}: {failed[:5]}"
            figures.append(p99(during))
            pooled += during
            # A stalled path shows as seconds (the calls' 5 s deadline); one slow sample of 100 is noise.
            assert max(during) < STALL_S, (rep, max(during))
            # Nothing stuck once the attacker left: every stream of the attacker ended at the sidecar.
            deadline = time.monotonic() + 10
            while active_requests(mesh) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert active_requests(mesh) == 0, f"repetition {rep}: requests left active"
        after, failed = latencies(stub, 100)
    assert not failed
    # The bound, on the p99 of all 2,000 calls made under attack (a per-repetition p99 of 100 calls is
    # their slowest one, which scheduling noise alone took past 2x once in 30 runs).
    assert p99(pooled) <= max(2 * baseline, baseline + 0.005), (baseline, p99(pooled), figures)
    print(f"\np99 quiet {baseline * 1000:.1f} ms; with {STREAMS} never-read streams, over {REPETITIONS} "
          f"repetitions: p99 of all {len(pooled)} calls {p99(pooled) * 1000:.1f} ms, per repetition median "
          f"{statistics.median(figures) * 1000:.1f} ms, worst {max(figures) * 1000:.1f} ms; "
          f"after {p99(after) * 1000:.1f} ms")

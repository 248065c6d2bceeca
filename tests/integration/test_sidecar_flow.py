"""HTTP/2 flow control and backpressure across the sidecar pair, with a reader that is slower than the server.

A raw h2 client asks the payment server for 48 x 1 MiB through the pair, then reads with a 64 KiB window
that it returns slowly, or not at all for a while. The server can produce all 48 MiB at once, so the only
thing that stops it is flow control propagated hop by hop: each sidecar may return window upstream only
after it forwarded the bytes downstream. A sidecar that reads ahead without bound would hold tens of MiB;
the test watches both sidecars' resident memory (/proc/PID/status) the whole time and requires the growth
to stay well below the amount the server could push. The client's h2 state machine rejects any DATA beyond
the window it advertised. At the end every byte must have arrived, in order.
"""

from __future__ import annotations

import time

import grpc
import pytest

from payment_service import api
from payment_service.behaviour import pattern_bytes
from payment_service.proto import payment_pb2 as pb
from tests.support.mesh import HOST, Mesh, RawGrpcClient

pytestmark = pytest.mark.timeout(60)

MESSAGES = 48
MESSAGE_BYTES = 1 << 20
WINDOW = 65535
MAX_GROWTH_KIB = 24 * 1024  # half of what the server can push; a bounded proxy needs a few MiB


def test_slow_reader_bounds_proxy_memory(fresh_mesh: Mesh) -> None:
    mesh = fresh_mesh
    with mesh.channel() as channel:  # warm up: connections, TLS, one big message through each sidecar
        stream = api.Stub(channel).ListPayments(
            pb.ListPaymentsRequest(limit=2, control=pb.Control(response_bytes=MESSAGE_BYTES)), timeout=10)
        assert [len(p.payload) for p in stream] == [MESSAGE_BYTES] * 2
        assert stream.code() == grpc.StatusCode.OK
    baseline = {s.name: s.rss_kib() for s in mesh.sidecars}
    peak = dict(baseline)

    def sample() -> None:
        for s in mesh.sidecars:
            peak[s.name] = max(peak[s.name], s.rss_kib())

    request = pb.ListPaymentsRequest(limit=MESSAGES, control=pb.Control(response_bytes=MESSAGE_BYTES))
    with RawGrpcClient(HOST, mesh.client_sidecar.listen_port, initial_window=WINDOW) as client:
        sid = client.start("ListPayments", request.SerializeToString())
        resp = client.responses[sid]

        # 1. stalled: read what arrives but return no window for 2 s
        stall_end = time.monotonic() + 2.0
        while time.monotonic() < stall_end:
            client.pump(0.1)
            sample()
        stalled_bytes = len(resp.data)
        assert not resp.ended

        # 2. slow: 64 KiB of window every 20 ms (about 3 MiB/s) for 1.5 s
        tick = slow_began = time.monotonic()
        while tick < slow_began + 1.5:
            client.ack(sid, 65536)
            tick += 0.02
            while (left := tick - time.monotonic()) > 0:
                client.pump(max(left, 0.001))
            sample()
        slow_bytes = len(resp.data)

        # 3. fast: take everything
        began = time.monotonic()
        client.wait(sid, timeout=30)
        drained_in = time.monotonic() - began
        sample()

    growth = {name: peak[name] - baseline[name] for name in baseline}
    print(f"baseline {baseline} KiB, growth {growth} KiB; stalled at {stalled_bytes} B, "
          f"slow phase {slow_bytes} B, drained in {drained_in:.2f}s")
    assert stalled_bytes <= WINDOW  # nothing beyond the window we advertised (h2 would have raised too)
    assert MESSAGE_BYTES < slow_bytes < 8 * MESSAGE_BYTES  # the slow phase moved data, at the reader's pace
    assert resp.grpc_status == 0, resp.header_blocks
    messages = resp.messages()
    expected = pattern_bytes(MESSAGE_BYTES)
    assert len(messages) == MESSAGES
    assert all(pb.Payment.FromString(m).payload == expected for m in messages)
    for name, kib in growth.items():
        assert kib < MAX_GROWTH_KIB, f"{name} grew by {kib} KiB while the reader was slow ({growth})"
    assert mesh.alive()

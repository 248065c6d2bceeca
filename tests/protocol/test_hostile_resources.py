"""Hostile peer, resources: concurrency limit, floods (PING, SETTINGS, rapid reset, empty DATA), and a peer
that never reads.

Every flood is bounded in frames and seconds and sent without reading. Meanwhile the target's RSS must stay
under ``RSS_LIMIT_MB`` over its baseline and fresh well-behaved connections must keep being served. Floods
with no legitimate use (streams reset as soon as opened, empty DATA frames) must make the target end the
connection or the stream; for PING and SETTINGS, answering with backpressure is a valid defence too.
"""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Iterable, Iterator

import pytest
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from tests.protocol.deviations import H2_TOO_MANY_STREAMS, NGINX_EMPTY_DATA
from tests.protocol.flood import Drained, FloodResult, Outcome, TargetWatch, chunked, drain, flood
from tests.protocol.grpc_shapes import (
    STREAM,
    expect_grpc_ok,
    grpc_messages,
    read_response,
    request_headers,
    send_request,
)
from tests.protocol.h2peer import (
    Closed,
    ErrorCode,
    Event,
    FrameType,
    H2Peer,
    Setting,
    TimedOut,
    Verdict,
    describe,
    raw_frame,
)
from tests.protocol.targets import Backend, Target

FLOOD_SECONDS = 6.0
DRAIN_SECONDS = 2.0


def run_flood(peer: H2Peer, target: Target, frames: Iterable[bytes], what: str) -> tuple[FloodResult, Drained]:
    watch = TargetWatch(target)
    with watch:
        result = flood(peer.sock, chunked(frames), max_seconds=FLOOD_SECONDS)
        drained = drain(peer.sock, DRAIN_SECONDS, peer.unread())
    print(f"{what}: {result}; afterwards {drained}; RSS +{watch.growth_mb} MB; {watch.probes_ok} probes ok")
    watch.assert_healthy(what)
    return result, drained


def assert_cut_off(result: FloodResult, drained: Drained, what: str) -> None:
    """The target ended the abuse: closed the connection, sent GOAWAY, or reset the stream (not NO_ERROR)."""
    refused = [code for _, code in drained.resets if code != ErrorCode.NO_ERROR]
    ended = result.outcome is Outcome.CLOSED or drained.terminated or bool(refused)
    assert ended, f"{what} was not cut off: the flood ended with '{result}', then {drained}"


# ------------------------------------------------------------------------------------------- concurrency


@H2_TOO_MANY_STREAMS
def test_streams_over_max_concurrent_streams_are_refused(peer: H2Peer, backend: Backend) -> None:
    """RFC 9113 5.1.2: "An endpoint that receives a HEADERS frame that causes its advertised concurrent stream
    limit to be exceeded MUST treat this as a stream error of type PROTOCOL_ERROR or REFUSED_STREAM."
    With SETTINGS_MAX_CONCURRENT_STREAMS=N (10 in the generated configs) and responses held back by a zero
    window, streams N+1..N+5 are each reset (and never forwarded), the connection survives, and the first
    N complete once the window opens."""
    peer.handshake()
    limit = peer.server_settings.get(Setting.MAX_CONCURRENT_STREAMS)
    if limit is None or limit > 100:
        pytest.skip(f"the server advertises SETTINGS_MAX_CONCURRENT_STREAMS={limit}")
    peer.send_settings({Setting.INITIAL_WINDOW_SIZE: 0})
    peer.expect_settings_ack()
    ids = [1 + 2 * i for i in range(limit + 5)]
    tags = {sid: uuid.uuid4().hex for sid in ids}
    for sid in ids:
        send_request(peer, sid, b"c%d" % sid, extra=[("x-test-id", tags[sid])])
    over = set(ids[limit:])
    deadline = time.monotonic() + peer.timeout
    while not all(peer.stream(sid).reset is not None for sid in over):
        event = peer.read_event(deadline - time.monotonic())
        assert not isinstance(event, GoAwayFrame | Closed), (
            f"a connection error instead of stream errors: {describe(event)}"
        )
        if isinstance(event, TimedOut):
            missing = sorted(sid for sid in over if peer.stream(sid).reset is None)
            pytest.fail(f"streams {missing} over the limit of {limit} were not reset")
    codes = {sid: peer.stream(sid).reset for sid in over}
    assert set(codes.values()) <= {ErrorCode.REFUSED_STREAM, ErrorCode.PROTOCOL_ERROR}, codes
    early = [sid for sid in ids[:limit] if peer.stream(sid).reset is not None]
    assert not early, f"streams within the limit were reset: {early}"
    peer.send_settings({Setting.INITIAL_WINDOW_SIZE: 65535})
    for sid in ids[:limit]:
        expect_grpc_ok(peer, sid, b"c%d" % sid)
    forwarded = [sid for sid in over if backend.seen(tags[sid])]
    assert not forwarded, f"refused streams {forwarded} reached the backend"


# ------------------------------------------------------------------------------------------- floods


def test_ping_flood(target: Target) -> None:
    """CVE-2019-9512 "Ping Flood": 200,000 PINGs (3.4 MB of ACKs owed) on a connection whose receive buffer
    is 4 KiB and which never reads. RFC 9113 10.5: "An endpoint MAY treat activity that is suspicious as a
    connection error of type ENHANCE_YOUR_CALM." Closing, GOAWAY or backpressure are all fine; what is
    checked is the cost: bounded memory, other clients served throughout, the process alive."""
    with H2Peer(target.host, target.port, rcvbuf=4096) as peer:
        peer.handshake()
        frames = (raw_frame(FrameType.PING, 0, 0, struct.pack(">Q", i)) for i in range(200_000))
        run_flood(peer, target, frames, "a PING flood")


def test_settings_flood(target: Target) -> None:
    """CVE-2019-9515 "Settings Flood": 300,000 SETTINGS frames, each owed an ACK (2.7 MB), 4 KiB receive
    buffer, never a read. As for PINGs: closing, GOAWAY or backpressure are fine; memory must stay bounded
    and other clients served."""
    with H2Peer(target.host, target.port, rcvbuf=4096) as peer:
        peer.handshake()
        one = raw_frame(FrameType.SETTINGS, 0, 0, struct.pack(">HI", Setting.INITIAL_WINDOW_SIZE, 65535))
        run_flood(peer, target, (one for _ in range(300_000)), "a SETTINGS flood")


def test_rapid_reset_is_cut_off(peer: H2Peer, target: Target, backend: Backend) -> None:
    """CVE-2023-44487 "Rapid Reset": 10,000 streams, each a complete request (HEADERS with END_STREAM)
    immediately cancelled with RST_STREAM, so the concurrency limit never applies. The target must end
    the connection (GOAWAY - ENHANCE_YOUR_CALM is conventional - or close) before doing the work of all of
    them; Envoy closes connections with too many premature resets."""
    peer.handshake()
    block = peer.encode_headers(request_headers(peer.authority), index=False)
    before = backend.count()

    def frames() -> Iterator[bytes]:
        for i in range(10_000):
            sid = 1 + 2 * i
            yield raw_frame(FrameType.HEADERS, 0x5, sid, block) + raw_frame(
                FrameType.RST_STREAM, 0, sid, struct.pack(">I", 8)
            )

    result, drained = run_flood(peer, target, frames(), "a rapid-reset flood")
    print(f"backend requests during the flood: {backend.count() - before}")
    assert_cut_off(result, drained, "the rapid-reset flood")


@NGINX_EMPTY_DATA
def test_empty_data_frame_flood_is_cut_off(peer: H2Peer, target: Target) -> None:
    """CVE-2019-9518 "Empty Frames Flood": 100,000 DATA frames with no payload and no END_STREAM on one
    open stream. They have no legitimate use; Envoy ends the connection after one
    (max_consecutive_inbound_frames_with_empty_payload = 1). The target must end the connection or reset
    the stream."""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority))
    empty = raw_frame(FrameType.DATA, 0, 1)
    run_result, drained = run_flood(peer, target, (empty for _ in range(100_000)), "an empty-DATA flood")
    assert_cut_off(run_result, drained, "the empty-DATA flood")


# ------------------------------------------------------------------------------------------- slow reader


def test_peer_that_never_reads_keeps_memory_bounded(target: Target) -> None:
    """A client opens 8 server-streaming calls of 16 MiB each (128 MiB in all) and then never reads the
    socket nor sends WINDOW_UPDATE. The target may only hold a bounded amount in memory (flow control
    and backpressure towards the backend): RSS under +64 MB for 3 s, and other connections keep being
    served meanwhile."""
    watch = TargetWatch(target)
    with H2Peer(target.host, target.port, rcvbuf=16384) as stuck, watch:
        stuck.handshake()
        limit = stuck.server_settings.get(Setting.MAX_CONCURRENT_STREAMS, 100)
        for i in range(min(8, limit - 1)):
            send_request(
                stuck,
                1 + 2 * i,
                b"",
                path=STREAM,
                extra=[("x-stream-count", "256"), ("x-stream-size", "65536")],
            )
        time.sleep(3.0)
        assert stuck.send_error is None, stuck.send_error
    print(f"never-reading peer: RSS +{watch.growth_mb} MB, {watch.probes_ok} probes ok")
    watch.assert_healthy("8 stalled 16 MiB server-streaming calls")


def test_reset_of_a_stalled_stream_releases_it(peer: H2Peer) -> None:
    """After a stalled server-streaming call (zero window) is cancelled with RST_STREAM, the same
    connection still works: RFC 9113 6.4 "RST_STREAM ... allows for immediate termination of a stream"."""
    peer.handshake()
    peer.send_settings({Setting.INITIAL_WINDOW_SIZE: 0})
    peer.expect_settings_ack()
    send_request(peer, 1, b"", path=STREAM, extra=[("x-stream-count", "64"), ("x-stream-size", "65536")])
    peer.expect_headers(1)
    peer.send_rst_stream(1, ErrorCode.CANCEL)
    peer.send_settings({Setting.INITIAL_WINDOW_SIZE: 65535})
    peer.expect_settings_ack()
    send_request(peer, 3, b"after-reset")
    event = peer.wait(
        lambda ev: _after_reset_verdict(peer, ev),
        ["a response on stream 3 (nothing but stray DATA for stream 1 on the way)"],
    )
    assert not isinstance(event, RstStreamFrame | GoAwayFrame | Closed), describe(event)
    expect_grpc_ok(peer, 3, b"after-reset")


def _after_reset_verdict(peer: H2Peer, event: Event) -> Verdict:
    if isinstance(event, GoAwayFrame | Closed) or (isinstance(event, RstStreamFrame) and event.stream_id == 3):
        return Verdict.FAIL
    return Verdict.PASS if peer.stream(3).header_blocks else Verdict.CONTINUE


@pytest.mark.parametrize("streams", [1, 3])
def test_a_client_goaway_lets_the_streams_in_flight_finish(peer: H2Peer, streams: int) -> None:
    """RFC 9113 6.8: a GOAWAY from the client refuses *server*-initiated streams only; the client's own streams
    in flight complete, and the connection closes after their last bytes went out (a sidecar draining an
    upstream pool sends exactly this). The responses are large enough to still be queued when the last stream
    ends, so closing without flushing would lose them."""
    peer.handshake({Setting.INITIAL_WINDOW_SIZE: 2**31 - 1})
    peer.send_window_update(0, 2**31 - 1 - 65535)
    ids = [1 + 2 * i for i in range(streams)]
    size = 60_000
    for sid in ids:
        send_request(peer, sid, b"x", path=STREAM, extra=[("x-stream-count", "8"), ("x-stream-size", str(size))])
    peer.send_goaway(0, ErrorCode.NO_ERROR, b"draining")
    for sid in ids:
        response = read_response(peer, sid)
        assert response.ok, response.summary()
        assert grpc_messages(response.body) == [b"s" * size] * 8, response.summary()
    peer.expect_connection_closed()

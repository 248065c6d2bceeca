"""Hostile peer, frame layer: garbage instead of the preface, lying lengths, unknown flags, frames on the
wrong stream, DATA on idle streams, CONTINUATION misuse (including an endless header block), bad padding.

Every test is followed by the conftest check that the target is alive and serves a fresh connection.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable

import pytest
from hyperframe.frame import GoAwayFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame

from tests.protocol.deviations import H2_IDLE_RST_STREAM, H2_WAITS_FOR_FRAME_BODY, NGINX_IDLE_STREAM_FRAMES
from tests.protocol.grpc_shapes import expect_grpc_ok, grpc_message, request_headers, send_request
from tests.protocol.h2peer import (
    PREFACE,
    Closed,
    ErrorCode,
    Event,
    FrameType,
    H2Peer,
    Setting,
    TimedOut,
    Verdict,
    describe,
    hpack_integer,
    raw_frame,
)

PE = ErrorCode.PROTOCOL_ERROR
FSE = ErrorCode.FRAME_SIZE_ERROR

# ------------------------------------------------------------------------------------------- preface

GARBAGE = {
    "random_bytes": random.Random(7540).randbytes(512),
    "http1_request": b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
    "tls_client_hello": bytes.fromhex("16030100c8010000c40303") + bytes(186),
    "mangled_preface": b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + bytes(9),
    "preface_with_lowercase": PREFACE.lower(),
    "zeros": bytes(1024),
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_instead_of_preface_closes_connection(peer: H2Peer, garbage: bytes) -> None:
    """RFC 9113 3.4: "Clients and servers MUST treat an invalid connection preface as a connection error of
    type PROTOCOL_ERROR." The server may send its own preface (SETTINGS, a connection WINDOW_UPDATE) and a
    GOAWAY(PROTOCOL_ERROR), nothing else (in particular no HTTP/1.1 answer: the listener is h2c only), then
    close the connection."""
    peer.send(garbage)
    seen: list[Event] = []
    deadline = time.monotonic() + peer.timeout
    while True:
        event = peer.read_event(deadline - time.monotonic())
        if isinstance(event, Closed):
            break
        assert not isinstance(event, TimedOut), f"still open after {peer.timeout}s; saw {[describe(e) for e in seen]}"
        seen.append(event)
        preface = isinstance(event, SettingsFrame) or (isinstance(event, WindowUpdateFrame) and event.stream_id == 0)
        assert preface or isinstance(event, GoAwayFrame), f"unexpected reply to garbage: {describe(event)}"
        if isinstance(event, GoAwayFrame):
            assert event.error_code == PE, describe(event)
    assert event.trailing == b"", f"bytes that are not HTTP/2 frames: {event.trailing[:80]!r}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_frames_after_preface_end_the_connection(peer: H2Peer, seed: int) -> None:
    """Fuzz, seeded: after a valid preface, 300 well-delimited frames of random type (0-9), flags, stream
    (0, 1-7, 2^31-1) and payload (0-40 octets). Random frames break several rules at once (5.1 idle
    streams, 6.x stream-0 and length rules, 4.3 HPACK); a server MUST treat the first such connection error
    by closing the connection (RFC 9113 5.4.1), within the timeout, and survive."""
    rng = random.Random(seed)
    streams = [0, 1, 2, 3, 5, 7, 0x7FFFFFFF]
    frames = b"".join(
        raw_frame(rng.randrange(10), rng.randrange(256), rng.choice(streams), rng.randbytes(rng.randrange(41)))
        for _ in range(300)
    )
    peer.handshake()
    peer.send(frames)
    peer.expect_connection_closed()


@H2_WAITS_FOR_FRAME_BODY
def test_frame_header_claiming_16_mib_is_rejected_without_waiting_for_the_body(peer: H2Peer) -> None:
    """RFC 9113 4.2: "An endpoint MUST send an error code of FRAME_SIZE_ERROR if a frame exceeds the size
    defined in SETTINGS_MAX_FRAME_SIZE". The server must decide on the header alone: it cannot wait for
    16 MiB that will never come."""
    peer.handshake()
    if peer.max_frame_size >= (1 << 24) - 1:
        pytest.skip(f"the server advertises SETTINGS_MAX_FRAME_SIZE={peer.max_frame_size}")
    peer.send(raw_frame(FrameType.PING, 0, 0, b"\0" * 8, length=(1 << 24) - 1))
    peer.expect_connection_error(FSE)


# ------------------------------------------------------------------------------------------- lengths

OPEN_STREAM = "open stream 1"


@pytest.mark.parametrize(
    ("frame", "codes", "needs"),
    [
        pytest.param(raw_frame(FrameType.PING, 0, 0, b"\0" * 9), (FSE,), None, id="ping_9_octets"),
        pytest.param(raw_frame(FrameType.PING, 0, 0), (FSE,), None, id="ping_empty"),
        pytest.param(
            raw_frame(FrameType.WINDOW_UPDATE, 0, 0, b"\0\0\0\x01\0"),
            (FSE,),
            None,
            id="window_update_5_octets",
        ),
        pytest.param(raw_frame(FrameType.GOAWAY, 0, 0, b"\0" * 7), (FSE,), None, id="goaway_7_octets"),
        pytest.param(raw_frame(FrameType.SETTINGS, 0, 0, b"\0\x03\0\0\0\x64\0"), (FSE,), None, id="settings_7_octets"),
        pytest.param(
            raw_frame(FrameType.RST_STREAM, 0, 1, b"\0\0\0\x08\0"),
            (FSE,),
            OPEN_STREAM,
            id="rst_stream_5_octets",
        ),
        pytest.param(raw_frame(FrameType.PRIORITY, 0, 3, b"\0" * 6), (FSE,), None, id="priority_6_octets"),
        pytest.param(
            raw_frame(FrameType.HEADERS, 0x25, 3, b"\0\0\0"),
            (FSE, PE),
            None,
            id="headers_priority_flag_3_octets",
        ),
        pytest.param(raw_frame(FrameType.DATA, 0x08, 1), (FSE, PE), OPEN_STREAM, id="data_padded_0_octets"),
        pytest.param(raw_frame(FrameType.HEADERS, 0x0D, 3), (FSE, PE), None, id="headers_padded_0_octets"),
    ],
)
def test_frame_with_wrong_length(peer: H2Peer, frame: bytes, codes: tuple[int, ...], needs: str | None) -> None:
    """RFC 9113 4.2: "An endpoint MUST send an error code of FRAME_SIZE_ERROR if a frame ... is too small to
    contain mandatory frame data", and each frame type fixes its length (PING 8, WINDOW_UPDATE 4, RST_STREAM
    4, PRIORITY 5, SETTINGS a multiple of 6, GOAWAY at least 8). A stream error is accepted where the RFC
    allows one (PRIORITY); a padded frame with no room for the Pad Length may also be a PROTOCOL_ERROR."""
    peer.handshake()
    if needs == OPEN_STREAM:
        peer.send_headers(1, request_headers(peer.authority))
    peer.send(frame)
    peer.expect_stream_error(*codes)


# ------------------------------------------------------------------------------------------- flags


def test_undefined_flags_on_headers_and_data_are_ignored(peer: H2Peer) -> None:
    """RFC 9113 4.1: "Flags that have no defined semantics for a particular frame type MUST be ignored and
    MUST be left unset (0x00) when sending." HEADERS with 0x02|0x10|0x40|0x80 and DATA with 0xF6 set still
    make a valid request, which must get a normal answer."""
    peer.handshake()
    block = peer.encode_headers(request_headers(peer.authority))
    peer.send(raw_frame(FrameType.HEADERS, 0x04 | 0xD2, 1, block))
    peer.send(raw_frame(FrameType.DATA, 0x01 | 0xF6 & ~0x08, 1, grpc_message(b"hello")))
    expect_grpc_ok(peer, 1)


def test_undefined_flags_on_settings_and_window_update_are_ignored(peer: H2Peer) -> None:
    """RFC 9113 4.1: undefined flags MUST be ignored; a SETTINGS frame with flags 0xFE (no ACK) is a
    normal SETTINGS frame and must be acknowledged."""
    peer.handshake()
    peer.send(raw_frame(FrameType.WINDOW_UPDATE, 0xFF, 0, struct.pack(">I", 1000)))
    peer.send(raw_frame(FrameType.SETTINGS, 0xFE, 0, struct.pack(">HI", Setting.ENABLE_PUSH, 0)))
    peer.expect_settings_ack()


# ------------------------------------------------------------------------------------------- wrong stream


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(raw_frame(FrameType.DATA, 0, 0, b"x"), id="data_on_0"),
        pytest.param(raw_frame(FrameType.HEADERS, 0x5, 0, b"\x82"), id="headers_on_0"),
        pytest.param(raw_frame(FrameType.PRIORITY, 0, 0, b"\0\0\0\x01\x10"), id="priority_on_0"),
        pytest.param(raw_frame(FrameType.RST_STREAM, 0, 0, b"\0\0\0\x08"), id="rst_stream_on_0"),
        pytest.param(raw_frame(FrameType.PUSH_PROMISE, 0x4, 0, b"\0\0\0\x02\x82"), id="push_promise_on_0"),
        pytest.param(raw_frame(FrameType.CONTINUATION, 0x4, 0, b"\x82"), id="continuation_on_0"),
        pytest.param(raw_frame(FrameType.SETTINGS, 0, 1, b""), id="settings_on_1"),
        pytest.param(raw_frame(FrameType.PING, 0, 1, b"\0" * 8), id="ping_on_1"),
        pytest.param(raw_frame(FrameType.GOAWAY, 0, 1, b"\0" * 8), id="goaway_on_1"),
        pytest.param(raw_frame(FrameType.SETTINGS, 0x1, 3, b""), id="settings_ack_on_3"),
    ],
)
def test_frame_on_wrong_stream_is_a_connection_error(peer: H2Peer, frame: bytes) -> None:
    """RFC 9113 6.1-6.10: DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE and CONTINUATION "MUST be
    associated with a stream" and SETTINGS, PING and GOAWAY apply to the connection; either violation is
    a connection error of type PROTOCOL_ERROR."""
    peer.handshake()
    peer.send(frame)
    peer.expect_connection_error(PE)


@pytest.mark.parametrize(
    ("frame", "opens_stream_1"),
    [
        pytest.param(
            raw_frame(FrameType.DATA, 1, 3, b"x"),
            True,
            id="data_on_idle_3_after_1",
            marks=NGINX_IDLE_STREAM_FRAMES,
        ),
        pytest.param(
            raw_frame(FrameType.DATA, 1, 2, b"x"),
            False,
            id="data_on_even_stream_2",
            marks=NGINX_IDLE_STREAM_FRAMES,
        ),
        pytest.param(
            raw_frame(FrameType.DATA, 1, 0x7FFFFFFF, b"x"),
            False,
            id="data_on_stream_2_31_minus_1",
            marks=NGINX_IDLE_STREAM_FRAMES,
        ),
        pytest.param(
            raw_frame(FrameType.WINDOW_UPDATE, 0, 5, struct.pack(">I", 1)),
            True,
            id="window_update_on_idle_5",
            marks=NGINX_IDLE_STREAM_FRAMES,
        ),
        pytest.param(
            raw_frame(FrameType.RST_STREAM, 0, 5, struct.pack(">I", 8)),
            True,
            id="rst_stream_on_idle_5",
            marks=[NGINX_IDLE_STREAM_FRAMES, H2_IDLE_RST_STREAM],
        ),
        pytest.param(raw_frame(FrameType.HEADERS, 0x5, 4, b"\x82"), False, id="headers_on_even_stream_4"),
    ],
)
def test_frames_on_idle_streams(peer: H2Peer, frame: bytes, opens_stream_1: bool) -> None:
    """RFC 9113 5.1 idle: "Receiving any frame other than HEADERS or PRIORITY on a stream in this state
    MUST be treated as a connection error of type PROTOCOL_ERROR"; 5.1.1: a client opening an
    even-numbered stream is "an unexpected stream identifier" (PROTOCOL_ERROR)."""
    peer.handshake()
    if opens_stream_1:
        peer.send_headers(1, request_headers(peer.authority))
    peer.send(frame)
    peer.expect_connection_error(PE)


# ------------------------------------------------------------------------------------------- CONTINUATION


@pytest.mark.parametrize(
    "interloper",
    [
        pytest.param(lambda p: p.send_continuation(3, [("x-a", "b")]), id="continuation_for_other_stream"),
        pytest.param(lambda p: p.send_ping(b"\0" * 8), id="ping"),
        pytest.param(lambda p: p.send_settings({Setting.ENABLE_PUSH: 0}), id="settings"),
        pytest.param(lambda p: p.send_window_update(0, 100), id="window_update"),
        pytest.param(lambda p: p.send_rst_stream(1, ErrorCode.CANCEL), id="rst_stream_same_stream"),
    ],
)
def test_frame_interleaved_in_header_block(peer: H2Peer, interloper: Callable[[H2Peer], None]) -> None:
    """RFC 9113 4.3: "Field blocks MUST be transmitted as a contiguous sequence of frames, with no
    interleaved frames of any other type or from any other stream"; 6.2: any other frame "MUST be treated
    as a connection error of type PROTOCOL_ERROR" (control frames included)."""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_headers=False)
    interloper(peer)
    peer.send_continuation(1, [("x-after", "1")])
    peer.expect_connection_error(PE)


def test_header_block_in_one_octet_continuations_is_accepted(peer: H2Peer) -> None:
    """RFC 9113 6.10: "Any number of CONTINUATION frames can be sent" - a block cut into 1-octet fragments
    (one in the HEADERS frame, one per CONTINUATION) is a valid request."""
    peer.handshake()
    block = peer.encode_headers(request_headers(peer.authority))
    peer.send_headers(1, block[:1], end_headers=False)
    for i in range(1, len(block)):
        peer.send_continuation(1, block[i : i + 1], end_headers=i == len(block) - 1)
    peer.send_data(1, grpc_message(b"hello"), end_stream=True)
    expect_grpc_ok(peer, 1)


def literal_field(name: bytes, value: bytes) -> bytes:
    """An HPACK literal field without indexing, new name, no Huffman (RFC 7541 6.2.2): valid, bulky."""
    return b"\x00" + hpack_integer(len(name), 7, 0) + name + hpack_integer(len(value), 7, 0) + value


def test_endless_continuation_frames_are_cut_off(peer: H2Peer) -> None:
    """CVE-2024-27316 / "CONTINUATION flood": a HEADERS frame without END_HEADERS followed by an endless
    run of CONTINUATION frames full of valid fields. RFC 9113 10.5.1: "A server that receives a larger
    field block than it is willing to handle can send an HTTP 431 ... a client can discard responses
    that it cannot process. The field block MUST be processed to ensure a consistent connection state,
    unless the connection is closed." The server must react (RST_STREAM, GOAWAY or close) long before
    it has been sent 3 MiB of header block; it may not buffer or decode forever."""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_headers=False)
    fragment = b"".join(literal_field(b"x-flood-%d" % i, b"v" * 1000) for i in range(16))
    sent = 0
    reaction = None
    peer.sock.settimeout(0.5)
    for _ in range(200):
        peer.send(raw_frame(FrameType.CONTINUATION, 0, 1, fragment))
        sent += len(fragment)
        if peer.send_error is not None:
            break
        event = peer.read_event(0.005)
        if isinstance(event, RstStreamFrame | GoAwayFrame | Closed):
            reaction = event
            break
    if reaction is None:
        peer.wait(
            lambda ev: Verdict.PASS if isinstance(ev, RstStreamFrame | GoAwayFrame | Closed) else Verdict.CONTINUE,
            [f"RST_STREAM, GOAWAY or connection closed after {sent} octets of header block"],
        )


# ------------------------------------------------------------------------------------------- padding


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(raw_frame(FrameType.DATA, 0x09, 1, b"\x05hell"), id="data_pad_length_equals_payload"),
        pytest.param(raw_frame(FrameType.DATA, 0x09, 1, b"\xff" + b"\0" * 10), id="data_pad_length_255_in_11_octets"),
        pytest.param(
            raw_frame(FrameType.HEADERS, 0x2D, 3, b"\x03" + b"\0\0\0\0\x10" + b"\0\0"),
            id="headers_priority_padding_too_long",
        ),
    ],
)
def test_invalid_padding_is_a_protocol_error(peer: H2Peer, frame: bytes) -> None:
    """RFC 9113 6.1 / 6.2: "If the length of the padding is the length of the frame payload or greater, the
    recipient MUST treat this as a connection error of type PROTOCOL_ERROR." (for HEADERS the priority
    fields count against the payload)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority))
    peer.send(frame)
    peer.expect_connection_error(PE)


def test_nonzero_padding_is_accepted_or_rejected_cleanly(peer: H2Peer) -> None:
    """RFC 9113 6.1: "A receiver is not obligated to verify padding but MAY treat non-zero padding as a
    connection error of type PROTOCOL_ERROR." Either the request succeeds or the connection ends with
    PROTOCOL_ERROR; nothing else (no hang, no other error)."""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority))
    body = grpc_message(b"hello")
    peer.send(raw_frame(FrameType.DATA, 0x09, 1, b"\x04" + body + b"pad!"))
    event = peer.wait(
        lambda ev: _padding_verdict(peer, ev),
        [
            "a successful response on stream 1",
            "GOAWAY Frame (Error Code: PROTOCOL_ERROR)",
            "Connection closed",
        ],
    )
    if not isinstance(event, GoAwayFrame | Closed):
        expect_grpc_ok(peer, 1)


def _padding_verdict(peer: H2Peer, event: Event) -> Verdict:
    if isinstance(event, Closed):
        return Verdict.PASS
    if isinstance(event, GoAwayFrame):
        return Verdict.PASS if event.error_code == PE else Verdict.FAIL
    if isinstance(event, RstStreamFrame):
        return Verdict.FAIL
    return Verdict.PASS if peer.stream(1).ended else Verdict.CONTINUE


# ------------------------------------------------------------------------------------------- HPACK state


def test_server_honours_header_table_size_0(peer: H2Peer) -> None:
    """RFC 7541 4.2: "A change in the maximum size of the dynamic table is signaled via a dynamic table size
    update ... In HTTP/2, this follows a settings acknowledgment". Once the server has acknowledged our
    SETTINGS_HEADER_TABLE_SIZE=0 its encoder may not use the dynamic table: our decoder keeps no entries,
    and several responses in a row on one connection must still decode (a proxy keeps HPACK state per
    connection and direction)."""
    peer.handshake({Setting.HEADER_TABLE_SIZE: 0})
    peer.decoder.header_table_size = 0
    peer.decoder.max_allowed_table_size = 0
    for stream_id in (1, 3, 5):
        send_request(peer, stream_id, b"table-%d" % stream_id)
        response = expect_grpc_ok(peer, stream_id, b"table-%d" % stream_id)
        assert all(n != ":decode-error" for n, _ in response.headers + response.trailers), response.summary()

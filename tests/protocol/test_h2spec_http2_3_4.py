"""h2spec ``http2`` sections 3.5 (connection preface) and 4.1-4.3 (frame format, frame size, HPACK).

One test per h2spec case; the name is the h2spec id (section, case number) and the docstring quotes the
RFC 7540 / RFC 9113 requirement. Requests are gRPC-shaped where the case needs a valid one.
"""

from __future__ import annotations

import pytest
from hyperframe.frame import SettingsFrame

from tests.protocol.deviations import H2_HPACK_PROTOCOL_ERROR, NGINX_HPACK_FRAME_SIZE
from tests.protocol.grpc_shapes import dummy_headers, expect_grpc_ok, grpc_message, request_headers
from tests.protocol.h2peer import (
    DEFAULT_WINDOW,
    PREFACE,
    ErrorCode,
    FrameType,
    H2Peer,
    Setting,
    describe,
    raw_frame,
)

# ------------------------------------------------------------------------------------------- 3.5


def test_3_5_1_sends_client_connection_preface(peer: H2Peer) -> None:
    """RFC 9113 3.4: "The server connection preface consists of a potentially empty SETTINGS frame that
    MUST be the first frame the server sends in the HTTP/2 connection." (h2spec http2/3.5/1)"""
    peer.send(PREFACE + SettingsFrame(0, settings={Setting.INITIAL_WINDOW_SIZE: DEFAULT_WINDOW}).serialize())
    event = peer.read_event()
    assert isinstance(event, SettingsFrame) and "ACK" not in event.flags, f"first frame: {describe(event)}"


def test_3_5_2_sends_invalid_connection_preface(peer: H2Peer) -> None:
    """RFC 9113 3.4: "Clients and servers MUST treat an invalid connection preface as a connection error
    of type PROTOCOL_ERROR." (h2spec http2/3.5/2)"""
    peer.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 4.1

UNKNOWN_FRAME = raw_frame(0x16, 0, 0, b"\0" * 8)


def test_4_1_1_sends_frame_with_unknown_type(peer: H2Peer) -> None:
    """RFC 9113 4.1: "Implementations MUST ignore and discard frames of unknown types."
    (h2spec http2/4.1/1)"""
    peer.handshake()
    peer.send(UNKNOWN_FRAME)
    peer.send_ping(b"\0" * 8)
    peer.expect_ping_ack(b"\0" * 8)


def test_4_1_2_sends_frame_with_undefined_flag(peer: H2Peer) -> None:
    """RFC 9113 4.1: "Flags that have no defined semantics for a particular frame type MUST be ignored."
    (h2spec http2/4.1/2: a PING with flags 0x16)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.PING, 0x16, 0, b"\0" * 8))
    peer.expect_ping_ack(b"\0" * 8)


def test_4_1_3_sends_frame_with_reserved_field_bit(peer: H2Peer) -> None:
    """RFC 9113 4.1: "The semantics of this bit [R] are undefined, and the bit MUST remain unset (0x00)
    when sending and MUST be ignored when receiving." (h2spec http2/4.1/3)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.PING, 0x16, 0x80000000, b"\0" * 8))
    peer.expect_ping_ack(b"\0" * 8)


# ------------------------------------------------------------------------------------------- 4.2


def skip_unless_frame_size_is_testable(peer: H2Peer) -> None:
    """A frame over SETTINGS_MAX_FRAME_SIZE needs a limit well under the 24-bit maximum to be sent."""
    if peer.max_frame_size > 1 << 20:
        pytest.skip(f"the server advertises SETTINGS_MAX_FRAME_SIZE={peer.max_frame_size}")


def test_4_2_1_sends_data_frame_with_2_14_octets(peer: H2Peer) -> None:
    """RFC 9113 4.2: "All implementations MUST be capable of receiving and minimally processing frames up
    to 2^14 octets in length, plus the 9-octet frame header." (h2spec http2/4.2/1)"""
    peer.handshake()
    payload = b"p" * (2**14 - 5)
    peer.send_headers(1, request_headers(peer.authority))
    peer.send_data(1, grpc_message(payload), end_stream=True)
    expect_grpc_ok(peer, 1, payload)


def test_4_2_2_sends_data_frame_exceeding_max_frame_size(peer: H2Peer) -> None:
    """RFC 9113 4.2: "An endpoint MUST send an error code of FRAME_SIZE_ERROR if a frame exceeds the size
    defined in SETTINGS_MAX_FRAME_SIZE." (h2spec http2/4.2/2)"""
    peer.handshake()
    skip_unless_frame_size_is_testable(peer)
    peer.send_headers(1, request_headers(peer.authority))
    peer.send_data(1, b"x" * (peer.max_frame_size + 1), end_stream=True)
    peer.expect_stream_error(ErrorCode.FRAME_SIZE_ERROR)


def test_4_2_3_sends_headers_frame_exceeding_max_frame_size(peer: H2Peer) -> None:
    """RFC 9113 4.2: "A frame size error in a frame that could alter the state of the entire connection
    MUST be treated as a connection error; this includes any frame carrying a field block (HEADERS,
    PUSH_PROMISE, and CONTINUATION)." (h2spec http2/4.2/3)"""
    peer.handshake()
    skip_unless_frame_size_is_testable(peer)
    count = peer.max_frame_size // 4000 + 1
    block = peer.encode_headers(request_headers(peer.authority) + dummy_headers(count), huffman=False)
    assert len(block) > peer.max_frame_size
    peer.send_headers(1, block, end_stream=True)
    peer.expect_connection_error(ErrorCode.FRAME_SIZE_ERROR)


# ------------------------------------------------------------------------------------------- 4.3


@NGINX_HPACK_FRAME_SIZE
@H2_HPACK_PROTOCOL_ERROR
def test_4_3_1_sends_invalid_header_block_fragment(peer: H2Peer) -> None:
    """RFC 9113 4.3: "A decoding error in a field block MUST be treated as a connection error of type
    COMPRESSION_ERROR." (h2spec http2/4.3/1: a literal with incremental indexing, then nothing)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.HEADERS, 0x05, 1, b"\x40"))
    peer.expect_connection_error(ErrorCode.COMPRESSION_ERROR)


def test_4_3_2_sends_priority_frame_while_sending_header_block(peer: H2Peer) -> None:
    """RFC 9113 4.3: "Field blocks MUST be transmitted as a contiguous sequence of frames, with no
    interleaved frames of any other type or from any other stream." (h2spec http2/4.3/2)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_headers=False)
    peer.send_priority(1, depends_on=0, weight=255)
    peer.send_continuation(1, dummy_headers(1))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_4_3_3_sends_headers_frame_to_another_stream_while_sending_header_block(peer: H2Peer) -> None:
    """RFC 9113 4.3: "Field blocks MUST be transmitted as a contiguous sequence of frames, with no
    interleaved frames of any other type or from any other stream." (h2spec http2/4.3/3)"""
    peer.handshake()
    headers = request_headers(peer.authority)
    peer.send_headers(1, headers, end_headers=False)
    peer.send_headers(3, headers, end_stream=True)
    peer.send_continuation(1, dummy_headers(1))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)

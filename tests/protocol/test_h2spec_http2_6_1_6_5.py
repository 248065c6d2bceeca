"""h2spec ``http2`` sections 6.1-6.5: DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS (6.5.2, 6.5.3)."""

from __future__ import annotations

import struct

import pytest

from tests.protocol.deviations import H2_SETTINGS_ACK_PROTOCOL_ERROR, NGINX_IDLE_STREAM_FRAMES
from tests.protocol.grpc_shapes import dummy_headers, request_headers, send_request
from tests.protocol.h2peer import ErrorCode, FrameType, H2Peer, Setting, raw_frame

# ------------------------------------------------------------------------------------------- 6.1 DATA


def test_6_1_1_data_frame_with_stream_id_0(peer: H2Peer) -> None:
    """RFC 9113 6.1: "If a DATA frame is received whose Stream Identifier field is 0x00, the recipient MUST
    respond with a connection error of type PROTOCOL_ERROR." (h2spec http2/6.1/1)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.DATA, 0x1, 0, b"test"))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_6_1_2_data_frame_on_stream_not_open(peer: H2Peer) -> None:
    """RFC 9113 6.1: "If a DATA frame is received whose stream is not in the "open" or "half-closed (local)"
    state, the recipient MUST respond with a stream error of type STREAM_CLOSED." (h2spec http2/6.1/2)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_stream=True)
    peer.send_data(1, b"test", end_stream=True)
    peer.expect_stream_error(ErrorCode.STREAM_CLOSED)


def test_6_1_3_data_frame_with_invalid_pad_length(peer: H2Peer) -> None:
    """RFC 9113 6.1: "If the length of the padding is the length of the frame payload or greater, the
    recipient MUST treat this as a connection error of type PROTOCOL_ERROR." (h2spec http2/6.1/3: frame
    length 5, pad length 6)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority, extra=[("content-length", "4")]))
    peer.send(raw_frame(FrameType.DATA, 0x09, 1, b"\x06Test"))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 6.2 HEADERS


def test_6_2_1_headers_without_end_headers_then_priority(peer: H2Peer) -> None:
    """RFC 9113 6.2: "A HEADERS frame without the END_HEADERS flag set MUST be followed by a CONTINUATION
    frame for the same stream. A receiver MUST treat the receipt of any other type of frame or a frame on a
    different stream as a connection error of type PROTOCOL_ERROR." (h2spec http2/6.2/1)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_headers=False)
    peer.send_priority(1, depends_on=0, weight=255)
    peer.send_continuation(1, dummy_headers(1))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_6_2_2_headers_to_another_stream_during_header_block(peer: H2Peer) -> None:
    """RFC 9113 6.2: "... A receiver MUST treat the receipt of any other type of frame or a frame on a
    different stream as a connection error of type PROTOCOL_ERROR." (h2spec http2/6.2/2)"""
    peer.handshake()
    headers = request_headers(peer.authority)
    peer.send_headers(1, headers, end_headers=False)
    peer.send_headers(3, headers, end_stream=True)
    peer.send_continuation(1, dummy_headers(1))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_6_2_3_headers_frame_with_stream_id_0(peer: H2Peer) -> None:
    """RFC 9113 6.2: "If a HEADERS frame is received whose Stream Identifier field is 0x00, the recipient
    MUST respond with a connection error of type PROTOCOL_ERROR." (h2spec http2/6.2/3)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.HEADERS, 0x5, 0, peer.encode_headers(request_headers(peer.authority))))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_6_2_4_headers_frame_with_invalid_pad_length(peer: H2Peer) -> None:
    """RFC 9113 6.2: "Padding that exceeds the size remaining for the field block fragment MUST be treated
    as a PROTOCOL_ERROR." (h2spec http2/6.2/4, which accepts a stream or a connection error)"""
    peer.handshake()
    block = peer.encode_headers(request_headers(peer.authority))
    peer.send(raw_frame(FrameType.HEADERS, 0x0D, 1, bytes([len(block) + 2]) + block))
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 6.3 PRIORITY


def test_6_3_1_priority_frame_with_stream_id_0(peer: H2Peer) -> None:
    """RFC 9113 6.3: "If a PRIORITY frame is received with a stream identifier of 0x00, the recipient MUST
    respond with a connection error of type PROTOCOL_ERROR." (h2spec http2/6.3/1)"""
    peer.handshake()
    peer.send_priority(0, depends_on=0, weight=255)
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_6_3_2_priority_frame_with_length_other_than_5(peer: H2Peer) -> None:
    """RFC 9113 6.3: "A PRIORITY frame with a length other than 5 octets MUST be treated as a stream error
    of type FRAME_SIZE_ERROR." (h2spec http2/6.3/2)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_stream=True)
    peer.send(raw_frame(FrameType.PRIORITY, 0, 1, b"\x80\x00\x00\x01"))
    peer.expect_stream_error(ErrorCode.FRAME_SIZE_ERROR)


# ------------------------------------------------------------------------------------------- 6.4 RST_STREAM


def test_6_4_1_rst_stream_with_stream_id_0(peer: H2Peer) -> None:
    """RFC 9113 6.4: "If a RST_STREAM frame is received with a stream identifier of 0x00, the recipient
    MUST treat this as a connection error of type PROTOCOL_ERROR." (h2spec http2/6.4/1)"""
    peer.handshake()
    peer.send_rst_stream(0, ErrorCode.CANCEL)
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


@NGINX_IDLE_STREAM_FRAMES
def test_6_4_2_rst_stream_on_idle_stream(peer: H2Peer) -> None:
    """RFC 9113 6.4: "If a RST_STREAM frame identifying an idle stream is received, the recipient MUST
    treat this as a connection error of type PROTOCOL_ERROR." (h2spec http2/6.4/2)"""
    peer.handshake()
    peer.send_rst_stream(1, ErrorCode.CANCEL)
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_6_4_3_rst_stream_with_length_other_than_4(peer: H2Peer) -> None:
    """RFC 9113 6.4: "A RST_STREAM frame with a length other than 4 octets MUST be treated as a connection
    error of type FRAME_SIZE_ERROR." (h2spec http2/6.4/3, which accepts a stream error too)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_stream=True)
    peer.send(raw_frame(FrameType.RST_STREAM, 0, 1, b"\0\0\0"))
    peer.expect_stream_error(ErrorCode.FRAME_SIZE_ERROR)


# ------------------------------------------------------------------------------------------- 6.5 SETTINGS


def settings_payload(*pairs: tuple[int, int]) -> bytes:
    return b"".join(struct.pack(">HI", ident, value) for ident, value in pairs)


@H2_SETTINGS_ACK_PROTOCOL_ERROR
def test_6_5_1_settings_ack_with_payload(peer: H2Peer) -> None:
    """RFC 9113 6.5: "Receipt of a SETTINGS frame with the ACK flag set and a length field value other
    than 0 MUST be treated as a connection error of type FRAME_SIZE_ERROR." (h2spec http2/6.5/1)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.SETTINGS, 0x1, 0, b"\0"))
    peer.expect_connection_error(ErrorCode.FRAME_SIZE_ERROR)


def test_6_5_2_settings_with_stream_id_other_than_0(peer: H2Peer) -> None:
    """RFC 9113 6.5: "If an endpoint receives a SETTINGS frame whose Stream Identifier field is anything
    other than 0x00, the endpoint MUST respond with a connection error of type PROTOCOL_ERROR."
    (h2spec http2/6.5/2)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.SETTINGS, 0, 1, settings_payload((Setting.MAX_CONCURRENT_STREAMS, 100))))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_6_5_3_settings_with_length_not_multiple_of_6(peer: H2Peer) -> None:
    """RFC 9113 6.5: "A SETTINGS frame with a length other than a multiple of 6 octets MUST be treated as a
    connection error of type FRAME_SIZE_ERROR." (h2spec http2/6.5/3, which accepts PROTOCOL_ERROR too)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.SETTINGS, 0, 0, b"\x00\x03\x00"))
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR, ErrorCode.FRAME_SIZE_ERROR)


@pytest.mark.parametrize(
    ("setting", "value", "code"),
    [
        pytest.param(Setting.ENABLE_PUSH, 2, ErrorCode.PROTOCOL_ERROR, id="6_5_2_1_enable_push_2"),
        pytest.param(Setting.INITIAL_WINDOW_SIZE, 2**31, ErrorCode.FLOW_CONTROL_ERROR, id="6_5_2_2_window_2_31"),
        pytest.param(Setting.MAX_FRAME_SIZE, 16383, ErrorCode.PROTOCOL_ERROR, id="6_5_2_3_max_frame_size_16383"),
        pytest.param(Setting.MAX_FRAME_SIZE, 2**24, ErrorCode.PROTOCOL_ERROR, id="6_5_2_4_max_frame_size_2_24"),
    ],
)
def test_6_5_2_defined_settings_out_of_range(peer: H2Peer, setting: int, value: int, code: int) -> None:
    """RFC 9113 6.5.2: ENABLE_PUSH "Any value other than 0 or 1 MUST be treated as a connection error of
    type PROTOCOL_ERROR"; INITIAL_WINDOW_SIZE "Values above the maximum flow-control window size of 2^31-1
    MUST be treated as a connection error of type FLOW_CONTROL_ERROR"; MAX_FRAME_SIZE "Values outside this
    range [2^14, 2^24-1] MUST be treated as a connection error of type PROTOCOL_ERROR."
    (h2spec http2/6.5.2/1-4)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.SETTINGS, 0, 0, settings_payload((setting, value))))
    peer.expect_connection_error(code)


def test_6_5_2_5_settings_with_unknown_identifier(peer: H2Peer) -> None:
    """RFC 9113 6.5.2: "An endpoint that receives a SETTINGS frame with any unknown or unsupported
    identifier MUST ignore that setting." (h2spec http2/6.5.2/5)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.SETTINGS, 0, 0, settings_payload((0xFF, 1))))
    peer.send_ping(b"\0" * 8)
    peer.expect_ping_ack(b"\0" * 8)


def test_6_5_3_1_multiple_initial_window_size_values(peer: H2Peer) -> None:
    """RFC 9113 6.5.3: "The values in the SETTINGS frame MUST be processed in the order they appear, with
    no other frame processing between values." (h2spec http2/6.5.3/1: 100 then 1, so DATA comes 1 octet at
    a time)"""
    peer.handshake()
    payload = settings_payload((Setting.INITIAL_WINDOW_SIZE, 100), (Setting.INITIAL_WINDOW_SIZE, 1))
    peer.send(raw_frame(FrameType.SETTINGS, 0, 0, payload))
    peer.expect_settings_ack()
    send_request(peer, 1)
    peer.expect_data(1, 1)


def test_6_5_3_2_settings_without_ack_gets_ack(peer: H2Peer) -> None:
    """RFC 9113 6.5.3: "Once all values have been processed, the recipient MUST immediately emit a SETTINGS
    frame with the ACK flag set." (h2spec http2/6.5.3/2)"""
    peer.handshake()
    peer.send_settings({Setting.ENABLE_PUSH: 0})
    peer.expect_settings_ack()

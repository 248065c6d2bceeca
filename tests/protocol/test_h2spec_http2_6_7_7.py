"""h2spec ``http2`` sections 6.7-6.10 (PING, GOAWAY, WINDOW_UPDATE with 6.9.1/6.9.2, CONTINUATION) and 7
(error codes)."""

from __future__ import annotations

import struct

from tests.protocol.grpc_shapes import (
    dummy_headers,
    expect_grpc_ok,
    grpc_message,
    request_headers,
    send_request,
)
from tests.protocol.h2peer import ErrorCode, FrameType, H2Peer, Setting, raw_frame

H2SPEC = b"h2spec\0\0"

# ------------------------------------------------------------------------------------------- 6.7 PING


def test_6_7_1_ping_gets_ack_with_same_payload(peer: H2Peer) -> None:
    """RFC 9113 6.7: "Receivers of a PING frame that does not include an ACK flag MUST send a PING frame
    with the ACK flag set in response, with an identical frame payload." (h2spec http2/6.7/1)"""
    peer.handshake()
    peer.send_ping(H2SPEC)
    peer.expect_ping_ack(H2SPEC)


def test_6_7_2_ping_ack_gets_no_response(peer: H2Peer) -> None:
    """RFC 9113 6.7: "An endpoint MUST NOT respond to PING frames containing this flag [ACK]."
    (h2spec http2/6.7/2: the first PING ACK received must be the answer to the second PING)"""
    peer.handshake()
    peer.send_ping(b"invalid\0", ack=True)
    peer.send_ping(H2SPEC)
    peer.expect_ping_ack(H2SPEC)


def test_6_7_3_ping_with_stream_id_other_than_0(peer: H2Peer) -> None:
    """RFC 9113 6.7: "If a PING frame is received with a Stream Identifier field value other than 0x00, the
    recipient MUST respond with a connection error of type PROTOCOL_ERROR." (h2spec http2/6.7/3)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.PING, 0, 1, b"\0" * 8))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_6_7_4_ping_with_length_other_than_8(peer: H2Peer) -> None:
    """RFC 9113 6.7: "Receipt of a PING frame with a length field value other than 8 MUST be treated as a
    connection error of type FRAME_SIZE_ERROR." (h2spec http2/6.7/4)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.PING, 0, 0, b"\0" * 6))
    peer.expect_connection_error(ErrorCode.FRAME_SIZE_ERROR)


# ------------------------------------------------------------------------------------------- 6.8 GOAWAY


def test_6_8_1_goaway_with_stream_id_other_than_0(peer: H2Peer) -> None:
    """RFC 9113 6.8: "An endpoint MUST treat a GOAWAY frame with a stream identifier other than 0x00 as a
    connection error of type PROTOCOL_ERROR." (h2spec http2/6.8/1)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.GOAWAY, 0, 1, b"\0" * 8))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------ 6.9 WINDOW_UPDATE


def test_6_9_1_window_update_increment_0_on_connection(peer: H2Peer) -> None:
    """RFC 9113 6.9: "A receiver MUST treat the receipt of a WINDOW_UPDATE frame with a flow-control window
    increment of 0 as a stream error of type PROTOCOL_ERROR; errors on the connection flow-control window
    MUST be treated as a connection error." (h2spec http2/6.9/1)"""
    peer.handshake()
    peer.send_window_update(0, 0)
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_6_9_2_window_update_increment_0_on_stream(peer: H2Peer) -> None:
    """RFC 9113 6.9: "A receiver MUST treat the receipt of a WINDOW_UPDATE frame with a flow-control window
    increment of 0 as a stream error of type PROTOCOL_ERROR." (h2spec http2/6.9/2)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority))
    peer.send_window_update(1, 0)
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)


def test_6_9_3_window_update_with_length_other_than_4(peer: H2Peer) -> None:
    """RFC 9113 6.9: "A WINDOW_UPDATE frame with a length other than 4 octets MUST be treated as a
    connection error of type FRAME_SIZE_ERROR." (h2spec http2/6.9/3)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.WINDOW_UPDATE, 0, 0, b"\0\0\x01"))
    peer.expect_connection_error(ErrorCode.FRAME_SIZE_ERROR)


def test_6_9_1_1_initial_window_1_limits_data_frames(peer: H2Peer) -> None:
    """RFC 9113 6.9.1: "The sender MUST NOT send a flow-controlled frame with a length that exceeds the space
    available in either of the flow-control windows advertised by the receiver." (h2spec http2/6.9.1/1)"""
    peer.handshake()
    peer.send_settings({Setting.INITIAL_WINDOW_SIZE: 1})
    peer.expect_settings_ack()
    send_request(peer, 1)
    peer.expect_data(1, 1)


def test_6_9_1_2_connection_window_above_2_31_minus_1(peer: H2Peer) -> None:
    """RFC 9113 6.9.1: "If a sender receives a WINDOW_UPDATE that causes a flow-control window to exceed
    this maximum, it MUST terminate either the stream or the connection, as appropriate ... for the
    connection, a GOAWAY frame with an error code of FLOW_CONTROL_ERROR is sent." (h2spec http2/6.9.1/2)"""
    peer.handshake()
    peer.send_window_update(0, 2**31 - 1)
    peer.send_window_update(0, 2**31 - 1)
    goaway = peer.expect_frame(FrameType.GOAWAY)
    assert goaway.error_code == ErrorCode.FLOW_CONTROL_ERROR, goaway  # type: ignore[attr-defined]


def test_6_9_1_3_stream_window_above_2_31_minus_1(peer: H2Peer) -> None:
    """RFC 9113 6.9.1: "... For streams, the sender sends a RST_STREAM with an error code of
    FLOW_CONTROL_ERROR." (h2spec http2/6.9.1/3)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority))
    peer.send_window_update(1, 2**31 - 1)
    peer.send_window_update(1, 2**31 - 1)
    rst = peer.expect_frame(FrameType.RST_STREAM, stream_id=1)
    assert rst.error_code == ErrorCode.FLOW_CONTROL_ERROR, rst  # type: ignore[attr-defined]


def test_6_9_2_1_initial_window_size_change_after_headers(peer: H2Peer) -> None:
    """RFC 9113 6.9.2: "When the value of SETTINGS_INITIAL_WINDOW_SIZE changes, a receiver MUST adjust the
    size of all stream flow-control windows that it maintains by the difference between the new value and
    the old value." (h2spec http2/6.9.2/1: 0, request, then 1 -> one octet of DATA)"""
    peer.handshake()
    peer.send_settings({Setting.INITIAL_WINDOW_SIZE: 0})
    peer.expect_settings_ack()
    send_request(peer, 1)
    peer.send_settings({Setting.INITIAL_WINDOW_SIZE: 1})
    peer.expect_data(1, 1)


def test_6_9_2_2_negative_window_is_tracked(peer: H2Peer) -> None:
    """RFC 9113 6.9.2: "A sender MUST track the negative flow-control window and MUST NOT send new
    flow-controlled frames until it receives WINDOW_UPDATE frames that cause the flow-control window to
    become positive." (h2spec http2/6.9.2/2: window 3, DATA, window 2 (-> -1), WINDOW_UPDATE 2 -> 1 octet)"""
    peer.handshake()
    peer.send_settings({Setting.INITIAL_WINDOW_SIZE: 3})
    peer.expect_settings_ack()
    send_request(peer, 1, b"a message longer than five octets")
    peer.expect_frame(FrameType.DATA)
    peer.send_settings({Setting.INITIAL_WINDOW_SIZE: 2})
    peer.expect_settings_ack()
    peer.send_window_update(1, 2)
    peer.expect_data(1, 1)


def test_6_9_2_3_initial_window_size_above_maximum(peer: H2Peer) -> None:
    """RFC 9113 6.9.2: "An endpoint MUST treat a change to SETTINGS_INITIAL_WINDOW_SIZE that causes any
    flow-control window to exceed the maximum size as a connection error of type FLOW_CONTROL_ERROR."
    (h2spec http2/6.9.2/3)"""
    peer.handshake()
    peer.send(raw_frame(FrameType.SETTINGS, 0, 0, struct.pack(">HI", Setting.INITIAL_WINDOW_SIZE, 2**31)))
    peer.expect_connection_error(ErrorCode.FLOW_CONTROL_ERROR)


# ------------------------------------------------------------------------------------- 6.10 CONTINUATION


def test_6_10_1_multiple_continuation_frames(peer: H2Peer) -> None:
    """RFC 9113 6.10: "Any number of CONTINUATION frames can be sent, as long as the preceding frame is on
    the same stream and is a HEADERS, PUSH_PROMISE, or CONTINUATION frame without the END_HEADERS flag
    set." (h2spec http2/6.10/1; here the request is completed by a DATA frame and must succeed)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_headers=False)
    peer.send_continuation(1, dummy_headers(1), end_headers=False)
    peer.send_continuation(1, dummy_headers(1))
    peer.send_data(1, grpc_message(b"hello"), end_stream=True)
    expect_grpc_ok(peer, 1)


def test_6_10_2_continuation_followed_by_other_frame(peer: H2Peer) -> None:
    """RFC 9113 6.10: "If the END_HEADERS flag is not set, this frame MUST be followed by another
    CONTINUATION frame. A receiver MUST treat the receipt of any other type of frame or a frame on a
    different stream as a connection error of type PROTOCOL_ERROR." (h2spec http2/6.10/2)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_headers=False)
    peer.send_continuation(1, dummy_headers(1), end_headers=False)
    peer.send_data(1, b"test", end_stream=True)
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_6_10_3_continuation_with_stream_id_0(peer: H2Peer) -> None:
    """RFC 9113 6.10: "If a CONTINUATION frame is received with a Stream Identifier field of 0x00, the
    recipient MUST respond with a connection error of type PROTOCOL_ERROR." (h2spec http2/6.10/3)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_stream=True, end_headers=False)
    peer.send_continuation(0, dummy_headers(1))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_6_10_4_continuation_after_headers_with_end_headers(peer: H2Peer) -> None:
    """RFC 9113 6.10: "A CONTINUATION frame MUST be preceded by a HEADERS, PUSH_PROMISE or CONTINUATION
    frame without the END_HEADERS flag set. A recipient that observes violation of this rule MUST respond
    with a connection error of type PROTOCOL_ERROR." (h2spec http2/6.10/4)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_stream=True)
    peer.send_continuation(1, dummy_headers(1))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_6_10_5_continuation_after_continuation_with_end_headers(peer: H2Peer) -> None:
    """RFC 9113 6.10: "A CONTINUATION frame MUST be preceded by a HEADERS, PUSH_PROMISE or CONTINUATION
    frame without the END_HEADERS flag set ..." (h2spec http2/6.10/5)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_stream=True, end_headers=False)
    peer.send_continuation(1, dummy_headers(1))
    peer.send_continuation(1, dummy_headers(1))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_6_10_6_continuation_after_data(peer: H2Peer) -> None:
    """RFC 9113 6.10: "A CONTINUATION frame MUST be preceded by a HEADERS, PUSH_PROMISE or CONTINUATION
    frame without the END_HEADERS flag set ..." (h2spec http2/6.10/6: HEADERS without END_HEADERS, DATA,
    then CONTINUATION frames)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_headers=False)
    peer.send_data(1, b"test", end_stream=True)
    peer.send_continuation(1, dummy_headers(1), end_headers=False)
    peer.send_continuation(0, dummy_headers(1))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 7


def test_7_1_goaway_with_unknown_error_code(peer: H2Peer) -> None:
    """RFC 9113 7: "Unknown or unsupported error codes MUST NOT trigger any special behavior. These MAY be
    treated by an implementation as being equivalent to INTERNAL_ERROR." (h2spec http2/7/1: a PING is
    answered, or the connection closes as after any GOAWAY)"""
    peer.handshake()
    peer.send_goaway(0, 0xFF)
    peer.send_ping(H2SPEC)
    peer.expect_ping_ack(H2SPEC, or_closed=True)


def test_7_2_rst_stream_with_unknown_error_code(peer: H2Peer) -> None:
    """RFC 9113 7: "Unknown or unsupported error codes MUST NOT trigger any special behavior."
    (h2spec http2/7/2)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority))
    peer.send_rst_stream(1, 0xFF)
    peer.send_ping(b"\0" * 8)
    peer.expect_ping_ack(b"\0" * 8)

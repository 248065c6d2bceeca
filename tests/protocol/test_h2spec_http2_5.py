"""h2spec ``http2`` section 5: stream states (5.1), identifiers (5.1.1), concurrency (5.1.2), dependencies
(5.3.1), connection error handling (5.4.1) and extensions (5.5).

Where h2spec half-closes a stream with a bare HEADERS(END_STREAM) GET, these ports send a complete gRPC
request (HEADERS, then DATA with END_STREAM): the stream reaches the same state and the request is valid.
"""

from __future__ import annotations

import pytest

from tests.protocol.deviations import (
    NGINX_CLOSED_STREAM_DATA,
    NGINX_GOAWAY_NOT_STREAM_CLOSED,
    NGINX_IDLE_STREAM_FRAMES,
)
from tests.protocol.grpc_shapes import dummy_headers, grpc_message, request_headers, send_request
from tests.protocol.h2peer import ErrorCode, FrameType, H2Peer, Setting, raw_frame

# ------------------------------------------------------------------------------------------- 5.1 idle


@NGINX_IDLE_STREAM_FRAMES
def test_5_1_1_idle_sends_data_frame(peer: H2Peer) -> None:
    """RFC 9113 5.1 idle: "Receiving any frame other than HEADERS or PRIORITY on a stream in this state
    MUST be treated as a connection error of type PROTOCOL_ERROR." (h2spec http2/5.1/1)"""
    peer.handshake()
    peer.send_data(1, b"test", end_stream=True)
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


@NGINX_IDLE_STREAM_FRAMES
def test_5_1_2_idle_sends_rst_stream_frame(peer: H2Peer) -> None:
    """RFC 9113 5.1 idle: "Receiving any frame other than HEADERS or PRIORITY on a stream in this state
    MUST be treated as a connection error of type PROTOCOL_ERROR." (h2spec http2/5.1/2)"""
    peer.handshake()
    peer.send_rst_stream(1, ErrorCode.CANCEL)
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


@NGINX_IDLE_STREAM_FRAMES
def test_5_1_3_idle_sends_window_update_frame(peer: H2Peer) -> None:
    """RFC 9113 5.1 idle: "Receiving any frame other than HEADERS or PRIORITY on a stream in this state
    MUST be treated as a connection error of type PROTOCOL_ERROR." (h2spec http2/5.1/3)"""
    peer.handshake()
    peer.send_window_update(1, 100)
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_5_1_4_idle_sends_continuation_frame(peer: H2Peer) -> None:
    """RFC 9113 5.1 idle: "Receiving any frame other than HEADERS or PRIORITY on a stream in this state
    MUST be treated as a connection error of type PROTOCOL_ERROR." (h2spec http2/5.1/4)"""
    peer.handshake()
    peer.send_continuation(1, request_headers(peer.authority))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 5.1 half-closed


@NGINX_CLOSED_STREAM_DATA
def test_5_1_5_half_closed_remote_sends_data_frame(peer: H2Peer) -> None:
    """RFC 9113 5.1 half-closed (remote): "If an endpoint receives additional frames, other than
    WINDOW_UPDATE, PRIORITY, or RST_STREAM, for a stream that is in this state, it MUST respond with a
    stream error of type STREAM_CLOSED." (h2spec http2/5.1/5)"""
    peer.handshake()
    send_request(peer, 1)
    peer.send_data(1, grpc_message(b"more"), end_stream=True)
    peer.expect_stream_error(ErrorCode.STREAM_CLOSED)


@NGINX_GOAWAY_NOT_STREAM_CLOSED
def test_5_1_6_half_closed_remote_sends_headers_frame(peer: H2Peer) -> None:
    """RFC 9113 5.1 half-closed (remote): "... it MUST respond with a stream error of type STREAM_CLOSED."
    (h2spec http2/5.1/6)"""
    peer.handshake()
    send_request(peer, 1)
    peer.send_headers(1, request_headers(peer.authority), end_stream=True)
    peer.expect_stream_error(ErrorCode.STREAM_CLOSED)


def test_5_1_7_half_closed_remote_sends_continuation_frame(peer: H2Peer) -> None:
    """RFC 9113 5.1 half-closed (remote): "... it MUST respond with a stream error of type STREAM_CLOSED."
    A CONTINUATION without a preceding HEADERS is also a PROTOCOL_ERROR (h2spec accepts both; http2/5.1/7)"""
    peer.handshake()
    send_request(peer, 1)
    peer.send_continuation(1, dummy_headers(1))
    peer.expect_stream_error(ErrorCode.STREAM_CLOSED, ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 5.1 closed


def open_then_reset(peer: H2Peer) -> None:
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority))
    peer.send_rst_stream(1, ErrorCode.CANCEL)


@NGINX_CLOSED_STREAM_DATA
def test_5_1_8_closed_sends_data_frame_after_rst_stream(peer: H2Peer) -> None:
    """RFC 7540 5.1 closed: "An endpoint that receives any frame other than PRIORITY after receiving a
    RST_STREAM MUST treat that as a stream error of type STREAM_CLOSED." (h2spec http2/5.1/8)"""
    open_then_reset(peer)
    peer.send_data(1, grpc_message(b"test"), end_stream=True)
    peer.expect_stream_error(ErrorCode.STREAM_CLOSED)


@NGINX_GOAWAY_NOT_STREAM_CLOSED
def test_5_1_9_closed_sends_headers_frame_after_rst_stream(peer: H2Peer) -> None:
    """RFC 7540 5.1 closed: "An endpoint that receives any frame other than PRIORITY after receiving a
    RST_STREAM MUST treat that as a stream error of type STREAM_CLOSED." (h2spec http2/5.1/9)"""
    open_then_reset(peer)
    peer.send_headers(1, request_headers(peer.authority), end_stream=True)
    peer.expect_stream_error(ErrorCode.STREAM_CLOSED)


def test_5_1_10_closed_sends_continuation_frame_after_rst_stream(peer: H2Peer) -> None:
    """RFC 7540 5.1 closed: "... MUST treat that as a stream error of type STREAM_CLOSED." A stray
    CONTINUATION is also a PROTOCOL_ERROR (h2spec accepts both; http2/5.1/10)"""
    open_then_reset(peer)
    peer.send_continuation(1, dummy_headers(1))
    peer.expect_stream_error(ErrorCode.STREAM_CLOSED, ErrorCode.PROTOCOL_ERROR)


def complete_exchange(peer: H2Peer) -> None:
    peer.handshake()
    send_request(peer, 1)
    peer.expect_stream_close(1)


@NGINX_CLOSED_STREAM_DATA
def test_5_1_11_closed_sends_data_frame(peer: H2Peer) -> None:
    """RFC 7540 5.1 closed: "An endpoint that receives any frames after receiving a frame with the
    END_STREAM flag set MUST treat that as a connection error of type STREAM_CLOSED." (h2spec http2/5.1/11,
    which accepts the stream error too)"""
    complete_exchange(peer)
    peer.send_data(1, grpc_message(b"test"), end_stream=True)
    peer.expect_stream_error(ErrorCode.STREAM_CLOSED)


@NGINX_GOAWAY_NOT_STREAM_CLOSED
def test_5_1_12_closed_sends_headers_frame(peer: H2Peer) -> None:
    """RFC 7540 5.1 closed: "An endpoint that receives any frames after receiving a frame with the
    END_STREAM flag set MUST treat that as a connection error of type STREAM_CLOSED." (h2spec http2/5.1/12)"""
    complete_exchange(peer)
    peer.send_headers(1, request_headers(peer.authority), end_stream=True)
    peer.expect_connection_error(ErrorCode.STREAM_CLOSED)


def test_5_1_13_closed_sends_continuation_frame(peer: H2Peer) -> None:
    """RFC 7540 5.1 closed: "... MUST treat that as a connection error of type STREAM_CLOSED." A stray
    CONTINUATION is also a PROTOCOL_ERROR (h2spec accepts both; http2/5.1/13)"""
    complete_exchange(peer)
    peer.send_continuation(1, dummy_headers(1))
    peer.expect_connection_error(ErrorCode.STREAM_CLOSED, ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 5.1.1


def test_5_1_1_1_sends_even_numbered_stream_identifier(peer: H2Peer) -> None:
    """RFC 9113 5.1.1: "Streams initiated by a client MUST use odd-numbered stream identifiers ... An
    endpoint that receives an unexpected stream identifier MUST respond with a connection error of type
    PROTOCOL_ERROR." (h2spec http2/5.1.1/1)"""
    peer.handshake()
    peer.send_headers(2, request_headers(peer.authority), end_stream=True)
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


def test_5_1_1_2_sends_smaller_stream_identifier_than_previous(peer: H2Peer) -> None:
    """RFC 9113 5.1.1: "The identifier of a newly established stream MUST be numerically greater than all
    streams that the initiating endpoint has opened or reserved." (h2spec http2/5.1.1/2)"""
    peer.handshake()
    headers = request_headers(peer.authority)
    peer.send_headers(5, headers, end_stream=True)
    peer.send_headers(3, headers, end_stream=True)
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 5.1.2


def test_5_1_2_1_exceeds_concurrent_stream_limit(peer: H2Peer) -> None:
    """RFC 9113 5.1.2: "An endpoint that receives a HEADERS frame that causes its advertised concurrent
    stream limit to be exceeded MUST treat this as a stream error of type PROTOCOL_ERROR or
    REFUSED_STREAM." (h2spec http2/5.1.2/1; skipped like h2spec when the server sets no limit)"""
    peer.handshake()
    limit = peer.server_settings.get(Setting.MAX_CONCURRENT_STREAMS)
    if limit is None or limit > 1000:
        pytest.skip(f"the server advertises SETTINGS_MAX_CONCURRENT_STREAMS={limit}")
    peer.send_settings({Setting.INITIAL_WINDOW_SIZE: 0})  # keep the streams open: no response can finish
    for i in range(limit + 1):
        send_request(peer, 1 + 2 * i)
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR, ErrorCode.REFUSED_STREAM)


# ------------------------------------------------------------------------------------------- 5.3.1


def test_5_3_1_1_headers_frame_depends_on_itself(peer: H2Peer) -> None:
    """RFC 7540 5.3.1: "A stream cannot depend on itself. An endpoint MUST treat this as a stream error of
    type PROTOCOL_ERROR." (h2spec http2/5.3.1/1)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_stream=True, priority=(1, 255, False))
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)


def test_5_3_1_2_priority_frame_depends_on_itself(peer: H2Peer) -> None:
    """RFC 7540 5.3.1: "A stream cannot depend on itself. An endpoint MUST treat this as a stream error of
    type PROTOCOL_ERROR." (h2spec http2/5.3.1/2)"""
    peer.handshake()
    peer.send_priority(1, depends_on=1, weight=255)
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 5.4.1

PING_ON_STREAM_3 = raw_frame(FrameType.PING, 0, 3, b"\0" * 8)


def test_5_4_1_1_invalid_ping_frame_closes_connection(peer: H2Peer) -> None:
    """RFC 9113 5.4.1: "After sending the GOAWAY frame for an error condition, the endpoint MUST close the
    TCP connection." (h2spec http2/5.4.1/1)"""
    peer.handshake()
    peer.send(PING_ON_STREAM_3)
    peer.expect_connection_closed()


def test_5_4_1_2_invalid_ping_frame_gets_goaway(peer: H2Peer) -> None:
    """RFC 9113 5.4.1: "An endpoint that encounters a connection error SHOULD first send a GOAWAY frame
    with the stream identifier of the last stream that it successfully received from its peer."
    (h2spec http2/5.4.1/2, a strict-mode case)"""
    peer.handshake()
    peer.send(PING_ON_STREAM_3)
    peer.expect_frame(FrameType.GOAWAY)


# ------------------------------------------------------------------------------------------- 5.5

UNKNOWN_FRAME = raw_frame(0x16, 0, 0, b"\0" * 8)


def test_5_5_1_sends_unknown_extension_frame(peer: H2Peer) -> None:
    """RFC 9113 5.5: "Implementations MUST ignore unknown or unsupported values in all extensible protocol
    elements." (h2spec http2/5.5/1)"""
    peer.handshake()
    peer.send(UNKNOWN_FRAME)
    peer.send_ping(b"\0" * 8)
    peer.expect_ping_ack(b"\0" * 8)


def test_5_5_2_sends_unknown_extension_frame_in_header_block(peer: H2Peer) -> None:
    """RFC 9113 5.5: "Extension frames that appear in the middle of a field block are not permitted;
    these MUST be treated as a connection error of type PROTOCOL_ERROR." (h2spec http2/5.5/2)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority), end_stream=True, end_headers=False)
    peer.send(UNKNOWN_FRAME)
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)

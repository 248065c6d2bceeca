"""h2spec ``generic`` section: what a server MUST accept (every frame type, padding, priority, HPACK forms).

h2spec only waits for a HEADERS frame on the stream; these ports complete each request as a gRPC call and
require a successful echo, which is a stronger check of the same acceptance.
"""

from __future__ import annotations

import pytest
from hyperframe.frame import SettingsFrame

from tests.protocol.deviations import NGINX_REQUEST_TRAILERS
from tests.protocol.grpc_shapes import (
    expect_grpc_ok,
    grpc_message,
    replace_header,
    request_headers,
    send_request,
)
from tests.protocol.h2peer import DEFAULT_WINDOW, PREFACE, ErrorCode, FrameType, H2Peer, Setting, describe

H2SPEC = b"h2spec\0\0"
ZEROS = b"\0" * 8

# ------------------------------------------------------------------------------------------- 1, 2


def test_generic_1_1_client_connection_preface(peer: H2Peer) -> None:
    """RFC 9113 3.4: "The server connection preface consists of a potentially empty SETTINGS frame that
    MUST be the first frame the server sends in the HTTP/2 connection." (h2spec generic/1/1)"""
    peer.send(PREFACE + SettingsFrame(0, settings={Setting.INITIAL_WINDOW_SIZE: DEFAULT_WINDOW}).serialize())
    event = peer.read_event()
    assert isinstance(event, SettingsFrame) and "ACK" not in event.flags, describe(event)


def test_generic_2_1_priority_on_idle_stream(peer: H2Peer) -> None:
    """RFC 9113 5.1 idle: "Receiving any frame other than HEADERS or PRIORITY on a stream in this state MUST
    be treated as a connection error" - so PRIORITY is accepted. (h2spec generic/2/1)"""
    peer.handshake()
    peer.send_priority(1, depends_on=0, weight=255)
    peer.send_ping(ZEROS)
    peer.expect_ping_ack(ZEROS)


@pytest.mark.parametrize(
    "priority_first", [pytest.param(False, id="2_2_window_update"), pytest.param(True, id="2_3_priority")]
)
def test_generic_2_frames_on_half_closed_remote_stream(peer: H2Peer, priority_first: bool) -> None:
    """RFC 9113 5.1 half-closed (remote): an endpoint MUST accept WINDOW_UPDATE, PRIORITY and RST_STREAM on
    such a stream. With an initial window of 0 the response waits for our WINDOW_UPDATE.
    (h2spec generic/2/2, generic/2/3)"""
    peer.handshake()
    peer.send_settings({Setting.INITIAL_WINDOW_SIZE: 0})
    send_request(peer, 1)
    if priority_first:
        peer.send_priority(1, depends_on=0, weight=255)
    peer.send_window_update(1, 1)
    peer.expect_frame(FrameType.DATA)


def test_generic_2_4_rst_stream_on_half_closed_remote_stream(peer: H2Peer) -> None:
    """RFC 9113 5.1 half-closed (remote): RST_STREAM is allowed in this state. (h2spec generic/2/4)"""
    peer.handshake()
    send_request(peer, 1)
    peer.send_rst_stream(1, ErrorCode.CANCEL)
    peer.send_ping(ZEROS)
    peer.expect_ping_ack(ZEROS)


def test_generic_2_5_priority_on_closed_stream(peer: H2Peer) -> None:
    """RFC 9113 5.1 closed: "An endpoint MUST NOT send frames other than PRIORITY on a closed stream" - a
    PRIORITY frame on a closed stream is accepted. (h2spec generic/2/5)"""
    peer.handshake()
    send_request(peer, 1)
    peer.expect_stream_close(1)
    peer.send_priority(1, depends_on=0, weight=255)
    peer.send_ping(ZEROS)
    peer.expect_ping_ack(ZEROS)


# ------------------------------------------------------------------------------------------- 3.1 DATA


@pytest.mark.parametrize("variant", ["3_1_1_data", "3_1_2_multiple_data", "3_1_3_data_with_padding"])
def test_generic_3_1_data_frames(peer: H2Peer, variant: str) -> None:
    """RFC 9113 6.1: "DATA frames (type=0x00) convey arbitrary, variable-length sequences of octets
    associated with a stream" and "DATA frames MAY also contain padding." (h2spec generic/3.1/1-3)"""
    peer.handshake()
    body = grpc_message(b"hello")
    peer.send_headers(1, request_headers(peer.authority))
    if variant == "3_1_2_multiple_data":
        peer.send_data(1, body[:4])
        peer.send_data(1, body[4:], end_stream=True)
    else:
        peer.send_data(1, body, end_stream=True, pad_length=5 if variant.endswith("padding") else None)
    expect_grpc_ok(peer, 1)


# ------------------------------------------------------------------------------------------- 3.2 HEADERS


@pytest.mark.parametrize("variant", ["3_2_1_headers", "3_2_2_headers_with_padding", "3_2_3_headers_with_priority"])
def test_generic_3_2_headers_frames(peer: H2Peer, variant: str) -> None:
    """RFC 9113 6.2: "The HEADERS frame (type=0x01) is used to open a stream, and additionally carries a
    field block fragment"; it can carry padding and (deprecated) priority. (h2spec generic/3.2/1-3)"""
    peer.handshake()
    peer.send_headers(
        1,
        request_headers(peer.authority),
        pad_length=8 if variant.endswith("padding") else None,
        priority=(0, 255, False) if variant.endswith("priority") else None,
    )
    peer.send_data(1, grpc_message(b"hello"), end_stream=True)
    expect_grpc_ok(peer, 1)


# ------------------------------------------------------------------------------------------- 3.3 PRIORITY


@pytest.mark.parametrize(
    ("priority_stream", "depends_on", "weight", "exclusive"),
    [
        pytest.param(1, 0, 0, False, id="3_3_1_weight_1"),
        pytest.param(1, 0, 255, False, id="3_3_2_weight_256"),
        pytest.param(3, 1, 0, False, id="3_3_3_stream_dependency"),
        pytest.param(1, 0, 0, True, id="3_3_4_exclusive"),
        pytest.param(3, 0, 255, False, id="3_3_5_idle_stream_then_lower_stream_id"),
    ],
)
def test_generic_3_3_priority_frames(
    peer: H2Peer, priority_stream: int, depends_on: int, weight: int, exclusive: bool
) -> None:
    """RFC 9113 6.3: "The PRIORITY frame (type=0x02) ... can be sent in any stream state, including idle
    or closed streams." A PRIORITY for idle stream 3 does not prevent opening stream 1. (h2spec
    generic/3.3/1-5)"""
    peer.handshake()
    peer.send_priority(priority_stream, depends_on=depends_on, weight=weight, exclusive=exclusive)
    send_request(peer, 1)
    expect_grpc_ok(peer, 1)


# ------------------------------------------------------------------------------------------- 3.4 - 3.10


def test_generic_3_4_1_rst_stream(peer: H2Peer) -> None:
    """RFC 9113 6.4: "The RST_STREAM frame (type=0x03) allows for immediate termination of a stream."
    (h2spec generic/3.4/1)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority))
    peer.send_rst_stream(1, ErrorCode.CANCEL)
    peer.send_ping(ZEROS)
    peer.expect_ping_ack(ZEROS)


def test_generic_3_5_1_settings(peer: H2Peer) -> None:
    """RFC 9113 6.5: "The SETTINGS frame (type=0x04) conveys configuration parameters that affect how
    endpoints communicate." Every defined parameter at a legal value is acknowledged.
    (h2spec generic/3.5/1)"""
    peer.handshake()
    peer.send_settings(
        {
            Setting.HEADER_TABLE_SIZE: 4096,
            Setting.ENABLE_PUSH: 1,
            Setting.MAX_CONCURRENT_STREAMS: 100,
            Setting.INITIAL_WINDOW_SIZE: 65535,
            Setting.MAX_FRAME_SIZE: 16384,
            Setting.MAX_HEADER_LIST_SIZE: 100,
        }
    )
    peer.expect_settings_ack()


def test_generic_3_7_1_ping(peer: H2Peer) -> None:
    """RFC 9113 6.7: "The PING frame (type=0x06) is a mechanism for measuring a minimal round-trip time from
    the sender, as well as determining whether an idle connection is still functional."
    (h2spec generic/3.7/1)"""
    peer.handshake()
    peer.send_ping(H2SPEC)
    peer.expect_ping_ack(H2SPEC)


def test_generic_3_8_1_goaway(peer: H2Peer) -> None:
    """RFC 9113 6.8: "The GOAWAY frame (type=0x07) is used to initiate shutdown of a connection or to signal
    serious error conditions." (h2spec generic/3.8/1: a PING is still answered, or the connection closes)"""
    peer.handshake()
    peer.send_goaway(0, ErrorCode.NO_ERROR, b"h2spec")
    peer.send_ping(H2SPEC)
    peer.expect_ping_ack(H2SPEC, or_closed=True)


def test_generic_3_9_1_window_update_on_connection(peer: H2Peer) -> None:
    """RFC 9113 6.9: "Flow control operates at two levels: on each individual stream and on the entire
    connection." (h2spec generic/3.9/1)"""
    peer.handshake()
    peer.send_window_update(0, 1)
    peer.send_ping(ZEROS)
    peer.expect_ping_ack(ZEROS)


def test_generic_3_9_2_window_update_on_stream(peer: H2Peer) -> None:
    """RFC 9113 6.9: "The WINDOW_UPDATE frame (type=0x08) is used to implement flow control."
    (h2spec generic/3.9/2)"""
    peer.handshake()
    send_request(peer, 1)
    peer.send_window_update(1, 1)
    expect_grpc_ok(peer, 1)


@pytest.mark.parametrize(
    "cuts",
    [pytest.param((5,), id="3_10_1_continuation"), pytest.param((5, 10), id="3_10_2_multiple_continuation")],
)
def test_generic_3_10_continuation(peer: H2Peer, cuts: tuple[int, ...]) -> None:
    """RFC 9113 6.10: "The CONTINUATION frame (type=0x09) is used to continue a sequence of field block
    fragments." (h2spec generic/3.10/1-2: the block is cut after octet 5, and 10)"""
    peer.handshake()
    block = peer.encode_headers(request_headers(peer.authority))
    pieces = [block[a:b] for a, b in zip((0, *cuts), (*cuts, len(block)), strict=True)]
    peer.send_headers(1, pieces[0], end_headers=False)
    for i, piece in enumerate(pieces[1:], start=2):
        peer.send_continuation(1, piece, end_headers=i == len(pieces))
    peer.send_data(1, grpc_message(b"hello"), end_stream=True)
    expect_grpc_ok(peer, 1)


# ------------------------------------------------------------------------------------------- 4 HTTP


@pytest.mark.parametrize("method", [pytest.param("GET", id="4_1_get"), pytest.param("HEAD", id="4_2_head")])
def test_generic_4_bodyless_request_gets_response(peer: H2Peer, method: str) -> None:
    """RFC 9113 8.1: "A server sends an HTTP response on the same stream as the request." Any response
    (HEADERS on stream 1) will do for a GET or HEAD to a gRPC route. (h2spec generic/4/1-2)"""
    peer.handshake()
    peer.send_headers(1, replace_header(request_headers(peer.authority), ":method", method), end_stream=True)
    peer.expect_headers(1)


def test_generic_4_3_post_request(peer: H2Peer) -> None:
    """RFC 9113 8.1: "A client sends an HTTP request on a new stream ... A server sends an HTTP response on
    the same stream as the request." (h2spec generic/4/3)"""
    peer.handshake()
    send_request(peer, 1)
    expect_grpc_ok(peer, 1)


@NGINX_REQUEST_TRAILERS
def test_generic_4_4_post_request_with_trailers(peer: H2Peer) -> None:
    """RFC 9113 8.1: a request is a HEADERS frame, DATA frames, and optionally one HEADERS frame holding
    the trailer section, with END_STREAM. (h2spec generic/4/4)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority, extra=[("trailer", "x-test")]))
    peer.send_data(1, grpc_message(b"hello"))
    peer.send_headers(1, [("x-test", "ok")], end_stream=True)
    expect_grpc_ok(peer, 1)


# ------------------------------------------------------------------------------------------- 5 HPACK

USER_AGENT_H2SPEC = b"\x0a\x75\x73\x65\x72\x2d\x61\x67\x65\x6e\x74\x06\x68\x32\x73\x70\x65\x63"
USER_AGENT_H2SPEC_HUFFMAN = b"\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"
X_TEST_H2SPEC = b"\x06\x78\x2d\x74\x65\x73\x74\x06\x68\x32\x73\x70\x65\x63"
X_TEST_H2SPEC_HUFFMAN = b"\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"


@pytest.mark.parametrize(
    ("prefix", "suffix"),
    [
        pytest.param(b"", b"\xba", id="5_1_indexed_field"),
        pytest.param(b"", b"\x40" + USER_AGENT_H2SPEC_HUFFMAN, id="5_2_incremental_indexing_user_agent_huffman"),
        pytest.param(b"", b"\x40" + USER_AGENT_H2SPEC, id="5_3_incremental_indexing_user_agent"),
        pytest.param(b"", b"\x40" + X_TEST_H2SPEC, id="5_4_incremental_indexing_x_test"),
        pytest.param(b"", b"\x40" + X_TEST_H2SPEC_HUFFMAN, id="5_5_incremental_indexing_x_test_huffman"),
        pytest.param(b"", b"\x00" + USER_AGENT_H2SPEC, id="5_6_without_indexing_user_agent"),
        pytest.param(b"", b"\x00" + USER_AGENT_H2SPEC_HUFFMAN, id="5_7_without_indexing_user_agent_huffman"),
        pytest.param(b"", b"\x00" + X_TEST_H2SPEC, id="5_8_without_indexing_x_test"),
        pytest.param(b"", b"\x00" + X_TEST_H2SPEC_HUFFMAN, id="5_9_without_indexing_x_test_huffman"),
        pytest.param(b"", b"\x10" + USER_AGENT_H2SPEC, id="5_10_never_indexed_user_agent"),
        pytest.param(b"", b"\x10" + USER_AGENT_H2SPEC_HUFFMAN, id="5_11_never_indexed_user_agent_huffman"),
        pytest.param(b"", b"\x10" + X_TEST_H2SPEC, id="5_12_never_indexed_x_test"),
        pytest.param(b"", b"\x10" + X_TEST_H2SPEC_HUFFMAN, id="5_13_never_indexed_x_test_huffman"),
        pytest.param(b"\x3f\x61\x3f\xe1\x1f", b"", id="5_15_two_table_size_updates_128_4096"),
    ],
)
def test_generic_5_hpack_representations(peer: H2Peer, prefix: bytes, suffix: bytes) -> None:
    """RFC 7541 6.1 (indexed), 6.2.1 (literal with incremental indexing), 6.2.2 (without indexing), 6.2.3
    (never indexed) and 4.2 ("Multiple updates to the maximum table size can occur between the
    transmission of two field blocks"): the endpoint MUST accept each representation. The byte strings are
    h2spec's (user-agent / x-test: h2spec). (h2spec generic/5/1-13, 15)"""
    peer.handshake()
    block = prefix + peer.encode_headers(request_headers(peer.authority)) + suffix
    peer.send_headers(1, block)
    peer.send_data(1, grpc_message(b"hello"), end_stream=True)
    expect_grpc_ok(peer, 1)


def test_generic_5_14_dynamic_table_size_update(peer: H2Peer) -> None:
    """RFC 7541 6.3: "A dynamic table size update signals a change to the size of the dynamic table."
    Our encoder shrinks its table to 128 octets and says so at the start of the block.
    (h2spec generic/5/14)"""
    peer.handshake()
    peer.encoder.header_table_size = 128
    send_request(peer, 1)
    expect_grpc_ok(peer, 1)

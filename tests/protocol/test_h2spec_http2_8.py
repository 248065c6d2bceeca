"""h2spec ``http2`` section 8: request/response exchange (8.1), header fields (8.1.2, 8.1.2.1 pseudo-headers,
8.1.2.2 connection-specific fields and TE, 8.1.2.3 request pseudo-headers, 8.1.2.6 content-length) and
server push (8.2).

RFC 9113 8.1.1: "Malformed requests or responses that are detected MUST be treated as a stream error of type
PROTOCOL_ERROR"; like h2spec, a GOAWAY(PROTOCOL_ERROR) or the connection closing is accepted as well.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hyperframe.frame import PushPromiseFrame

from tests.protocol.deviations import NGINX_400, NGINX_FORWARDS
from tests.protocol.grpc_shapes import drop_header, partial_message, replace_header, request_headers
from tests.protocol.h2peer import ErrorCode, H2Peer, Header

MakeHeaders = Callable[[str], list[Header]]

# ------------------------------------------------------------------------------------------- 8.1


def test_8_1_1_second_headers_frame_without_end_stream(peer: H2Peer) -> None:
    """RFC 9113 8.1: "An endpoint that receives a HEADERS frame without the END_STREAM flag set after
    receiving the HEADERS frame that opens a request or after receiving a final (non-informational) status
    code MUST treat the corresponding request or response as malformed." (h2spec http2/8.1/1)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority))
    peer.send_data(1, partial_message())
    peer.send_headers(1, [("x-test", "ok")])
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 8.1.2


def test_8_1_2_1_uppercase_header_field_name(peer: H2Peer) -> None:
    """RFC 9113 8.2: "Field names MUST be converted to lowercase when constructing an HTTP/2 message ... A
    request or response containing an uppercase character in a field name MUST be treated as malformed."
    (h2spec http2/8.1.2/1)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority, extra=[("X-TEST", "ok")]), end_stream=True)
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 8.1.2.1


def with_prefix(prefix: list[Header], headers: list[Header]) -> list[Header]:
    return prefix + headers


@pytest.mark.parametrize(
    "make_headers",
    [
        pytest.param(
            lambda a: request_headers(a, extra=[(":test", "ok")]),
            id="8_1_2_1_1_unknown_pseudo_header",
            marks=NGINX_400,
        ),
        pytest.param(
            lambda a: request_headers(a, extra=[(":status", "200")]),
            id="8_1_2_1_2_response_pseudo_header",
            marks=NGINX_400,
        ),
        pytest.param(
            lambda a: with_prefix([("x-test", "ok")], request_headers(a)),
            id="8_1_2_1_4_pseudo_after_regular",
            marks=NGINX_FORWARDS,
        ),
    ],
)
def test_8_1_2_1_invalid_pseudo_header_fields(peer: H2Peer, make_headers: MakeHeaders) -> None:
    """RFC 9113 8.3: "Pseudo-header fields defined for requests MUST NOT appear in responses; pseudo-header
    fields defined for responses MUST NOT appear in requests ... Endpoints MUST treat a request or response
    that contains undefined or invalid pseudo-header fields as malformed." and "All pseudo-header fields
    MUST appear in a field block before all regular field lines." (h2spec http2/8.1.2.1/1, 2, 4)"""
    peer.handshake()
    peer.send_headers(1, make_headers(peer.authority), end_stream=True)
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)


def test_8_1_2_1_3_pseudo_header_field_in_trailers(peer: H2Peer) -> None:
    """RFC 9113 8.1: "Pseudo-header fields MUST NOT appear in a trailer section." (h2spec http2/8.1.2.1/3)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority))
    peer.send_data(1, partial_message())
    peer.send_headers(1, [(":method", "POST")])
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 8.1.2.2


@NGINX_FORWARDS
def test_8_1_2_2_1_connection_specific_header_field(peer: H2Peer) -> None:
    """RFC 9113 8.2.2: "An endpoint MUST NOT generate an HTTP/2 message containing connection-specific
    header fields. ... Any message containing connection-specific header fields MUST be treated as
    malformed." (h2spec http2/8.1.2.2/1)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority, extra=[("connection", "keep-alive")]), end_stream=True)
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)


@NGINX_FORWARDS
def test_8_1_2_2_2_te_header_other_than_trailers(peer: H2Peer) -> None:
    """RFC 9113 8.2.2: "The only exception to this is the TE header field, which MAY be present in an HTTP/2
    request; when it is, it MUST NOT contain any value other than "trailers"." (h2spec http2/8.1.2.2/2)"""
    peer.handshake()
    headers = replace_header(request_headers(peer.authority, extra=[("trailers", "test")]), "te", "trailers, deflate")
    peer.send_headers(1, headers, end_stream=True)
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 8.1.2.3


def duplicate(name: str) -> MakeHeaders:
    return lambda a: request_headers(a, extra=[(name, dict(request_headers(a))[name])])


@pytest.mark.parametrize(
    "make_headers",
    [
        pytest.param(lambda a: replace_header(request_headers(a), ":path", ""), id="8_1_2_3_1_empty_path"),
        pytest.param(lambda a: drop_header(request_headers(a), ":method"), id="8_1_2_3_2_omits_method"),
        pytest.param(lambda a: drop_header(request_headers(a), ":scheme"), id="8_1_2_3_3_omits_scheme"),
        pytest.param(lambda a: drop_header(request_headers(a), ":path"), id="8_1_2_3_4_omits_path"),
        pytest.param(duplicate(":method"), id="8_1_2_3_5_duplicated_method"),
        pytest.param(duplicate(":scheme"), id="8_1_2_3_6_duplicated_scheme"),
        pytest.param(duplicate(":path"), id="8_1_2_3_7_duplicated_path"),
    ],
)
@NGINX_400
def test_8_1_2_3_request_pseudo_header_fields(peer: H2Peer, make_headers: MakeHeaders) -> None:
    """RFC 9113 8.3.1: ":path ... This pseudo-header field MUST NOT be empty for "http" or "https" URIs" and
    "All HTTP/2 requests MUST include exactly one valid value for the ":method", ":scheme", and ":path"
    pseudo-header fields, unless they are CONNECT requests." (h2spec http2/8.1.2.3/1-7)"""
    peer.handshake()
    peer.send_headers(1, make_headers(peer.authority), end_stream=True)
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 8.1.2.6


@pytest.mark.parametrize(
    "frames",
    [pytest.param(1, id="8_1_2_6_1_one_data_frame"), pytest.param(2, id="8_1_2_6_2_two_data_frames")],
)
@NGINX_400
def test_8_1_2_6_content_length_mismatch(peer: H2Peer, frames: int) -> None:
    """RFC 9113 8.1.1: "A request or response is also malformed if the value of a content-length header
    field does not equal the sum of the DATA frame payload lengths that form the content" and
    "Intermediaries that process HTTP requests or responses MUST NOT forward a malformed request or
    response." (h2spec http2/8.1.2.6/1-2: content-length 1, then 4 octets in one or two DATA frames each)"""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority, extra=[("content-length", "1")]))
    for i in range(frames):
        peer.send_data(1, b"test", end_stream=i == frames - 1)
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- 8.2


def test_8_2_1_client_sends_push_promise(peer: H2Peer) -> None:
    """RFC 9113 8.4: "A client cannot push. Thus, servers MUST treat the receipt of a PUSH_PROMISE frame as
    a connection error of type PROTOCOL_ERROR." (h2spec http2/8.2/1)"""
    peer.handshake()
    block = peer.encode_headers(request_headers(peer.authority))
    peer.send_frame(PushPromiseFrame(1, promised_stream_id=3, data=block, flags=["END_HEADERS"]))
    peer.expect_connection_error(ErrorCode.PROTOCOL_ERROR)

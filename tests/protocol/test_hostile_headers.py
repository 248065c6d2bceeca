"""Hostile peer, header layer: malformed requests (pseudo-headers, names, values, connection-specific fields)
must be refused and never forwarded; an oversized header block must be refused with HPACK state kept.

A proxy is an intermediary: RFC 9113 8.1.1 "Intermediaries that process HTTP requests or responses (i.e.,
any intermediary not acting as a tunnel) MUST NOT forward a malformed request or response." Each request
carries a unique ``x-test-id``; afterwards the backend is asked whether it ever saw it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from hyperframe.frame import GoAwayFrame, RstStreamFrame

from tests.protocol.deviations import NGINX_400, NGINX_FORWARDS, NGINX_HEADER_LIMIT, NGINX_TE_GZIP
from tests.protocol.grpc_shapes import (
    Response,
    drop_header,
    expect_grpc_ok,
    grpc_message,
    partial_message,
    read_response,
    replace_header,
    request_headers,
    send_request,
)
from tests.protocol.h2peer import Closed, ErrorCode, Event, H2Peer, Header, Verdict, describe
from tests.protocol.targets import MAX_REQUEST_HEADERS_KB, Backend, Target

Mutation = Callable[[list[Header]], list[Header]]


def add(name: str, value: str) -> Mutation:
    return lambda headers: [*headers, (name, value)]


def duplicate(name: str) -> Mutation:
    return lambda headers: [*headers, (name, dict(headers)[name])]


NGINX_MARKS = {
    **dict.fromkeys(
        [
            "missing_method",
            "missing_scheme",
            "missing_path",
            "no_pseudo_headers",
            "duplicate_method",
            "duplicate_path",
            "duplicate_authority",
            "response_pseudo_status",
            "unknown_pseudo",
            "empty_path",
            "content_length_not_a_number",
            "content_length_too_small",
        ],
        NGINX_400,
    ),
    **dict.fromkeys(
        [
            "pseudo_after_regular",
            "name_with_non_ascii",
            "connection",
            "keep_alive",
            "proxy_connection",
            "transfer_encoding",
            "upgrade",
            "te_trailers_and_gzip",
        ],
        NGINX_FORWARDS,
    ),
    "te_gzip": NGINX_TE_GZIP,
}
MALFORMED: dict[str, Mutation] = {
    "missing_method": lambda h: drop_header(h, ":method"),
    "missing_scheme": lambda h: drop_header(h, ":scheme"),
    "missing_path": lambda h: drop_header(h, ":path"),
    "no_pseudo_headers": lambda h: [(n, v) for n, v in h if not str(n).startswith(":")],
    "duplicate_method": duplicate(":method"),
    "duplicate_path": duplicate(":path"),
    "duplicate_authority": duplicate(":authority"),
    "pseudo_after_regular": lambda h: [("x-early", "1"), *h],
    "response_pseudo_status": add(":status", "200"),
    "unknown_pseudo": add(":foo", "bar"),
    "uppercase_pseudo": lambda h: [(":PATH" if n == ":path" else n, v) for n, v in h],
    "empty_path": lambda h: replace_header(h, ":path", ""),
    "uppercase_name": add("X-Upper", "1"),
    "name_with_space": add("x bad", "1"),
    "name_with_colon": add("x:bad", "1"),
    "name_with_non_ascii": add("x-\u00e9", "1"),
    "empty_name": add("", "1"),
    "value_with_crlf": add("x-inject", "a\r\nx-injected: 1"),
    "value_with_lf": add("x-inject", "a\nb"),
    "value_with_nul": add("x-inject", "a\0b"),
    "connection": add("connection", "keep-alive"),
    "keep_alive": add("keep-alive", "timeout=5"),
    "proxy_connection": add("proxy-connection", "keep-alive"),
    "transfer_encoding": add("transfer-encoding", "chunked"),
    "upgrade": add("upgrade", "h2c"),
    "te_gzip": lambda h: replace_header(h, "te", "gzip"),
    "te_trailers_and_gzip": lambda h: replace_header(h, "te", "trailers, gzip"),
    "content_length_not_a_number": add("content-length", "abc"),
    "content_length_too_small": add("content-length", "1"),
}
MALFORMED_CASES = [
    pytest.param(mutation, id=name, marks=[NGINX_MARKS[name]] if name in NGINX_MARKS else [])
    for name, mutation in MALFORMED.items()
]


def wait_seen(backend: Backend, test_id: str) -> bool:
    time.sleep(0.05)  # a forwarded request would have reached the backend by now
    return backend.seen(test_id)


def test_valid_request_reaches_backend_positive_control(peer: H2Peer, backend: Backend, target: Target) -> None:
    """The control for the "not forwarded" checks below: the same request without the defect is answered
    and its x-test-id does reach the backend (so "not seen" there means "not forwarded")."""
    if target.name == "h2server":
        pytest.skip("the reference server answers itself; there is no backend behind it")
    test_id = uuid.uuid4().hex
    peer.handshake()
    send_request(peer, 1, extra=[("x-test-id", test_id)])
    expect_grpc_ok(peer, 1)
    assert wait_seen(backend, test_id), "a valid request's x-test-id did not reach the backend"


@pytest.mark.parametrize("mutation", MALFORMED_CASES)
def test_malformed_request_is_refused_and_not_forwarded(peer: H2Peer, backend: Backend, mutation: Mutation) -> None:
    """RFC 9113 8.1.1: "Malformed requests or responses that are detected MUST be treated as a stream error
    of type PROTOCOL_ERROR" (8.2.1 names and values, 8.2.2 connection-specific fields and TE, 8.3
    pseudo-headers, 8.1.1 content-length) and an intermediary "MUST NOT forward a malformed request".
    A GOAWAY(PROTOCOL_ERROR) or closing the connection is accepted too (h2spec's rule)."""
    test_id = uuid.uuid4().hex
    peer.handshake()
    headers = mutation(request_headers(peer.authority, extra=[("x-test-id", test_id)]))
    peer.send_headers(1, headers)
    peer.send_data(1, grpc_message(b"hello"), end_stream=True)
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)
    assert not wait_seen(backend, test_id), "the malformed request was forwarded to the backend"


def test_pseudo_header_in_trailers_is_refused(peer: H2Peer) -> None:
    """RFC 9113 8.1: "Pseudo-header fields MUST NOT appear in a trailer section." Here with END_STREAM on the
    trailers (h2spec's variant leaves it off)."""
    peer.handshake()
    peer.send_headers(1, request_headers(peer.authority))
    peer.send_data(1, partial_message())
    peer.send_headers(1, [(":path", "/other")], end_stream=True)
    peer.expect_stream_error(ErrorCode.PROTOCOL_ERROR)


# ------------------------------------------------------------------------------------------- size


def big_headers(total: int) -> list[Header]:
    return [(f"x-big-{i:03d}", "v" * 1000) for i in range(total // 1000)]


def settle(peer: H2Peer, stream_id: int) -> Event:
    """Wait until the stream ends or is reset, or the connection ends."""

    def judge(ev: Event) -> Verdict:
        if isinstance(ev, Closed | GoAwayFrame) or (isinstance(ev, RstStreamFrame) and ev.stream_id == stream_id):
            return Verdict.PASS
        return Verdict.PASS if peer.stream(stream_id).ended else Verdict.CONTINUE

    return peer.wait(judge, [f"stream {stream_id} answered or reset, or the connection ended"])


def test_oversized_header_block_is_refused_and_hpack_state_kept(peer: H2Peer, backend: Backend) -> None:
    """A request whose header list is larger than the proxy accepts (Envoy's max_request_headers_kb, 60 KiB
    by default; here 80 KiB over HEADERS + CONTINUATION) is refused: RST_STREAM, an error response, or a
    connection error. RFC 9113 4.3: "A receiver MUST terminate the connection with a connection error of
    type COMPRESSION_ERROR if it does not decompress a field block" and 10.5.1: "The field block MUST be
    processed to ensure a consistent connection state, unless the connection is closed." So if the
    connection stays open, a next request whose block refers to a dynamic-table entry added by the refused
    block (``x-echo-marker``) must be decoded correctly (the backend echoes it)."""
    test_id = uuid.uuid4().hex
    peer.handshake()
    extra = [("x-test-id", test_id), *big_headers(80 * 1024), ("x-echo-marker", "kept")]
    block = peer.encode_headers(request_headers(peer.authority, extra=extra), huffman=False)
    assert len(block) > MAX_REQUEST_HEADERS_KB * 1024
    peer.send_header_block(1, block)
    peer.send_data(1, grpc_message(b"big"), end_stream=True)
    outcome = settle(peer, 1)
    print(f"oversized header block: {describe(outcome)}")
    assert not wait_seen(backend, test_id), "the oversized request was forwarded to the backend"
    if isinstance(outcome, Closed | GoAwayFrame):
        assert not isinstance(outcome, GoAwayFrame) or outcome.error_code != ErrorCode.NO_ERROR, describe(outcome)
        return  # a connection error: allowed, and HPACK state no longer matters
    refused = read_response(peer, 1) if peer.stream(1).ended else Response(1, reset=peer.stream(1).reset)
    assert not refused.ok, f"an oversized request got a successful response: {refused.summary()}"
    send_request(peer, 3, b"after", extra=[("x-echo-marker", "kept")])
    response = expect_grpc_ok(peer, 3, b"after")
    assert response.header("x-echo-marker") == "kept", f"HPACK state lost: {response.summary()}"


@NGINX_HEADER_LIMIT
def test_large_but_allowed_header_block_is_forwarded(peer: H2Peer) -> None:
    """The positive control for the size limit: a 40 KiB header list, under Envoy's 60 KiB default, split
    over HEADERS + CONTINUATION frames, is a valid request and is forwarded intact."""
    peer.handshake()
    extra = [*big_headers(40 * 1024), ("x-echo-big", "y" * 2000)]
    block = peer.encode_headers(request_headers(peer.authority, extra=extra), huffman=False)
    assert len(block) > peer.max_frame_size or peer.max_frame_size > 1 << 16
    peer.send_header_block(1, block)
    peer.send_data(1, grpc_message(b"large"), end_stream=True)
    response = expect_grpc_ok(peer, 1, b"large")
    assert response.header("x-echo-big") == "y" * 2000, response.summary()

"""Header field rules (RFC 9113 8.1-8.3, 8.2.1): requests, responses, trailers, content-length.

Every malformed message is a stream error PROTOCOL_ERROR (RFC 9113 8.1.1) that leaves the connection and its
HPACK state usable. The ``h2`` library is the oracle for "at least as correct": each case in ``BAD_*`` is
also rejected by h2, each case in ``GOOD_*`` also accepted by it; ``STRICTER_*`` lists what we reject and h2
lets through, each with the rule that makes it malformed.
"""

from __future__ import annotations

from collections.abc import Callable

import h2.events as he
import h2.exceptions
import pytest

from pyproxy.http2 import frames as fr
from pyproxy.http2.connection import H2Connection
from pyproxy.http2.events import INFORMATIONAL, RESPONSE, DataReceived, HeadersReceived
from pyproxy.http2.frames import ErrorCode
from pyproxy.http2.hpack import Header
from tests.unit.http2.helpers import (
    REQUEST,
    RawPeer,
    assert_no_error,
    assert_stream_error,
    client,
    h2_peer,
    of,
    server,
    settings,
)
from tests.unit.http2.helpers import (
    RESPONSE as RESP,
)

PE = ErrorCode.PROTOCOL_ERROR


def req(*extra: Header, drop: tuple[bytes, ...] = ()) -> list[Header]:
    return [h for h in REQUEST if h[0] not in drop] + list(extra)


def resp(*extra: Header) -> list[Header]:
    return [*RESP, *extra]


GET = [(b":method", b"GET"), (b":scheme", b"https")]

BAD_REQUESTS: dict[str, list[Header]] = {
    "missing-method": req(drop=(b":method",)),
    "missing-scheme": req(drop=(b":scheme",)),
    "missing-path": req(drop=(b":path",)),
    "missing-authority-and-host": req(drop=(b":authority",)),
    "empty-path": [*GET, (b":path", b""), (b":authority", b"a")],
    "duplicate-method": [REQUEST[0], *REQUEST],
    "duplicate-path": [REQUEST[2], *REQUEST],
    "duplicate-scheme": [REQUEST[1], *REQUEST],
    "duplicate-authority": [REQUEST[3], *REQUEST],
    "unknown-pseudo": [(b":foo", b"x"), *REQUEST],
    "protocol-pseudo-without-extended-connect": [*REQUEST[:4], (b":protocol", b"websocket"), *REQUEST[4:]],
    "status-in-request": [(b":status", b"200"), *REQUEST],
    "pseudo-after-regular": [*REQUEST[:3], (b"x-a", b"1"), *REQUEST[3:]],
    "uppercase-pseudo": [(b":Path", b"/"), *req(drop=(b":path",))],
    "connect-with-path": [(b":method", b"CONNECT"), (b":authority", b"a:1"), (b":path", b"/")],
    "connect-with-scheme": [(b":method", b"CONNECT"), (b":authority", b"a:1"), (b":scheme", b"https")],
    "connect-without-authority": [(b":method", b"CONNECT")],
    "connection": req((b"connection", b"close")),
    "keep-alive": req((b"keep-alive", b"timeout=5")),
    "proxy-connection": req((b"proxy-connection", b"keep-alive")),
    "transfer-encoding": req((b"transfer-encoding", b"chunked")),
    "upgrade": req((b"upgrade", b"h2c")),
    "te-gzip": req((b"te", b"gzip"), drop=(b"te",)),
    "te-trailers-and-more": req((b"te", b"trailers, deflate"), drop=(b"te",)),
    "uppercase-name": req((b"Content-Type", b"application/grpc")),
    "space-in-name": req((b"x y", b"1")),
    "nul-in-name": req((b"x\x00", b"1")),
    "del-in-name": req((b"x\x7f", b"1")),
    "high-byte-in-name": req((b"x\x80", b"1")),
    "colon-in-name": req((b"x:y", b"1")),
    "empty-name": req((b"", b"1")),
    "nul-in-value": req((b"x", b"a\x00b")),
    "cr-in-value": req((b"x", b"a\rb")),
    "lf-in-value": req((b"x", b"a\nb")),
    "leading-space": req((b"x", b" a")),
    "trailing-space": req((b"x", b"a ")),
    "leading-tab": req((b"x", b"\ta")),
    "trailing-tab": req((b"x", b"a\t")),
    "crlf-in-path": [*GET, (b":path", b"/\r\n"), (b":authority", b"a")],
    "space-around-authority": [*REQUEST[:3], (b":authority", b" a")],
    "host-differs-from-authority": req((b"host", b"other:80")),
    "two-hosts": req((b"host", b"payment:8080"), (b"host", b"payment:8080")),
    "content-length-not-a-number": req((b"content-length", b"abc")),
    "content-length-negative": req((b"content-length", b"-1")),
    "content-length-list": req((b"content-length", b"1, 1")),
    "content-length-empty": req((b"content-length", b"")),
    "content-length-conflict": req((b"content-length", b"1"), (b"content-length", b"2")),
}

STRICTER_REQUESTS: dict[str, list[Header]] = {
    # RFC 9113 8.1.1: content-length must equal the DATA payload (here: none, END_STREAM on HEADERS).
    "content-length-with-end-stream": req((b"content-length", b"1")),
}

GOOD_REQUESTS: dict[str, list[Header]] = {
    "grpc": REQUEST,
    "te-trailers-any-case": req((b"te", b"Trailers"), drop=(b"te",)),
    "empty-value": req((b"x-empty", b"")),
    "inner-space-and-tab": req((b"x", b"a b\tc")),
    "obs-text-value": req((b"x", b"\x80\xff")),
    "token-specials-in-name": req((b"x-a_b.c~!#$%&'*+^`|", b"1")),
    "host-equal-to-authority": req((b"host", b"payment:8080")),
    "host-without-authority": req((b"host", b"payment:8080"), drop=(b":authority",)),
    "connect": [(b":method", b"CONNECT"), (b":authority", b"a:443")],
    "options-asterisk": [(b":method", b"OPTIONS"), (b":scheme", b"http"), (b":path", b"*"), (b":authority", b"a")],
    "content-length-repeated-equal": req((b"content-length", b"0"), (b"content-length", b"0")),
    "content-length-zero-with-end-stream": req((b"content-length", b"0")),
}


def h2_accepts_request(headers: list[Header]) -> bool:
    conn = h2_peer(client_side=False)
    conn.initiate_connection()
    try:
        events = conn.receive_data(fr.PREFACE + settings() + RawPeer().headers(1, headers, end_stream=True))
    except h2.exceptions.ProtocolError:
        return False
    return bool(of(events, he.RequestReceived))


@pytest.mark.parametrize("headers", [*BAD_REQUESTS.values(), *STRICTER_REQUESTS.values()],
                         ids=[*BAD_REQUESTS, *STRICTER_REQUESTS])
def test_malformed_request_is_a_stream_error_and_the_connection_goes_on(headers: list[Header]) -> None:
    conn, peer = server()
    assert_stream_error(conn, conn.receive_data(peer.headers(1, headers, end_stream=True)), 1, PE)
    [ok] = of(conn.receive_data(peer.headers(3, REQUEST, end_stream=True)), HeadersReceived)
    assert ok.headers == REQUEST


@pytest.mark.parametrize("headers", BAD_REQUESTS.values(), ids=BAD_REQUESTS)
def test_h2_rejects_the_malformed_requests_too(headers: list[Header]) -> None:
    assert not h2_accepts_request(headers)


@pytest.mark.parametrize("headers", GOOD_REQUESTS.values(), ids=GOOD_REQUESTS)
def test_valid_requests_are_accepted_by_us_and_h2(headers: list[Header]) -> None:
    conn, peer = server()
    events = conn.receive_data(peer.headers(1, headers, end_stream=True))
    [ev] = of(events, HeadersReceived)
    assert ev.headers == headers
    assert_no_error(conn, events)
    assert h2_accepts_request(headers)


def test_request_fields_are_split_out() -> None:
    conn, peer = server()
    [ev] = of(conn.receive_data(peer.headers(1, GOOD_REQUESTS["host-without-authority"])), HeadersReceived)
    assert (ev.method, ev.scheme, ev.path, ev.authority) == (
        b"POST", b"http", b"/payment.PaymentService/Charge", b"payment:8080")
    [ev] = of(conn.receive_data(peer.headers(3, GOOD_REQUESTS["connect"])), HeadersReceived)
    assert (ev.method, ev.scheme, ev.path, ev.authority) == (b"CONNECT", b"", b"", b"a:443")


# ------------------------------------------------------------------------------------------- responses

BAD_RESPONSES: dict[str, list[Header]] = {
    "missing-status": [(b"content-type", b"application/grpc")],
    "duplicate-status": [(b":status", b"200"), *RESP],
    "request-pseudo": [*RESP[:1], (b":path", b"/"), *RESP[1:]],
    "status-after-regular": [RESP[1], RESP[0]],
    "switching-protocols": [(b":status", b"101")],
    "connection": resp((b"connection", b"close")),
    "transfer-encoding": resp((b"transfer-encoding", b"chunked")),
    "te-gzip": resp((b"te", b"gzip")),
    "uppercase-name": resp((b"Grpc-Status", b"0")),
    "colon-in-name": resp((b"x:y", b"0")),
    "lf-in-value": resp((b"grpc-message", b"a\nb")),
    "content-length-conflict": resp((b"content-length", b"1"), (b"content-length", b"2")),
}

STRICTER_RESPONSES: dict[str, list[Header]] = {
    # RFC 9110 15: a status code is three digits.
    "status-two-digits": [(b":status", b"20")],
    "status-four-digits": [(b":status", b"2000")],
    "status-not-a-number": [(b":status", b"abc")],
}


def h2_accepts_response(headers: list[Header]) -> bool:
    conn = h2_peer(client_side=True)
    conn.initiate_connection()
    conn.send_headers(1, REQUEST, end_stream=True)
    try:
        events = conn.receive_data(settings() + RawPeer().headers(1, headers, end_stream=True))
    except h2.exceptions.ProtocolError:
        return False
    return bool(of(events, he.ResponseReceived))


def our_client_with_stream_1(request: list[Header] = REQUEST) -> tuple[H2Connection, RawPeer]:
    conn, peer = client()
    conn.send_headers(1, request, end_stream=True)
    conn.data_to_send()
    return conn, peer


@pytest.mark.parametrize("headers", [*BAD_RESPONSES.values(), *STRICTER_RESPONSES.values()],
                         ids=[*BAD_RESPONSES, *STRICTER_RESPONSES])
def test_malformed_response_is_a_stream_error(headers: list[Header]) -> None:
    conn, peer = our_client_with_stream_1()
    conn.send_headers(3, REQUEST, end_stream=True)
    conn.data_to_send()
    assert_stream_error(conn, conn.receive_data(peer.headers(1, headers, end_stream=True)), 1, PE)
    [ok] = of(conn.receive_data(peer.headers(3, RESP, end_stream=True)), HeadersReceived)
    assert ok.headers == RESP


@pytest.mark.parametrize("headers", BAD_RESPONSES.values(), ids=BAD_RESPONSES)
def test_h2_rejects_the_malformed_responses_too(headers: list[Header]) -> None:
    assert not h2_accepts_response(headers)


@pytest.mark.parametrize(("headers", "accepted"), [
    *((h, h2_accepts_response) for h in STRICTER_RESPONSES.values()),
    *((h, h2_accepts_request) for h in STRICTER_REQUESTS.values()),
], ids=[*STRICTER_RESPONSES, *STRICTER_REQUESTS])
def test_the_stricter_cases_are_really_accepted_by_h2(headers: list[Header],
                                                       accepted: Callable[[list[Header]], bool]) -> None:
    """Keeps the STRICTER_* lists honest."""
    assert accepted(headers)


def test_informational_response_with_end_stream_is_a_stream_error() -> None:
    conn, peer = our_client_with_stream_1()
    assert_stream_error(conn, conn.receive_data(peer.headers(1, [(b":status", b"100")], end_stream=True)), 1, PE)
    assert not h2_accepts_response([(b":status", b"100")])


def test_informational_then_final_response() -> None:
    conn, peer = our_client_with_stream_1()
    events = conn.receive_data(peer.headers(1, [(b":status", b"103"), (b"link", b"</s>")])
                               + peer.headers(1, RESP, end_stream=True))
    assert [(e.kind, e.status) for e in of(events, HeadersReceived)] == [(INFORMATIONAL, 103), (RESPONSE, 200)]


# ------------------------------------------------------------------------------------------- trailers


@pytest.mark.parametrize(
    "trailers",
    [
        pytest.param([(b":status", b"200")], id="pseudo-header"),
        pytest.param([(b"grpc-status", b"0"), (b":path", b"/")], id="pseudo-header-after-regular"),
        pytest.param([(b"connection", b"close")], id="connection"),
        pytest.param([(b"Grpc-Status", b"0")], id="uppercase"),
        pytest.param([(b"te", b"gzip")], id="te-gzip"),
        pytest.param([(b"x", b"a\rb")], id="cr-in-value"),
    ],
)
@pytest.mark.parametrize("side", ["request", "response"])
def test_malformed_trailers_are_stream_errors(trailers: list[Header], side: str) -> None:
    if side == "request":
        conn, peer = server()
        conn.receive_data(peer.headers(1, REQUEST))
    else:
        conn, peer = client()
        conn.send_headers(1, REQUEST, end_stream=True)
        conn.receive_data(peer.headers(1, RESP))
    conn.data_to_send()
    assert_stream_error(conn, conn.receive_data(peer.headers(1, trailers, end_stream=True)), 1, PE)


@pytest.mark.parametrize("side", ["request", "response"])
def test_trailers_without_end_stream_are_a_stream_error(side: str) -> None:
    """RFC 9113 8.1: a HEADERS frame after the final headers must carry END_STREAM."""
    if side == "request":
        conn, peer = server()
        conn.receive_data(peer.headers(1, REQUEST) + peer.data(1, b"x"))
    else:
        conn, peer = client()
        conn.send_headers(1, REQUEST, end_stream=True)
        conn.receive_data(peer.headers(1, RESP) + peer.data(1, b"x"))
    conn.data_to_send()
    assert_stream_error(conn, conn.receive_data(peer.headers(1, [(b"grpc-status", b"0")])), 1, PE)


# ------------------------------------------------------------------------------------------- content-length


def post(n: int) -> list[Header]:
    return req((b"content-length", b"%d" % n))


@pytest.mark.parametrize(
    ("declared", "bodies", "errors_at"),
    [
        pytest.param(5, [(b"abcd", True)], 0, id="short-at-end-stream"),
        pytest.param(5, [(b"abcdef", False)], 0, id="more-than-declared"),
        pytest.param(5, [(b"abc", False), (b"abc", True)], 1, id="more-across-frames"),
        pytest.param(4, [(b"ab", False), (b"", True)], 1, id="short-with-empty-end"),
    ],
)
def test_request_body_not_matching_content_length_is_a_stream_error(
        declared: int, bodies: list[tuple[bytes, bool]], errors_at: int) -> None:
    conn, peer = server()
    conn.receive_data(peer.headers(1, post(declared)))
    for i, (body, end) in enumerate(bodies):
        events = conn.receive_data(peer.data(1, body, end_stream=end))
        if i < errors_at:
            assert of(events, DataReceived)
            continue
        assert_stream_error(conn, events, 1, PE)
        return
    raise AssertionError("no error")


def test_request_content_length_checked_at_trailers() -> None:
    conn, peer = server()
    events = conn.receive_data(peer.headers(1, post(4)) + peer.data(1, b"ab")
                               + peer.headers(1, [(b"x-t", b"1")], end_stream=True))
    assert_stream_error(conn, events, 1, PE)
    events = conn.receive_data(peer.headers(3, post(4)) + peer.data(3, b"abcd")
                               + peer.headers(3, [(b"x-t", b"1")], end_stream=True))
    assert [type(e) for e in events] == [HeadersReceived, DataReceived, HeadersReceived]


def test_padding_does_not_count_towards_content_length() -> None:
    conn, peer = server()
    padded = fr.frame_header(1 + 4 + 10, fr.DATA, fr.FLAG_PADDED | fr.FLAG_END_STREAM, 1) + b"\x0a" + b"abcd"
    events = conn.receive_data(peer.headers(1, post(4)) + padded + b"\0" * 10)
    assert [(type(e), getattr(e, "data", None)) for e in events][1:] == [(DataReceived, b"abcd")]
    assert_no_error(conn, events)


def test_response_body_not_matching_content_length_is_a_stream_error() -> None:
    conn, peer = our_client_with_stream_1()
    events = conn.receive_data(peer.headers(1, resp((b"content-length", b"3"))) + peer.data(1, b"ab", True))
    assert_stream_error(conn, events, 1, PE)


@pytest.mark.parametrize(
    ("method", "status"),
    [(b"HEAD", b"200"), (b"GET", b"304"), (b"GET", b"204"), (b"HEAD", b"404")],
    ids=["HEAD-200", "GET-304", "GET-204", "HEAD-404"],
)
def test_responses_without_content_may_declare_a_content_length(method: bytes, status: bytes) -> None:
    """RFC 9113 8.1.1: a response defined to have no content (to HEAD; 204; 304) can carry a non-zero
    content-length although no DATA follows (here: an empty DATA frame with END_STREAM)."""
    request = [(b":method", method), *REQUEST[1:]]
    conn, peer = our_client_with_stream_1(request)
    headers = [(b":status", status), (b"content-length", b"1234")]
    events = conn.receive_data(peer.headers(1, headers) + peer.data(1, b"", end_stream=True))
    assert [type(e) for e in events] == [HeadersReceived, DataReceived]
    assert_no_error(conn, events)
    conn.send_headers(3, request, end_stream=True)
    conn.data_to_send()
    events = conn.receive_data(peer.headers(3, headers, end_stream=True))
    assert_no_error(conn, events)


def test_content_in_a_response_to_head_is_a_stream_error() -> None:
    conn, peer = our_client_with_stream_1([(b":method", b"HEAD"), *REQUEST[1:]])
    events = conn.receive_data(peer.headers(1, [(b":status", b"200"), (b"content-length", b"3")])
                               + peer.data(1, b"abc", end_stream=True))
    assert_stream_error(conn, events, 1, PE)


def test_header_rules_apply_to_every_block_of_a_continuation_sequence() -> None:
    """A bad field hidden in a CONTINUATION fragment is found like any other."""
    conn, peer = server()
    block = peer.block(req((b"Bad-Name", b"1")))
    data = fr.frame_header(3, fr.HEADERS, fr.FLAG_END_STREAM, 1) + block[:3]
    data += fr.frame_header(len(block) - 3, fr.CONTINUATION, fr.FLAG_END_HEADERS, 1) + block[3:]
    assert_stream_error(conn, conn.receive_data(data), 1, PE)

"""Raw frames (hand-built bytes) for every error rule of RFC 9113 that is not about header fields.

Each case checks the kind of error (connection error: GOAWAY + ConnectionTerminated(local=True), nothing
processed afterwards; stream error: RST_STREAM + StreamReset(remote=False)) and its code. Where RFC 9113 lets
the receiver choose, the engine does what h2spec accepts; the comments say which.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hyperframe.frame import GoAwayFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame

from pyproxy.http2 import frames as fr
from pyproxy.http2.connection import H2Connection, H2Settings
from pyproxy.http2.events import (
    ConnectionTerminated,
    DataReceived,
    HeaderListTooLarge,
    HeadersReceived,
    StreamReset,
    WindowUpdated,
)
from pyproxy.http2.frames import ErrorCode
from tests.unit.http2.helpers import (
    REQUEST,
    RESPONSE,
    RawPeer,
    assert_connection_error,
    assert_no_error,
    assert_stream_error,
    client,
    of,
    parse,
    raw,
    server,
    settings,
    u32,
)

PE = ErrorCode.PROTOCOL_ERROR
FSE = ErrorCode.FRAME_SIZE_ERROR
SC = ErrorCode.STREAM_CLOSED
FCE = ErrorCode.FLOW_CONTROL_ERROR
EYC = ErrorCode.ENHANCE_YOUR_CALM
POST_BODY = [*REQUEST, (b"content-length", b"4")]


def opened(end_stream: bool = False, local: H2Settings | None = None) -> tuple[H2Connection, RawPeer]:
    """Our server with stream 1 open (or half-closed (remote) with ``end_stream``)."""
    conn, peer = server(local)
    events = conn.receive_data(peer.headers(1, REQUEST, end_stream=end_stream))
    assert [type(e) for e in events] == [HeadersReceived]
    return conn, peer


SMALL = H2Settings(initial_window=65535, initial_connection_window=65535)


def closed_by_end_stream(local: H2Settings | None = None) -> tuple[H2Connection, RawPeer]:
    conn, peer = opened(end_stream=True, local=local)
    conn.send_headers(1, RESPONSE, end_stream=True)
    conn.data_to_send()
    assert 1 not in conn.streams
    return conn, peer


def reset_by_peer(local: H2Settings | None = None) -> tuple[H2Connection, RawPeer]:
    conn, peer = opened(local=local)
    events = conn.receive_data(raw(fr.RST_STREAM, 0, 1, u32(ErrorCode.CANCEL)))
    assert [(type(e), e.remote) for e in events] == [(StreamReset, True)]  # type: ignore[attr-defined]
    return conn, peer


def reset_by_us(local: H2Settings | None = None) -> tuple[H2Connection, RawPeer]:
    conn, peer = opened(local=local)
    conn.reset_stream(1)
    assert [type(f) for f in parse(conn.data_to_send())] == [RstStreamFrame]
    return conn, peer


# ------------------------------------------------------------------------------------------- stream 0 rules


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(raw(fr.DATA, 0, 0, b"x"), id="DATA"),
        pytest.param(raw(fr.HEADERS, fr.FLAG_END_HEADERS, 0, b"\x82"), id="HEADERS"),
        pytest.param(raw(fr.PRIORITY, 0, 0, b"\0\0\0\0\x10"), id="PRIORITY"),
        pytest.param(raw(fr.RST_STREAM, 0, 0, u32(8)), id="RST_STREAM"),
        pytest.param(raw(fr.CONTINUATION, fr.FLAG_END_HEADERS, 0, b"\x82"), id="CONTINUATION"),
        pytest.param(raw(fr.PUSH_PROMISE, fr.FLAG_END_HEADERS, 0, u32(2) + b"\x82"), id="PUSH_PROMISE"),
        pytest.param(raw(fr.SETTINGS, 0, 1, b""), id="SETTINGS-on-stream"),
        pytest.param(raw(fr.SETTINGS, fr.FLAG_ACK, 1, b""), id="SETTINGS-ACK-on-stream"),
        pytest.param(raw(fr.PING, 0, 1, b"12345678"), id="PING-on-stream"),
        pytest.param(raw(fr.GOAWAY, 0, 1, u32(0) + u32(0)), id="GOAWAY-on-stream"),
    ],
)
def test_frames_on_the_wrong_stream_are_connection_errors(frame: bytes) -> None:
    conn, _ = opened()
    assert_connection_error(conn, conn.receive_data(frame), PE)


# ------------------------------------------------------------------------------------------- lengths


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        pytest.param(raw(fr.RST_STREAM, 0, 1, b"\0\0\0"), FSE, id="RST_STREAM-3"),
        pytest.param(raw(fr.RST_STREAM, 0, 1, b"\0\0\0\0\0"), FSE, id="RST_STREAM-5"),
        pytest.param(raw(fr.SETTINGS, 0, 0, b"\0\x03\0\0\0"), FSE, id="SETTINGS-5"),
        pytest.param(raw(fr.SETTINGS, fr.FLAG_ACK, 0, b"\0\x03\0\0\0\x01"), FSE, id="SETTINGS-ACK-payload"),
        pytest.param(raw(fr.PING, 0, 0, b"1234567"), FSE, id="PING-7"),
        pytest.param(raw(fr.PING, 0, 0, b"123456789"), FSE, id="PING-9"),
        pytest.param(raw(fr.WINDOW_UPDATE, 0, 0, b"\0\0\x01"), FSE, id="WINDOW_UPDATE-3"),
        pytest.param(raw(fr.WINDOW_UPDATE, 0, 1, b"\0\0\0\x01\0"), FSE, id="WINDOW_UPDATE-5-stream"),
        pytest.param(raw(fr.GOAWAY, 0, 0, b"\0" * 7), FSE, id="GOAWAY-7"),
        pytest.param(raw(fr.DATA, 0, 1, b"x" * 16385), FSE, id="DATA-over-max-frame-size"),
        pytest.param(raw(fr.HEADERS, fr.FLAG_PRIORITY | fr.FLAG_END_HEADERS, 3, b"\0\0\0"), FSE,
                     id="HEADERS-priority-truncated"),
        pytest.param(raw(fr.DATA, fr.FLAG_PADDED, 1, b""), FSE, id="DATA-padded-without-pad-length"),
        pytest.param(raw(fr.HEADERS, fr.FLAG_PADDED | fr.FLAG_END_HEADERS, 3, b""), FSE,
                     id="HEADERS-padded-without-pad-length"),
    ],
)
def test_wrong_frame_lengths_are_connection_errors(frame: bytes, code: int) -> None:
    conn, _ = opened()
    assert_connection_error(conn, conn.receive_data(frame), code)


def test_frame_over_max_frame_size_is_rejected_from_its_header_alone() -> None:
    """No need to buffer 16 MiB first: the 9-octet header is enough."""
    conn, _ = opened()
    assert_connection_error(conn, conn.receive_data(raw(fr.DATA, 0, 1, b"", length=2**24 - 1)), FSE)


def test_larger_max_frame_size_of_ours_is_accepted() -> None:
    conn, peer = opened(local=H2Settings(max_frame_size=65536))
    events = conn.receive_data(peer.data(1, b"y" * 40000))
    assert [len(e.data) for e in of(events, DataReceived)] == [40000]


def test_priority_of_wrong_length_is_a_stream_error() -> None:
    """RFC 9113 6.3: a PRIORITY frame of another length than 5 is a *stream* error FRAME_SIZE_ERROR."""
    conn, _ = opened()
    assert_stream_error(conn, conn.receive_data(raw(fr.PRIORITY, 0, 1, b"\0\0\0\0")), 1, FSE)


# ------------------------------------------------------------------------------------------- stream states

STREAM_STATES: dict[str, Callable[[], tuple[H2Connection, RawPeer]]] = {
    "half-closed-remote": lambda: opened(end_stream=True),
    "reset-by-peer": reset_by_peer,
}


@pytest.mark.parametrize("state", STREAM_STATES)
@pytest.mark.parametrize("kind", ["DATA", "HEADERS"])
def test_data_or_headers_on_a_stream_closed_for_receiving_is_a_stream_error(state: str, kind: str) -> None:
    """RFC 9113 5.1: half-closed (remote) -> stream error STREAM_CLOSED; closed by the peer's RST_STREAM ->
    stream error STREAM_CLOSED (h2spec http2/5.1/5-6, 8-9)."""
    conn, peer = STREAM_STATES[state]()
    frame = peer.data(1, b"x", end_stream=True) if kind == "DATA" else peer.headers(1, REQUEST, end_stream=True)
    assert_stream_error(conn, conn.receive_data(frame), 1, SC)
    # Having sent RST_STREAM, later frames on the stream are ignored (RFC 9113 5.1 "closed").
    assert_no_error(conn, conn.receive_data(frame))


@pytest.mark.parametrize("kind", ["DATA", "HEADERS"])
@pytest.mark.parametrize("client_side", [False, True], ids=["server", "client"])
def test_data_or_headers_after_both_end_streams_is_a_connection_error(kind: str, client_side: bool) -> None:
    """The peer sends on a stream after its own END_STREAM (closed state): RFC 9113 5.1 allows either kind
    of error; like h2 and h2spec (http2/5.1/11-12), a connection error STREAM_CLOSED."""
    if client_side:
        conn, peer = client()
        conn.send_headers(1, REQUEST, end_stream=True)
        conn.receive_data(peer.headers(1, RESPONSE, end_stream=True))
        conn.data_to_send()
        headers = [(b"grpc-status", b"0")]
    else:
        conn, peer = closed_by_end_stream()
        headers = REQUEST
    assert 1 not in conn.streams
    frame = peer.data(1, b"x", end_stream=True) if kind == "DATA" else peer.headers(1, headers, end_stream=True)
    assert_connection_error(conn, conn.receive_data(frame), SC)


def test_frames_on_a_stream_we_reset_are_ignored_but_count_for_the_connection_window() -> None:
    conn, peer = reset_by_us(SMALL)
    events = conn.receive_data(peer.data(1, b"x" * 16000) + peer.data(1, b"y" * 1000, end_stream=True)
                               + peer.headers(1, [(b"x-trailer", b"1")], end_stream=True)
                               + raw(fr.WINDOW_UPDATE, 0, 1, u32(10)) + raw(fr.RST_STREAM, 0, 1, u32(8))
                               + raw(fr.PRIORITY, 0, 1, b"\0\0\0\0\x10"))
    assert events == []
    out = parse(conn.data_to_send())
    # The 17,000 octets nobody will consume go straight back to the connection window.
    assert [(f.stream_id, f.window_increment) for f in out if isinstance(f, WindowUpdateFrame)] == [(0, 17000)]
    assert not [f for f in out if not isinstance(f, WindowUpdateFrame)]
    # The trailers' header block was decoded: the HPACK state is intact for the next request.
    assert of(conn.receive_data(peer.headers(3, REQUEST)), HeadersReceived)[0].headers == REQUEST


@pytest.mark.parametrize(
    ("frame", "open_3_first"),
    [
        pytest.param(raw(fr.DATA, 0, 1, b"x"), False, id="DATA"),
        pytest.param(raw(fr.RST_STREAM, 0, 1, u32(8)), False, id="RST_STREAM"),
        pytest.param(raw(fr.WINDOW_UPDATE, 0, 1, u32(1)), False, id="WINDOW_UPDATE"),
        pytest.param(raw(fr.CONTINUATION, fr.FLAG_END_HEADERS, 1, b"\x82"), False, id="CONTINUATION"),
        pytest.param(raw(fr.DATA, 0, 5, b"x"), True, id="DATA-above-highest"),
        pytest.param(raw(fr.RST_STREAM, 0, 5, u32(8)), True, id="RST_STREAM-above-highest"),
    ],
)
def test_frames_on_idle_streams_are_connection_errors(frame: bytes, open_3_first: bool) -> None:
    conn, peer = server()
    if open_3_first:
        assert of(conn.receive_data(peer.headers(3, REQUEST)), HeadersReceived)
    assert_connection_error(conn, conn.receive_data(frame), PE)


def test_priority_on_an_idle_stream_is_allowed() -> None:
    conn, peer = server()
    assert_no_error(conn, conn.receive_data(raw(fr.PRIORITY, 0, 9, u32(1) + b"\x10")))
    assert of(conn.receive_data(peer.headers(9, REQUEST)), HeadersReceived)


def test_window_update_and_rst_stream_on_closed_streams_are_ignored() -> None:
    """RFC 9113 5.1: they may arrive after END_STREAM or RST_STREAM crossed them."""
    conn, _ = closed_by_end_stream()
    events = conn.receive_data(raw(fr.WINDOW_UPDATE, 0, 1, u32(100)) + raw(fr.RST_STREAM, 0, 1, u32(8)))
    assert events == []
    assert conn.data_to_send() == b""


@pytest.mark.parametrize("client_side", [False, True], ids=["server", "client"])
def test_data_on_idle_streams_of_our_own_numbering_is_a_connection_error(client_side: bool) -> None:
    conn, peer = client() if client_side else server()
    sid = 1 if client_side else 2  # never opened by us
    assert_connection_error(conn, conn.receive_data(peer.data(sid, b"x")), PE)


# ------------------------------------------------------------------------------------------- stream ids


def test_decreasing_stream_id_is_a_connection_error() -> None:
    """RFC 9113 5.1.1 (h2spec 5.1.1/2): a new stream id not greater than every earlier one is "an unexpected
    stream identifier": connection error PROTOCOL_ERROR (stream 3 was never opened: not 'closed')."""
    conn, peer = server()
    conn.receive_data(peer.headers(5, REQUEST, end_stream=True))
    conn.data_to_send()
    assert_connection_error(conn, conn.receive_data(peer.headers(3, REQUEST, end_stream=True)), PE)


def test_reused_stream_id_of_a_closed_stream_is_a_connection_error() -> None:
    conn, peer = closed_by_end_stream()
    assert_connection_error(conn, conn.receive_data(peer.headers(1, REQUEST, end_stream=True)), SC)


@pytest.mark.parametrize("sid", [2, 4, 2**31 - 1 - 1])
def test_even_stream_ids_from_a_client_are_a_connection_error(sid: int) -> None:
    conn, peer = server()
    assert_connection_error(conn, conn.receive_data(peer.headers(sid, REQUEST)), PE)


def test_headers_on_even_stream_without_push_promise_from_a_server_is_a_connection_error() -> None:
    conn, peer = client()
    conn.send_headers(1, REQUEST, end_stream=True)
    conn.data_to_send()
    assert_connection_error(conn, conn.receive_data(peer.headers(2, RESPONSE)), PE)


def test_highest_stream_id_is_accepted() -> None:
    conn, peer = server()
    events = conn.receive_data(peer.headers(2**31 - 1, REQUEST, end_stream=True))
    assert of(events, HeadersReceived)[0].stream_id == 2**31 - 1


# ------------------------------------------------------------------------------------------- SETTINGS


@pytest.mark.parametrize(
    ("values", "code"),
    [
        pytest.param({fr.Setting.ENABLE_PUSH: 2}, PE, id="ENABLE_PUSH-2"),
        pytest.param({fr.Setting.INITIAL_WINDOW_SIZE: 2**31}, FCE, id="INITIAL_WINDOW_SIZE-2^31"),
        pytest.param({fr.Setting.INITIAL_WINDOW_SIZE: 2**32 - 1}, FCE, id="INITIAL_WINDOW_SIZE-2^32-1"),
        pytest.param({fr.Setting.MAX_FRAME_SIZE: 16383}, PE, id="MAX_FRAME_SIZE-16383"),
        pytest.param({fr.Setting.MAX_FRAME_SIZE: 2**24}, PE, id="MAX_FRAME_SIZE-2^24"),
        pytest.param({fr.Setting.ENABLE_CONNECT_PROTOCOL: 2}, PE, id="ENABLE_CONNECT_PROTOCOL-2"),
    ],
)
def test_invalid_settings_values_are_connection_errors(values: dict[int, int], code: int) -> None:
    conn, _ = server()
    assert_connection_error(conn, conn.receive_data(settings(values)), code)


def test_enable_push_1_from_a_server_is_a_connection_error() -> None:
    conn = H2Connection(client_side=True)
    conn.initiate_connection()
    conn.data_to_send()
    assert_connection_error(conn, conn.receive_data(settings({fr.Setting.ENABLE_PUSH: 1})), PE)


def test_unknown_settings_and_edge_values_are_accepted_and_acknowledged() -> None:
    conn, _ = server()
    values = {0x99: 12345, fr.Setting.MAX_FRAME_SIZE: 2**24 - 1, fr.Setting.INITIAL_WINDOW_SIZE: 2**31 - 1,
              fr.Setting.HEADER_TABLE_SIZE: 2**32 - 1, fr.Setting.MAX_CONCURRENT_STREAMS: 0}
    out = assert_no_error(conn, conn.receive_data(settings(values)))
    assert [(type(f), "ACK" in f.flags) for f in out] == [(SettingsFrame, True)]
    assert conn.remote_max_frame_size == 2**24 - 1 and conn.remote_initial_window == 2**31 - 1


def test_initial_window_size_that_overflows_an_open_stream_window_is_a_connection_error() -> None:
    conn, _ = opened()
    conn.receive_data(raw(fr.WINDOW_UPDATE, 0, 1, u32(100)))
    assert_connection_error(conn, conn.receive_data(settings({fr.Setting.INITIAL_WINDOW_SIZE: 2**31 - 1})), FCE)


def test_settings_ack_is_not_a_settings_preface() -> None:
    conn = H2Connection(client_side=False)
    conn.initiate_connection()
    conn.data_to_send()
    events = conn.receive_data(fr.PREFACE + settings(ack=True) + raw(fr.PING, 0, 0, b"12345678"))
    assert_connection_error(conn, events, PE)


# ------------------------------------------------------------------------------------------- flow control


def test_connection_window_update_overflow_is_a_connection_error() -> None:
    conn, _ = server()
    assert_connection_error(conn, conn.receive_data(raw(fr.WINDOW_UPDATE, 0, 0, u32(2**31 - 65535))), FCE)
    assert conn.outbound_window == 65535  # the overflowing value was never stored


def test_settings_that_would_overflow_a_stream_window_change_no_window() -> None:
    conn, peer = opened()
    conn.receive_data(peer.headers(3, REQUEST) + raw(fr.WINDOW_UPDATE, 0, 3, u32(100)))
    events = conn.receive_data(settings({fr.Setting.INITIAL_WINDOW_SIZE: 2**31 - 1}))
    assert [s.outbound_window for s in conn.streams.values()] == [65535, 65635]
    assert_connection_error(conn, events, FCE)


def test_connection_window_may_reach_exactly_the_maximum() -> None:
    conn, _ = server()
    assert [type(e) for e in conn.receive_data(raw(fr.WINDOW_UPDATE, 0, 0, u32(2**31 - 1 - 65535)))] == [
        WindowUpdated]
    assert conn.outbound_window == 2**31 - 1


def test_stream_window_update_overflow_is_a_stream_error() -> None:
    conn, _ = opened()
    assert_stream_error(conn, conn.receive_data(raw(fr.WINDOW_UPDATE, 0, 1, u32(2**31 - 65535))), 1, FCE)


def test_window_update_increment_zero() -> None:
    conn, _ = opened()
    assert_stream_error(conn, conn.receive_data(raw(fr.WINDOW_UPDATE, 0, 1, u32(0))), 1, PE)
    assert_connection_error(conn, conn.receive_data(raw(fr.WINDOW_UPDATE, 0, 0, u32(0))), PE)


def test_window_update_reserved_bit_is_ignored() -> None:
    conn, _ = opened()
    assert [type(e) for e in conn.receive_data(raw(fr.WINDOW_UPDATE, 0, 1, u32(0x80000000 | 5)))] == [
        WindowUpdated]
    assert conn.streams[1].outbound_window == 65535 + 5


def test_peer_exceeding_the_stream_window_is_a_stream_error() -> None:
    conn, peer = opened(local=H2Settings(initial_window=65535, initial_connection_window=1 << 20))
    events = conn.receive_data(b"".join(peer.data(1, b"x" * 16384) for _ in range(3)) + peer.data(1, b"x" * 16384))
    assert len(of(events, DataReceived)) == 3
    assert_stream_error(conn, events, 1, FCE)


def test_peer_exceeding_the_connection_window_is_a_connection_error() -> None:
    conn, peer = server(H2Settings(initial_window=1 << 20, initial_connection_window=65535))
    data = peer.headers(1, REQUEST) + peer.headers(3, REQUEST)
    data += b"".join(peer.data(1, b"x" * 16384) for _ in range(2)) + peer.data(3, b"x" * 16384)
    data += peer.data(3, b"x" * 16384)  # 65,536 in all
    assert_connection_error(conn, conn.receive_data(data), FCE)


def test_data_on_a_stream_counts_even_when_refused_as_stream_error() -> None:
    """DATA that ends in a stream error still consumed connection window, which is returned at once."""
    conn, peer = reset_by_peer(SMALL)
    conn.receive_data(peer.data(1, b"x" * 16384))
    out = parse(conn.data_to_send())
    assert sorted((type(f).__name__, f.stream_id) for f in out) == [("RstStreamFrame", 1),
                                                                    ("WindowUpdateFrame", 0)]


# ------------------------------------------------------------------------------------------- padding


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(raw(fr.DATA, fr.FLAG_PADDED, 1, b"\x05hell"), id="DATA-pad-equals-payload"),
        pytest.param(raw(fr.DATA, fr.FLAG_PADDED, 1, b"\xff" + b"\0" * 10), id="DATA-pad-255-in-11"),
        pytest.param(raw(fr.HEADERS, fr.FLAG_PADDED | fr.FLAG_END_HEADERS, 3, b"\x03\x82\0"), id="HEADERS-pad"),
        pytest.param(raw(fr.HEADERS, fr.FLAG_PADDED | fr.FLAG_PRIORITY | fr.FLAG_END_HEADERS, 3,
                         b"\x03" + b"\0\0\0\0\x10" + b"\0\0"), id="HEADERS-pad-eats-priority-fields"),
    ],
)
def test_padding_longer_than_the_payload_is_a_protocol_error(frame: bytes) -> None:
    """RFC 9113 6.1/6.2: padding that exceeds what remains is a connection error PROTOCOL_ERROR."""
    conn, _ = opened()
    assert_connection_error(conn, conn.receive_data(frame), PE)


def test_padded_headers_with_priority_and_padded_empty_data() -> None:
    conn, peer = server()
    block = peer.block(REQUEST)
    frame = raw(fr.HEADERS, fr.FLAG_PADDED | fr.FLAG_PRIORITY | fr.FLAG_END_HEADERS, 1,
                b"\x04" + u32(0) + b"\x10" + block + b"\0" * 4)
    events = conn.receive_data(frame + raw(fr.DATA, fr.FLAG_PADDED | fr.FLAG_END_STREAM, 1, b"\x07" + b"\0" * 7))
    assert of(events, HeadersReceived)[0].headers == REQUEST
    [data] = of(events, DataReceived)
    assert (data.data, data.flow_controlled_length, data.end_stream) == (b"", 0, True)
    assert_no_error(conn, [])


# ------------------------------------------------------------------------------------------- CONTINUATION


@pytest.mark.parametrize(
    "interloper",
    [
        pytest.param(raw(fr.PRIORITY, 0, 1, b"\0\0\0\0\x10"), id="PRIORITY"),
        pytest.param(raw(fr.DATA, 0, 1, b"x"), id="DATA"),
        pytest.param(raw(fr.PING, 0, 0, b"12345678"), id="PING"),
        pytest.param(raw(fr.CONTINUATION, fr.FLAG_END_HEADERS, 3, b""), id="CONTINUATION-other-stream"),
        pytest.param(raw(0x20, 0, 0, b"unknown"), id="unknown-type"),
        pytest.param(raw(fr.HEADERS, fr.FLAG_END_HEADERS, 3, b"\x82"), id="HEADERS-other-stream"),
    ],
)
def test_anything_but_continuation_inside_a_header_block_is_a_connection_error(interloper: bytes) -> None:
    conn, peer = server()
    block = peer.block(REQUEST)
    data = raw(fr.HEADERS, 0, 1, block[:5]) + interloper + raw(fr.CONTINUATION, fr.FLAG_END_HEADERS, 1, block[5:])
    assert_connection_error(conn, conn.receive_data(data), PE)


def test_continuation_without_headers_or_after_end_headers_is_a_connection_error() -> None:
    conn, _ = opened()
    assert_connection_error(conn, conn.receive_data(raw(fr.CONTINUATION, fr.FLAG_END_HEADERS, 1, b"\x82")), PE)


def test_header_block_in_one_octet_continuations_is_accepted() -> None:
    """RFC 9113 6.10: any number of CONTINUATION frames may follow; END_STREAM comes from the HEADERS."""
    conn, peer = server()
    block = peer.block(REQUEST)
    data = raw(fr.HEADERS, fr.FLAG_END_STREAM, 1, b"")
    for i in range(len(block)):
        data += raw(fr.CONTINUATION, fr.FLAG_END_HEADERS if i == len(block) - 1 else 0, 1, block[i:i + 1])
    [req] = of(conn.receive_data(data), HeadersReceived)
    assert req.headers == REQUEST and req.end_stream


def test_continuation_flood_of_large_frames_is_cut_off() -> None:
    conn, peer = server()
    data = raw(fr.HEADERS, 0, 1, peer.block(REQUEST))
    events = conn.receive_data(data)
    for _ in range(64):  # 64 x 16 KiB = 1 MiB of header block
        events += conn.receive_data(raw(fr.CONTINUATION, 0, 1, b"\x00\x01a\x81" + b"b" * 16380))
        if conn.closed:
            break
    assert_connection_error(conn, events, EYC)


def test_continuation_flood_of_empty_frames_is_cut_off() -> None:
    """Empty CONTINUATION frames add no octets to the block but cost memory and CPU: they must count."""
    conn, peer = server()
    events = conn.receive_data(raw(fr.HEADERS, 0, 1, peer.block(REQUEST)))
    empty = raw(fr.CONTINUATION, 0, 1, b"") * 10000
    for _ in range(30):  # 300,000 frames, 2.7 MB
        events += conn.receive_data(empty)
        if conn.closed:
            break
    assert_connection_error(conn, events, EYC)


def test_hpack_error_is_a_compression_error() -> None:
    conn, _ = server()
    assert_connection_error(conn, conn.receive_data(raw(fr.HEADERS, fr.FLAG_END_HEADERS, 1, b"\xbe")),
                            ErrorCode.COMPRESSION_ERROR)


# ------------------------------------------------------------------------------------------- PUSH_PROMISE


def test_push_promise_to_a_client_that_disabled_push_is_a_connection_error() -> None:
    conn, peer = client()
    conn.send_headers(1, REQUEST, end_stream=True)
    conn.data_to_send()
    frame = raw(fr.PUSH_PROMISE, fr.FLAG_END_HEADERS, 1, u32(2) + peer.block(REQUEST))
    assert_connection_error(conn, conn.receive_data(frame), PE)


def test_push_promise_to_a_server_is_a_connection_error() -> None:
    conn, peer = opened()
    frame = raw(fr.PUSH_PROMISE, fr.FLAG_END_HEADERS, 1, u32(2) + peer.block(REQUEST))
    assert_connection_error(conn, conn.receive_data(frame), PE)


# ------------------------------------------------------------------------------------------- priority


def test_headers_depending_on_itself_is_a_stream_error_and_keeps_hpack_state() -> None:
    conn, peer = server()
    frame = raw(fr.HEADERS, fr.FLAG_PRIORITY | fr.FLAG_END_HEADERS, 1, u32(1) + b"\x10" + peer.block(REQUEST))
    assert_stream_error(conn, conn.receive_data(frame), 1, PE)
    assert of(conn.receive_data(peer.headers(3, REQUEST)), HeadersReceived)[0].headers == REQUEST


def test_priority_depending_on_itself_is_a_stream_error() -> None:
    conn, _ = opened()
    assert_stream_error(conn, conn.receive_data(raw(fr.PRIORITY, 0, 1, u32(1) + b"\x10")), 1, PE)


# ------------------------------------------------------------------------------------------- floods


def test_empty_data_frames_flood() -> None:
    conn, peer = opened()
    ok = peer.data(1, b"") + peer.data(1, b"x") + peer.data(1, b"")  # never two empty ones in a row
    assert_no_error(conn, conn.receive_data(ok))
    assert_connection_error(conn, conn.receive_data(peer.data(1, b"") + peer.data(1, b"")), EYC)


def test_priority_flood() -> None:
    conn, _ = server()
    frames = b"".join(raw(fr.PRIORITY, 0, 1 + 2 * i, u32(0) + b"\x10") for i in range(100))
    assert_no_error(conn, conn.receive_data(frames))  # 100 per stream (plus one) are fine
    assert_connection_error(conn, conn.receive_data(raw(fr.PRIORITY, 0, 999, u32(0) + b"\x10")), EYC)


def rapid_resets(conn: H2Connection, peer: RawPeer, n: int, first: int = 1) -> list[object]:
    """``n`` requests, each reset by the client at once (HEADERS with END_STREAM, then RST_STREAM CANCEL)."""
    events: list[object] = []
    for i in range(n):
        sid = first + 2 * i
        events += conn.receive_data(peer.headers(sid, REQUEST, end_stream=True) + raw(fr.RST_STREAM, 0, sid, u32(8)))
    return events


def goaways(conn: H2Connection) -> list[GoAwayFrame]:
    return [f for f in parse(conn.data_to_send()) if isinstance(f, GoAwayFrame)]


def test_rapid_reset_gets_a_graceful_enhance_your_calm_goaway() -> None:
    """Envoy's limits: 500 streams (premature_reset_total_stream_count), half of them premature. The GOAWAY
    names the last stream processed: a stream opened before still completes, later ones are ignored."""
    conn, peer = server()
    conn.receive_data(peer.headers(1, REQUEST, end_stream=True))  # a legitimate call in flight
    conn.data_to_send()
    events = rapid_resets(conn, peer, 249, first=3)
    assert not of(events, ConnectionTerminated) and not goaways(conn)
    events = rapid_resets(conn, peer, 1, first=3 + 2 * 249)  # the 250th premature reset
    terminated = of(events, ConnectionTerminated)
    assert [(t.error_code, t.last_stream_id, t.local) for t in terminated] == [(EYC, 501, True)]
    assert conn.premature_reset_goaway and not conn.closed
    [goaway] = goaways(conn)
    assert goaway.error_code == EYC and goaway.last_stream_id == 501
    # Later streams are ignored (the GOAWAY refused them); the one in flight completes.
    assert rapid_resets(conn, peer, 100, first=503) == []
    conn.send_headers(1, RESPONSE, end_stream=True)
    assert not conn.streams and not conn.closed
    assert not goaways(conn)  # one GOAWAY, however many resets follow


def test_after_500_streams_half_of_them_must_be_premature() -> None:
    conn, peer = server()
    for i in range(400):  # 400 answered calls
        sid = 1 + 2 * i
        conn.receive_data(peer.headers(sid, REQUEST, end_stream=True))
        conn.send_headers(sid, RESPONSE, end_stream=True)
    conn.data_to_send()
    assert not of(rapid_resets(conn, peer, 249, first=801), ConnectionTerminated)  # 649 closed, 249 premature
    assert not of(rapid_resets(conn, peer, 150, first=1299), ConnectionTerminated)  # 799 closed, 399 premature
    assert of(rapid_resets(conn, peer, 1, first=1599), ConnectionTerminated)  # 800 closed, 400 premature


def test_limits_from_settings() -> None:
    conn, peer = server(H2Settings(premature_reset_total_stream_count=10))
    assert not of(rapid_resets(conn, peer, 4), ConnectionTerminated)
    assert of(rapid_resets(conn, peer, 1, first=9), ConnectionTerminated)


def test_resets_after_the_minimum_lifetime_are_not_premature() -> None:
    """Envoy counts a reset as premature only within premature_reset_min_stream_lifetime_seconds (1 s) of
    the stream's start: a client cancelling calls that waited longer is not attacking."""
    conn, peer = server(H2Settings(premature_reset_min_stream_lifetime=0.0))
    assert not of(rapid_resets(conn, peer, 1000), ConnectionTerminated)
    assert not conn.premature_reset_goaway and not goaways(conn)


def test_resets_after_a_response_started_do_not_count_as_rapid() -> None:
    conn, peer = server()
    for i in range(400):
        sid = 1 + 2 * i
        conn.receive_data(peer.headers(sid, REQUEST))
        conn.send_headers(sid, RESPONSE)
        events = conn.receive_data(raw(fr.RST_STREAM, 0, sid, u32(8)))
        assert [type(e) for e in events] == [StreamReset]
        conn.data_to_send()
    assert not conn.closed and not conn.premature_reset_goaway


def test_a_client_engine_never_counts_resets() -> None:
    conn, _ = client()
    for _ in range(300):
        sid = conn.get_next_stream_id()
        conn.send_headers(sid, REQUEST, end_stream=True)
        conn.receive_data(raw(fr.RST_STREAM, 0, sid, u32(8)))
    assert not conn.closed and not conn.premature_reset_goaway


# ------------------------------------------------------------------------------------------- preface


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http1"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\0" * 20, id="tls-client-hello"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r", id="almost"),
        pytest.param(b"PRI * HTTP/1.1\r\n", id="wrong-prefix-short"),
    ],
)
def test_invalid_client_preface_is_a_connection_error(data: bytes) -> None:
    conn = H2Connection(client_side=False)
    conn.initiate_connection()
    conn.data_to_send()
    assert_connection_error(conn, conn.receive_data(data), PE)


def test_preface_in_single_bytes_is_fine() -> None:
    conn = H2Connection(client_side=False)
    conn.initiate_connection()
    conn.data_to_send()
    data = fr.PREFACE + settings()
    events = []
    for i in range(len(data)):
        events += conn.receive_data(data[i:i + 1])
    assert not of(events, ConnectionTerminated)
    assert not conn.closed


@pytest.mark.parametrize("client_side", [False, True], ids=["server", "client"])
def test_first_frame_other_than_settings_is_a_connection_error(client_side: bool) -> None:
    conn = H2Connection(client_side=client_side)
    conn.initiate_connection()
    conn.data_to_send()
    data = (b"" if client_side else fr.PREFACE) + raw(fr.PING, 0, 0, b"12345678")
    assert_connection_error(conn, conn.receive_data(data), PE)


# ------------------------------------------------------------------------------------------- misc


def test_unknown_frame_types_and_flags_are_ignored() -> None:
    conn, _ = opened()
    data = raw(0x20, 0xFF, 0, b"whatever") + raw(0xFA, 0, 1, b"x" * 100)
    data += raw(fr.DATA, 0xF0 | fr.FLAG_END_STREAM, 1, b"body")  # undefined flags
    events = conn.receive_data(data)
    assert [(type(e), getattr(e, "data", None)) for e in events] == [(DataReceived, b"body")]
    assert_no_error(conn, [])


def test_goaway_received_by_a_server_is_reported() -> None:
    conn, _ = opened()
    events = conn.receive_data(raw(fr.GOAWAY, 0, 0, u32(0) + u32(ErrorCode.NO_ERROR) + b"debug"))
    [term] = of(events, ConnectionTerminated)
    assert (term.local, term.last_stream_id, term.additional_data) == (False, 0, b"debug")
    assert 1 in conn.streams  # streams the peer itself opened are unaffected


def test_header_list_too_large_is_reported_and_hpack_state_kept() -> None:
    conn, peer = server(H2Settings(max_header_list_size=1000))
    big = [*REQUEST, (b"x-big", b"v" * 1500)]
    events = conn.receive_data(peer.headers(1, big, end_stream=True))
    assert [type(e) for e in events] == [HeaderListTooLarge]
    assert 1 in conn.streams  # the application answers 431 (or resets)
    conn.send_headers(1, [(b":status", b"431")], end_stream=True)
    [req] = of(conn.receive_data(peer.headers(3, REQUEST, end_stream=True)), HeadersReceived)
    assert req.headers == REQUEST


def test_events_before_a_connection_error_in_the_same_chunk_are_kept() -> None:
    conn, peer = server()
    events = conn.receive_data(peer.headers(1, REQUEST) + peer.data(1, b"ok") + raw(fr.DATA, 0, 0, b"x"))
    assert [type(e) for e in events] == [HeadersReceived, DataReceived, ConnectionTerminated]
    assert_connection_error(conn, events, PE)


def test_split_frames_across_calls_are_reassembled() -> None:
    conn, peer = server()
    data = peer.headers(1, POST_BODY) + peer.data(1, b"abcd", end_stream=True)
    events = []
    for i in range(0, len(data), 3):
        events += conn.receive_data(data[i:i + 3])
    assert [type(e) for e in events] == [HeadersReceived, DataReceived]
    assert of(events, DataReceived)[0].data == b"abcd"

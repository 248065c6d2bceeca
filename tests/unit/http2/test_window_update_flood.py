"""WINDOW_UPDATE flood (Envoy's max_inbound_window_update_frames_per_data_frame_sent)."""

from __future__ import annotations

from pyproxy.http2 import frames as fr
from pyproxy.http2.connection import H2Settings
from pyproxy.http2.frames import ErrorCode
from tests.unit.http2.helpers import assert_connection_error, raw, server, u32


def test_window_updates_beyond_what_our_data_warrants_end_the_connection() -> None:
    conn, _ = server(H2Settings(max_window_updates_per_data=10))
    # Envoy's formula: 5 + 2 * (streams + 10 * DATA frames sent) = 5 before any stream or DATA.
    events = conn.receive_data(raw(fr.WINDOW_UPDATE, 0, 0, u32(1)) * 5)
    assert not conn.closed, events
    conn.data_to_send()
    events = conn.receive_data(raw(fr.WINDOW_UPDATE, 0, 0, u32(1)))
    assert_connection_error(conn, events, ErrorCode.ENHANCE_YOUR_CALM)


def test_window_updates_answering_our_data_are_fine() -> None:
    conn, _ = server(H2Settings(max_window_updates_per_data=10))
    headers = raw(fr.HEADERS, fr.FLAG_END_HEADERS | fr.FLAG_END_STREAM, 1,
                  bytes([0x83, 0x86, 0x84, 0x41, 0x01]) + b"a")  # POST, http, /, authority "a"
    conn.receive_data(headers)
    conn.send_headers(1, [(b":status", b"200")])
    for _ in range(50):  # our DATA frames, each answered by the peer with 2 WINDOW_UPDATEs
        conn.send_data(1, b"x")
        conn.receive_data(raw(fr.WINDOW_UPDATE, 0, 0, u32(1)) + raw(fr.WINDOW_UPDATE, 0, 1, u32(1)))
    assert not conn.closed

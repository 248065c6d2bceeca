"""Shared helpers: raw frames, parsing our output, handshakes, error assertions, an ``h2`` pump."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TypeVar

import h2.config
import h2.connection
import h2.events
import hpack
from hyperframe.frame import Frame, GoAwayFrame, RstStreamFrame, SettingsFrame

from pyproxy.http2 import frames as fr
from pyproxy.http2.connection import H2Connection, H2Settings
from pyproxy.http2.events import ConnectionTerminated, Event, StreamReset
from pyproxy.http2.hpack import Header

_HEAD = struct.Struct(">HBBBL")
T = TypeVar("T")

REQUEST: list[Header] = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/payment.PaymentService/Charge"),
    (b":authority", b"payment:8080"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]
RESPONSE: list[Header] = [(b":status", b"200"), (b"content-type", b"application/grpc")]
TRAILERS: list[Header] = [(b"grpc-status", b"0"), (b"grpc-message", b"")]


def raw(ftype: int, flags: int, sid: int, payload: bytes = b"", length: int | None = None) -> bytes:
    """Any frame, valid or not: ``length`` overrides the header's length field."""
    n = len(payload) if length is None else length
    return _HEAD.pack(n >> 8, n & 0xFF, ftype, flags, sid) + payload


def settings(values: dict[int, int] | None = None, ack: bool = False) -> bytes:
    return fr.settings_frame(values, ack=ack)


def u32(value: int) -> bytes:
    return struct.pack(">L", value)


def parse(data: bytes) -> list[Frame]:
    """Every frame in ``data`` (a leading client preface is skipped). Fails on trailing partial frames."""
    if data.startswith(fr.PREFACE):
        data = data[len(fr.PREFACE):]
    out: list[Frame] = []
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        frame, length = Frame.parse_frame_header(view[pos:pos + 9])
        assert pos + 9 + length <= len(data), "truncated frame in our own output"
        frame.parse_body(view[pos + 9:pos + 9 + length])
        out.append(frame)
        pos += 9 + length
    return out


class RawPeer:
    """The other end, written by hand: an HPACK encoder (the ``hpack`` reference) plus frame builders."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()

    def block(self, headers: Sequence[Header], huffman: bool = False) -> bytes:
        return bytes(self.encoder.encode(list(headers), huffman=huffman))

    def headers(self, sid: int, headers: Sequence[Header], end_stream: bool = False,
                end_headers: bool = True, flags: int = 0) -> bytes:
        f = flags | (fr.FLAG_END_STREAM if end_stream else 0) | (fr.FLAG_END_HEADERS if end_headers else 0)
        return raw(fr.HEADERS, f, sid, self.block(headers))

    @staticmethod
    def data(sid: int, payload: bytes, end_stream: bool = False) -> bytes:
        return raw(fr.DATA, fr.FLAG_END_STREAM if end_stream else 0, sid, payload)


def server(local: H2Settings | None = None, peer_settings: dict[int, int] | None = None,
           ) -> tuple[H2Connection, RawPeer]:
    """Our server engine after the client preface and an (empty) SETTINGS from a raw client."""
    conn = H2Connection(client_side=False, settings=local)
    conn.initiate_connection()
    out = parse(conn.data_to_send())
    assert isinstance(out[0], SettingsFrame) and "ACK" not in out[0].flags
    events = conn.receive_data(fr.PREFACE + settings(peer_settings))
    assert not any(isinstance(e, ConnectionTerminated) for e in events)
    assert [type(f) for f in parse(conn.data_to_send())] == [SettingsFrame]  # the ACK
    return conn, RawPeer()


def client(local: H2Settings | None = None, peer_settings: dict[int, int] | None = None,
           ) -> tuple[H2Connection, RawPeer]:
    """Our client engine after the server's SETTINGS (a raw server)."""
    conn = H2Connection(client_side=True, settings=local)
    conn.initiate_connection()
    assert conn.data_to_send().startswith(fr.PREFACE)
    events = conn.receive_data(settings(peer_settings))
    assert not any(isinstance(e, ConnectionTerminated) for e in events)
    assert [type(f) for f in parse(conn.data_to_send())] == [SettingsFrame]
    return conn, RawPeer()


def assert_connection_error(conn: H2Connection, events: list[Event], code: int) -> None:
    """A GOAWAY with ``code`` was queued, ConnectionTerminated(local=True) reported, the engine is closed."""
    terminated = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert terminated, f"no connection error; events: {events}"
    assert terminated[-1].local and terminated[-1].error_code == code, terminated[-1]
    goaways = [f for f in parse(conn.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert [g.error_code for g in goaways] == [code]
    assert conn.closed
    assert conn.receive_data(fr.ping_frame(b"12345678")) == []  # nothing more is processed
    assert conn.data_to_send() == b""


def assert_stream_error(conn: H2Connection, events: list[Event], sid: int, code: int) -> None:
    """RST_STREAM(sid, code) was queued, no GOAWAY; the stream is gone."""
    assert not any(isinstance(e, ConnectionTerminated) for e in events), events
    out = parse(conn.data_to_send())
    assert not any(isinstance(f, GoAwayFrame) for f in out), out
    rsts = [(f.stream_id, f.error_code) for f in out if isinstance(f, RstStreamFrame)]
    assert rsts == [(sid, code)], out
    assert sid not in conn.streams
    assert not conn.closed
    resets = [e for e in events if isinstance(e, StreamReset) and e.stream_id == sid]
    assert all(not e.remote and e.error_code == code for e in resets), resets


def assert_no_error(conn: H2Connection, events: list[Event]) -> list[Frame]:
    """Neither RST_STREAM nor GOAWAY queued; returns the frames that were."""
    assert not any(isinstance(e, (ConnectionTerminated, StreamReset)) for e in events), events
    out = parse(conn.data_to_send())
    assert not any(isinstance(f, (GoAwayFrame, RstStreamFrame)) for f in out), out
    return out


# ------------------------------------------------------------------------------------------- h2 as the peer


def h2_peer(client_side: bool) -> h2.connection.H2Connection:
    return h2.connection.H2Connection(h2.config.H2Configuration(client_side=client_side, header_encoding=None))


def pump(ours: H2Connection, theirs: h2.connection.H2Connection, rounds: int = 64,
         ) -> tuple[list[Event], list[h2.events.Event]]:
    """Move bytes both ways until neither side has anything to send; returns (our events, h2's events)."""
    mine: list[Event] = []
    peer: list[h2.events.Event] = []
    for _ in range(rounds):
        a = ours.data_to_send()
        if a:
            peer += theirs.receive_data(a)
        b = theirs.data_to_send()
        if b:
            mine += ours.receive_data(b)
        if not a and not b:
            return mine, peer
    raise AssertionError(f"no quiescence after {rounds} rounds")


def connected_to_h2(ours_client: bool, local: H2Settings | None = None,
                    ) -> tuple[H2Connection, h2.connection.H2Connection, list[Event], list[h2.events.Event]]:
    """Our engine and an h2 peer after the preface and SETTINGS exchange (both ACKed)."""
    ours = H2Connection(client_side=ours_client, settings=local)
    theirs = h2_peer(client_side=not ours_client)
    ours.initiate_connection()
    theirs.initiate_connection()
    mine, peer = pump(ours, theirs)
    return ours, theirs, mine, peer


def of(events: Sequence[object], cls: type[T]) -> list[T]:
    """The events of one class, in order."""
    return [e for e in events if isinstance(e, cls)]

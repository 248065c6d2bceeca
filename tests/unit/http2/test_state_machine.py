"""Hypothesis: hostile frame sequences never break the engine; our client and server engines reproduce exactly
what the other side sent.

1. Random sequences of valid and invalid frames (any type, stream, flags, length) from a raw peer, cut into
   random chunks, against our server and our client engines: ``receive_data`` never raises, after a
   connection error nothing more is processed, the output always parses as well-formed frames, the flow-control
   windows stay within RFC 9113 6.9 bounds, the same bytes cut differently give the same events and output.
2. A rule-based state machine drives a client engine and a server engine of ours over one connection
   (streams opened, bodies within the windows, trailers, 1xx, resets, acknowledgements, random chunking);
   after each delivery each side's events reproduce exactly what the other side sent.
"""

from __future__ import annotations

import random
from typing import Any

import hpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pyproxy.http2 import frames as fr
from pyproxy.http2.connection import H2Connection, H2Settings
from pyproxy.http2.events import (
    INFORMATIONAL,
    REQUEST,
    RESPONSE,
    TRAILERS,
    ConnectionTerminated,
    DataReceived,
    Event,
    HeadersReceived,
    StreamReset,
)
from pyproxy.http2.frames import ErrorCode
from pyproxy.http2.hpack import Header
from tests.unit.http2.helpers import REQUEST as REQ
from tests.unit.http2.helpers import RESPONSE as RESP
from tests.unit.http2.helpers import parse, raw, u32
from tests.unit.http2.helpers import settings as settings_frame

MAX = fr.MAX_WINDOW
SMALL = H2Settings(initial_window=65535, initial_connection_window=65535, max_concurrent_streams=50)

# ------------------------------------------------------------------------------------------- hostile frames

HEADER_LISTS: list[list[Header]] = [
    REQ,
    RESP,
    [(b"grpc-status", b"0")],
    [(b":method", b"GET")],  # missing pseudo-headers
    [*REQ, (b"connection", b"close")],
    [*REQ, (b"content-length", b"3")],
    [(b":status", b"100")],
    [*REQ, (b"Upper", b"x")],
]
_encoder = hpack.Encoder()
BLOCKS = [bytes(_encoder.encode(h)) for h in HEADER_LISTS] + [b"", b"\xbe", b"\x82\x84\x86", b"\x3f\xe1\x1f"]

stream_ids = st.sampled_from([0, 1, 2, 3, 5, 7, 9, 2**31 - 1])
flag_bits = st.integers(0, 255)


@st.composite
def hostile_frame(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["headers", "continuation", "data", "priority", "rst", "settings", "ping",
                                 "goaway", "window_update", "push_promise", "unknown", "garbage"]))
    sid = draw(stream_ids)
    flags = draw(flag_bits)
    if kind in ("headers", "continuation", "push_promise"):
        block = draw(st.sampled_from(BLOCKS))
        if draw(st.booleans()):
            cut = draw(st.integers(0, len(block)))
            block = block[:cut]
        prefix = b""
        if kind == "push_promise":
            prefix = u32(draw(stream_ids))
        elif flags & fr.FLAG_PADDED:
            prefix = bytes([draw(st.integers(0, 20))])
        if kind == "headers" and flags & fr.FLAG_PRIORITY:
            prefix += u32(draw(stream_ids)) + b"\x10"
        ftype = {"headers": fr.HEADERS, "continuation": fr.CONTINUATION, "push_promise": fr.PUSH_PROMISE}[kind]
        return raw(ftype, flags, sid, prefix + block + b"\0" * draw(st.integers(0, 3)))
    if kind == "data":
        n = draw(st.sampled_from([0, 1, 10, 1000, 16384, 16385]))
        return raw(fr.DATA, flags, sid, bytes([draw(st.integers(0, 255))]) + b"d" * max(n - 1, 0) if n else b"")
    if kind == "priority":
        return raw(fr.PRIORITY, 0, sid, u32(draw(stream_ids)) + b"\x10" + b"\0" * draw(st.sampled_from([0, 0, 1])))
    if kind == "rst":
        return raw(fr.RST_STREAM, 0, sid, u32(draw(st.integers(0, 14)))[: draw(st.sampled_from([4, 4, 3]))])
    if kind == "settings":
        if flags & fr.FLAG_ACK and draw(st.booleans()):
            return raw(fr.SETTINGS, fr.FLAG_ACK, sid, b"")
        ident = draw(st.integers(0, 9))
        value = draw(st.sampled_from([0, 1, 2, 100, 16383, 16384, 65535, 2**24 - 1, 2**24, 2**31 - 1, 2**31]))
        return raw(fr.SETTINGS, flags & fr.FLAG_ACK, sid, struct_setting(ident, value))
    if kind == "ping":
        return raw(fr.PING, flags & fr.FLAG_ACK, sid, b"p" * draw(st.sampled_from([8, 8, 7])))
    if kind == "goaway":
        return raw(fr.GOAWAY, 0, sid, u32(draw(stream_ids)) + u32(draw(st.integers(0, 14))) + b"dbg")
    if kind == "window_update":
        inc = draw(st.sampled_from([0, 1, 1000, 65535, 2**31 - 1, 2**31 + 5]))
        return raw(fr.WINDOW_UPDATE, 0, sid, u32(inc & 0xFFFFFFFF)[: draw(st.sampled_from([4, 4, 3]))])
    if kind == "unknown":
        return raw(draw(st.integers(10, 255)), flags, sid, draw(st.binary(max_size=20)))
    return draw(st.binary(min_size=1, max_size=30))


def struct_setting(ident: int, value: int) -> bytes:
    return ident.to_bytes(2, "big") + (value & 0xFFFFFFFF).to_bytes(4, "big")


def check_engine(conn: H2Connection) -> None:
    """Flow-control bounds of RFC 9113 6.9 and the bookkeeping the engine relies on."""
    assert 0 <= conn.inbound_window <= MAX
    assert conn.outbound_window <= MAX
    for sid, s in conn.streams.items():
        assert s.id == sid
        assert s.outbound_window <= MAX
        # Negative only by what SETTINGS_INITIAL_WINDOW_SIZE took away after data was sent.
        assert s.outbound_window >= conn.remote_initial_window - MAX
        assert 0 <= s.inbound_window <= MAX
        assert 0 <= conn.max_send(sid) <= max(s.outbound_window, 0)
    assert conn.open_local_streams + conn.open_remote_streams == len(conn.streams)


def play(conn: H2Connection, data: bytes, cuts: list[int], app: random.Random | None) -> tuple[list[str], bytes]:
    """Feed ``data`` cut at ``cuts``; returns (events, output). With ``app``, act like a well-behaved
    application in between: acknowledge data, answer requests, send what the windows allow."""
    seen: list[str] = []
    out = bytearray()
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    terminated = False
    for piece in pieces:
        events = conn.receive_data(piece)
        if terminated:
            assert events == []
        for ev in events:
            seen.append(repr(ev))
            if isinstance(ev, ConnectionTerminated) and ev.local:
                terminated = True
                assert conn.closed
            elif app is None:
                continue
            elif isinstance(ev, DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, HeadersReceived) and ev.kind == REQUEST and ev.stream_id in conn.streams:
                conn.send_headers(ev.stream_id, RESP)
        if app is not None:
            for sid, stream in list(conn.streams.items()):  # send what the windows allow
                if not stream.send_closed and stream.send_headers:
                    n = min(conn.max_send(sid), app.randint(0, 3000))
                    if n:
                        conn.send_data(sid, b"r" * n, end_stream=app.random() < 0.2)
        check_engine(conn)
        chunk = conn.data_to_send()
        parse(chunk)  # always well-formed frames
        out += chunk
    return seen, bytes(out)


def fresh(client_side: bool) -> H2Connection:
    conn = H2Connection(client_side=client_side, settings=SMALL)
    conn.initiate_connection()
    conn.data_to_send()
    if client_side:
        conn.receive_data(settings_frame())
        conn.send_headers(1, REQ)
        conn.send_headers(3, REQ, end_stream=True)
    else:
        conn.receive_data(fr.PREFACE + settings_frame())
    conn.data_to_send()
    return conn


hostile = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@hostile
@given(st.booleans(), st.lists(hostile_frame(), min_size=1, max_size=25), st.data())
def test_hostile_frames_with_an_active_application_never_raise(
        client_side: bool, frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frames)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=8))))
    play(fresh(client_side), stream, cuts, random.Random(data.draw(st.integers(0, 1000))))


@hostile
@given(st.booleans(), st.lists(hostile_frame(), min_size=1, max_size=25), st.data())
def test_how_the_bytes_are_cut_does_not_matter(client_side: bool, frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frames)
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=8))))
    whole = play(fresh(client_side), stream, [], None)
    cut = play(fresh(client_side), stream, cuts, None)
    assert whole == cut


@hostile
@given(st.lists(hostile_frame(), min_size=1, max_size=25))
def test_after_a_connection_error_nothing_more_is_processed(frames: list[bytes]) -> None:
    conn = fresh(client_side=False)
    for frame in frames:
        events = conn.receive_data(frame)
        if conn.closed:
            assert [e.local for e in events if isinstance(e, ConnectionTerminated)] == [True]
            conn.data_to_send()
            assert conn.receive_data(raw(fr.PING, 0, 0, b"12345678") + frame) == []
            assert conn.data_to_send() == b""
            return


@hostile
@given(st.lists(st.sampled_from([-(2**31), -1000, -1, 0, 1, 1000, 2**30]), min_size=1, max_size=8))
def test_initial_window_size_changes_move_every_stream_window(deltas: list[int]) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE changes apply the difference to every stream window (negative allowed),
    a change overflowing one is a FLOW_CONTROL_ERROR, a value above 2^31-1 is rejected."""
    conn = fresh(client_side=True)
    conn.send_data(1, b"x" * 30000)
    conn.data_to_send()
    expected = 65535 - 30000
    initial = 65535
    for delta in deltas:
        new = initial + delta
        events = conn.receive_data(settings_frame({fr.Setting.INITIAL_WINDOW_SIZE: new & 0xFFFFFFFF}))
        if not 0 <= new <= MAX:
            assert conn.closed and [e.error_code for e in events if isinstance(e, ConnectionTerminated)] == [
                ErrorCode.FLOW_CONTROL_ERROR]
            return
        initial = new
        expected += delta
        assert conn.streams[1].outbound_window == expected
        assert conn.streams[3].outbound_window == new
        assert conn.max_send(1) == max(0, min(expected, conn.outbound_window))
        check_engine(conn)


# ------------------------------------------------------------------------------------------- our <-> our

field_names = st.sampled_from([b"x-a", b"x-b", b"user-agent", b"grpc-encoding", b"x-trace", b"accept"])
field_values = st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"").replace(b"\r", b"").replace(b"\n", b"")
                                          .strip(b" \t"))
extra_fields = st.lists(st.tuples(field_names, field_values), max_size=4)
Item = tuple[str, Any, bool]
# Small bodies, and sizes around the frame size and the windows (so that windows fill up and must reopen).
sizes = st.one_of(st.integers(0, 100), st.sampled_from([16383, 16384, 16385, 40000, 65535, 70000]))
ends = st.sampled_from([False, False, False, True])  # streams stay open for a while


def normalise(items: list[Item]) -> list[Item]:
    """Merge consecutive DATA items (frames may be cut differently than the sends)."""
    out: list[Item] = []
    for kind, value, end in items:
        if kind == "D" and out and out[-1][0] == "D":
            out[-1] = ("D", out[-1][1] + value, end)
        else:
            out.append((kind, value, end))
    return out


class Exchange(RuleBasedStateMachine):
    """Our client engine <-> our server engine; what each side reports must be what the other sent."""

    def __init__(self) -> None:
        super().__init__()
        self.c = H2Connection(client_side=True, settings=SMALL)
        self.s = H2Connection(client_side=False, settings=SMALL)
        self.sent: dict[tuple[str, int], list[Item]] = {}  # ("c"|"s", sid) -> what that side sent
        self.got: dict[tuple[str, int], list[Item]] = {}  # ("c"|"s", sid) -> what that side received
        self.resets: set[int] = set()
        self.acks: dict[str, list[tuple[int, int]]] = {"c": [], "s": []}

    @initialize()
    def handshake(self) -> None:
        self.c.initiate_connection()
        self.s.initiate_connection()
        for _ in range(3):
            self.s.receive_data(self.c.data_to_send())
            self.c.receive_data(self.s.data_to_send())

    # --- helpers

    def pick(self, data: st.DataObject, conn: H2Connection, sending: bool, headers_sent: bool | None) -> int | None:
        choices = sorted(sid for sid, s in conn.streams.items()
                         if (not sending or not s.send_closed)
                         and (headers_sent is None or s.send_headers == headers_sent))
        return data.draw(st.sampled_from(choices)) if choices else None

    def record(self, side: str, sid: int, item: Item) -> None:
        self.sent.setdefault((side, sid), []).append(item)

    def deliver(self, src: H2Connection, dst: H2Connection, side: str, data: st.DataObject) -> None:
        payload = src.data_to_send()
        cuts = sorted(set(data.draw(st.lists(st.integers(0, len(payload)), max_size=3))))
        ack_now = data.draw(st.booleans())
        for a, b in zip([0, *cuts], [*cuts, len(payload)], strict=True):
            for ev in dst.receive_data(payload[a:b]):
                self.on_event(dst, side, ev, ack_now)
        other = "c" if side == "s" else "s"
        for (who, sid), items in self.sent.items():
            if who == other and sid not in self.resets:
                assert normalise(self.got.get((side, sid), [])) == normalise(items), (sid, side)

    def on_event(self, conn: H2Connection, side: str, ev: Event, ack_now: bool) -> None:
        assert not isinstance(ev, ConnectionTerminated), ev
        if isinstance(ev, HeadersReceived):
            previous = self.got.get((side, ev.stream_id), [])
            if side == "s":
                assert ev.kind == (TRAILERS if previous else REQUEST)
            else:
                assert ev.kind in (INFORMATIONAL, RESPONSE, TRAILERS)
            self.got.setdefault((side, ev.stream_id), []).append(("H", ev.headers, ev.end_stream))
        elif isinstance(ev, DataReceived):
            self.got.setdefault((side, ev.stream_id), []).append(("D", ev.data, ev.end_stream))
            if ack_now:
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            else:
                self.acks[side].append((ev.flow_controlled_length, ev.stream_id))
        elif isinstance(ev, StreamReset):
            assert ev.remote and ev.stream_id in self.resets, ev

    # --- rules

    @precondition(lambda self: self.c.can_open_stream() and len(self.c.streams) < 10)
    @rule(extra=extra_fields, end=ends)
    def open_stream(self, extra: list[Header], end: bool) -> None:
        sid = self.c.get_next_stream_id()
        headers = [*REQ, *extra]
        self.c.send_headers(sid, headers, end_stream=end)
        self.record("c", sid, ("H", headers, end))

    @precondition(lambda self: self.c.can_open_stream() and len(self.c.streams) < 10)
    @rule(size=sizes, end=ends)
    def open_stream_with_a_body(self, size: int, end: bool) -> None:
        sid = self.c.get_next_stream_id()
        self.c.send_headers(sid, REQ)
        self.record("c", sid, ("H", REQ, False))
        self._send_data(self.c, "c", sid, size, end)

    def _send_data(self, conn: H2Connection, side: str, sid: int | None, size: int, end: bool) -> None:
        if sid is None:
            return
        n = min(size, conn.max_send(sid))
        if n == 0 and not end:
            return  # an empty DATA frame without END_STREAM is what the flood check counts
        body = bytes((sid + i) & 0xFF for i in range(n))
        conn.send_data(sid, body, end_stream=end)
        self.record(side, sid, ("D", body, end))

    @rule(data=st.data(), size=sizes, end=ends)
    def client_data(self, data: st.DataObject, size: int, end: bool) -> None:
        self._send_data(self.c, "c", self.pick(data, self.c, True, None), size, end)

    @rule(data=st.data(), size=sizes, end=ends)
    def server_data(self, data: st.DataObject, size: int, end: bool) -> None:
        self._send_data(self.s, "s", self.pick(data, self.s, True, True), size, end)

    @rule(data=st.data(), extra=extra_fields, end=ends, informational=st.booleans())
    def server_respond(self, data: st.DataObject, extra: list[Header], end: bool, informational: bool) -> None:
        sid = self.pick(data, self.s, True, False)
        if sid is None:
            return
        if informational:
            self.s.send_headers(sid, [(b":status", b"103"), *extra])
            self.record("s", sid, ("H", [(b":status", b"103"), *extra], False))
        headers = [*RESP, *extra]
        self.s.send_headers(sid, headers, end_stream=end)
        self.record("s", sid, ("H", headers, end))

    @rule(data=st.data(), extra=extra_fields, side=st.sampled_from(["c", "s"]))
    def trailers(self, data: st.DataObject, extra: list[Header], side: str) -> None:
        conn = self.c if side == "c" else self.s
        sid = self.pick(data, conn, True, True)
        if sid is None:
            return
        headers = [(b"grpc-status", b"0"), *extra]
        conn.send_headers(sid, headers, end_stream=True)
        self.record(side, sid, ("H", headers, True))

    @rule(data=st.data(), side=st.sampled_from(["c", "s"]),
          code=st.sampled_from([ErrorCode.CANCEL, ErrorCode.INTERNAL_ERROR, ErrorCode.NO_ERROR]))
    def reset(self, data: st.DataObject, side: str, code: int) -> None:
        conn = self.c if side == "c" else self.s
        sid = self.pick(data, conn, False, None)
        if sid is None:
            return
        self.resets.add(sid)
        conn.reset_stream(sid, code)

    @rule(data=st.data())
    def client_to_server(self, data: st.DataObject) -> None:
        self.deliver(self.c, self.s, "s", data)

    @rule(data=st.data())
    def server_to_client(self, data: st.DataObject) -> None:
        self.deliver(self.s, self.c, "c", data)

    @rule(data=st.data())
    def until_quiet(self, data: st.DataObject) -> None:
        """Deliver both ways until neither side has anything to send (WINDOW_UPDATEs included)."""
        for _ in range(6):
            if not (self.c.has_data_to_send or self.s.has_data_to_send):
                return
            self.deliver(self.c, self.s, "s", data)
            self.deliver(self.s, self.c, "c", data)
        raise AssertionError("the engines keep talking")

    @rule(side=st.sampled_from(["c", "s"]))
    def acknowledge(self, side: str) -> None:
        conn = self.c if side == "c" else self.s
        for n, sid in self.acks[side]:
            conn.acknowledge_received_data(n, sid)
        self.acks[side].clear()

    @invariant()
    def windows_in_bounds(self) -> None:
        for conn in (self.c, self.s):
            assert not conn.closed
            check_engine(conn)

    @invariant()
    def both_ends_agree_on_every_window(self) -> None:
        """With nothing in flight, what a sender may still send is exactly what its receiver still accepts."""
        if self.c.has_data_to_send or self.s.has_data_to_send:
            return
        assert self.c.outbound_window == self.s.inbound_window
        assert self.s.outbound_window == self.c.inbound_window
        for sid in self.c.streams.keys() & self.s.streams.keys():
            client_stream, server_stream = self.c.streams[sid], self.s.streams[sid]
            assert client_stream.outbound_window == server_stream.inbound_window, sid
            assert server_stream.outbound_window == client_stream.inbound_window, sid


Exchange.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
TestExchange = Exchange.TestCase

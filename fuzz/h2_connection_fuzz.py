"""The HTTP/2 engine (:mod:`pyproxy.http2.connection`), both sides, fed by a hostile peer.

Input: one mode byte, then either raw peer bytes or a sequence of operations.

- Raw (mode bit 1 clear): the bytes a client sends a server (after the preface, unless bit 4 asks to fuzz the
  preface too) or a server sends a client (which has requests open on streams 1 and 3). They are fed twice,
  to two fresh connections: in one call and in chunks; the events and the output must be the same (frame
  reassembly must not depend on TCP segmentation).
- Operations (bit 1 set): up to :data:`MAX_OPS` of: a peer frame (any type, flags and stream id, with a
  payload that is raw or built to be valid: an HPACK block from the reference ``hpack`` encoder, SETTINGS,
  DATA of a chosen size...), raw peer bytes, and what the proxy does: send headers / data / end the stream,
  reset, acknowledge data, ping, GOAWAY, drain the output. That drives the stream state machine, flow
  control and the flood counters, not only the frame parser.

Contract checked (:mod:`pyproxy.http2`'s docstring): ``receive_data`` never raises; bad peer input ends as
``ConnectionTerminated(local=True)`` with a GOAWAY queued or ``StreamReset(remote=False)`` with an
RST_STREAM queued. Caller misuse raises only ``StreamStateError``. Also: every output frame is well-formed
(whole, on the right stream, WINDOW_UPDATE increments in 1..2^31-1), windows never exceed 2^31-1, the open
stream counters match the stream table, events fit the side (requests on the server, responses on the client).
Flow control against a model of the peer (operations mode): the connection window we keep equals the one
our WINDOW_UPDATEs gave the peer minus what it sent, and DATA within the windows the peer was given is never
a FLOW_CONTROL_ERROR.
"""

from __future__ import annotations

import struct

import hpack as ref_hpack

from fuzz._input import Input
from pyproxy.http2 import frames as fr
from pyproxy.http2.connection import H2Connection, H2Settings, StreamStateError
from pyproxy.http2.events import (
    INFORMATIONAL,
    REQUEST,
    RESPONSE,
    TRAILERS,
    ConnectionTerminated,
    DataReceived,
    Event,
    HeaderListTooLarge,
    HeadersReceived,
    PingAcknowledged,
    RemoteSettingsChanged,
    StreamReset,
    WindowUpdated,
)
from pyproxy.http2.hpack import Header

MAX_OPS = 64
_HEAD = struct.Struct(">HBBBL")
_KNOWN_EVENTS = (ConnectionTerminated, DataReceived, HeaderListTooLarge, HeadersReceived, PingAcknowledged,
                 RemoteSettingsChanged, StreamReset, WindowUpdated)

# Operations (mode bit 1 set).
OP_FRAME, OP_RAW, OP_SEND_HEADERS, OP_SEND_DATA, OP_END_STREAM, OP_RESET, OP_ACK, OP_PING, OP_GOAWAY, \
    OP_DRAIN = range(10)
N_OPS = 10
# Frame op: type byte bit 7 asks for a payload built to be valid for that type.
STRUCTURED = 0x80


def _settings(variant: int) -> H2Settings:
    if variant == 1:  # tight limits: every flood / size / concurrency check is reachable with little input
        return H2Settings(max_concurrent_streams=2, initial_window=300, initial_connection_window=65535,
                          max_header_list_size=300, header_table_size=0, premature_reset_total_stream_count=6,
                          max_priority_per_stream=2, max_window_updates_per_data=1)
    if variant == 2:  # the other extreme
        return H2Settings(initial_window=fr.MAX_WINDOW, initial_connection_window=fr.MAX_WINDOW,
                          max_frame_size=fr.MAX_MAX_FRAME_SIZE, header_table_size=65536,
                          max_consecutive_empty_frames=0)
    if variant == 3:
        return H2Settings(max_concurrent_streams=0, initial_window=0, max_header_list_size=0,
                          header_table_size=100, max_frame_size=16385)
    return H2Settings()  # the proxy's defaults


# Header vocabulary for peer header blocks: valid templates, then fields that break one rule each.
_REQUEST: list[Header] = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/pkg.Svc/Call"),
                          (b":authority", b"svc:8080"), (b"content-type", b"application/grpc"),
                          (b"te", b"trailers")]
_TEMPLATES: list[list[Header]] = [
    _REQUEST,
    [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a")],
    [(b":method", b"HEAD"), (b":scheme", b"http"), (b":path", b"/h"), (b"host", b"a")],
    [(b":method", b"CONNECT"), (b":authority", b"a:443")],
    [(b":status", b"200"), (b"content-type", b"application/grpc")],
    [(b":status", b"100")],
    [(b":status", b"204")],
    [(b"grpc-status", b"0"), (b"grpc-message", b"")],
    [],
]
_EXTRA: list[Header] = [
    (b"content-length", b"0"), (b"content-length", b"5"), (b"content-length", b"x"), (b"te", b"gzip"),
    (b"connection", b"close"), (b"Upper", b"v"), (b":path", b"/again"), (b":status", b"200"),
    (b":unknown", b"v"), (b"host", b"other"), (b"x", b" lead"), (b"x", b"nul\0"), (b"grpc-timeout", b"1S"),
    (b"authorization", b"secret"), (b"", b""), (b"x-long", b"v" * 200), (b"set-cookie", b"a=b"),
]


class _Harness:
    def __init__(self, client_side: bool, settings: H2Settings) -> None:
        self.conn = H2Connection(client_side=client_side, settings=settings)
        self.client_side = client_side
        self.peer_encoder = ref_hpack.Encoder()
        self.max_frame_seen = fr.DEFAULT_MAX_FRAME_SIZE
        self.first_output = True
        self.pending_resets: set[int] = set()
        self.goaway_owed = False
        self.ever_seen_ids: list[int] = []
        self.sent: list[bytes] = []
        # The peer's view of the flow-control windows it may send into, kept from our WINDOW_UPDATEs and the
        # DATA it sent (operations mode, frames built by frame() only: raw bytes end the model).
        self.model = True
        self.peer_conn_window = fr.DEFAULT_WINDOW
        self.peer_stream_initial = fr.DEFAULT_WINDOW  # our SETTINGS_INITIAL_WINDOW_SIZE once acknowledged
        self.peer_streams: dict[int, int] = {}
        self.last_data: tuple[int, int] | None = None  # (stream id, flow-controlled length) of frame()

    # ----------------------------------------------------------------------------------- checks

    def receive(self, data: bytes, modelled: bool = False) -> list[Event]:
        conn = self.conn
        was_closed = conn.closed
        if not modelled:
            self.model = False
        data_frame = self.last_data if modelled else None
        self.last_data = None
        fits_conn = fits_stream = False
        acked = conn._local_settings_acked
        if self.model:
            for k in conn.streams:  # streams we opened since (client side)
                self.peer_streams.setdefault(k, self.peer_stream_initial)
        if self.model and data_frame is not None:
            sid, length = data_frame
            stream = conn.streams.get(sid)
            fits_conn = length <= self.peer_conn_window
            fits_stream = (fits_conn and stream is not None and stream.recv_headers and not stream.recv_closed
                           and length <= self.peer_streams.get(sid, -1))
        events = conn.receive_data(data)  # must never raise
        if self.model and not conn.closed:
            if data_frame is not None:
                sid, length = data_frame
                self.peer_conn_window -= length  # DATA counts against the connection whatever the stream
                if sid in self.peer_streams:
                    self.peer_streams[sid] -= length
            if conn._local_settings_acked and not acked:  # the peer applies our SETTINGS
                delta = conn.local.initial_window - self.peer_stream_initial
                self.peer_stream_initial = conn.local.initial_window
                for k in self.peer_streams:
                    self.peer_streams[k] += delta
            for k in conn.streams:
                self.peer_streams.setdefault(k, self.peer_stream_initial)
        if fits_conn:
            assert not any(isinstance(e, ConnectionTerminated) and e.local and e.error_code == 3 for e in events), (
                f"FLOW_CONTROL_ERROR for DATA within the connection window the peer was given: {data_frame}")
        if fits_stream:
            assert not any(isinstance(e, StreamReset) and not e.remote and e.error_code == 3 for e in events), (
                f"stream FLOW_CONTROL_ERROR for DATA within the stream window the peer was given: {data_frame}")
        if was_closed:
            assert events == [], "events from a closed connection"
        for i, ev in enumerate(events):
            assert isinstance(ev, _KNOWN_EVENTS), f"unknown event {ev!r}"
            if isinstance(ev, ConnectionTerminated) and ev.local:
                assert conn.closed, "connection error reported but the connection is still open"
                assert i == len(events) - 1, f"events after the connection error: {events[i + 1:]!r}"
                self.goaway_owed = True
            elif isinstance(ev, StreamReset):
                assert ev.stream_id > 0, f"reset of stream {ev.stream_id}"
                assert ev.stream_id not in conn.streams, f"stream {ev.stream_id} reported reset but still open"
                if not ev.remote:
                    self.pending_resets.add(ev.stream_id)
            elif isinstance(ev, HeadersReceived):
                assert ev.stream_id > 0
                if ev.kind == REQUEST:
                    assert not self.client_side, "a request received by a client"
                    assert ev.method, "request without :method reported"
                elif ev.kind in (RESPONSE, INFORMATIONAL):
                    assert self.client_side, "a response received by a server"
                    assert 0 <= ev.status <= 999
                else:
                    assert ev.kind == TRAILERS and ev.end_stream
            elif isinstance(ev, DataReceived):
                assert ev.stream_id > 0 and ev.flow_controlled_length >= len(ev.data)
        self.check_state()
        if self.goaway_owed or self.pending_resets or self.model:
            self.drain()  # the GOAWAY / RST_STREAM must be in what is queued now; WINDOW_UPDATEs for the model
        return events

    def check_state(self) -> None:
        conn = self.conn
        assert conn.open_local_streams >= 0 and conn.open_remote_streams >= 0
        assert len(conn.streams) == conn.open_local_streams + conn.open_remote_streams, (
            f"{len(conn.streams)} streams but {conn.open_local_streams} local + {conn.open_remote_streams} remote")
        assert conn.outbound_window <= fr.MAX_WINDOW and conn.inbound_window <= fr.MAX_WINDOW
        for sid, stream in conn.streams.items():
            assert sid == stream.id and sid > 0
            assert stream.outbound_window <= fr.MAX_WINDOW, f"stream {sid} send window {stream.outbound_window}"
            assert stream.inbound_window <= fr.MAX_WINDOW, f"stream {sid} receive window {stream.inbound_window}"
        self.max_frame_seen = max(self.max_frame_seen, conn.remote_max_frame_size)

    def drain(self) -> None:
        out = self.conn.data_to_send()
        self.sent.append(out)
        if self.first_output and out:
            self.first_output = False
            if self.client_side:
                assert out.startswith(fr.PREFACE), "client output does not start with the preface"
                out = out[len(fr.PREFACE):]
        goaway = False
        resets: set[int] = set()
        pos = 0
        while pos < len(out):
            assert len(out) - pos >= 9, "truncated frame header in our output"
            hi, lo, ftype, flags, sid = _HEAD.unpack_from(out, pos)
            length = (hi << 8) | lo
            payload = out[pos + 9:pos + 9 + length]
            assert len(payload) == length, "truncated frame in our output"
            pos += 9 + length
            assert not sid & 0x80000000, "reserved bit set in our output"
            if ftype in (fr.DATA, fr.HEADERS, fr.CONTINUATION, fr.RST_STREAM):
                assert sid != 0, f"frame type {ftype} on stream 0 in our output"
                if ftype != fr.RST_STREAM:
                    assert length <= self.max_frame_seen, f"{length}-byte frame beyond the peer's maximum"
            if ftype == fr.RST_STREAM:
                assert length == 4
                resets.add(sid)
            elif ftype == fr.WINDOW_UPDATE:
                assert length == 4
                increment = struct.unpack(">L", payload)[0]
                if sid == 0:
                    self.peer_conn_window += increment
                elif sid in self.peer_streams:
                    self.peer_streams[sid] += increment
                assert 1 <= increment <= fr.MAX_WINDOW, f"WINDOW_UPDATE increment {increment}"
            elif ftype in (fr.SETTINGS, fr.PING, fr.GOAWAY):
                assert sid == 0, f"frame type {ftype} on stream {sid} in our output"
                if ftype == fr.SETTINGS:
                    assert length % 6 == 0 and not (flags & fr.FLAG_ACK and length)
                elif ftype == fr.PING:
                    assert length == 8
                else:
                    assert length >= 8
                    goaway = True
            else:
                assert ftype in (fr.DATA, fr.HEADERS, fr.CONTINUATION), f"we sent frame type {ftype}"
        if self.goaway_owed:
            assert goaway, "connection error without GOAWAY"
            self.goaway_owed = False
        missing = self.pending_resets - resets
        assert not missing, f"stream error without RST_STREAM on {sorted(missing)}"
        self.pending_resets.clear()
        if self.model and not self.conn.closed:
            assert self.conn.inbound_window == self.peer_conn_window, (
                f"connection window: ours {self.conn.inbound_window}, the peer was given {self.peer_conn_window}")
            for sid in self.conn.streams:  # streams we opened since the last drain (client side)
                self.peer_streams.setdefault(sid, self.peer_stream_initial)

    # ----------------------------------------------------------------------------------- peer input

    def pick_stream(self, inp: Input) -> int:
        conn = self.conn
        b = inp.byte()
        kind = b & 7
        if kind == 0:
            return 0
        if kind == 1 and conn.streams:
            ids = sorted(conn.streams)
            return ids[(b >> 3) % len(ids)]
        if kind == 2:  # the next stream the peer may open (or ours, for a server peer)
            if self.client_side:
                return conn.get_next_stream_id()
            h = conn.highest_remote_stream_id
            return h + 2 if h else 1
        if kind == 3:
            return conn.get_next_stream_id()
        if kind == 4 and self.ever_seen_ids:
            return self.ever_seen_ids[(b >> 3) % len(self.ever_seen_ids)]
        if kind == 5:
            return (b >> 3) + 1
        return inp.uint(4)

    def header_block(self, inp: Input) -> bytes:
        headers = list(_TEMPLATES[inp.choice(len(_TEMPLATES))])
        flags = inp.byte()
        for _ in range(flags & 3):
            pos = inp.byte()
            field = _EXTRA[inp.choice(len(_EXTRA))]
            headers.insert(pos % (len(headers) + 1), field)
        if flags & 4:
            headers.append((inp.blob(), inp.blob()))
        if flags & 8 and headers:
            del headers[inp.choice(len(headers))]
        try:
            return bytes(self.peer_encoder.encode(headers, huffman=bool(flags & 16)))
        except Exception:  # the reference encoder refuses some fields: send a literal block instead
            return inp.blob()

    def frame(self, inp: Input) -> bytes:
        t = inp.byte()
        ftype = t & 0x0F
        flags = inp.byte()
        sid = self.pick_stream(inp)
        if sid and sid not in self.ever_seen_ids and len(self.ever_seen_ids) < 32:
            self.ever_seen_ids.append(sid)
        if not t & STRUCTURED:
            payload = inp.blob(2 if flags & 0x40 else 1)
        elif ftype in (fr.HEADERS, fr.CONTINUATION):
            block = self.header_block(inp)
            if ftype == fr.HEADERS:
                prefix = b""
                pad = 0
                if flags & fr.FLAG_PADDED:
                    pad = inp.byte() % 32
                    prefix = bytes((pad,))
                if flags & fr.FLAG_PRIORITY:
                    prefix += inp.take(5).ljust(5, b"\0")
                block = prefix + block + b"\0" * pad
            if len(block) > 255 and inp.bool():  # split into HEADERS + CONTINUATION frames
                return fr.headers_frames(sid, block, bool(flags & fr.FLAG_END_STREAM), 128)
            payload = block
        elif ftype == fr.DATA:
            size = inp.uint(2) * (1 + (t >> 4 & 7))  # up to ~512 KiB: windows can be exhausted
            payload = b"d" * min(size, self.conn.local.max_frame_size)
            if flags & fr.FLAG_PADDED:
                payload = bytes((min(inp.byte(), len(payload)),)) + payload
        elif ftype == fr.SETTINGS:
            payload = b"".join(struct.pack(">HL", inp.choice(10), inp.uint(4)) for _ in range(inp.choice(4)))
            flags &= ~fr.FLAG_ACK if not flags & 0x40 else 0xFF
        elif ftype in (fr.WINDOW_UPDATE, fr.RST_STREAM):
            payload = inp.take(4).ljust(4, b"\0")
        elif ftype in (fr.PING, fr.GOAWAY):
            payload = inp.take(8).ljust(8, b"\0") + (inp.blob() if ftype == fr.GOAWAY else b"")
        elif ftype == fr.PRIORITY:
            payload = inp.take(5).ljust(5, b"\0")
        else:
            payload = inp.blob()
        if ftype == fr.DATA and sid & 0x7FFFFFFF and len(payload) <= self.conn.local.max_frame_size:
            self.last_data = (sid & 0x7FFFFFFF, len(payload))
        return _HEAD.pack(len(payload) >> 8 & 0xFFFF, len(payload) & 0xFF, ftype, flags, sid) + payload

    # ----------------------------------------------------------------------------------- our side

    def local_op(self, op: int, inp: Input) -> None:
        conn = self.conn
        if conn.closed and op not in (OP_ACK, OP_DRAIN):
            return  # the proxy stops using a closed connection
        try:
            if op == OP_SEND_HEADERS:
                headers = list(_TEMPLATES[inp.choice(len(_TEMPLATES))])
                end = inp.bool()
                if self.client_side and inp.bool() and conn.can_open_stream():
                    sid = conn.get_next_stream_id()
                else:
                    sid = self.pick_stream(inp)
                conn.send_headers(sid, headers, end_stream=end)
            elif op == OP_SEND_DATA:
                sid = self.pick_stream(inp)
                n = min(inp.uint(2) * 4, conn.max_send(sid))
                conn.send_data(sid, b"x" * n, end_stream=inp.bool())
            elif op == OP_END_STREAM:
                conn.end_stream(self.pick_stream(inp))
            elif op == OP_RESET:
                sid = self.pick_stream(inp)
                known = sid in conn.streams
                conn.reset_stream(sid, inp.choice(16))
                assert sid not in conn.streams
                if known:
                    self.pending_resets.add(sid)
            elif op == OP_ACK:
                how = inp.choice(3)
                n = inp.uint(3)
                sid = self.pick_stream(inp)
                if how == 0:
                    conn.acknowledge_received_data(n, sid)
                elif how == 1:
                    conn.acknowledge_connection(n)
                else:
                    conn.acknowledge_stream(n, sid)
            elif op == OP_PING:
                conn.ping(inp.take(8).ljust(8, b"\0"))
            elif op == OP_GOAWAY:
                last = inp.uint(4) & 0x7FFFFFFF if inp.bool() else None
                conn.send_goaway(inp.choice(14), last_stream_id=last)
            elif op == OP_DRAIN:
                self.drain()
        except StreamStateError:
            pass  # the documented answer to a call the stream's state does not allow
        self.check_state()


def _raw(client_side: bool, settings_variant: int, fuzz_preface: bool, chunk: int, data: bytes) -> None:
    outputs = []
    for chunked in (False, True):
        h = _Harness(client_side, _settings(settings_variant))
        h.conn.initiate_connection()
        if client_side:  # requests in flight on streams 1 and 3, for the server's bytes to answer
            h.conn.send_headers(1, _REQUEST, end_stream=True)
            h.conn.send_headers(3, _REQUEST, end_stream=False)
        h.drain()
        stream = data if (client_side or fuzz_preface) else fr.PREFACE + data
        events: list[Event] = []
        if chunked:
            for pos in range(0, len(stream), chunk):
                events += h.receive(stream[pos:pos + chunk])
        else:
            events = h.receive(stream)
        h.drain()
        outputs.append(([repr(e) for e in events], b"".join(h.sent)))
    assert outputs[0] == outputs[1], f"chunked input (by {chunk}) changed the events or the output"


def run(data: bytes) -> None:
    inp = Input(data)
    mode = inp.byte()
    client_side = bool(mode & 1)
    variant = mode >> 2 & 3
    if not mode & 2:
        _raw(client_side, variant, bool(mode & 16), inp.choice(64) + 1, inp.rest())
        return
    h = _Harness(client_side, _settings(variant))
    h.conn.initiate_connection()
    h.drain()
    if not mode & 16:  # start as a real peer does: preface and SETTINGS (the fuzzer may skip it)
        h.receive((b"" if client_side else fr.PREFACE) + fr.settings_frame({}), modelled=True)
    if mode & 32:  # the peer acknowledges our SETTINGS (applies our smaller window / table size)
        h.receive(fr.settings_frame(ack=True), modelled=True)
    for _ in range(MAX_OPS):
        if not inp.remaining:
            break
        op = inp.choice(N_OPS)
        if op == OP_FRAME:
            h.receive(h.frame(inp), modelled=True)
        elif op == OP_RAW:
            h.receive(inp.blob())
        else:
            h.local_op(op, inp)
    h.drain()

"""Our engine against ``h2`` as the peer, both ways: h2 client <-> our server, our client <-> h2 server.

The raw-frame error rules are in ``test_connection_errors.py`` and the header rules in
``test_connection_headers.py``.
"""

from __future__ import annotations

import h2.events as he
import h2.exceptions
import pytest
from h2.settings import SettingCodes
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, WindowUpdateFrame

from pyproxy.http2 import frames as fr
from pyproxy.http2.connection import H2Connection, H2Settings, StreamStateError
from pyproxy.http2.events import (
    INFORMATIONAL,
    REQUEST,
    RESPONSE,
    TRAILERS,
    ConnectionTerminated,
    DataReceived,
    HeadersReceived,
    PingAcknowledged,
    RemoteSettingsChanged,
    StreamReset,
    WindowUpdated,
)
from pyproxy.http2.frames import ErrorCode
from tests.unit.http2.helpers import REQUEST as REQ
from tests.unit.http2.helpers import RESPONSE as RESP
from tests.unit.http2.helpers import TRAILERS as TRL
from tests.unit.http2.helpers import RawPeer, connected_to_h2, of, parse, pump, raw, settings

SMALL = H2Settings(initial_window=65535, initial_connection_window=65535)

# ------------------------------------------------------------------------------------------- settings


def test_settings_exchange_h2_client_to_our_server() -> None:
    ours, theirs, mine, peer = connected_to_h2(ours_client=False)
    changed = of(peer, he.RemoteSettingsChanged)[0].changed_settings
    assert changed[SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 2**31 - 1
    assert changed[SettingCodes.INITIAL_WINDOW_SIZE].new_value == 1 << 20
    assert changed[SettingCodes.MAX_HEADER_LIST_SIZE].new_value == 60 * 1024
    assert SettingCodes.ENABLE_PUSH not in changed  # only clients send it
    assert of(peer, he.SettingsAcknowledged)  # we ACKed h2's SETTINGS
    assert [(w.stream_id, w.delta) for w in of(peer, he.WindowUpdated)] == [(0, (16 << 20) - 65535)]
    assert theirs.outbound_flow_control_window == 16 << 20
    assert [e.max_concurrent_streams for e in of(mine, RemoteSettingsChanged)] == [100]  # h2's default
    assert ours.remote_max_frame_size == fr.DEFAULT_MAX_FRAME_SIZE
    assert ours.remote_initial_window == 65535
    assert not ours.closed and not theirs.data_to_send()


def test_settings_exchange_our_client_to_h2_server_with_custom_settings() -> None:
    local = H2Settings(max_concurrent_streams=7, initial_window=70000, initial_connection_window=65535,
                       max_frame_size=32768, header_table_size=1024, max_header_list_size=5000)
    _, theirs, mine, peer = connected_to_h2(ours_client=True, local=local)
    rs = theirs.remote_settings
    assert (rs.enable_push, rs.max_concurrent_streams, rs.initial_window_size, rs.max_frame_size,
            rs.header_table_size, rs.max_header_list_size) == (0, 7, 70000, 32768, 1024, 5000)
    assert not of(peer, he.WindowUpdated)  # connection window left at the default
    assert of(mine, RemoteSettingsChanged)
    assert of(peer, he.SettingsAcknowledged)


def test_settings_change_mid_connection_is_acknowledged_and_applied() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=True)
    theirs.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 3, SettingCodes.MAX_FRAME_SIZE: 20000,
                            SettingCodes.HEADER_TABLE_SIZE: 0})
    mine, peer = pump(ours, theirs)
    assert [e.max_concurrent_streams for e in of(mine, RemoteSettingsChanged)] == [3]
    assert of(peer, he.SettingsAcknowledged)
    assert ours.remote_max_concurrent_streams == 3 and ours.remote_max_frame_size == 20000
    # Table size 0: the next header block starts with a size update and h2 still decodes it.
    ours.send_headers(1, REQ, end_stream=True)
    block = ours.data_to_send()
    first = parse(block)[0]
    assert isinstance(first, HeadersFrame) and first.data[:1] == b"\x20"
    req = of(theirs.receive_data(block), he.RequestReceived)[0]
    assert req.headers == REQ


# ------------------------------------------------------------------------------------------- exchanges


def test_request_and_response_with_bodies_h2_client_to_our_server() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=False)
    theirs.send_headers(1, REQ)
    theirs.send_data(1, b"hello ")
    theirs.send_data(1, b"world", end_stream=True)
    mine, _ = pump(ours, theirs)
    req = of(mine, HeadersReceived)[0]
    assert (req.kind, req.stream_id, req.end_stream) == (REQUEST, 1, False)
    assert (req.method, req.scheme, req.path, req.authority) == (b"POST", b"http", REQ[2][1], REQ[3][1])
    assert req.headers == REQ
    data = of(mine, DataReceived)
    assert b"".join(d.data for d in data) == b"hello world"
    assert [d.end_stream for d in data] == [False, True]
    for d in data:
        ours.acknowledge_received_data(d.flow_controlled_length, d.stream_id)

    ours.send_headers(1, RESP)
    ours.send_data(1, b"response body")
    ours.send_headers(1, TRL, end_stream=True)
    _, peer = pump(ours, theirs)
    assert of(peer, he.ResponseReceived)[0].headers == RESP
    assert b"".join(d.data for d in of(peer, he.DataReceived)) == b"response body"
    assert of(peer, he.TrailersReceived)[0].headers == TRL
    assert [e.stream_id for e in of(peer, he.StreamEnded)] == [1]
    assert 1 not in ours.streams and ours.active_streams == 0
    assert ours.open_remote_streams == 0


def test_request_and_response_with_bodies_our_client_to_h2_server() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=True)
    sid = ours.get_next_stream_id()
    assert sid == 1 and ours.can_open_stream()
    ours.send_headers(sid, REQ)
    ours.send_data(sid, b"x" * 40000)  # more than one frame
    ours.send_headers(sid, [(b"x-request-trailer", b"1")], end_stream=True)
    _, peer = pump(ours, theirs)
    assert of(peer, he.RequestReceived)[0].headers == REQ
    received = of(peer, he.DataReceived)
    assert b"".join(d.data for d in received) == b"x" * 40000
    assert of(peer, he.TrailersReceived)[0].headers == [(b"x-request-trailer", b"1")]
    for d in received:
        theirs.acknowledge_received_data(d.flow_controlled_length, sid)

    theirs.send_headers(sid, RESP)
    theirs.send_data(sid, b"abc")
    theirs.send_headers(sid, TRL, end_stream=True)
    mine, _ = pump(ours, theirs)
    heads = of(mine, HeadersReceived)
    assert [(h.kind, h.end_stream) for h in heads] == [(RESPONSE, False), (TRAILERS, True)]
    assert heads[0].status == 200 and heads[0].headers == RESP and heads[1].headers == TRL
    assert [d.data for d in of(mine, DataReceived)] == [b"abc"]
    assert ours.get_next_stream_id() == 3 and not ours.streams


def test_trailers_only_response_both_ways() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=False)
    theirs.send_headers(1, REQ, end_stream=True)
    pump(ours, theirs)
    ours.send_headers(1, [*RESP, (b"grpc-status", b"14")], end_stream=True)
    _, peer = pump(ours, theirs)
    resp = of(peer, he.ResponseReceived)[0]
    assert resp.stream_ended is not None and (b"grpc-status", b"14") in resp.headers

    ours, theirs, _, _ = connected_to_h2(ours_client=True)
    ours.send_headers(1, REQ, end_stream=True)
    pump(ours, theirs)
    theirs.send_headers(1, [*RESP, (b"grpc-status", b"7")], end_stream=True)
    mine, _ = pump(ours, theirs)
    [resp2] = of(mine, HeadersReceived)
    assert (resp2.kind, resp2.end_stream, resp2.status) == (RESPONSE, True, 200)
    assert not ours.streams


def test_informational_responses_both_ways() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=True)
    ours.send_headers(1, REQ, end_stream=True)
    pump(ours, theirs)
    theirs.send_headers(1, [(b":status", b"100")])
    theirs.send_headers(1, [(b":status", b"103"), (b"link", b"</a>")])
    theirs.send_headers(1, RESP, end_stream=True)
    mine, _ = pump(ours, theirs)
    assert [(h.kind, h.status) for h in of(mine, HeadersReceived)] == [
        (INFORMATIONAL, 100), (INFORMATIONAL, 103), (RESPONSE, 200)]

    ours, theirs, _, _ = connected_to_h2(ours_client=False)
    theirs.send_headers(1, REQ, end_stream=True)
    pump(ours, theirs)
    ours.send_headers(1, [(b":status", b"103")])
    ours.send_headers(1, RESP, end_stream=True)
    _, peer = pump(ours, theirs)
    assert [type(e) for e in peer if not isinstance(e, he.StreamEnded)] == [
        he.InformationalResponseReceived, he.ResponseReceived]


def test_ping_both_ways() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=False)
    theirs.ping(b"abcdefgh")
    ours.ping(b"12345678")
    mine, peer = pump(ours, theirs)
    assert [e.ping_data for e in of(peer, he.PingReceived)] == [b"12345678"]  # h2 answered ours
    assert [e.ping_data for e in of(peer, he.PingAckReceived)] == [b"abcdefgh"]  # we answered h2's
    assert [e.payload for e in of(mine, PingAcknowledged)] == [b"12345678"]
    with pytest.raises(ValueError, match="8"):
        ours.ping(b"short")


def test_priority_information_is_accepted_and_ignored() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=False)
    theirs.send_headers(1, REQ, priority_weight=200, priority_depends_on=0, priority_exclusive=True)
    theirs.prioritize(1, weight=10)
    theirs.prioritize(7, weight=5, depends_on=1)  # PRIORITY on an idle stream is allowed
    theirs.send_headers(3, REQ, end_stream=True, priority_weight=16, priority_depends_on=1)
    mine, peer = pump(ours, theirs)
    assert [(h.stream_id, h.headers) for h in of(mine, HeadersReceived)] == [(1, REQ), (3, REQ)]
    assert not of(mine, StreamReset) and not of(mine, ConnectionTerminated)
    assert not of(peer, he.StreamReset)
    # The idle stream 7 can still be opened afterwards.
    theirs.send_headers(7, REQ, end_stream=True)
    mine, _ = pump(ours, theirs)
    assert [h.stream_id for h in of(mine, HeadersReceived)] == [7]


def test_padded_data_is_stripped_and_padding_returned_to_the_window() -> None:
    """300 padded frames carry more padding (76,800 octets) than the 65,535-octet windows: h2 can only send
    them all if the padding (which the application never sees) goes back to both windows by itself."""
    ours, theirs, _, _ = connected_to_h2(ours_client=False, local=SMALL)
    theirs.send_headers(1, REQ)
    pump(ours, theirs)
    received = []
    for i in range(300):
        theirs.send_data(1, b"%03d" % i + b"d" * 97, pad_length=255)
        mine, _ = pump(ours, theirs)
        for d in of(mine, DataReceived):
            assert d.flow_controlled_length == len(d.data) == 100
            received.append(d.data)
            ours.acknowledge_received_data(d.flow_controlled_length, d.stream_id)
        pump(ours, theirs)
    assert received == [b"%03d" % i + b"d" * 97 for i in range(300)]
    assert theirs.local_flow_control_window(1) > 0


def test_our_client_with_h2_server_padded_data_ping_and_priority() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=True, local=SMALL)
    ours.send_headers(1, REQ, end_stream=True)
    ours.ping(b"from-us!")
    theirs.ping(b"from-h2!")
    mine, peer = pump(ours, theirs)
    assert [e.payload for e in of(mine, PingAcknowledged)] == [b"from-us!"]
    assert [e.ping_data for e in of(peer, he.PingAckReceived)] == [b"from-h2!"]
    theirs.send_headers(1, RESP)
    got = []
    for i in range(300):  # padding well beyond the windows again, now towards our client
        theirs.send_data(1, b"%03d" % i, pad_length=255)  # 300 x 259 > 65,535
        mine, _ = pump(ours, theirs)
        for ev in of(mine, DataReceived):
            assert ev.flow_controlled_length == len(ev.data) == 3  # the padding is the engine's business
            got.append(ev.data)
            ours.acknowledge_received_data(ev.flow_controlled_length, 1)
        pump(ours, theirs)
    theirs.send_headers(1, TRL, end_stream=True)
    mine, _ = pump(ours, theirs)
    assert got == [b"%03d" % i for i in range(300)]
    assert [h.kind for h in of(mine, HeadersReceived)] == [TRAILERS]
    assert not ours.streams


# ------------------------------------------------------------------------------------------- flow control


def test_window_update_only_after_acknowledge_received_data() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=False, local=SMALL)
    theirs.send_headers(1, REQ)
    theirs.send_data(1, b"a" * 16384)
    theirs.send_data(1, b"b" * 16384)
    mine, peer = pump(ours, theirs)
    assert len(of(mine, DataReceived)) == 2
    assert not of(peer, he.WindowUpdated)  # nothing returned yet
    assert theirs.local_flow_control_window(1) == 65535 - 32768
    ours.acknowledge_received_data(16384, 1)
    _, peer = pump(ours, theirs)
    assert sorted((w.stream_id, w.delta) for w in of(peer, he.WindowUpdated)) == [(0, 16384), (1, 16384)]
    ours.acknowledge_received_data(100, 1)  # below a quarter of the window: held back
    assert not ours.data_to_send()
    ours.acknowledge_received_data(16284, 1)
    _, peer = pump(ours, theirs)
    assert sorted((w.stream_id, w.delta) for w in of(peer, he.WindowUpdated)) == [(0, 16384), (1, 16384)]
    assert theirs.local_flow_control_window(1) == 65535


def test_connection_and_stream_windows_are_returned_separately() -> None:
    """A proxy returns the connection's window on receipt and the stream's once forwarded: with two streams, one
    never forwarded, the peer can go on sending on the other (issue 9.3: a stalled reader starved the rest)."""
    ours, theirs, _, _ = connected_to_h2(ours_client=False, local=SMALL)
    theirs.send_headers(1, REQ)
    theirs.send_headers(3, REQ)
    theirs.send_data(1, b"a" * 16384)
    theirs.send_data(1, b"a" * 16384)
    mine, _ = pump(ours, theirs)
    for d in of(mine, DataReceived):
        ours.acknowledge_connection(d.flow_controlled_length)  # stream 1's bytes are held, not forwarded
    _, peer = pump(ours, theirs)
    updates = of(peer, he.WindowUpdated)
    assert {w.stream_id for w in updates} == {0} and sum(w.delta for w in updates) == 32768
    assert theirs.local_flow_control_window(1) == 65535 - 32768  # stream 1: still its own bytes held
    assert theirs.local_flow_control_window(3) == 65535  # stream 3 may send a whole window
    ours.acknowledge_stream(32768, 1)
    _, peer = pump(ours, theirs)
    assert sorted((w.stream_id, w.delta) for w in of(peer, he.WindowUpdated)) == [(1, 32768)]
    ours.acknowledge_stream(100, 99)  # an unknown stream: nothing
    assert not ours.data_to_send()


def test_no_stream_window_update_after_end_stream_but_connection_window_returns() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=False, local=SMALL)
    theirs.send_headers(1, REQ)
    for n, last in ((16384, False), (16384, False), (7232, True)):  # END_STREAM on the last frame
        theirs.send_data(1, b"a" * n, end_stream=last)
    mine, _ = pump(ours, theirs)
    for d in of(mine, DataReceived):
        ours.acknowledge_received_data(d.flow_controlled_length, 1)
    updates = [f for f in parse(ours.data_to_send()) if isinstance(f, WindowUpdateFrame)]
    assert [u.stream_id for u in updates] == [0, 0]  # 2 x 16384 returned; none for the ended stream


@pytest.mark.parametrize("ours_client", [True, False], ids=["our-client-sends", "h2-client-sends"])
def test_large_body_across_many_windows(ours_client: bool) -> None:
    """1 MiB through 64 KiB windows, each side acknowledging what it consumed; bounded rounds."""
    body = bytes(range(256)) * 4096
    ours, theirs, _, _ = connected_to_h2(ours_client=ours_client, local=SMALL)
    got = bytearray()
    if ours_client:
        ours.send_headers(1, REQ)
        sent = 0
        for _ in range(200):
            n = min(ours.max_send(1), len(body) - sent)
            if n:
                ours.send_data(1, body[sent:sent + n], end_stream=sent + n == len(body))
                sent += n
            _, peer = pump(ours, theirs)
            for d in of(peer, he.DataReceived):
                got += d.data
                theirs.acknowledge_received_data(d.flow_controlled_length, 1)
            pump(ours, theirs)
            if sent == len(body):
                break
    else:
        theirs.send_headers(1, REQ)
        sent = 0
        for _ in range(200):
            n = min(theirs.local_flow_control_window(1), len(body) - sent, 16384)
            if n:
                theirs.send_data(1, body[sent:sent + n], end_stream=sent + n == len(body))
                sent += n
            mine, _ = pump(ours, theirs)
            for ev in of(mine, DataReceived):
                got += ev.data
                ours.acknowledge_received_data(ev.flow_controlled_length, 1)
            pump(ours, theirs)
            if sent == len(body):
                break
    assert sent == len(body)
    assert bytes(got) == body


def test_initial_window_size_change_mid_stream_incl_negative_window() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=True)
    ours.send_headers(1, REQ)
    ours.send_data(1, b"x" * 60000)
    pump(ours, theirs)
    assert ours.max_send(1) == 65535 - 60000
    theirs.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1000})  # 1000 - 60000: negative
    mine, _ = pump(ours, theirs)
    assert ours.streams[1].outbound_window == 1000 - 60000
    assert ours.max_send(1) == 0
    assert not of(mine, WindowUpdated)
    with pytest.raises(StreamStateError):
        ours.send_data(1, b"x")
    ours.send_data(1, b"")  # an empty frame is always allowed
    theirs.increment_flow_control_window(60000, stream_id=1)
    mine, _ = pump(ours, theirs)
    assert [e.stream_id for e in of(mine, WindowUpdated)] == [1]
    assert ours.max_send(1) == 1000
    theirs.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 101000})
    mine, _ = pump(ours, theirs)
    assert [e.stream_id for e in of(mine, WindowUpdated)] == [0]  # "every stream"
    assert ours.streams[1].outbound_window == 101000
    assert ours.max_send(1) == 65535 - 60000  # now the connection window limits
    ours.send_headers(3, REQ)  # new streams start from the new initial window
    assert ours.streams[3].outbound_window == 101000


def test_connection_window_configured_below_the_default_is_raised_to_it() -> None:
    """The connection window starts at 65,535 whatever we configure (RFC 9113 6.9.2): a smaller setting
    must not turn a peer's legitimate 65,535 octets into a FLOW_CONTROL_ERROR."""
    ours, theirs, _, _ = connected_to_h2(ours_client=False, local=H2Settings(initial_connection_window=1000))
    theirs.send_headers(1, REQ)
    theirs.send_headers(3, REQ)
    for sid in (1, 3, 1, 3):
        theirs.send_data(sid, b"w" * 16383)
    theirs.send_data(1, b"w" * 3)  # 65,535 in all
    mine, _ = pump(ours, theirs)
    assert sum(len(e.data) for e in of(mine, DataReceived)) == 65535
    assert not of(mine, ConnectionTerminated)


def test_a_smaller_initial_window_binds_the_peer_only_once_it_acknowledged_our_settings() -> None:
    """Before the SETTINGS ACK the peer may use the default 65,535 per stream; after it, both ends apply
    the difference to open streams (possibly going negative) and new streams start from our value."""
    peer = RawPeer()
    ours = H2Connection(client_side=False, settings=H2Settings(initial_window=1000))
    ours.initiate_connection()
    ours.data_to_send()
    events = ours.receive_data(fr.PREFACE + settings() + peer.headers(1, REQ)
                               + b"".join(peer.data(1, b"e" * 15000) for _ in range(4)))  # not ACKed yet
    assert sum(len(e.data) for e in of(events, DataReceived)) == 60000
    assert not of(events, StreamReset)
    events = ours.receive_data(settings(ack=True) + peer.data(1, b"x"))
    assert [(e.stream_id, e.error_code) for e in of(events, StreamReset)] == [(1, ErrorCode.FLOW_CONTROL_ERROR)]
    events = ours.receive_data(peer.headers(3, REQ) + peer.data(3, b"y" * 1000))
    assert of(events, DataReceived)
    events = ours.receive_data(peer.data(3, b"z"))
    assert [(e.stream_id, e.error_code) for e in of(events, StreamReset)] == [(3, ErrorCode.FLOW_CONTROL_ERROR)]


def test_a_smaller_header_table_binds_the_peer_only_once_it_acknowledged_our_settings() -> None:
    ours = H2Connection(client_side=False, settings=H2Settings(header_table_size=1024))
    ours.initiate_connection()
    ours.data_to_send()
    update_4096 = b"\x3f\xe1\x1f"
    block = update_4096 + b"\x82\x86\x84\x41\x01a"  # GET http / :authority a
    events = ours.receive_data(fr.PREFACE + settings() + raw(fr.HEADERS, 0x5, 1, block))
    assert of(events, HeadersReceived)
    events = ours.receive_data(settings(ack=True) + raw(fr.HEADERS, 0x5, 3, b"\x3f\xe1\x0f" + block[3:]))
    assert [e.error_code for e in of(events, ConnectionTerminated)] == [ErrorCode.COMPRESSION_ERROR]  # 2048


def test_acknowledging_more_than_was_received_never_overflows_the_peer_window() -> None:
    """A caller bug (acknowledging octets twice) must not make us send a WINDOW_UPDATE that takes the
    peer's window past 2^31-1, which it would treat as a FLOW_CONTROL_ERROR."""
    ours, theirs, _, _ = connected_to_h2(ours_client=False)
    theirs.send_headers(1, REQ)
    pump(ours, theirs)
    ours.acknowledge_received_data(2**31, 1)
    ours.acknowledge_received_data(2**31, 1)
    _, peer = pump(ours, theirs)  # h2 raises on an overflowing or zero increment
    assert theirs.outbound_flow_control_window == 2**31 - 1
    assert theirs.local_flow_control_window(1) == 2**31 - 1
    assert not of(peer, he.ConnectionTerminated)


# ------------------------------------------------------------------------------------------- concurrency


def test_stream_concurrency_limit_of_the_peer_is_honoured_by_can_open_stream() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=True)
    theirs.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    pump(ours, theirs)
    assert ours.can_open_stream()
    ours.send_headers(1, REQ, end_stream=True)
    assert not ours.can_open_stream()
    pump(ours, theirs)
    theirs.send_headers(1, RESP, end_stream=True)
    pump(ours, theirs)
    assert ours.can_open_stream() and ours.open_local_streams == 0


def test_our_concurrency_limit_is_advertised_to_h2() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=False, local=H2Settings(max_concurrent_streams=2))
    theirs.send_headers(1, REQ)
    theirs.send_headers(3, REQ)
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        theirs.send_headers(5, REQ)
    mine, _ = pump(ours, theirs)
    assert [h.stream_id for h in of(mine, HeadersReceived)] == [1, 3]
    assert ours.open_remote_streams == 2


# ------------------------------------------------------------------------------------------- RST_STREAM


def test_rst_stream_from_h2_client_and_from_our_server() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=False)
    theirs.send_headers(1, REQ)
    theirs.send_headers(3, REQ)
    pump(ours, theirs)
    theirs.reset_stream(1, error_code=ErrorCode.CANCEL)
    mine, _ = pump(ours, theirs)
    assert [(e.stream_id, e.error_code, e.remote) for e in of(mine, StreamReset)] == [(1, ErrorCode.CANCEL, True)]
    ours.reset_stream(3, ErrorCode.INTERNAL_ERROR)
    ours.reset_stream(3)  # already gone: no second frame
    _, peer = pump(ours, theirs)
    assert [(e.stream_id, e.error_code) for e in of(peer, he.StreamReset)] == [(3, ErrorCode.INTERNAL_ERROR)]
    assert not ours.streams
    with pytest.raises(StreamStateError):
        ours.send_headers(3, RESP)


def test_rst_stream_from_our_client_and_from_h2_server() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=True)
    ours.send_headers(1, REQ)
    ours.send_headers(3, REQ)
    pump(ours, theirs)
    ours.reset_stream(1)
    _, peer = pump(ours, theirs)
    assert [(e.stream_id, e.error_code) for e in of(peer, he.StreamReset)] == [(1, ErrorCode.CANCEL)]
    theirs.reset_stream(3, error_code=ErrorCode.REFUSED_STREAM)
    mine, _ = pump(ours, theirs)
    assert [(e.stream_id, e.error_code, e.remote) for e in of(mine, StreamReset)] == [
        (3, ErrorCode.REFUSED_STREAM, True)]
    assert ours.open_local_streams == 0


# ------------------------------------------------------------------------------------------- GOAWAY


def test_goaway_from_h2_server_refuses_streams_above_last_stream_id() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=True)
    for sid in (1, 3, 5):
        ours.send_headers(sid, REQ)
    pump(ours, theirs)
    theirs.close_connection(error_code=ErrorCode.NO_ERROR, last_stream_id=1, additional_data=b"bye")
    mine, _ = pump(ours, theirs)
    [term] = of(mine, ConnectionTerminated)
    assert (term.local, term.error_code, term.last_stream_id, term.additional_data) == (
        False, ErrorCode.NO_ERROR, 1, b"bye")
    assert sorted((e.stream_id, e.error_code, e.remote) for e in of(mine, StreamReset)) == [
        (3, ErrorCode.REFUSED_STREAM, True), (5, ErrorCode.REFUSED_STREAM, True)]
    assert not ours.can_open_stream() and list(ours.streams) == [1]
    assert not ours.closed


def test_goaway_from_our_client_is_reported_to_h2_server() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=True)
    ours.send_headers(1, REQ, end_stream=True)
    ours.send_goaway(ErrorCode.NO_ERROR, b"draining")
    _, peer = pump(ours, theirs)
    [term] = of(peer, he.ConnectionTerminated)
    assert (term.error_code, term.last_stream_id, term.additional_data) == (0, 0, b"draining")
    assert not ours.closed  # NO_ERROR: the stream in flight may still complete
    mine = ours.receive_data(RawPeer().headers(1, RESP, end_stream=True))
    assert of(mine, HeadersReceived)[0].end_stream


def test_goaway_from_our_server_lets_streams_in_flight_finish_and_ignores_new_ones() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=False)
    theirs.send_headers(1, REQ)
    pump(ours, theirs)
    ours.send_goaway()
    data = ours.data_to_send()
    # A stream the client opened before it saw the GOAWAY: ignored, and so are its DATA frames.
    theirs.send_headers(3, REQ)
    theirs.send_data(3, b"late", end_stream=True)
    theirs.send_data(1, b"body", end_stream=True)
    mine = ours.receive_data(theirs.data_to_send())
    assert [type(e) for e in mine] == [DataReceived]
    assert not [f for f in parse(ours.data_to_send()) if not isinstance(f, WindowUpdateFrame)]
    peer = theirs.receive_data(data)
    [term] = of(peer, he.ConnectionTerminated)
    assert term.last_stream_id == 1 and term.error_code == 0
    ours.send_headers(1, RESP, end_stream=True)  # stream 1 (below last_stream_id) still completes
    assert [type(f) for f in parse(ours.data_to_send())] == [HeadersFrame]
    assert not ours.streams


def test_goaway_with_error_code_closes_our_side() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=False)
    theirs.send_headers(1, REQ)
    pump(ours, theirs)
    ours.send_goaway(ErrorCode.ENHANCE_YOUR_CALM, b"calm")
    _, peer = pump(ours, theirs)
    assert of(peer, he.ConnectionTerminated)[0].error_code == ErrorCode.ENHANCE_YOUR_CALM
    assert ours.closed
    assert ours.receive_data(RawPeer.data(1, b"x")) == []
    assert ours.data_to_send() == b""


# ------------------------------------------------------------------------------------------- CONTINUATION


def big_headers(n: int, size: int) -> list[tuple[bytes, bytes]]:
    return [(b"x-big-%d" % i, (b"%d-" % i) * (size // 3)) for i in range(n)]


def test_large_header_block_is_split_into_continuations_by_our_client() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=True)
    headers = [*REQ, *big_headers(20, 2500)]  # ~50 KB
    ours.send_headers(1, headers, end_stream=True)
    data = ours.data_to_send()
    frames = parse(data)
    assert isinstance(frames[0], HeadersFrame) and "END_HEADERS" not in frames[0].flags
    assert "END_STREAM" in frames[0].flags
    assert all(isinstance(f, ContinuationFrame) for f in frames[1:]) and len(frames) >= 3
    assert "END_HEADERS" in frames[-1].flags
    blocks = [f for f in frames if isinstance(f, HeadersFrame | ContinuationFrame)]
    assert all(len(f.data) <= fr.DEFAULT_MAX_FRAME_SIZE for f in blocks)
    [req] = of(theirs.receive_data(data), he.RequestReceived)
    assert req.headers == headers and req.stream_ended is not None


def test_large_header_block_with_continuations_from_h2_server() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=True)
    ours.send_headers(1, REQ, end_stream=True)
    pump(ours, theirs)
    headers = [*RESP, *big_headers(20, 2500)]
    theirs.send_headers(1, headers, end_stream=True)
    raw = theirs.data_to_send()
    assert any(isinstance(f, ContinuationFrame) for f in parse(raw))
    [resp] = of(ours.receive_data(raw), HeadersReceived)
    assert resp.headers == headers and resp.end_stream


def test_data_frames_follow_the_peers_max_frame_size() -> None:
    ours, theirs, _, _ = connected_to_h2(ours_client=False)
    theirs.update_settings({SettingCodes.MAX_FRAME_SIZE: 20000})
    theirs.send_headers(1, REQ, end_stream=True)
    pump(ours, theirs)
    ours.send_headers(1, RESP)
    ours.send_data(1, b"z" * 50000, end_stream=True)
    frames = [f for f in parse(ours.data_to_send()) if isinstance(f, DataFrame)]
    assert [len(f.data) for f in frames] == [20000, 20000, 10000]
    assert ["END_STREAM" in f.flags for f in frames] == [False, False, True]


def test_h2_client_to_our_server_many_streams_interleaved() -> None:
    """Several streams in flight at once, responses in reverse order: each body stays on its stream."""
    ours, theirs, _, _ = connected_to_h2(ours_client=False)
    for sid in (1, 3, 5, 7):
        theirs.send_headers(sid, [*REQ, (b"x-sid", b"%d" % sid)])
    for sid in (1, 3, 5, 7):
        theirs.send_data(sid, b"req-%d" % sid, end_stream=True)
    mine, _ = pump(ours, theirs)
    assert {d.stream_id: d.data for d in of(mine, DataReceived)} == {s: b"req-%d" % s for s in (1, 3, 5, 7)}
    for sid in (7, 5, 3, 1):
        ours.send_headers(sid, RESP)
        ours.send_data(sid, b"resp-%d" % sid)
        ours.send_headers(sid, TRL, end_stream=True)
    _, peer = pump(ours, theirs)
    assert {d.stream_id: d.data for d in of(peer, he.DataReceived)} == {s: b"resp-%d" % s for s in (1, 3, 5, 7)}
    assert sorted(e.stream_id for e in of(peer, he.StreamEnded)) == [1, 3, 5, 7]
    assert not ours.streams


def test_h2_peer_sees_no_protocol_violation_from_us_over_a_long_session() -> None:
    """Many exchanges on one connection with our client: h2 (which validates everything we send) never
    raises, and the stream ids advance."""
    ours, theirs, _, _ = connected_to_h2(ours_client=True)
    for i in range(300):
        sid = ours.get_next_stream_id()
        ours.send_headers(sid, [*REQ, (b"x-i", b"%d" % i)])
        ours.send_data(sid, b"m" * (i % 50), end_stream=True)
        _, peer = pump(ours, theirs)
        for d in of(peer, he.DataReceived):
            theirs.acknowledge_received_data(d.flow_controlled_length, sid)
        theirs.send_headers(sid, RESP)
        theirs.send_data(sid, b"r" * (i % 70))
        theirs.send_headers(sid, TRL, end_stream=True)
        mine, _ = pump(ours, theirs)
        for ev in of(mine, DataReceived):
            ours.acknowledge_received_data(ev.flow_controlled_length, sid)
        assert [h.kind for h in of(mine, HeadersReceived)] == [RESPONSE, TRAILERS]
    assert ours.get_next_stream_id() == 601 and not ours.streams

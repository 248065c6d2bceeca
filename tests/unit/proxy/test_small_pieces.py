"""grpc-timeout, Envoy's HTTP<->gRPC status mapping, local replies, TLS sniffing, timers."""

from __future__ import annotations

import ssl

import trio
import trio.lowlevel
import trio.testing

from pyproxy.io.sniff import looks_like_tls, parse_client_hello
from pyproxy.proxy import errors
from pyproxy.proxy.grpc_timeout import format_grpc_timeout, parse_grpc_timeout
from pyproxy.timers import Timers


def test_grpc_timeout_parse_and_format() -> None:
    assert parse_grpc_timeout(b"5S") == 5.0
    assert parse_grpc_timeout(b"100m") == 0.1
    assert parse_grpc_timeout(b"2M") == 120.0
    assert parse_grpc_timeout(b"1H") == 3600.0
    assert parse_grpc_timeout(b"123456789S") is None  # more than 8 digits
    assert parse_grpc_timeout(b"5s") is None  # unit is case-sensitive
    assert parse_grpc_timeout(b"S") is None
    assert format_grpc_timeout(0.1) == b"100m"
    assert format_grpc_timeout(0.0001) == b"1m"  # rounded up, never shortened to 0
    assert format_grpc_timeout(200000.0) == b"200000S"
    for value in (0.001, 0.25, 3.0, 99.9):
        parsed = parse_grpc_timeout(format_grpc_timeout(value))
        assert parsed is not None and parsed >= value


def test_http_to_grpc_mapping_is_envoys() -> None:
    m = errors.http_to_grpc_status
    assert [m(c) for c in (400, 401, 403, 404, 429, 502, 503, 504, 500, 418)] == [13, 16, 7, 12, 14, 14, 14,
                                                                                 14, 2, 2]
    assert errors.grpc_to_http_status(14) == 503
    assert errors.grpc_to_http_status(4) == 504


def test_local_reply_is_trailers_only_for_grpc() -> None:
    headers, body = errors.local_reply(errors.NoHealthyUpstream(), is_grpc=True)
    assert body == b""
    assert headers[:3] == [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"14")]
    assert (b"grpc-message", b"no healthy upstream") in headers
    headers, body = errors.local_reply(errors.NoHealthyUpstream(), is_grpc=False)
    assert headers[0] == (b":status", b"503") and body == b"no healthy upstream"
    assert errors.DurationTimeout(request_complete=True).grpc_code() == errors.DEADLINE_EXCEEDED
    assert errors.DurationTimeout(request_complete=True).http_status == 504
    assert errors.UpstreamTimeout().grpc_code() == errors.UNAVAILABLE


def test_grpc_message_is_percent_encoded() -> None:
    assert errors.encode_grpc_message("ok: 100% ✓") == b"ok: 100%25 %E2%9C%93"


def test_client_hello_sni_and_alpn() -> None:
    ctx = ssl.create_default_context()
    ctx.set_alpn_protocols(["istio-h2", "h2"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="payment.default.svc")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert looks_like_tls(hello)
    info = parse_client_hello(hello)
    assert info.server_name == "payment.default.svc"
    assert info.alpn == ("istio-h2", "h2")
    assert not looks_like_tls(b"PRI * HTTP/2.0\r\n")
    assert parse_client_hello(b"\x16\x03\x01\x00\x05garbage").alpn == ()


async def test_timers_fire_in_order_and_cancel(autojump_clock: trio.testing.MockClock) -> None:
    fired: list[str] = []
    timers = Timers()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timers.run)
        await trio.lowlevel.checkpoint()
        timers.call_later(2.0, lambda: fired.append("b"))
        handle = timers.call_later(1.5, lambda: fired.append("cancelled"))
        timers.call_later(1.0, lambda: fired.append("a"))
        handle.cancel()
        await trio.sleep(3)
        assert fired == ["a", "b"]
        # Many cancelled timers are compacted away instead of piling up.
        handles = [timers.call_later(100.0, lambda: None) for _ in range(5000)]
        for h in handles:
            h.cancel()
        assert len(timers) < 3000
        nursery.cancel_scope.cancel()

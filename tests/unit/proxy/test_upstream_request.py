"""The router's upstream request from the route (pyproxy/proxy/upstream_request.py): pure functions."""

from __future__ import annotations

import pytest

from pyproxy.config.model import DirectResponse, Route, RouteAction, RouteMatch
from pyproxy.proxy.upstream_request import final_timeout, upstream_headers
from pyproxy.routing.table import CompiledRoute


@pytest.mark.parametrize(("action", "grpc_timeout", "expected"), [
    (RouteAction(cluster="c", timeout=15.0), None, (15.0, False)),
    (RouteAction(cluster="c", timeout=15.0), b"2S", (15.0, False)),  # grpc-timeout not honoured without the field
    (RouteAction(cluster="c", timeout=15.0, max_grpc_timeout=0.0), b"2S", (2.0, False)),  # honoured, no cap
    (RouteAction(cluster="c", timeout=1.0, max_grpc_timeout=0.0), b"2S", (1.0, False)),  # the shorter wins
    (RouteAction(cluster="c", timeout=None, max_grpc_timeout=0.5), b"2S", (0.5, False)),  # capped
    (RouteAction(cluster="c", timeout=None, max_grpc_timeout=0.0, grpc_timeout_offset=0.5), b"2S", (1.5, False)),
    (RouteAction(cluster="c", timeout=None, max_grpc_timeout=0.0, grpc_timeout_offset=3.0), b"2S", (None, False)),
    (RouteAction(cluster="c", timeout=1.0, max_grpc_timeout=0.0, grpc_timeout_is_stream_duration=True), b"2S",
     (2.0, True)),  # a stream deadline, even when longer than the route's timeout
    (RouteAction(cluster="c", timeout=None, max_grpc_timeout=0.0), b"bogus", (None, False)),
])
def test_final_timeout(action: RouteAction, grpc_timeout: bytes | None, expected: tuple[float | None, bool]) -> None:
    assert final_timeout(action, grpc_timeout) == expected


def test_upstream_headers_strip_rewrite_and_announce_the_timeout() -> None:
    action = RouteAction(cluster="c", prefix_rewrite="/v2/", host_rewrite_literal="backend")
    croute = CompiledRoute(Route(name="r", match=RouteMatch(prefix="/v1/"), action=action))
    request = [(b":path", b"/v1/pay"), (b":authority", b"front"), (b"x-envoy-peer-metadata", b"m"),
               (b"grpc-timeout", b"9S")]
    out = upstream_headers(request, (), croute, action, 2.0, True, strip_peer_metadata=True,
                           suppress_envoy_headers=False, extra=((b"x-extra", b"1"),))
    assert out == [(b":path", b"/v2/pay"), (b":authority", b"backend"), (b"grpc-timeout", b"2000m"),
                   (b"x-envoy-original-path", b"/v1/pay"), (b"x-extra", b"1"),
                   (b"x-envoy-expected-rq-timeout-ms", b"2000")]
    assert request[0] == (b":path", b"/v1/pay")  # the caller's list is untouched
    quiet = upstream_headers(request, (), CompiledRoute(Route(name="d", match=RouteMatch(prefix="/"),
                                                              action=DirectResponse(200))),
                             RouteAction(cluster="c"), None, True, strip_peer_metadata=False,
                             suppress_envoy_headers=True, extra=())
    assert quiet == request

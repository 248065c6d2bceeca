"""Connection timers and limits (issue 9.7): the bootstrap fields, and the proxy's behaviour on loopback sockets.

Envoy's semantics: the HCM's ``idle_timeout`` / ``max_connection_duration`` run from the connection's creation;
a connection that never sent a byte is just closed (no codec, so no SETTINGS or GOAWAY), one that did gets the
drain sequence (GOAWAY). Over ``envoy.resource_limits.listener.<name>.connection_limit`` or the overload
manager's global limit, a new connection is accepted and closed at once (``downstream_cx_overflow``,
``downstream_global_cx_overflow``).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
import trio

from pyproxy.config.bootstrap import load_bootstrap
from pyproxy.config.errors import ConfigError
from pyproxy.http2.frames import PREFACE
from pyproxy.proxy.runtime import Runtime

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
MONITOR = "envoy.resource_monitors.global_downstream_max_connections"
MONITOR_TYPE = ("type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                "DownstreamConnectionsConfig")
HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def bootstrap(hcm: dict[str, Any] | None = None, chain: dict[str, Any] | None = None,
              listener: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    return {
        "static_resources": {
            "listeners": [{
                "name": "l",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{
                    "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                        "@type": HCM_TYPE, "stat_prefix": "x", "drain_timeout": "0.1s",
                        "route_config": {"virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/"}, "route": {"cluster": "c"}}]}]},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                        **(hcm or {})}}],
                    **(chain or {})}],
                **(listener or {})}],
            "clusters": [{
                "name": "c", "type": "STATIC",
                "typed_extension_protocol_options": {HPO: {"@type": f"type.googleapis.com/{HPO}",
                                                           "explicit_http_config": {"http2_protocol_options": {}}}},
                "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": [{"endpoint": {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}]}]}}],
        },
        **top,
    }


def load(d: dict[str, Any]) -> Any:
    return load_bootstrap(None, json.dumps(d))


def problems(d: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as e:
        load(d)
    return str(e.value)


def overload(value: int) -> dict[str, Any]:
    return {"resource_monitors": [{"name": MONITOR, "typed_config": {
        "@type": MONITOR_TYPE, "max_active_downstream_connections": value}}]}


def runtime_layer(**keys: Any) -> dict[str, Any]:
    return {"layers": [{"name": "l", "static_layer": keys}]}


# ------------------------------------------------------------------------------------------------ parsing


def test_timers_and_limits_are_read_from_the_bootstrap() -> None:
    snap = load(bootstrap(
        hcm={"common_http_protocol_options": {"idle_timeout": "2s", "max_connection_duration": "60s"},
             "request_headers_timeout": "10s"},
        chain={"transport_socket_connect_timeout": "3s"},
        listener={"ignore_global_conn_limit": True},
        layered_runtime=runtime_layer(**{"envoy.resource_limits.listener.l.connection_limit": 7}),
        overload_manager={"refresh_interval": "0.25s", **overload(100)}))
    chain = snap.listeners["l"].filter_chains[0]
    assert (chain.hcm.idle_timeout, chain.hcm.max_connection_duration, chain.hcm.request_headers_timeout) == (
        2.0, 60.0, 10.0)
    assert chain.transport_socket_connect_timeout == 3.0
    assert snap.listeners["l"].ignore_global_conn_limit
    assert snap.listener_connection_limit("l") == 7 and snap.listener_connection_limit("other") is None
    assert snap.max_downstream_connections == 100


def test_envoy_defaults() -> None:
    snap = load(bootstrap())
    chain = snap.listeners["l"].filter_chains[0]
    assert chain.hcm.idle_timeout == 3600.0 and chain.hcm.max_connection_duration is None
    assert chain.transport_socket_connect_timeout is None
    assert snap.max_downstream_connections is None and snap.listener_connection_limit("l") is None


def test_istio_runtime_key_for_the_global_limit_and_the_monitor_wins() -> None:
    istio = runtime_layer(**{"overload.global_downstream_max_connections": "2147483647"})
    assert load(bootstrap(layered_runtime=istio)).max_downstream_connections == 2147483647
    assert load(bootstrap(layered_runtime=istio, overload_manager=overload(5))).max_downstream_connections == 5


@pytest.mark.parametrize(("mutate", "expected"), [
    ({"overload_manager": overload(0)},
     "overload_manager.resource_monitors[0].typed_config.max_active_downstream_connections: must be greater than 0"),
    ({"overload_manager": {"resource_monitors": [{"name": "envoy.resource_monitors.fixed_heap", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
        "max_heap_size_bytes": 1}}]}},
     "overload_manager.resource_monitors[0]: resource monitor 'envoy.resource_monitors.fixed_heap'"),
    ({"overload_manager": {"actions": [{"name": "envoy.overload_actions.stop_accepting_requests"}]}},
     "overload_manager.actions"),
    ({"layered_runtime": runtime_layer(**{"envoy.resource_limits.listener.l.connection_limit": "ten"})},
     "layered_runtime: envoy.resource_limits.listener.l.connection_limit: a connection limit must be a "
     "non-negative integer, got 'ten'"),
    ({"layered_runtime": runtime_layer(**{"overload.global_downstream_max_connections": -1})},
     "layered_runtime: overload.global_downstream_max_connections: a connection limit must be a non-negative"),
])
def test_bad_limits_are_refused_with_the_field_path(mutate: dict[str, Any], expected: str) -> None:
    assert expected in problems(bootstrap(**mutate))


# ------------------------------------------------------------------------------------------- behaviour


async def _with_proxy(d: dict[str, Any], body: Any) -> Runtime:
    rt = Runtime(load(d))
    async with trio.open_nursery() as nursery:
        await nursery.start(rt.run)
        sock = rt.listeners["l"].socket
        assert sock is not None
        await body(rt, sock.getsockname()[1])
        nursery.cancel_scope.cancel()
    return rt


EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
GOAWAY = 0x7


def frame_types(data: bytes) -> list[int]:
    """The type of each HTTP/2 frame in ``data``, in order."""
    types = []
    while len(data) >= 9:
        types.append(data[3])
        data = data[9 + int.from_bytes(data[:3], "big"):]
    return types


def _read_until_closed(s: socket.socket, timeout: float, t0: float) -> tuple[bytes, float]:
    """Everything the proxy sends until it closes; and how long that took since ``t0`` (taken before the
    connection was made, so that a timer running from the proxy's accept cannot seem early)."""
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data, time.monotonic() - t0
        data += chunk


def test_a_silent_connection_is_closed_by_the_idle_timeout_without_a_byte() -> None:
    async def body(rt: Runtime, port: int) -> None:
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", port))
        data, took = await trio.to_thread.run_sync(_read_until_closed, s, 5.0, t0)
        s.close()
        assert data == b"" and 0.3 <= took < 3.0  # no codec yet: no SETTINGS, no GOAWAY
        assert rt.stats.hcm_counters("x").downstream_cx_idle_timeout == 1
        assert rt.listeners["l"].counters.downstream_cx_active == 0

    trio.run(_with_proxy, bootstrap(hcm={"common_http_protocol_options": {"idle_timeout": "0.3s"}}), body)


def test_an_idle_http2_connection_gets_a_goaway_then_is_closed() -> None:
    async def body(rt: Runtime, port: int) -> None:
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(PREFACE + EMPTY_SETTINGS)
        data, took = await trio.to_thread.run_sync(_read_until_closed, s, 5.0, t0)
        s.close()
        types = frame_types(data)
        assert GOAWAY in types, types  # the drain sequence
        assert 0.3 <= took < 4.0
        assert rt.stats.hcm_counters("x").downstream_cx_idle_timeout == 1

    trio.run(_with_proxy, bootstrap(hcm={"common_http_protocol_options": {"idle_timeout": "0.3s"}}), body)


def test_max_connection_duration_closes_a_silent_connection() -> None:
    async def body(rt: Runtime, port: int) -> None:
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", port))
        _, took = await trio.to_thread.run_sync(_read_until_closed, s, 5.0, t0)
        s.close()
        assert 0.3 <= took < 3.0
        assert rt.stats.hcm_counters("x").downstream_cx_max_duration_reached == 1

    trio.run(_with_proxy, bootstrap(hcm={"common_http_protocol_options": {"max_connection_duration": "0.3s"}}),
             body)


@pytest.mark.parametrize("limit", ["listener", "global"])
def test_connections_over_the_limit_are_closed_at_once_and_counted(limit: str) -> None:
    async def body(rt: Runtime, port: int) -> None:
        kept = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        counters = rt.listeners["l"].counters
        while counters.downstream_cx_active < 2:  # noqa: ASYNC110 - a counter, not an event: polled
            await trio.sleep(0.01)
        t0 = time.monotonic()
        over = socket.create_connection(("127.0.0.1", port))
        data, took = await trio.to_thread.run_sync(_read_until_closed, over, 5.0, t0)
        assert data == b"" and took < 1.0
        assert (counters.downstream_cx_overflow, counters.downstream_global_cx_overflow) == (
            (1, 0) if limit == "listener" else (0, 1))
        for s in [*kept, over]:
            s.close()
        while counters.downstream_cx_active:  # noqa: ASYNC110 - closed by their clients: they stop counting
            await trio.sleep(0.01)
        assert rt.global_cx_active == 0
        again = socket.create_connection(("127.0.0.1", port))
        await trio.sleep(0.1)
        now = rt.listeners["l"].counters  # (read again: the loop above narrowed the attribute for mypy)
        assert now.downstream_cx_active == 1
        assert now.downstream_cx_overflow + now.downstream_global_cx_overflow == 1
        again.close()

    extra: dict[str, Any] = (
        {"layered_runtime": runtime_layer(**{"envoy.resource_limits.listener.l.connection_limit": 2})}
        if limit == "listener" else {"overload_manager": overload(2)})
    trio.run(_with_proxy, bootstrap(**extra), body)


def test_listener_filters_timeout_is_counted() -> None:
    async def body(rt: Runtime, port: int) -> None:
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", port))
        _, took = await trio.to_thread.run_sync(_read_until_closed, s, 5.0, t0)
        s.close()
        assert 0.3 <= took < 3.0
        assert rt.listeners["l"].counters.downstream_pre_cx_timeout == 1

    tls_inspector = {"name": "envoy.filters.listener.tls_inspector", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}
    trio.run(_with_proxy, bootstrap(listener={"listener_filters": [tls_inspector],
                                              "listener_filters_timeout": "0.3s"}), body)


def test_request_headers_timeout_ends_a_connection_whose_header_block_never_completes() -> None:
    """Envoy's request_headers_timeout, from the first byte of a header block to its last: a client that
    starts one (HEADERS without END_HEADERS) and never sends the CONTINUATION gets a GOAWAY and is closed."""
    async def body(rt: Runtime, port: int) -> None:
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", port))
        partial = b"\x00\x00\x01\x01\x01\x00\x00\x00\x01\x82"  # HEADERS, END_STREAM, no END_HEADERS: ":method GET"
        s.sendall(PREFACE + EMPTY_SETTINGS + partial)
        data, took = await trio.to_thread.run_sync(_read_until_closed, s, 5.0, t0)
        s.close()
        types = frame_types(data)
        assert GOAWAY in types, types
        assert 0.3 <= took < 4.0
        assert rt.stats.hcm_counters("x").downstream_rq_header_timeout == 1

    trio.run(_with_proxy, bootstrap(hcm={"request_headers_timeout": "0.3s"}), body)


def test_request_headers_timeout_leaves_complete_header_blocks_alone() -> None:
    async def body(rt: Runtime, port: int) -> None:
        s = socket.create_connection(("127.0.0.1", port))
        ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678"
        s.sendall(PREFACE + EMPTY_SETTINGS)
        start = time.monotonic()
        while time.monotonic() - start < 0.8:  # pings for longer than the timeout: the connection stays
            s.sendall(ping)
            await trio.sleep(0.1)
        s.setblocking(False)
        try:
            assert s.recv(65536)  # SETTINGS, ACKs: still open
        finally:
            s.close()
        assert rt.stats.hcm_counters("x").downstream_rq_header_timeout == 0

    trio.run(_with_proxy, bootstrap(hcm={"request_headers_timeout": "0.3s"}), body)

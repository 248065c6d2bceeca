"""The HTTP filter chain's driver (pyproxy/proxy/stream.py) with test filters, on a real in-process proxy.

A real pyproxy Runtime (in this process, on loopback) relays real gRPC calls from grpcio to a real grpcio
backend (tests/protocol/backend.py's echo handlers, in a thread). The chain's filters are replaced by test
filters that record what they see, so these tests check the driver's contract (pyproxy/filters/api.py):
order both ways, STOP and resume (request and response, headers and body), local replies, and the end hook.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
import trio

import pyproxy.proxy.context
from pyproxy.config.bootstrap import load_bootstrap
from pyproxy.filters.api import CONTINUE, STOP, FilterCallbacks, HttpFilter, Status
from pyproxy.http2.hpack import Header
from pyproxy.proxy.errors import RbacDenied
from pyproxy.proxy.runtime import Runtime
from tests.protocol.backend import LEDGER, EchoHandler
from tests.support.procs import free_port

pytestmark = pytest.mark.timeout(60)
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def bootstrap(backend_port: int) -> dict[str, Any]:
    return {"static_resources": {
        "listeners": [{
            "name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": {
                "@type": HCM, "stat_prefix": "x",
                "route_config": {"virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": "c", "timeout": "10s"}}]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}],
        "clusters": [{
            "name": "c", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {HPO: {"@type": f"type.googleapis.com/{HPO}",
                                                       "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": backend_port}}}}]}]}}]}}


class Recorder(HttpFilter):
    """Records every hook it sees as (its name, hook); optionally adds a request header."""

    __slots__ = ("add", "log", "times")
    wants_request_body = True
    wants_response = True
    wants_end = True

    def __init__(self, name: str, log: list[tuple[str, str]], add: Header | None = None) -> None:
        super().__init__(name)
        self.log = log
        self.add = add
        self.times: dict[str, float] = {}  # hook -> when it was last called

    def _saw(self, hook: str) -> None:
        self.log.append((self.name, hook))
        self.times[hook] = time.monotonic()

    def on_request_headers(self, cb: FilterCallbacks, end_stream: bool) -> Status:
        self._saw("request_headers")
        if self.add is not None:
            cb.request_headers.append(self.add)
        return CONTINUE

    def on_request_data(self, cb: FilterCallbacks, data: bytes, end_stream: bool) -> Status:
        self._saw("request_data")
        return CONTINUE

    def on_response_headers(self, cb: FilterCallbacks, headers: list[Header], end_stream: bool) -> Status:
        self._saw("response_headers")
        return CONTINUE

    def on_response_data(self, cb: FilterCallbacks, data: bytes, end_stream: bool) -> Status:
        self._saw("response_data")
        return CONTINUE

    def on_response_trailers(self, cb: FilterCallbacks, trailers: list[Header]) -> Status:
        self._saw("response_trailers")
        return CONTINUE

    def on_stream_end(self, cb: FilterCallbacks) -> None:
        self._saw("end")


class Pause(HttpFilter):
    """Stops one hook (``where``) and resumes it ``delay`` seconds later on the runtime's timers."""

    __slots__ = ("delay", "where", "resumed_at")
    wants_request_body = True
    wants_response = True

    def __init__(self, where: str, delay: float) -> None:
        super().__init__("pause")
        self.where = where
        self.delay = delay
        self.resumed_at: list[float] = []

    def _pause(self, cb: FilterCallbacks, resume: Callable[[], None]) -> Status:
        def later() -> None:
            self.resumed_at.append(time.monotonic())
            resume()
        cb.env.call_later(self.delay, later)
        return STOP

    def on_request_headers(self, cb: FilterCallbacks, end_stream: bool) -> Status:
        return self._pause(cb, cb.resume_request) if self.where == "request_headers" else CONTINUE

    def on_request_data(self, cb: FilterCallbacks, data: bytes, end_stream: bool) -> Status:
        return self._pause(cb, cb.resume_request) if self.where == "request_data" else CONTINUE

    def on_response_headers(self, cb: FilterCallbacks, headers: list[Header], end_stream: bool) -> Status:
        return self._pause(cb, cb.resume_response) if self.where == "response_headers" else CONTINUE

    def on_response_data(self, cb: FilterCallbacks, data: bytes, end_stream: bool) -> Status:
        return self._pause(cb, cb.resume_response) if self.where == "response_data" else CONTINUE


class Deny(HttpFilter):
    __slots__ = ()

    def on_request_headers(self, cb: FilterCallbacks, end_stream: bool) -> Status:
        cb.send_local_reply(RbacDenied("test"))
        return STOP


@pytest.fixture(scope="module")
def backend() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((EchoHandler(),))
    port = free_port()
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    server.start()
    yield port
    server.stop(grace=0).wait()


def run_with_filters(backend_port: int, filters: tuple[HttpFilter, ...],
                     body: Callable[[grpc.Channel], Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Start an in-process proxy whose chain is ``filters`` + router, run ``body(channel)`` in a thread."""
    monkeypatch.setattr(pyproxy.proxy.context, "build_filters", lambda *args: filters)
    result: list[Any] = []

    async def main() -> None:
        rt = Runtime(load_bootstrap(None, json.dumps(bootstrap(backend_port))))
        async with trio.open_nursery() as nursery:
            await nursery.start(rt.run)
            sock = rt.listeners["l"].socket
            assert sock is not None
            port = sock.getsockname()[1]

            def call() -> Any:
                with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                    return body(channel)

            result.append(await trio.to_thread.run_sync(call))
            nursery.cancel_scope.cancel()

    trio.run(main)
    return result[0]


def unary(channel: grpc.Channel, payload: bytes = b"hello", metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    method = channel.unary_unary("/test.Echo/Unary", request_serializer=None, response_deserializer=None)
    return method.with_call(payload, metadata=metadata, timeout=10)


def test_filters_see_requests_in_order_and_responses_in_reverse(backend: int, monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[tuple[str, str]] = []
    filters = (Recorder("a", log, (b"x-echo-from-a", b"1")), Recorder("b", log), Recorder("c", log))
    reply, call = run_with_filters(backend, filters, unary, monkeypatch)
    assert reply == b"hello"
    # A request header added by the first filter reached the backend (it echoes x-echo-* back).
    assert ("x-echo-from-a", "1") in call.initial_metadata()
    order = [(n, h) for n, h in log if h != "end"]
    assert order == [
        ("a", "request_headers"), ("b", "request_headers"), ("c", "request_headers"),
        ("a", "request_data"), ("b", "request_data"), ("c", "request_data"),
        ("c", "response_headers"), ("b", "response_headers"), ("a", "response_headers"),
        ("c", "response_data"), ("b", "response_data"), ("a", "response_data"),
        ("c", "response_trailers"), ("b", "response_trailers"), ("a", "response_trailers"),
    ]
    assert sorted(n for n, h in log if h == "end") == ["a", "b", "c"]  # once each


@pytest.mark.parametrize("where", ["request_headers", "request_data", "response_headers", "response_data"])
def test_a_stopped_hook_holds_the_request_until_the_filter_resumes_it(
        backend: int, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    log: list[tuple[str, str]] = []
    pause = Pause(where, 0.3)
    after = Recorder("after", log)
    before = Recorder("before", log)
    filters = (before, pause, after)

    def body(channel: grpc.Channel) -> tuple[Any, float]:
        t0 = time.monotonic()
        reply, _ = unary(channel, b"x" * 100)
        return reply, t0

    reply, t0 = run_with_filters(backend, filters, body, monkeypatch)
    assert reply == b"x" * 100
    assert len(pause.resumed_at) == 1
    resumed = pause.resumed_at[0]
    assert resumed - t0 >= 0.3
    # The filter the paused event goes to next (request side: the one after; response side, which runs in
    # reverse: the one before) got it only after the resume; the one it came from, before.
    nxt, prev = (after, before) if where.startswith("request") else (before, after)
    assert nxt.times[where] >= resumed
    assert prev.times[where] < resumed
    assert ("after", "end") in log and ("before", "end") in log


def test_a_local_reply_stops_the_chain_and_never_reaches_the_backend(
        backend: int, monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[tuple[str, str]] = []
    filters = (Recorder("first", log), Deny("deny"), Recorder("never", log))

    def body(channel: grpc.Channel) -> tuple[grpc.StatusCode, str | None]:
        with pytest.raises(grpc.RpcError) as e:
            unary(channel, b"denied-request")
        return e.value.code(), e.value.details()

    handled_before = LEDGER.count
    code, details = run_with_filters(backend, filters, body, monkeypatch)
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert details == "RBAC: access denied"
    assert LEDGER.count == handled_before  # the backend (in this process) never saw the call
    # The filter after the denying one saw nothing but the end (every filter of the chain gets it, as Envoy
    # calls onDestroy on each); the first one saw the headers and the end, once.
    assert [h for n, h in log if n == "never"] == ["end"]
    assert [h for n, h in log if n == "first"] == ["request_headers", "end"]


def test_the_end_hook_runs_when_the_caller_cancels_during_a_stop(
        backend: int, monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[tuple[str, str]] = []
    filters = (Recorder("a", log), Pause("request_headers", 5.0))

    def body(channel: grpc.Channel) -> tuple[grpc.StatusCode, bool]:
        with pytest.raises(grpc.RpcError) as e:
            method = channel.unary_unary("/test.Echo/Unary", request_serializer=None, response_deserializer=None)
            method.with_call(b"x", timeout=0.3)
        # The caller's RST_STREAM ends the request in the proxy while its filter still holds it (the proxy
        # keeps running until this returns, so this is not the shutdown ending it).
        deadline = time.monotonic() + 5
        while ("a", "end") not in log and time.monotonic() < deadline:
            time.sleep(0.01)
        return e.value.code(), ("a", "end") in log

    code, ended = run_with_filters(backend, filters, body, monkeypatch)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert ended
    assert ("a", "response_headers") not in log

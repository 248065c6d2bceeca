"""Metrics merging (Istio's 15020): the pure merge of expositions, and the merged endpoint with a real app
metrics server on a socket (answering, refusing, too slow, too big)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from pyproxy.admin.app_scrape import AppMetricsUrl, ScrapeError, fetch
from pyproxy.admin.merge import families, merge
from pyproxy.admin.merged import MergedStats
from pyproxy.config.bootstrap import parse_bootstrap_dict
from pyproxy.proxy.runtime import Runtime
from tests.unit.config.conftest import load_fixture_dict

PROXY = """# TYPE istio_requests_total counter
istio_requests_total{reporter="destination",response_code="200"} 7
# TYPE istio_request_duration_milliseconds histogram
istio_request_duration_milliseconds_bucket{le="0.5"} 1
istio_request_duration_milliseconds_bucket{le="+Inf"} 7
istio_request_duration_milliseconds_sum 12.5
istio_request_duration_milliseconds_count 7
"""

APP = """# HELP grpc_server_handled_total Total number of RPCs completed on the server.
# TYPE grpc_server_handled_total counter
grpc_server_handled_total{grpc_code="OK",grpc_method="Charge"} 5.0
# HELP istio_requests_total the app declares a family the proxy has
# TYPE istio_requests_total gauge
istio_requests_total 1.0
# TYPE process_open_fds gauge
process_open_fds 12.0
# TYPE istio_request_duration_milliseconds_count gauge
istio_request_duration_milliseconds_count 3.0
untyped_thing{a="b"} 4
# EOF
"""


def _parsed(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def test_families_group_help_type_and_a_histograms_samples() -> None:
    got = [(f.name, len(f.lines)) for f in families(PROXY + APP)]
    assert got == [("istio_requests_total", 2), ("istio_request_duration_milliseconds", 5),
                   ("grpc_server_handled_total", 3), ("istio_requests_total", 3), ("process_open_fds", 2),
                   ("istio_request_duration_milliseconds_count", 2), ("untyped_thing", 1)]


def test_a_family_an_earlier_source_declared_is_left_out_whole_and_reported() -> None:
    merged = merge([("envoy", PROXY), ("application", APP)])
    assert merged.dropped == (("application", "istio_requests_total"),
                              ("application", "istio_request_duration_milliseconds_count"))
    assert merged.text.count("# TYPE istio_requests_total") == 1
    assert "# EOF" not in merged.text
    parsed = _parsed(merged.text)  # prometheus_client's parser accepts it
    assert parsed["istio_requests"] == [("istio_requests_total", {"reporter": "destination",
                                                                   "response_code": "200"}, 7.0)]
    assert parsed["grpc_server_handled"] == [("grpc_server_handled_total", {"grpc_code": "OK",
                                                                            "grpc_method": "Charge"}, 5.0)]
    assert parsed["process_open_fds"][0][2] == 12.0 and parsed["untyped_thing"][0][2] == 4.0
    assert ("istio_request_duration_milliseconds_count", {}, 7.0) in parsed["istio_request_duration_milliseconds"]


def test_a_histogram_declared_without_samples_still_owns_its_sample_names() -> None:
    merged = merge([("envoy", "# TYPE h histogram\n"), ("application", "# TYPE h_count gauge\nh_count 1\n")])
    assert merged.dropped == (("application", "h_count"),)


def test_without_duplicates_everything_passes_byte_for_byte() -> None:
    app = "# TYPE a_total counter\na_total{x=\"1\"} 1\n"
    merged = merge([("agent", ""), ("envoy", PROXY), ("application", app)])
    assert merged.text == PROXY + app and merged.dropped == ()


def _runtime() -> Runtime:
    return Runtime(parse_bootstrap_dict(load_fixture_dict("envoy_docs_grpc_proxy.yaml")))


Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def _serve(nursery: trio.Nursery, handler: Handler) -> AppMetricsUrl:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    return AppMetricsUrl("127.0.0.1", port, "/metrics")


def _answer(body: bytes, status: str = "200 OK") -> Handler:
    async def handler(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        assert request.startswith(b"GET /metrics HTTP/1.0\r\n")
        await stream.send_all(f"HTTP/1.0 {status}\r\ncontent-type: text/plain\r\n\r\n".encode() + body)
        await stream.aclose()

    return handler


async def test_the_merged_endpoint_serves_agent_proxy_and_app_metrics_once_each() -> None:
    async with trio.open_nursery() as nursery:
        url = await _serve(nursery, _answer(APP.encode()))
        stats = MergedStats(_runtime(), url)
        parsed = _parsed(await stats.render())
        nursery.cancel_scope.cancel()
    assert parsed["istio_agent_scrapes"][0][2] == 1.0
    assert ("istio_agent_scrape_failures_total", {"type": "application"}, 0.0) in parsed["istio_agent_scrape_failures"]
    assert parsed["grpc_server_handled"][0][2] == 5.0
    assert "envoy_http_downstream_rq" in parsed  # the proxy's own metrics, as 15090 serves them
    assert stats.dropped == 2  # the app's istio_requests_total and istio_request_duration_milliseconds_count


@pytest.mark.parametrize("case", ["refused", "status-500", "too-slow", "too-big", "not-http"])
async def test_when_the_app_fails_the_proxy_metrics_are_still_served_and_the_failure_counted(case: str) -> None:
    async def slow(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async def garbage(stream: trio.SocketStream) -> None:
        await stream.send_all(b"SSH-2.0-OpenSSH\r\n\r\n")
        await stream.aclose()

    handlers: dict[str, Handler] = {"status-500": _answer(b"boom", "500 Internal Server Error"),
                                    "too-slow": slow, "too-big": _answer(b"x" * 5000), "not-http": garbage}
    async with trio.open_nursery() as nursery:
        if case == "refused":
            with trio.socket.socket() as s:  # a port nothing listens on: bound, never listening
                await s.bind(("127.0.0.1", 0))
                url = AppMetricsUrl("127.0.0.1", s.getsockname()[1], "/metrics")
                stats = MergedStats(_runtime(), url, timeout=0.5, max_bytes=4096)
                text = await stats.render()
        else:
            url = await _serve(nursery, handlers[case])
            stats = MergedStats(_runtime(), url, timeout=0.5, max_bytes=4096)
            with trio.fail_after(5):  # the timeout bounds it
                text = await stats.render()
                text = await stats.render()
        nursery.cancel_scope.cancel()
    parsed = _parsed(text)
    failures = 1.0 if case == "refused" else 2.0
    assert ("istio_agent_scrape_failures_total", {"type": "application"}, failures) in (
        parsed["istio_agent_scrape_failures"])
    assert "envoy_http_downstream_rq" in parsed and "grpc_server_handled" not in parsed


async def test_fetch_reports_each_failure_in_one_line() -> None:
    async with trio.open_nursery() as nursery:
        url = await _serve(nursery, _answer(b"", "404 Not Found"))
        with pytest.raises(ScrapeError, match=r"^http://127\.0\.0\.1:\d+/metrics: status 404 Not Found$"):
            await fetch(url)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("text", "error"), [
    ("https://127.0.0.1:9464/metrics", "only http:// URLs"),
    ("http://127.0.0.1/metrics", "expected http://HOST:PORT/PATH"),
    ("http://127.0.0.1:99999/metrics", "invalid port"),
])
def test_app_metrics_url_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        AppMetricsUrl.parse(text)
    assert str(AppMetricsUrl.parse("http://[::1]:9464/metrics?x=1")) == "http://[::1]:9464/metrics?x=1"


async def test_a_huge_app_answer_is_merged_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cutting megabytes of the app's families takes the CPU for long: other trio tasks (the proxy's traffic)
    still run meanwhile."""
    huge = "\n".join(f"app_metric_{i} 1" for i in range(200_000))

    async def fetch_at_once(url: AppMetricsUrl, **_: object) -> str:
        return huge  # no checkpoint: only the merge itself can let other tasks run

    monkeypatch.setattr("pyproxy.admin.merged.fetch", fetch_at_once)
    stats = MergedStats(_runtime(), AppMetricsUrl("127.0.0.1", 1, "/metrics"))
    ran = 0

    async def other_task() -> None:
        nonlocal ran
        while True:
            ran += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        await trio.lowlevel.checkpoint()
        before = ran
        text = await stats.render()
        during = ran - before
        nursery.cancel_scope.cancel()
    assert "app_metric_199999 1" in text
    assert during > 0


def test_label_values_with_unicode_line_separators_pass_whole() -> None:
    """Only "\\n" ends a line in the text format: a label value may hold U+2028, U+0085 or a form feed."""
    app = '# TYPE app_calls_total counter\napp_calls_total{path="/a\u2028b",ua="x\x85y\x0cz"} 3\n'
    merged = merge([("envoy", "# TYPE e gauge\ne 1\n"), ("application", app)])
    parsed = {s.name: s for f in text_string_to_metric_families(merged.text) for s in f.samples}
    assert parsed["app_calls_total"].labels == {"path": "/a\u2028b", "ua": "x\x85y\x0cz"}
    assert parsed["e"].value == 1.0

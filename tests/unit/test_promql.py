"""tests.support.promql against a stand-in Prometheus: an API error is a PromQLError naming the query; the plain
503 Prometheus answers until it is ready is an OSError (what the tests' waits retry), not a JSON error."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.promql import PrometheusAPI, PromQLError


@pytest.fixture
def answers() -> Iterator[tuple[PrometheusAPI, list[tuple[int, bytes]]]]:
    queue: list[tuple[int, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = queue.pop(0)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield PrometheusAPI(f"127.0.0.1:{server.server_address[1]}", timeout=5), queue
    finally:
        server.shutdown()
        server.server_close()


def test_not_ready_is_an_oserror_and_an_api_error_names_the_query(
        answers: tuple[PrometheusAPI, list[tuple[int, bytes]]]) -> None:
    api, queue = answers
    queue.append((503, b"Service Unavailable"))
    with pytest.raises(OSError):
        api.active_targets()
    queue.append((400, json.dumps({"status": "error", "error": "parse error"}).encode()))
    with pytest.raises(PromQLError, match="parse error"):
        api.query("rate(")
    queue.append((200, json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "up", "job": "x"}, "value": [1, "1"]}]}}).encode()))
    assert api.value("up") == 1.0

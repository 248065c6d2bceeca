"""The payment service's application metrics (go-grpc-prometheus names) from real processes: payment-server
and payment-client with ``--metrics-address``, scraped over HTTP and read with prometheus_client's parser."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from payment_service.loadgen import run_calls
from tests.support.procs import ManagedProcess, ProcessGroup, free_port, process_group, wait_for_port

pytestmark = pytest.mark.timeout(90)

SERVICE = "payment.PaymentService"
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Series:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


def _server(group: ProcessGroup, version: str) -> tuple[ManagedProcess, str, int]:
    port, metrics = free_port(), free_port()
    proc = group.python(f"server-{version}", "payment_service.server", "--version", version,
                        "--listen", f"127.0.0.1:{port}", "--metrics-address", f"127.0.0.1:{metrics}")
    wait_for_port("127.0.0.1", port, proc=proc.popen)
    wait_for_port("127.0.0.1", metrics, proc=proc.popen)
    return proc, f"127.0.0.1:{port}", metrics


@pytest.fixture
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessGroup]:
    with process_group(tmp_path_factory.mktemp("payment-metrics")) as g:
        yield g


def test_server_counts_calls_by_method_and_status_and_charges_by_outcome(group: ProcessGroup) -> None:
    proc, target, metrics = _server(group, "v2")
    assert f"payment-server v2 metrics on http://127.0.0.1:{metrics}/metrics" in proc.output()
    run_calls(target, 20, method="mix", concurrency=2)
    run_calls(target, 7, method="charge", metadata=(("x-payment-fail-code", "14"),))
    run_calls(target, 3, method="get", metadata=(("x-payment-fail-code", "5"),))
    s = scrape(metrics)
    unary = {"grpc_service": SERVICE, "grpc_type": "unary"}
    # mix: charge x4, get x2, refund, list, batch, exchange per 10 calls
    assert value(s, "grpc_server_handled_total", grpc_method="Charge", grpc_code="OK", **unary) == 8
    assert value(s, "grpc_server_handled_total", grpc_method="Charge", grpc_code="UNAVAILABLE", **unary) == 7
    assert value(s, "grpc_server_handled_total", grpc_method="GetPayment", grpc_code="NOT_FOUND", **unary) == 3
    assert value(s, "grpc_server_handled_total", grpc_method="GetPayment", grpc_code="OK", **unary) == 4
    assert value(s, "grpc_server_started_total", grpc_method="Charge", **unary) == 15
    for method, kind in (("ListPayments", "server_stream"), ("ChargeBatch", "client_stream"),
                         ("ChargeStream", "bidi_stream")):
        labels = {"grpc_service": SERVICE, "grpc_type": kind, "grpc_method": method}
        assert value(s, "grpc_server_handled_total", grpc_code="OK", **labels) == 2, method
        assert value(s, "grpc_server_handling_seconds_count", **labels) == 2, method
    assert value(s, "grpc_server_handling_seconds_count", grpc_method="Charge", **unary) == 15
    assert value(s, "grpc_server_handling_seconds_bucket", grpc_method="Charge", le="+Inf", **unary) == 15
    # Charges processed: 8 unary + 2 batches of 3 + 2 streams of 3; v2 holds amounts over its fraud threshold.
    processed = sum(v for (name, labels), v in s.items() if name == "payments_processed_total"
                    and ("version", "v2") in labels)
    assert processed == 8 + 6 + 6
    assert not any(name.endswith("_created") for name, _ in s)


def test_client_counts_its_calls_by_status_while_it_runs(group: ProcessGroup) -> None:
    _, target, _ = _server(group, "v1")
    metrics = free_port()
    client = group.python("client", "payment_service.client", "--target", target, "--rps", "50", "--duration",
                          "0", "--metadata", "x-payment-fail-code=9", "--metrics-address", f"127.0.0.1:{metrics}")
    wait_for_port("127.0.0.1", metrics, proc=client.popen)
    labels = {"grpc_service": SERVICE, "grpc_type": "unary", "grpc_method": "Charge"}
    deadline = time.monotonic() + 30
    while True:  # the client runs until stopped: wait until it has made some calls
        s = scrape(metrics)
        failed = value(s, "grpc_client_handled_total", grpc_code="FAILED_PRECONDITION", **labels)
        if failed >= 10 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert failed >= 10, group.logs()
    assert value(s, "grpc_client_started_total", **labels) >= failed
    assert value(s, "grpc_client_handling_seconds_count", **labels) == failed
    assert value(s, "grpc_client_handled_total", grpc_code="OK", **labels) == 0


def test_a_busy_metrics_address_is_one_line_and_exit_1(group: ProcessGroup) -> None:
    _, _, metrics = _server(group, "v1")
    proc = group.python("second", "payment_service.server", "--version", "v1", "--listen",
                        f"127.0.0.1:{free_port()}", "--metrics-address", f"127.0.0.1:{metrics}")
    assert proc.popen.wait(timeout=30) == 1
    assert proc.output().strip().splitlines()[-1].startswith(
        f"payment-server: --metrics-address: cannot listen on 127.0.0.1:{metrics}: ")

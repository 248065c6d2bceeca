"""mesh_ctl top: the quantile/rate math and the JSON shaping (pure; hand-computed expectations)."""

from __future__ import annotations

import pytest

from mesh_ctl.commands.top import EdgeSample, delta, document, histogram_quantile, parse

INF = float("inf")


def test_quantile_interpolates_inside_the_bucket() -> None:
    # 10 obs: 4 in (0,10], 6 in (10,20]. p50: rank 5 -> 10 + 10 * (5-4)/6
    b = [(10.0, 4.0), (20.0, 10.0), (INF, 10.0)]
    assert histogram_quantile(0.5, b) == pytest.approx(10 + 10 / 6)
    # p99: rank 9.9 -> 10 + 10 * 5.9/6
    assert histogram_quantile(0.99, b) == pytest.approx(10 + 10 * 5.9 / 6)
    # lowest bucket starts at 0: p20 rank 2 -> 0 + 10 * 2/4
    assert histogram_quantile(0.2, b) == pytest.approx(5.0)


def test_quantile_in_inf_bucket_is_highest_finite_bound_and_empty_is_none() -> None:
    assert histogram_quantile(0.99, [(5.0, 1.0), (INF, 10.0)]) == 5.0
    assert histogram_quantile(0.5, [(5.0, 0.0), (INF, 0.0)]) is None
    assert histogram_quantile(0.5, []) is None


LABELS = ('reporter="{rep}",source_workload="client",source_version="v1",destination_workload="payment-{v}",'
          'destination_version="{v}",destination_service_name="payment",request_protocol="grpc",'
          'response_code="200",grpc_response_status="{st}"')


def expo(rep: str, counts: dict[tuple[str, str], int], buckets: dict[str, list[int]]) -> str:
    lines = ["# TYPE istio_requests_total counter"]
    for (v, st), n in counts.items():
        lines.append(f"istio_requests_total{{{LABELS.format(rep=rep, v=v, st=st)}}} {n}")
    lines.append("# TYPE istio_request_duration_milliseconds histogram")
    for v, (c5, c10, cinf) in buckets.items():
        lab = LABELS.format(rep=rep, v=v, st="0")
        for le, c in (("5", c5), ("10", c10), ("+Inf", cinf)):
            lines.append(f'istio_request_duration_milliseconds_bucket{{{lab},le="{le}"}} {c}')
        lines.append(f"istio_request_duration_milliseconds_sum{{{lab}}} 1")
        lines.append(f"istio_request_duration_milliseconds_count{{{lab}}} {cinf}")
    return "\n".join(lines) + "\n"


def test_rates_success_and_quantiles_over_the_window() -> None:
    before = parse([expo("source", {("v1", "0"): 10, ("v2", "0"): 5}, {"v1": [10, 10, 10], "v2": [5, 5, 5]})])
    after = parse([
        expo("source", {("v1", "0"): 30, ("v1", "14"): 20, ("v2", "0"): 5},
             {"v1": [20, 50, 60], "v2": [5, 5, 5]}),
        # destination side of the same edges is ignored where the source reported them
        expo("destination", {("v1", "0"): 999}, {"v1": [0, 0, 999]}),
    ])
    doc = document(delta(before, after, 2.0), 2.0, [])
    edges = {e["destination_version"]: e for e in doc["edges"]}
    v1 = edges["v1"]
    assert v1["requests"] == 40 and v1["rps"] == 20.0 and v1["success_pct"] == 50.0
    # bucket deltas: le5 10, le10 40, inf 50 -> p50 rank 25: 5 + 5*(15/30) = 7.5; p99 rank 49.5 -> 10 (inf)
    assert v1["p50_ms"] == 7.5 and v1["p99_ms"] == 10.0
    assert edges["v2"]["rps"] == 0.0 and edges["v2"]["success_pct"] is None
    [svc] = doc["services"]
    assert svc["destination_service"] == "payment" and svc["rps"] == 20.0 and svc["destination_version"] == ""
    assert {r["destination_version"] for r in doc["versions"]} == {"v1", "v2"}
    assert [e["destination_version"] for e in document(delta(before, after, 2.0), 2.0, [], True)["edges"]] == ["v1"]


def test_destination_reporter_fills_in_and_reset_counts_from_zero() -> None:
    after = parse([expo("destination", {("v1", "0"): 4}, {"v1": [4, 4, 4]})])
    before = {k: EdgeSample(requests=100.0, ok=100.0) for k in after}
    [row] = delta(before, after, 1.0)
    assert row.requests == 4 and row.as_dict()["success_pct"] == 100.0


def test_json_field_names_are_stable() -> None:
    doc = document([], 1.0, [{"sidecar": "client", "address": "x", "error": "refused"}])
    assert set(doc) == {"interval_s", "unreachable", "edges", "services", "versions"}


def test_table_names_edges_by_workload_and_version_and_lists_unreachable_sidecars() -> None:
    from rich.console import Console

    from mesh_ctl.commands.top import table

    before = parse([expo("source", {("v1", "0"): 10}, {"v1": [10, 10, 10]})])
    after = parse([expo("source", {("v1", "0"): 30}, {"v1": [20, 30, 30]})])
    doc = document(delta(before, after, 2.0), 2.0, [{"sidecar": "payment-v2", "address": "a:1", "error": "refused"}])
    console = Console(width=120, record=True)
    console.print(table(doc))
    lines = [" ".join(line.split()) for line in console.export_text().splitlines()]
    assert "client/v1 payment payment-v1/v1 10 100% 5 9.9" in lines
    assert "payment v1 10 100% 5 9.9" in lines
    assert "unreachable: sidecar payment-v2 at a:1: refused" in lines

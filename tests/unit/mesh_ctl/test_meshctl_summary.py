"""The load client's JSON lines -> totals per version and status (schema of payment_service.client)."""

from __future__ import annotations

import json

from mesh_ctl.runtime.summary import Summary, parse_client_line, summary_line, summary_lines

INTERVAL = {
    "type": "interval",
    "elapsed_s": 2.0,
    "interval_s": 1.0,
    "requests": 50,
    "by_version": {"v1": 24, "v2": 26},
    "by_status": {"OK": 49, "UNAVAILABLE": 1},
    "latency_ms": {"p50": 1.2, "p90": 2.0, "p99": 4.1, "max": 4.3, "mean": 1.3},
    "rps": 50.0,
    "cumulative": {
        "requests": 100,
        "by_version": {"v1": 51, "v2": 49},
        "by_status": {"OK": 99, "UNAVAILABLE": 1},
        "latency_ms": {"p50": 1.1},
        "rps": 50.0,
    },
}
FINAL = {
    "type": "final",
    "target": "127.0.0.12:15001",
    "method": "charge",
    "rps_target": 50.0,
    "concurrency": 4,
    "elapsed_s": 10.0,
    "requests": 500,
    "by_version": {"v1": 251, "v2": 249},
    "by_status": {"OK": 500},
    "latency_ms": {"p50": None, "p99": None},
    "rps": 50.0,
    "skipped": 0,
    "errors": {},
}


def test_parses_an_interval_line() -> None:
    r = parse_client_line(json.dumps(INTERVAL))
    assert r is not None and r.kind == "interval"
    assert r.interval.requests == 50 and r.interval.by_version == {"v1": 24, "v2": 26}
    assert r.cumulative is not None and r.cumulative.requests == 100
    assert r.latency_ms["p99"] == 4.1 and r.rps == 50.0


def test_a_final_line_reports_totals_at_the_top_level() -> None:
    r = parse_client_line(json.dumps(FINAL).encode())
    assert r is not None and r.kind == "final"
    assert r.cumulative is not None and r.cumulative.requests == 500
    assert r.latency_ms == {}  # nulls are dropped


def test_ignores_anything_else() -> None:
    for line in ("", "payment-client starting", "[1, 2]", '{"type": "hello"}', b"\xff\xfe", "{"):
        assert parse_client_line(line) is None


def test_summary_takes_cumulative_counts() -> None:
    s = Summary("client", "payment:8080")
    for _ in range(3):  # the same cumulative line again must not double-count
        report = parse_client_line(json.dumps(INTERVAL))
        assert report is not None
        s.update(report)
    assert (s.requests, s.by_version, s.errors) == (100, {"v1": 51, "v2": 49}, 1)
    assert s.share("v1") == 0.51 and s.share("v3") == 0.0
    final = parse_client_line(json.dumps(FINAL))
    assert final is not None
    s.update(final)
    assert s.final and s.requests == 500 and s.errors == 0
    assert s.latency_ms["p99"] == 4.1  # the final line carries no latency: keep the last interval's


def test_summary_adds_intervals_without_cumulative_counts() -> None:
    s = Summary("client", "payment:8080")
    line = {k: v for k, v in INTERVAL.items() if k != "cumulative"}
    for _ in range(2):
        report = parse_client_line(json.dumps(line))
        assert report is not None
        s.update(report)
    assert s.requests == 100 and s.by_version == {"v1": 48, "v2": 52}
    assert s.by_status == {"OK": 98, "UNAVAILABLE": 2}


def test_json_round_trip_and_text() -> None:
    s = Summary("client", "payment:8080")
    report = parse_client_line(json.dumps(INTERVAL))
    assert report is not None
    s.update(report)
    assert Summary.from_json(json.loads(json.dumps(s.to_json()))).to_json() == s.to_json()
    text = "\n".join(summary_lines(s))
    assert "v1" in text and "51.0%" in text and "UNAVAILABLE=1" in text
    line = summary_line(s)
    assert "100 requests" in line and "errors 1 (UNAVAILABLE=1)" in line


def test_the_live_split_is_the_latest_interval() -> None:
    """After `mesh_ctl set-weight` the totals move slowly; the latest interval shows where the split is now."""
    s = Summary("client", "payment:8080")
    assert s.recent_share("v1") is None
    report = parse_client_line(json.dumps(INTERVAL))
    assert report is not None
    s.update(report)
    assert s.recent_by_version == {"v1": 24, "v2": 26} and s.recent_share("v2") == 0.52
    later = {**INTERVAL, "by_version": {"v1": 45, "v2": 5}}
    report = parse_client_line(json.dumps(later))
    assert report is not None
    s.update(report)
    assert s.recent_share("v1") == 0.9 and s.share("v1") == 0.51  # totals: the cumulative counts
    lines = summary_lines(s)
    assert [line.split()[:5] for line in lines[1:3]] == [["v1", "51", "51.0%", "now", "90.0%"],
                                                        ["v2", "49", "49.0%", "now", "10.0%"]]
    assert "now v1 90% v2 10%" in summary_line(s)
    assert Summary.from_json(json.loads(json.dumps(s.to_json()))).recent_by_version == {"v1": 45, "v2": 5}
    final = parse_client_line(json.dumps(FINAL))
    assert final is not None
    s.update(final)
    assert "now" not in summary_line(s)  # final totals: no "now"

"""Live traffic per edge, like a tiny `istioctl dashboard` in the terminal: read from the sidecars.

    mesh_ctl top [--interval 2] [--once] [-o table|json] [--hide-idle]

Each sidecar of the run (`mesh_ctl up`) is scraped twice, ``--interval`` seconds apart, at its
``/stats/prometheus`` (Istio's ``istio_requests_total`` and ``istio_request_duration_milliseconds``). An
edge is (source workload/version -> destination service/workload/version), from the ``reporter="source"``
series (Istio's convention), else from ``reporter="destination"`` where no source side reported it. Per
edge, and aggregated per destination service and per service version: rps, success % (gRPC status 0 for
gRPC, response code < 500 otherwise) and p50/p99 (ms, interpolated from the histogram bucket deltas as
Prometheus's ``histogram_quantile`` does).

``-o json`` prints one document after one interval::

    {"interval_s": float, "unreachable": [{"sidecar": str, "address": str, "error": str}],
     "edges": [ROW], "services": [ROW], "versions": [ROW]}
    ROW = {"source_workload", "source_version", "destination_service", "destination_workload",
           "destination_version", "requests", "rps", "success_pct", "p50_ms", "p99_ms"}

(interval_s: the measured time between the two scrapes; fields that do not apply to an aggregate are "";
success_pct, p50_ms, p99_ms are null without traffic.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mesh_ctl.commands._common import add_run_dir
from mesh_ctl.runtime.state import RunDir, StateError, read_state, resolve_run_dir

EdgeKey = tuple[str, str, str, str, str]  # src workload, src version, dst service, dst workload, dst version
KEY_FIELDS = ("source_workload", "source_version", "destination_service", "destination_workload",
              "destination_version")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_dir(p)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between samples (default 2)")
    p.add_argument("--once", action="store_true", help="print one table after one interval and exit")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table",
                   help="table (default) or json (one document after one interval)")
    p.add_argument("--hide-idle", action="store_true", help="hide edges with no traffic in the window")


# ---------------------------------------------------------------------------------------------- math


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus's histogram_quantile over cumulative ``(le, count)`` buckets (sorted, +Inf last).

    None without observations. Linear interpolation inside the bucket; the lowest bucket starts at 0;
    a quantile in the +Inf bucket is the highest finite bound.
    """
    if not buckets:
        return None
    buckets = sorted(buckets, key=lambda b: b[0])
    total = buckets[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return buckets[-1][0]


@dataclass
class EdgeSample:
    """Cumulative counters of one edge at one instant."""

    requests: float = 0.0
    ok: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count


Sample = dict[EdgeKey, EdgeSample]


def _ok(labels: Mapping[str, str]) -> bool:
    if labels.get("request_protocol") == "grpc":
        return labels.get("grpc_response_status") == "0"
    try:
        return int(labels.get("response_code", "0")) < 500 and labels.get("response_code", "0") != "0"
    except ValueError:
        return False


def _key(labels: Mapping[str, str]) -> EdgeKey:
    return (labels.get("source_workload", "unknown"), labels.get("source_version", "unknown"),
            labels.get("destination_service_name", "unknown"), labels.get("destination_workload", "unknown"),
            labels.get("destination_version", "unknown"))


def parse(texts: Iterable[str]) -> Sample:
    """Edges from the exposition texts of all sidecars: source-reported series, destination where no source."""
    by_reporter: dict[str, Sample] = {"source": {}, "destination": {}}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                rep = s.labels.get("reporter")
                if rep not in by_reporter:
                    continue
                e = by_reporter[rep].setdefault(_key(s.labels), EdgeSample())
                if s.name == "istio_requests_total":
                    e.requests += s.value
                    if _ok(s.labels):
                        e.ok += s.value
                elif s.name == "istio_request_duration_milliseconds_bucket":
                    le = float(s.labels["le"])
                    e.buckets[le] = e.buckets.get(le, 0.0) + s.value
    out = dict(by_reporter["source"])
    for k, v in by_reporter["destination"].items():
        out.setdefault(k, v)
    return out


@dataclass
class Row:
    key: EdgeKey
    requests: float
    ok: float
    buckets: dict[float, float]
    interval: float

    def as_dict(self) -> dict[str, Any]:
        b = sorted(self.buckets.items())
        d: dict[str, Any] = dict(zip(KEY_FIELDS, self.key, strict=True))
        p50, p99 = histogram_quantile(0.5, b), histogram_quantile(0.99, b)
        d.update(requests=round(self.requests), rps=round(self.requests / self.interval, 3) if self.interval else 0.0,
                 success_pct=round(100.0 * self.ok / self.requests, 2) if self.requests else None,
                 p50_ms=None if p50 is None else round(p50, 3), p99_ms=None if p99 is None else round(p99, 3))
        return d


def delta(before: Sample, after: Sample, interval: float) -> list[Row]:
    """Per-edge rows over the window (counter resets, i.e. a restarted sidecar, count from 0)."""
    rows = []
    for k in sorted(after):
        a, b = after[k], before.get(k, EdgeSample())
        reset = a.requests < b.requests
        base = EdgeSample() if reset else b
        buckets = {le: c - base.buckets.get(le, 0.0) for le, c in a.buckets.items()}
        rows.append(Row(k, a.requests - base.requests, a.ok - base.ok, buckets, interval))
    return rows


def aggregate(rows: Sequence[Row], keep: Sequence[int]) -> list[Row]:
    """Sum rows over the key fields not in ``keep`` (indices into KEY_FIELDS), which become ""."""
    out: dict[EdgeKey, Row] = {}
    for r in rows:
        k: EdgeKey = tuple(v if i in keep else "" for i, v in enumerate(r.key))  # type: ignore[assignment]
        acc = out.setdefault(k, Row(k, 0.0, 0.0, {}, r.interval))
        acc.requests += r.requests
        acc.ok += r.ok
        for le, c in r.buckets.items():
            acc.buckets[le] = acc.buckets.get(le, 0.0) + c
    return [out[k] for k in sorted(out)]


def document(rows: Sequence[Row], interval: float, unreachable: Sequence[Mapping[str, str]],
             hide_idle: bool = False) -> dict[str, Any]:
    shown = [r for r in rows if r.requests > 0 or not hide_idle]
    return {"interval_s": interval, "unreachable": list(unreachable),
            "edges": [r.as_dict() for r in shown],
            "services": [r.as_dict() for r in aggregate(rows, (2,))],
            "versions": [r.as_dict() for r in aggregate(rows, (2, 4))]}


# ---------------------------------------------------------------------------------------------- I/O


def sidecars(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(workload, stats address) of every sidecar of the run; StateError without one."""
    run_dir = RunDir(resolve_run_dir(args.run_dir))
    state = read_state(run_dir)
    if state is None:  # the words of `mesh_ctl status` / `down`
        raise StateError(f"no mesh is running from {run_dir.root} (start one with `mesh_ctl up`)")
    return [(p.workload, p.addresses["prometheus"]) for p in state.processes
            if p.role == "sidecar" and "prometheus" in p.addresses]


def scrape(targets: Sequence[tuple[str, str]], timeout: float = 2.0) -> tuple[list[str], list[dict[str, str]]]:
    texts, bad = [], []
    for name, addr in targets:
        try:
            with urllib.request.urlopen(f"http://{addr}/stats/prometheus", timeout=timeout) as r:
                texts.append(r.read().decode())
        except OSError as e:
            bad.append({"sidecar": name, "address": addr, "error": str(e)})
    return texts, bad


def window(targets: Sequence[tuple[str, str]], interval: float, before: tuple[Sample, float] | None = None
           ) -> tuple[tuple[Sample, float], list[Row], list[dict[str, str]], float]:
    """The rows between ``before`` (or a first scrape, then ``interval`` s of sleep) and a scrape now; rates
    use the measured time between the two scrapes, returned last."""
    if before is None:
        texts, _ = scrape(targets)
        before = (parse(texts), time.monotonic())
        time.sleep(interval)
    texts, bad = scrape(targets)
    now = time.monotonic()
    after = parse(texts)
    elapsed = max(now - before[1], 1e-3)
    return (after, now), delta(before[0], after, elapsed), bad, elapsed


def _fmt(v: Any, suffix: str = "") -> str:
    return "-" if v is None else f"{v:g}{suffix}"


def _who(workload: str, version: str) -> str:
    return workload if version in ("", "unknown") else f"{workload}/{version}"


def table(doc: Mapping[str, Any]) -> Any:
    """Three plain tables (services, versions, edges) and the unreachable sidecars, as a rich renderable."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    def one(title: str, cols: Sequence[str], rows: Iterable[tuple[Sequence[str], Mapping[str, Any]]]) -> Table:
        t = Table(title=title, title_justify="left", box=None, pad_edge=False, header_style="bold")
        for c in (*cols, "RPS", "SUCCESS", "P50 MS", "P99 MS"):
            t.add_column(c, justify="left" if c in cols else "right", no_wrap=True)
        for keys, r in rows:
            t.add_row(*keys, _fmt(r["rps"]), _fmt(r["success_pct"], "%"), _fmt(r["p50_ms"]), _fmt(r["p99_ms"]))
        return t

    parts: list[Any] = [
        one("services", ("SERVICE",), (((r["destination_service"],), r) for r in doc["services"])),
        one("versions", ("SERVICE", "VERSION"),
            (((r["destination_service"], r["destination_version"]), r) for r in doc["versions"])),
        one("edges", ("SOURCE", "SERVICE", "DESTINATION"),
            (((_who(r["source_workload"], r["source_version"]), r["destination_service"],
               _who(r["destination_workload"], r["destination_version"])), r) for r in doc["edges"])),
    ]
    for u in doc["unreachable"]:
        parts.append(Text(f"unreachable: sidecar {u['sidecar']} at {u['address']}: {u['error']}", style="red"))
    return Group(*parts)


def run(args: argparse.Namespace) -> int:
    try:
        targets = sidecars(args)
    except StateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.output == "json" or args.once:
        _, rows, bad, elapsed = window(targets, args.interval)
        doc = document(rows, round(elapsed, 3), bad, args.hide_idle)
        if args.output == "json":
            print(json.dumps(doc, indent=2))
        else:
            from rich.console import Console
            Console(width=max(120, Console().width)).print(table(doc))
        return 0
    from rich.live import Live
    try:
        before, rows, bad, elapsed = window(targets, args.interval)
        with Live(table(document(rows, elapsed, bad, args.hide_idle)), auto_refresh=False) as live:
            while True:
                time.sleep(args.interval)
                before, rows, bad, elapsed = window(targets, args.interval, before)
                live.update(table(document(rows, elapsed, bad, args.hide_idle)), refresh=True)
    except KeyboardInterrupt:
        return 0

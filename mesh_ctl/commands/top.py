"""Live traffic per edge, like a tiny `istioctl dashboard` in the terminal: read from the sidecars.

    mesh_ctl top [--interval 2] [--once] [-o table|json] [--hide-idle]

The reading and the arithmetic live in :mod:`mesh_ctl.telemetry` (shared with the graph).
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
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mesh_ctl.commands._common import add_run_dir
from mesh_ctl.runtime.state import RunDir, StateError, read_state, resolve_run_dir
from mesh_ctl.telemetry.sample import KEY_FIELDS, EdgeKey, EdgeSample, Sample, parse
from mesh_ctl.telemetry.scrape import scrape, window
from mesh_ctl.telemetry.window import Row, aggregate, delta, document, histogram_quantile

__all__ = ["KEY_FIELDS", "EdgeKey", "EdgeSample", "Row", "Sample", "aggregate", "delta", "document",
           "histogram_quantile", "parse", "scrape", "sidecars", "table", "window"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_dir(p)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between samples (default 2)")
    p.add_argument("--once", action="store_true", help="print one table after one interval and exit")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table",
                   help="table (default) or json (one document after one interval)")
    p.add_argument("--hide-idle", action="store_true", help="hide edges with no traffic in the window")


# ---------------------------------------------------------------------------------------------- I/O


def sidecars(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(workload, stats address) of every sidecar of the run; StateError without one."""
    run_dir = RunDir(resolve_run_dir(args.run_dir))
    state = read_state(run_dir)
    if state is None:  # the words of `mesh_ctl status` / `down`
        raise StateError(f"no mesh is running from {run_dir.root} (start one with `mesh_ctl up`)")
    return [(p.workload, p.addresses["prometheus"]) for p in state.processes
            if p.role == "sidecar" and "prometheus" in p.addresses]


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

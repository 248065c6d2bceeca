"""Writes minimesh's Grafana dashboards (``dashboards/*.json``) from the panel lists below.

Modelled on Istio's (manifests/addons/dashboards: the mesh, service, workload and pilot dashboards and their
jsonnet generators), written for minimesh: the same metric names and labels (the sidecars emit Istio's standard
metrics, the control plane istiod's), ``reporter="source"`` for what callers saw (faults injected by the
client's sidecar are only there) and ``reporter="destination"`` for what a server saw. Services are grouped by
``destination_service_name``: a call aborted by an injected fault never reaches a cluster, so (as in Istio) it
carries the request's host, not the service's FQDN, in ``destination_service``.

The JSON files are the product (compose mounts them); this script is how they are written, and
``generate.py --check`` (run by tests/unit/test_grafana_dashboards.py) fails when they differ from it. Every
panel's query is run against a real mesh's Prometheus by tests/integration/test_dashboards.py.

Layout: :func:`grid` places panels left to right in 24 columns; a :class:`Row` is a Grafana row panel, its
panels nested inside when collapsed (as Grafana saves them) and after it otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DATASOURCE_UID = "minimesh-prometheus"  # provisioning/datasources/prometheus.yaml
DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
RI = "$__rate_interval"

# A call succeeded: no 5xx and (for gRPC) status OK; "" is a plain HTTP call's grpc_response_status.
OK = 'response_code!~"5..",grpc_response_status=~"|0"'
ERROR = 'grpc_response_status!~"|0"'
QUANTILES = ((0.5, "p50"), (0.9, "p90"), (0.99, "p99"))
TABLE_COLUMNS = {"requests": ("Requests", "reqps"), "p50": ("P50 latency", "ms"), "p90": ("P90 latency", "ms"),
                 "p99": ("P99 latency", "ms"), "success": ("Success rate", "percentunit")}


@dataclass
class Target:
    expr: str
    legend: str = ""
    ref: str = "A"
    table: bool = False  # an instant query shown as a table column (Istio's per-service table)


@dataclass
class Panel:
    title: str
    targets: list[Target]
    kind: str = "timeseries"
    unit: str = "short"
    description: str = ""
    w: int = 12
    h: int = 8


@dataclass
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)
    collapsed: bool = False


def rate(metric: str, selector: str) -> str:
    return f"rate({metric}{{{selector}}}[{RI}])"


def ratio_ok(selector: str, by: str = "") -> str:
    """Share of calls that succeeded (non-5xx and gRPC OK) among the calls matching ``selector``."""
    group = f" by ({by})" if by else ""
    return (f"sum{group} ({rate('istio_requests_total', f'{selector},{OK}')})"
            f" / sum{group} ({rate('istio_requests_total', selector)})")


def quantile(q: float, metric: str, selector: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) ({rate(metric + '_bucket', selector)}))"


def quantiles(metric: str, selector: str, by: str, legend: str) -> list[Target]:
    return [Target(quantile(q, metric, selector, by), f"{legend} {name}", ref=name) for q, name in QUANTILES]


# ------------------------------------------------------------------------------------------------ mesh

def mesh() -> tuple[str, str, list[str], list[Row]]:
    src = 'reporter="source"'
    by = "destination_service_name"
    code4, code5 = ',response_code=~"4.."', ',response_code=~"5.."'
    table = [
        Target(f"round(sum by ({by}) ({rate('istio_requests_total', src)}), 0.01)", ref="requests", table=True),
        *[Target(quantile(q, "istio_request_duration_milliseconds", src, by), ref=name, table=True)
          for q, name in QUANTILES],
        Target(ratio_ok(src, by), ref="success", table=True),
    ]
    return "minimesh-mesh", "minimesh / Mesh", [], [
        Row("Global traffic", [
            Panel("Global request volume", [Target(
                f"round(sum({rate('istio_requests_total', src)}), 0.01)", "requests/s")], "stat", "reqps",
                "Calls per second, as the callers' sidecars saw them", w=6, h=5),
            Panel("Global success rate", [Target(ratio_ok(src), "success")], "stat", "percentunit",
                  "Share of calls that are neither 5xx nor a gRPC error", w=6, h=5),
            Panel("4xx", [Target(f"round(sum({rate('istio_requests_total', src + code4)}), 0.01) or vector(0)",
                                 "4xx/s")], "stat", "reqps", w=4, h=5),
            Panel("5xx", [Target(f"round(sum({rate('istio_requests_total', src + code5)}), 0.01) or vector(0)",
                                 "5xx/s")], "stat", "reqps", w=4, h=5),
            Panel("gRPC errors", [Target(
                f"round(sum({rate('istio_requests_total', src + ',' + ERROR)}), 0.01) or vector(0)",
                "errors/s")], "stat", "reqps", "Calls that ended with a gRPC status other than OK", w=4, h=5),
        ]),
        Row("Services", [
            Panel("Services", table, "table", "short",
                  "Per service: calls per second, p50/p90/p99 duration (ms), success rate", w=24, h=8),
        ]),
        Row("Control plane", [
            Panel("Connected proxies", [Target("sum(pilot_xds)", "proxies")], "stat", "short",
                  "Sidecars connected to the control plane's xDS server (pilot_xds)", w=6, h=5),
            Panel("xDS pushes", [Target("sum(pilot_xds_pushes)", "pushes")], "stat", "short",
                  "Configuration pushes since the control plane started, every type (pilot_xds_pushes)", w=6, h=5),
            Panel("Rejected xDS (NACKs)", [Target("sum(pilot_total_xds_rejects) or vector(0)", "rejects")],
                  "stat", "short", "Configurations a proxy refused (pilot_total_xds_rejects)", w=6, h=5),
            Panel("Certificates issued", [Target("sum(citadel_server_success_cert_issuance_count)", "issued")],
                  "stat", "short", "Workload certificates the CA signed", w=6, h=5),
        ]),
    ]


# ------------------------------------------------------------------------------------------------ service

def service() -> tuple[str, str, list[dict[str, Any]], list[Row]]:
    svc = 'destination_service_name="$service"'
    src = f'reporter="source",{svc}'
    dst = f'reporter="destination",{svc}'
    variables = [label_values("service", "Service", "istio_requests_total", "destination_service_name")]
    return "minimesh-service", "minimesh / Service", variables, [
        Row("General", [
            Panel("Request rate", [Target(f"round(sum({rate('istio_requests_total', src)}), 0.01)", "requests/s")],
                  "stat", "reqps", "Calls per second to $service, as its callers saw them", w=8, h=5),
            Panel("Success rate", [Target(ratio_ok(src), "success")], "stat", "percentunit",
                  "Share of calls to $service that are neither 5xx nor a gRPC error (faults included)", w=8, h=5),
            Panel("Requests by gRPC status", [Target(
                f"sum by (grpc_response_status) ({rate('istio_requests_total', src)})",
                "grpc-status {{grpc_response_status}}")], "timeseries", "reqps",
                "14 is UNAVAILABLE: injected aborts show up here", w=8, h=5),
        ]),
        Row("By destination version", [
            Panel("Request rate by version", [Target(
                f"sum by (destination_version) ({rate('istio_requests_total', dst)})", "{{destination_version}}")],
                "timeseries", "reqps", "Calls each version served (server side)"),
            Panel("Success rate by version", [Target(ratio_ok(dst, "destination_version"),
                                                     "{{destination_version}}")],
                  "timeseries", "percentunit", "Calls that reached a version and succeeded there"),
            Panel("Request duration by version",
                  quantiles("istio_request_duration_milliseconds", dst, "destination_version",
                            "{{destination_version}}"), "timeseries", "ms", "p50, p90 and p99, server side", w=24),
        ]),
        Row("By source workload", [
            Panel("Request rate by source", [Target(
                f"sum by (source_workload) ({rate('istio_requests_total', src)})", "{{source_workload}}")],
                "timeseries", "reqps", "Calls to $service per calling workload (client side)"),
            Panel("Success rate by source", [Target(ratio_ok(src, "source_workload"), "{{source_workload}}")],
                  "timeseries", "percentunit"),
            Panel("Request duration by source",
                  quantiles("istio_request_duration_milliseconds", src, "source_workload", "{{source_workload}}"),
                  "timeseries", "ms", "p50, p90 and p99, client side (aborted calls included)", w=24),
        ]),
        Row("Request and response sizes", [
            Panel("Request size by version",
                  quantiles("istio_request_bytes", dst, "destination_version", "{{destination_version}}"),
                  "timeseries", "decbytes"),
            Panel("Response size by version",
                  quantiles("istio_response_bytes", dst, "destination_version", "{{destination_version}}"),
                  "timeseries", "decbytes"),
        ], collapsed=True),
    ]


# ------------------------------------------------------------------------------------------------ workload

# Every workload that sends or receives calls (a client only ever appears as a source): Grafana's
# query_result() over a union, its values picked by the variable's regex, as Istio does for namespaces.
WORKLOADS = ('query_result(count by (workload) (label_join(istio_requests_total{reporter="destination",'
             'destination_workload_namespace="$namespace"}, "workload", "", "destination_workload") or '
             'label_join(istio_requests_total{reporter="source",source_workload_namespace="$namespace"}, '
             '"workload", "", "source_workload")))')


def workload() -> tuple[str, str, list[dict[str, Any]], list[Row]]:
    inbound = 'reporter="destination",destination_workload="$workload",destination_workload_namespace="$namespace"'
    outbound = 'reporter="source",source_workload="$workload",source_workload_namespace="$namespace"'
    variables = [
        label_values("namespace", "Namespace", "istio_requests_total", "source_workload_namespace"),
        query_variable("workload", "Workload", WORKLOADS, regex='/workload="([^"]+)"/'),
    ]
    return "minimesh-workload", "minimesh / Workload", variables, [
        Row("Inbound", [
            Panel("Incoming request rate by source", [Target(
                f"sum by (source_workload) ({rate('istio_requests_total', inbound)})", "{{source_workload}}")],
                "timeseries", "reqps", "Calls $workload served, per caller"),
            Panel("Incoming success rate by source", [Target(ratio_ok(inbound, "source_workload"),
                                                             "{{source_workload}}")], "timeseries", "percentunit"),
            Panel("Incoming request duration by source",
                  quantiles("istio_request_duration_milliseconds", inbound, "source_workload",
                            "{{source_workload}}"), "timeseries", "ms"),
            Panel("Incoming sizes by source", [
                Target(quantile(0.5, "istio_request_bytes", inbound, "source_workload"),
                       "{{source_workload}} request p50", ref="request"),
                Target(quantile(0.5, "istio_response_bytes", inbound, "source_workload"),
                       "{{source_workload}} response p50", ref="response"),
            ], "timeseries", "decbytes"),
        ]),
        Row("Outbound", [
            Panel("Outgoing request rate by service", [Target(
                f"sum by (destination_service_name) ({rate('istio_requests_total', outbound)})",
                "{{destination_service_name}}")], "timeseries", "reqps", "Calls $workload made, per service"),
            Panel("Outgoing success rate by service", [Target(ratio_ok(outbound, "destination_service_name"),
                                                              "{{destination_service_name}}")],
                  "timeseries", "percentunit", "Injected faults included: the caller's sidecar aborts them"),
            Panel("Outgoing requests by gRPC status", [Target(
                f"sum by (grpc_response_status) ({rate('istio_requests_total', outbound)})",
                "grpc-status {{grpc_response_status}}")], "timeseries", "reqps"),
            Panel("Outgoing request duration by destination workload",
                  quantiles("istio_request_duration_milliseconds", outbound, "destination_workload",
                            "{{destination_workload}}"), "timeseries", "ms",
                  "Aborted calls reached no workload: destination_workload=\"unknown\""),
            Panel("Outgoing sizes by service", [
                Target(quantile(0.5, "istio_request_bytes", outbound, "destination_service_name"),
                       "{{destination_service_name}} request p50", ref="request"),
                Target(quantile(0.5, "istio_response_bytes", outbound, "destination_service_name"),
                       "{{destination_service_name}} response p50", ref="response"),
            ], "timeseries", "decbytes", w=24),
        ]),
    ]


# ------------------------------------------------------------------------------------------------ control plane

def control_plane() -> tuple[str, str, list[dict[str, Any]], list[Row]]:
    refused = ('sum({__name__=~"citadel_server_(authentication_failure|csr_parsing_err|id_extraction_err|'
               'csr_sign_err)_count"}) or vector(0)')
    return "minimesh-control-plane", "minimesh / Control plane", [], [
        Row("Deployed versions", [
            Panel("Control plane version", [Target('sum by (tag) (istio_build{component="pilot"})', "{{tag}}")],
                  "timeseries", "short", "Version of each running control plane (istio_build)", w=24, h=5),
        ]),
        Row("Push information", [
            Panel("xDS pushes by type", [Target(f"sum by (type) (rate(pilot_xds_pushes[{RI}]))", "{{type}}")],
                  "timeseries", "ops", "Pushes per second, by xDS type; counted per proxy (pilot_xds_pushes)"),
            Panel("xDS pushes since start", [Target("sum by (type) (pilot_xds_pushes)", "{{type}}")],
                  "timeseries", "short"),
            Panel("Connected proxies", [Target("sum(pilot_xds)", "proxies")], "timeseries", "short",
                  "xDS connections (pilot_xds)"),
            Panel("Push time", [Target(f"histogram_quantile({q}, sum by (le) (rate(pilot_xds_push_time_bucket[{RI}])))",
                                       name, ref=name) for q, name in QUANTILES],
                  "timeseries", "s", "Time to build and send a push (pilot_xds_push_time)"),
            Panel("Proxy convergence", [Target(
                f"histogram_quantile({q}, sum by (le) (rate(pilot_proxy_convergence_time_bucket[{RI}])))",
                name, ref=name) for q, name in QUANTILES], "timeseries", "s",
                "From a configuration change to the push that carries it (pilot_proxy_convergence_time)", w=24),
        ]),
        Row("Rejected configuration", [
            Panel("xDS rejects (NACKs) by type", [Target("sum by (type) (pilot_total_xds_rejects) or vector(0)",
                                                         "{{type}}")], "timeseries", "short",
                  "Configurations a proxy refused (pilot_total_xds_rejects); no series until the first one"),
            Panel("Validation failures", [Target("sum by (resource, reason) (galley_validation_failed) or vector(0)",
                                                 "{{resource}} {{reason}}")], "timeseries", "short",
                  "Resources `mesh_ctl apply` refused (galley_validation_failed)"),
        ]),
        Row("Certificates", [
            Panel("CSRs", [Target("sum(citadel_server_csr_count)", "CSRs received", ref="csr"),
                           Target("sum(citadel_server_success_cert_issuance_count)", "certificates issued",
                                  ref="issued"),
                           Target(refused, "refused", ref="refused")], "timeseries", "short",
                  "Certificate signing requests received, certificates issued, requests refused"),
            Panel("Certificate expiry", [
                Target("(max(citadel_server_root_cert_expiry_timestamp) - time()) / 86400", "root", ref="root"),
                Target("(max(citadel_server_cert_chain_expiry_timestamp) - time()) / 86400", "CA chain",
                       ref="chain"),
            ], "stat", "d", "Days until the CA's root certificate and its certificate chain expire"),
        ]),
    ]


# ------------------------------------------------------------------------------------------------ JSON

def query_variable(name: str, label: str, query: str, regex: str = "") -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE, "query": query,
            "definition": query, "regex": regex, "refresh": 2, "sort": 1, "multi": False, "includeAll": False,
            "current": {}, "hide": 0, "options": []}


def label_values(name: str, label: str, metric: str, label_name: str) -> dict[str, Any]:
    return query_variable(name, label, f"label_values({metric}, {label_name})")


def grid(rows: list[Row]) -> list[dict[str, Any]]:
    """Grafana's panels list: 24 columns, a row panel then its panels left to right, wrapping."""
    out: list[dict[str, Any]] = []
    ids = iter(range(1, 1000))
    y = 0
    for row in rows:
        row_json: dict[str, Any] = {"type": "row", "title": row.title, "id": next(ids), "collapsed": row.collapsed,
                                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []}
        out.append(row_json)
        y += 1
        x, line_h = 0, 0
        for p in row.panels:
            if x + p.w > 24:
                x, y, line_h = 0, y + line_h, 0
            placed = panel_json(p, next(ids), {"h": p.h, "w": p.w, "x": x, "y": y})
            (row_json["panels"] if row.collapsed else out).append(placed)
            x += p.w
            line_h = max(line_h, p.h)
        y += line_h
    return out


def panel_json(p: Panel, pid: int, pos: dict[str, int]) -> dict[str, Any]:
    targets = []
    for t in p.targets:
        target: dict[str, Any] = {"datasource": DATASOURCE, "refId": t.ref, "expr": t.expr, "legendFormat": t.legend}
        if t.table:
            target |= {"format": "table", "instant": True, "range": False}
        targets.append(target)
    out: dict[str, Any] = {"type": p.kind, "title": p.title, "id": pid, "gridPos": pos, "datasource": DATASOURCE,
                           "description": p.description, "targets": targets,
                           "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []}, "options": {}}
    if p.kind == "table":  # one row per series, a column per target (Istio's per-workload table)
        out["transformations"] = [{"id": "merge"}]
        out["fieldConfig"]["overrides"] = [
            {"matcher": {"id": "byName", "options": f"Value #{t.ref}"},
             "properties": [{"id": "displayName", "value": TABLE_COLUMNS[t.ref][0]},
                            {"id": "unit", "value": TABLE_COLUMNS[t.ref][1]}, {"id": "decimals", "value": 2}]}
            for t in p.targets] + [{"matcher": {"id": "byName", "options": "Time"},
                                    "properties": [{"id": "custom.hidden", "value": True}]}]
    if p.kind == "timeseries":
        out["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}}
    return out


def dashboard(uid: str, title: str, variables: list[dict[str, Any]], rows: list[Row]) -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "tags": ["minimesh", "istio"], "editable": False, "graphTooltip": 1,
        "schemaVersion": 39, "version": 1, "time": {"from": "now-15m", "to": "now"}, "refresh": "10s",
        "timezone": "browser", "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["minimesh"], "asDropdown": True, "title": "minimesh"}],
        "templating": {"list": variables}, "panels": grid(rows),
    }


DASHBOARDS = {"mesh.json": mesh, "service.json": service, "workload.json": workload,
              "control-plane.json": control_plane}


def render() -> dict[str, str]:
    return {name: json.dumps(dashboard(*build()), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON files differ from this script")
    args = parser.parse_args()
    stale = []
    for name, text in render().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"compose/grafana/dashboards: {', '.join(stale)} differ from generate.py "
              f"(run: python compose/grafana/generate.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

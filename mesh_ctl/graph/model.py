"""The graph document: what the page draws, from one window of traffic and the control plane's config.

    {"generated_at": unix time, "window_s": float, "unreachable": [{"sidecar", "address", "error"}],
     "nodes": [{"id", "workload", "app", "version", "namespace", "services": [name], "known": bool}],
     "edges": [{"id", "source", "target", "service", "requests", "rps", "error_pct", "p50_ms", "p99_ms",
                "mtls", "share", "weight", "subset"}],
     "routes": {service name: ROUTE}}
    ROUTE = {"host", "virtual_service", "weights": [[subset, weight]], "weights_source",
             "http": [{"label", "match", "to", "retries", "fault", "timeout"}],
             "destination_rule", "traffic_policy", "subsets": [{"name", "labels", "traffic_policy"}]}

A node is a workload (one per version: ``payment-v1``); a source that is not in the registry (a client
outside the mesh) is a node with ``known: false``, and so are calls that reached no workload of a service
(``destination_workload="unknown"``: a fault's abort, no healthy endpoint), drawn to a node ``payment (no
workload)``. ``share`` is the edge's part of its source's calls to the
same service in the window (0..1, null without calls); ``weight`` the configured percentage of the subset the
destination belongs to, from the default route of the service's VirtualService, else the topology's split.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mesh_ctl.edits.describe import fault, retries
from mesh_ctl.edits.lookup import HostConfig, host_config
from mesh_ctl.edits.routes import http_routes
from mesh_ctl.registry import Registry, ServiceEntry, WorkloadEntry
from mesh_ctl.resources import Resource
from mesh_ctl.resources.weights import default_route_weights
from mesh_ctl.telemetry.window import Row


def _node(w: WorkloadEntry, registry: Registry) -> dict[str, Any]:
    services = [s.name for s in registry.services if s.namespace == w.namespace
                and s.selector and all(w.labels.get(k) == v for k, v in s.selector.items())]
    return {"id": w.name, "workload": w.name, "app": w.labels.get("app", w.name),
            "version": w.labels.get("version", ""), "namespace": w.namespace, "services": services, "known": True}


def _subsets(config: HostConfig) -> list[dict[str, Any]]:
    """The host's subsets with their labels (and policy): the DestinationRule's, else the topology's."""
    if config.destination_rules:
        return [{"name": str(s.get("name")), "labels": dict(s.get("labels") or {}),
                 "traffic_policy": s.get("trafficPolicy")}
                for r in config.destination_rules for s in r.spec.get("subsets") or () if isinstance(s, Mapping)]
    return [{"name": s.name, "labels": dict(s.labels), "traffic_policy": None} for s in config.service.subsets]


def route(config: HostConfig, registry: Registry) -> dict[str, Any]:
    """What the side panel shows about one service: its routing, retries, faults and DestinationRule."""
    vs, dr = config.virtual_service, config.destination_rule
    weights = default_route_weights(vs.spec) if vs is not None else None
    source = f"VirtualService {vs.namespace}/{vs.name}" if weights is not None and vs is not None else "topology"
    if weights is None:
        weights = config.default_split()
    http: list[dict[str, Any]] = []
    if vs is not None:
        raw = [h for h in vs.spec.get("http") or () if isinstance(h, Mapping)]
        for parsed, h in zip(http_routes(vs.spec, vs.namespace, registry.domain_suffix), raw, strict=False):
            http.append({"label": parsed.label, "match": h.get("match"), "to": parsed.to_text(config.host),
                         "retries": retries(h.get("retries")), "fault": fault(h.get("fault")),
                         "timeout": h.get("timeout")})
    return {"host": config.host, "virtual_service": f"{vs.namespace}/{vs.name}" if vs is not None else None,
            "weights": [[s, w] for s, w in weights], "weights_source": source, "http": http,
            "destination_rule": f"{dr.namespace}/{dr.name}" if dr is not None else None,
            "traffic_policy": dr.spec.get("trafficPolicy") if dr is not None else None,
            "subsets": _subsets(config)}


def _subset_of(workload: WorkloadEntry | None, subsets: Sequence[Mapping[str, Any]]) -> str | None:
    if workload is None:
        return None
    return next((str(s["name"]) for s in subsets
                 if s["labels"] and all(workload.labels.get(k) == v for k, v in s["labels"].items())), None)


def build(rows: Iterable[Row], registry: Registry, resources: Sequence[Resource], window_s: float,
          unreachable: Sequence[Mapping[str, str]] = ()) -> dict[str, Any]:
    """The graph document (module docstring) of one window."""
    workloads = {w.name: w for w in registry.workloads}
    nodes: dict[str, dict[str, Any]] = {w.name: _node(w, registry) for w in registry.workloads}
    services: dict[str, ServiceEntry] = {s.name: s for s in registry.services}
    configs = {name: host_config(resources, s) for name, s in services.items()}
    routes = {name: route(c, registry) for name, c in configs.items()}
    edges: list[dict[str, Any]] = []
    for r in rows:
        if r.requests <= 0:
            continue
        src_wl, src_v, service, dst_wl, dst_v = r.key
        if dst_wl == "unknown":  # calls that reached no workload (a fault's abort, no endpoint): the service
            dst_wl = f"{service} (no workload)"
            nodes.setdefault(dst_wl, {"id": dst_wl, "workload": "", "app": service, "version": "",
                                      "namespace": "", "services": [service], "known": False})
        for wl, v in ((src_wl, src_v), (dst_wl, dst_v)):
            nodes.setdefault(wl, {"id": wl, "workload": wl, "app": wl, "version": "" if v == "unknown" else v,
                                  "namespace": "", "services": [], "known": False})
        d = r.as_dict()
        route_of = routes.get(service)
        subset = _subset_of(workloads.get(dst_wl), route_of["subsets"]) if route_of else None
        weight = next((w for s, w in route_of["weights"] if s == subset), 0) if route_of and subset else None
        edges.append({"id": f"{src_wl}->{dst_wl}", "source": src_wl, "target": dst_wl, "service": service,
                      "requests": d["requests"], "rps": d["rps"],
                      "error_pct": None if d["success_pct"] is None else round(100.0 - d["success_pct"], 2),
                      "p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"], "mtls": r.mtls, "share": None,
                      "weight": weight, "subset": subset})
    totals: dict[tuple[str, str], float] = {}
    for e in edges:
        totals[(e["source"], e["service"])] = totals.get((e["source"], e["service"]), 0.0) + e["requests"]
    for e in edges:
        total = totals[(e["source"], e["service"])]
        e["share"] = round(e["requests"] / total, 4) if total else None
    return {"generated_at": time.time(), "window_s": round(window_s, 3), "unreachable": list(unreachable),
            "nodes": sorted(nodes.values(), key=lambda n: n["id"]), "edges": edges, "routes": routes}

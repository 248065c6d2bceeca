"""Helpers for the translation tests: protos as dicts, pyproxy's translator as the acceptance oracle, and
pyproxy's RouteTable as the simulation oracle."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from mesh_ctl.registry import Registry
from mesh_ctl.translate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ProxyResources,
    TlsMaterial,
    translate_for_proxy,
)
from pyproxy.config import model as m
from pyproxy.config.errors import Problem, Problems
from pyproxy.config.material import MaterialStore
from pyproxy.config.translate import clusters as pyproxy_clusters
from pyproxy.config.translate.clusters import cluster as pyproxy_cluster
from pyproxy.config.translate.common import Ctx
from pyproxy.config.translate.listeners import listener as pyproxy_listener
from pyproxy.config.translate.routes import route_configuration as pyproxy_route_configuration
from pyproxy.routing.table import RouteTable

Json = dict[str, Any]

# What pyproxy's translator refuses today only because its ADS client is not there yet (an HCM's `rds`,
# EDS clusters). Anything else it refuses is a translation bug.
XDS_GAPS = (
    ("typed_config.rds", "dynamic route config (rds) arrives with xDS support"),
    (".eds_cluster_config", "EDS clusters arrive with xDS support"),
    (".type", "EDS clusters arrive with xDS support"),
)


def as_dict(message: Message) -> Json:
    d: Json = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return d


def sidecar(registry: Registry, resources: Sequence[Mapping[str, Any]], workload: str = "client",
            namespace: str = "default", tls: TlsMaterial = "sds") -> ProxyResources:
    w = registry.workload(workload, namespace)
    assert w is not None, workload
    return translate_for_proxy(registry, resources, w.node_id, tls=tls)


def proxyless(registry: Registry, resources: Sequence[Mapping[str, Any]], namespace: str = "default",
              node_id: str = "proxyless-client") -> ProxyResources:
    return translate_for_proxy(registry, resources, {"id": node_id,
                                                     "metadata": {"GENERATOR": "grpc", "NAMESPACE": namespace}})


def route_config(pr: ProxyResources, name: str = "virtualOutbound") -> Json:
    return as_dict(pr.of(ROUTE_TYPE)[name])


def vhost(pr: ProxyResources, name: str = "payment.default.svc.cluster.local:8080",
          route_config_name: str = "virtualOutbound") -> Json:
    vhosts: list[Json] = route_config(pr, route_config_name)["virtual_hosts"]
    for vh in vhosts:
        if vh["name"] == name:
            return vh
    raise KeyError(name)


def routes(pr: ProxyResources, **kw: str) -> list[Json]:
    found: list[Json] = vhost(pr, **kw)["routes"]
    return found


def clusters(pr: ProxyResources) -> dict[str, Json]:
    return {n: as_dict(c) for n, c in pr.of(CLUSTER_TYPE).items()}


def assignments(pr: ProxyResources) -> dict[str, Json]:
    return {n: as_dict(c) for n, c in pr.of(ENDPOINT_TYPE).items()}


# --------------------------------------------------------------------------------------------- pyproxy


def pyproxy_problems(pr: ProxyResources, material: MaterialStore) -> tuple[list[Problem], list[Problem]]:
    """Run every LDS/CDS/RDS resource through pyproxy's per-resource translators: (known xDS gaps, other
    problems)."""
    ctx = Ctx(problems=Problems(), material=material)
    for name, proto in pr.of(LISTENER_TYPE).items():
        pyproxy_listener(ctx, proto, f"LDS[{name}]")
    for name, proto in pr.of(CLUSTER_TYPE).items():
        pyproxy_cluster(ctx, proto, f"CDS[{name}]")
    for name, proto in pr.of(ROUTE_TYPE).items():
        pyproxy_route_configuration(ctx, proto, f"RDS[{name}]", validate_clusters_default=False)
    # EDS resources on their own, where pyproxy's translator has the function (its xDS work adds it).
    eds = getattr(pyproxy_clusters, "cluster_load_assignment", None)
    if eds is not None:
        for name, proto in pr.of(ENDPOINT_TYPE).items():
            eds(ctx, proto, f"EDS[{name}]")
    gaps: list[Problem] = []
    others: list[Problem] = []
    for p in ctx.problems:
        known = any(p.path.endswith(suffix) and p.reason.startswith(reason) for suffix, reason in XDS_GAPS)
        (gaps if known else others).append(p)
    return gaps, others


def pyproxy_route_config(pr: ProxyResources, name: str = "virtualOutbound",
                         material: MaterialStore | None = None) -> m.RouteConfiguration:
    ctx = Ctx(problems=Problems(), material=material or MaterialStore("/nonexistent"))
    rc = pyproxy_route_configuration(ctx, pr.of(ROUTE_TYPE)[name], f"RDS[{name}]", validate_clusters_default=False)
    ctx.problems.raise_if_any()
    return rc


def route_table(pr: ProxyResources, name: str = "virtualOutbound") -> RouteTable:
    return RouteTable(pyproxy_route_config(pr, name))


def select(table: RouteTable, authority: str, path: str, headers: Mapping[str, str] | None = None,
           rng: random.Random | None = None) -> tuple[str, str] | None:
    """(route name, cluster) pyproxy picks for a gRPC call, or None (no route: 404 NR)."""
    hdrs = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    hdrs += [(b":authority", authority.encode()), (b":method", b"POST"), (b":scheme", b"http"),
             (b"content-type", b"application/grpc")]
    found = table.select(authority.encode(), path.encode(), hdrs, True)
    if found is None:
        return None
    _, route = found
    if not route.clusters:
        return route.route.name, ""
    return route.route.name, route.pick_cluster(rng or random.Random(0))

"""The control plane's management API (HTTP/JSON, istiod's 15014): what the `mesh_ctl` CLI commands call.

    GET  /ready                      200 once serving (no credential: the supervisor's probe)
    GET  /v1/info                    addresses, pid, store and pushed revisions, ADS counters
    GET  /v1/resources               ?kind=vs&namespace=default&name=payment (no namespace: all)
    POST /v1/apply                   {"files": [{"origin", "text"}], "dry_run"}    (YAML/JSON as written)
    POST /v1/analyze                 {"files": [...]}: validate only
    POST /v1/delete                  {"kind", "namespace", "names": [...]} or {"files": [...]}, "dry_run"
    POST /v1/set-weight              {"service", "namespace", "weights": {"v1": 90}, "dry_run", "relative"}
                                     (404: no such service; 422: a weight outside 0-100, a sum other than
                                     100 without "relative", an unknown subset)
    POST /v1/set-policy              {"service", "namespace", "field", "value", "subset", "dry_run"}: one
                                     block of the VirtualService or DestinationRule (:mod:`.policy_api`)
    GET  /v1/proxy-status            per connected proxy and type: SYNCED / STALE / NOT SENT / NACKED
    GET  /v1/proxy-config            ?proxy=NAME: the resources last computed for a connected proxy (CDS, EDS,
                                     LDS, RDS, and SDS: the ROOTCA secret served to it)
    GET  /v1/workloads               the registry: node ids, addresses, admin addresses, readiness
    GET  /metrics                    istiod's metrics, Prometheus text (:mod:`mesh_ctl.monitoring`)
    PUT  /v1/workloads/{namespace}/{name}/ready   {"ready": false}: its app or sidecar is down, so EDS leaves
                                     it out until {"ready": true} (the supervisor's report, a kubelet's role)

Served by :mod:`mesh_ctl.xds.web` (FastAPI on uvicorn): the owner's credential, Host and Origin checks, size
limits and the audit log are there; the bodies are declared below as Pydantic models, so ``/openapi.json``
describes them. Errors: ``{"error": message}`` with 400 (bad request), 404 (not found), 422 (invalid config:
``problems`` are the validator's lines, ``FILE: Kind ns/name: field.path: reason``; nothing was changed).
Parsing the files (YAML of up to 3 MiB: seconds of CPU) runs in a process of its own (:mod:`mesh_ctl.xds.parsing`),
store calls (validation; they fsync) in a worker thread; the event loop keeps serving ADS streams and other
requests meanwhile.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from google.protobuf import json_format
from pydantic import BaseModel, Field

from mesh_ctl.resources import InvalidConfig, Resource, ValidationProblem, kind_info
from mesh_ctl.resources.loader import Loaded, in_order
from mesh_ctl.resources.names import resolve_host
from mesh_ctl.resources.weights import default_route_weights
from mesh_ctl.store import NotFound
from mesh_ctl.translate.names import SECRET_TYPE, SHORT_NAMES, TYPE_URLS
from mesh_ctl.xds.answers import audit_change as _audit
from mesh_ctl.xds.answers import find_service
from mesh_ctl.xds.answers import invalid as _invalid
from mesh_ctl.xds.answers import result_json as _result
from mesh_ctl.xds.parsing import ParserGone
from mesh_ctl.xds.policy_api import SetPolicyBody, set_policy
from mesh_ctl.xds.verdicts import record_validation
from mesh_ctl.xds.web import HttpError, audit, caller

if TYPE_CHECKING:
    from mesh_ctl.server import ControlPlane

SET_WEIGHT_ORIGIN = "set-weight"


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class FileIn(BaseModel):
    """One file as the user wrote it (YAML or JSON, several documents allowed)."""

    text: str
    origin: str | None = Field(None, description="where it came from, for messages (a path, <stdin>)")


class FilesBody(BaseModel):
    files: list[FileIn] = Field(min_length=1)
    dry_run: bool = False


class DeleteBody(BaseModel):
    kind: str | None = Field(None, description="with namespace and names, instead of files")
    namespace: str = "default"
    names: list[str] | None = None
    files: list[FileIn] | None = None
    dry_run: bool = False
    ignore_not_found: bool = False


class ReadyBody(BaseModel):
    ready: bool


class SetWeightBody(BaseModel):
    service: str = Field(min_length=1, description="short name or FQDN")
    namespace: str = "default"
    weights: dict[str, int] = Field(min_length=1, description="subset -> weight, 0 to 100, adding up to 100")
    dry_run: bool = False
    relative: bool = Field(False, description="any sum: each subset gets weight / total, as Istio does")


def router(cp: ControlPlane) -> APIRouter:
    """The routes of the module docstring (the CA's are in :mod:`mesh_ctl.ca.api`)."""
    api = _Api(cp)
    r = APIRouter()

    @r.get("/ready", summary="200 once serving (no credential needed)")
    async def ready() -> dict[str, Any]:
        return {"ready": True}

    @r.get("/v1/info", summary="addresses, pid, store and pushed revisions, ADS counters")
    async def info() -> dict[str, Any]:
        return await api.info()

    @r.get("/v1/resources", summary="stored Istio resources (no namespace: all namespaces)")
    async def resources(kind: str | None = None, namespace: str | None = None,
                        name: str | None = None) -> dict[str, Any]:
        query = {k: v for k, v in (("kind", kind), ("namespace", namespace), ("name", name)) if v}
        return await api.resources(query)

    @r.post("/v1/apply", summary="validate and store Istio resources, all or nothing")
    async def apply(body: FilesBody) -> dict[str, Any]:
        return await api.apply(body.model_dump())

    @r.post("/v1/analyze", summary="validate only, against what is stored")
    async def analyze(body: FilesBody) -> dict[str, Any]:
        return await api.analyze(body.model_dump())

    @r.post("/v1/delete", summary="delete stored resources (by kind/namespace/names, or the files' resources)")
    async def delete(body: DeleteBody) -> dict[str, Any]:
        return await api.delete(body.model_dump(exclude_none=True))

    @r.post("/v1/set-weight", summary="write the weights of a service's VirtualService")
    async def set_weight(body: SetWeightBody) -> dict[str, Any]:
        return await api.set_weight(body.model_dump())

    @r.post("/v1/set-policy", summary="set or clear one policy block of a service's VirtualService or "
                                      "DestinationRule (fault, retries, loadBalancer, outlierDetection)")
    async def set_policy_block(body: SetPolicyBody) -> dict[str, Any]:
        return await set_policy(cp, body)

    @r.get("/v1/proxy-status", summary="per connected proxy and xDS type: SYNCED / STALE / NOT SENT / NACKED")
    async def proxy_status() -> dict[str, Any]:
        return await api.proxy_status()

    @r.get("/v1/proxy-config", summary="the resources last computed for a connected proxy")
    async def proxy_config(proxy: str = "") -> dict[str, Any]:
        return await api.proxy_config({"proxy": proxy})

    @r.get("/v1/workloads", summary="the registry: node ids, addresses, admin addresses, readiness")
    async def workloads() -> dict[str, Any]:
        return await api.workloads()

    @r.put("/v1/workloads/{namespace}/{name}/ready",
           summary="a workload's readiness: one that is not ready is left out of the proxies' EDS")
    async def set_ready(namespace: str, name: str, body: ReadyBody) -> dict[str, Any]:
        return await api.set_ready(namespace, name, body.ready)

    return r


async def _files(cp: ControlPlane, body: Mapping[str, Any]) -> tuple[Loaded, list[str]]:
    """Parse every one of the ``files`` of a request (400 on a bad shape), in the parsing process
    (:mod:`mesh_ctl.xds.parsing`); also their origins, in order."""
    texts = _texts(body)
    try:
        loaded = await cp.parser.load(texts)
    except ParserGone as e:
        raise HttpError(503, str(e)) from None
    return loaded, [origin for origin, _ in texts]


def _texts(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``(origin, text)`` of every one of the ``files`` of a request (400 on a bad shape)."""
    files = body.get("files")
    if not isinstance(files, list) or not files:
        raise HttpError(400, "give files: [{origin, text}, ...]")
    texts: list[tuple[str, str]] = []
    for f in files:
        if not isinstance(f, dict) or not isinstance(f.get("text"), str):
            raise HttpError(400, "each file needs a text (and an origin)")
        texts.append((str(f.get("origin") or "<stdin>"), f["text"]))
    return texts


async def _resources(cp: ControlPlane, body: Mapping[str, Any]) -> list[Resource]:
    """The resources of the request's ``files``; 422 with every file's problems if one cannot be parsed."""
    loaded, _ = await _files(cp, body)
    if loaded.problems:
        raise _invalid(InvalidConfig(loaded.problems), loaded.counts(loaded.problems))
    return loaded.resources


def _string(body: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or not value:
        raise HttpError(400, f"{key} must be a non-empty string")
    return value


class _Api:
    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp

    async def ready(self) -> dict[str, Any]:
        return {"ready": True, "revision": self.cp.store.revision}

    async def info(self) -> dict[str, Any]:
        cp = self.cp
        return {
            "pid": os.getpid(), "xds_address": cp.xds_address, "api_address": cp.api_address,
            "state_dir": str(cp.options.state_dir), "store": str(cp.store.path), "started_at": cp.started_at,
            "store_revision": cp.store.revision, "pushed_revision": cp.ads.generation.revision,
            "debounce": {"after_s": cp.debouncer.quiet, "max_s": cp.debouncer.max_delay,
                         "pending": cp.debouncer.pending, "flushes": cp.debouncer.flushes},
            "connections": len(cp.ads.connections()), "ads": cp.ads.stats.to_json(),
            "registry": {"workloads": len(cp.registry.workloads), "services": len(cp.registry.services)},
        }

    async def resources(self, q: dict[str, str]) -> dict[str, Any]:
        kind = q.get("kind") or None
        if kind is not None and kind_info(kind) is None:
            raise HttpError(400, f"unknown resource kind {kind!r} (VirtualService/vs, DestinationRule/dr, "
                                 "PeerAuthentication/pa, AuthorizationPolicy/ap)")
        namespace, name = q.get("namespace") or None, q.get("name") or None
        store = self.cp.store
        await asyncio.to_thread(store.refresh)
        if name is not None:
            if kind is None or namespace is None:
                raise HttpError(400, "a name needs a kind and a namespace")
            found = store.get(kind, namespace, name)
            if found is None:
                info = kind_info(kind)
                raise HttpError(404, f"{info.kind if info else kind} {namespace}/{name} not found")
            items = [found]
        else:
            items = store.list(kind, namespace)
        return {"revision": store.revision, "items": [dict(r.raw or r.to_dict()) for r in items]}

    async def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        loaded, origins = await _files(self.cp, body)
        store = self.cp.store
        # A file that cannot be parsed refuses the batch; the others are still checked (a dry run), so that
        # one answer names every problem.
        dry_run = bool(body.get("dry_run")) or bool(loaded.problems)
        try:
            result = await asyncio.to_thread(store.apply, loaded.resources, dry_run)
            problems, warnings = loaded.problems, list(result.warnings)
        except InvalidConfig as e:
            problems, warnings = [*loaded.problems, *e.problems], list(e.warnings)
        if not body.get("dry_run"):
            record_validation(self.cp.metrics, loaded.resources, problems)
        if problems:
            problems = in_order(problems, origins)
            raise _invalid(InvalidConfig(problems, warnings), loaded.counts(problems))
        _audit("apply", result)
        return {**_result(result), "counts": loaded.counts([])}

    async def analyze(self, body: dict[str, Any]) -> dict[str, Any]:
        loaded, origins = await _files(self.cp, body)
        report = await asyncio.to_thread(self.cp.store.analyze, loaded.resources)
        errors = in_order([*loaded.problems, *report.errors], origins)
        return {"errors": [str(p) for p in errors], "warnings": [str(w) for w in report.warnings],
                              "documents": loaded.documents, "counts": loaded.counts(errors)}

    async def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        dry_run = bool(body.get("dry_run"))
        ignore_missing = bool(body.get("ignore_not_found"))
        if "files" in body:
            targets = [(r.kind, r.namespace, r.name) for r in await _resources(self.cp, body)]
        else:
            kind, namespace = _string(body, "kind"), _string(body, "namespace", "default")
            names = body.get("names")
            if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
                raise HttpError(400, "names must be a non-empty list of names")
            targets = [(kind, namespace, n) for n in names]
        results, missing = [], []
        for kind, namespace, name in targets:
            try:
                deleted = await asyncio.to_thread(self.cp.store.delete, kind, namespace, name, dry_run)
                _audit("delete", deleted)
                results.append(_result(deleted))
            except NotFound as e:
                missing.append(str(e))
            except InvalidConfig as e:
                raise HttpError(422, "refused: nothing more was deleted", problems=[str(p) for p in e.problems],
                                deleted=results) from None
        if missing and not ignore_missing:
            raise HttpError(404, "; ".join(missing), deleted=results)
        return {"results": results, "not_found": missing, "revision": self.cp.store.revision}

    async def set_weight(self, body: dict[str, Any]) -> dict[str, Any]:
        service = _string(body, "service")
        namespace = _string(body, "namespace", "default")
        weights = body.get("weights")
        if not isinstance(weights, dict) or not weights:
            raise HttpError(400, "weights must be an object {subset: weight}")
        cp = self.cp
        entry = find_service(cp.registry, service, namespace)
        host = entry.fqdn
        await asyncio.to_thread(cp.store.refresh)
        vs = next((r for r in cp.store.list("VirtualService", namespace)
                   if any(resolve_host(str(h), namespace, cp.registry.domain_suffix) == host
                          for h in r.spec.get("hosts") or ())), None)
        before = default_route_weights(vs.spec) if vs is not None else None
        source = f"VirtualService {namespace}/{vs.name}" if vs is not None else "topology"
        if before is None:
            before = [(s.name, s.weight) for s in entry.subsets] or [(f"({host})", 100)]
        has_rule = any(resolve_host(str(r.spec.get("host", "")), r.namespace, cp.registry.domain_suffix) == host
                       for r in cp.store.list("DestinationRule"))
        if not has_rule and entry.subsets:  # the topology's subsets act as the DR
            known = {s.name for s in entry.subsets}
            unknown = [s for s in weights if s not in known]
            if unknown:
                reason = (f"subset {unknown[0]} not found: {host} has no DestinationRule and the topology's "
                          f"subsets are {', '.join(sorted(known))}")
                raise _invalid(InvalidConfig([ValidationProblem(
                    SET_WEIGHT_ORIGIN, "VirtualService", f"{namespace}/{service.split('.')[0]}",
                    f"weights[{unknown[0]}]", reason)]))
        short = service if "." not in service else host
        try:
            result = await asyncio.to_thread(cp.store.set_weights, short, namespace, weights,
                                             bool(body.get("dry_run")), bool(body.get("relative")))
        except InvalidConfig as e:
            raise _invalid(e) from None
        _audit(f"set-weight {service} {weights}", result)
        key = result.changes[0].key if result.changes else None
        stored = cp.store.get("VirtualService", key.namespace, key.name) if key is not None else None
        after = [(str(s), int(w)) for s, w in weights.items()]
        if stored is not None and not result.dry_run:
            after = default_route_weights(stored.spec) or after
        document = dict(stored.raw or stored.to_dict()) if stored is not None and not result.dry_run else None
        return {**_result(result), "host": host, "before": before, "before_source": source, "after": after,
                "resource": f"VirtualService {key.namespace}/{key.name}" if key else None, "document": document}

    async def proxy_status(self) -> dict[str, Any]:
        cp = self.cp
        return {"store_revision": cp.store.revision, "pushed_revision": cp.ads.generation.revision,
                              "debounce_pending": cp.debouncer.pending, "proxies": cp.ads.status()}

    async def proxy_config(self, query: dict[str, str]) -> dict[str, Any]:
        name = query.get("proxy", "")
        resources = self.cp.ads.resources_of(name) if name else None
        if resources is None:
            connected = [c.name for c in self.cp.ads.connections()]
            raise HttpError(404, f"no connected proxy named {name!r}", connected=connected)
        out: dict[str, Any] = {"node_id": resources.node_id, "kind": resources.kind,
                               "revision": self.cp.ads.generation.revision, "types": {}}
        for type_url in (*TYPE_URLS, SECRET_TYPE):
            out["types"][SHORT_NAMES.get(type_url, "SDS")] = {
                "type_url": type_url, "version": resources.type_version(type_url),
                "resources": [json_format.MessageToDict(m, preserving_proto_field_name=True)
                              for _, m in sorted(resources.of(type_url).items())],
            }
        return out

    async def set_ready(self, namespace: str, name: str, ready: bool) -> dict[str, Any]:
        if self.cp.registry.workload(name, namespace) is None:
            raise HttpError(404, f"no workload {namespace}/{name}",
                            workloads=[f"{w.namespace}/{w.name}" for w in self.cp.registry.workloads])
        changed = await self.cp.set_ready(name, namespace, ready)
        if changed:
            audit.info("workload %s/%s %s by %s", namespace, name, "ready" if ready else "not ready", caller())
        return {"workload": f"{namespace}/{name}", "ready": ready, "changed": changed}

    async def workloads(self) -> dict[str, Any]:
        reg = self.cp.registry
        connected = {c.node.id for c in self.cp.ads.connections()}
        out = []
        for w in reg.workloads:
            admin = join_address(w.address, w.admin_port) if w.admin_port is not None else None
            app = join_address(w.address, w.app_port) if w.app_port is not None else None
            out.append({"name": w.name, "namespace": w.namespace, "node_id": w.node_id, "address": w.address,
                        "app_address": app, "admin_address": admin, "labels": dict(w.labels), "spiffe_id": w.spiffe_id,
                        "connected": w.node_id in connected, "ready": reg.is_ready(w)})
        return {"workloads": out, "services": [
            {"name": s.name, "namespace": s.namespace, "fqdn": s.fqdn, "port": s.port,
             "subsets": [{"name": b.name, "weight": b.weight} for b in s.subsets]} for s in reg.services]}

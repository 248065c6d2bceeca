"""How the management API answers a change: the store's result as JSON, the validator's refusal (422), the
audit line, and the lookup of the service a command names (404 listing the known ones)."""

from __future__ import annotations

from typing import Any

from mesh_ctl.registry import Registry, ServiceEntry
from mesh_ctl.resources import InvalidConfig
from mesh_ctl.resources.names import resolve_host
from mesh_ctl.store import ApplyResult
from mesh_ctl.xds.web import HttpError, audit, caller


def invalid(e: InvalidConfig, counts: dict[str, int] | None = None) -> HttpError:
    extra: dict[str, Any] = {"counts": counts} if counts is not None else {}
    return HttpError(422, "invalid configuration: nothing was changed", problems=[str(p) for p in e.problems],
                     warnings=[str(w) for w in e.warnings], **extra)


def audit_change(what: str, r: ApplyResult) -> None:
    """Who changed what, at which revision (dry runs change nothing and are not recorded)."""
    if r.changed and not r.dry_run:
        audit.info("%s by %s: %s (revision %s)", what, caller(), "; ".join(r.lines()), r.revision)


def result_json(r: ApplyResult) -> dict[str, Any]:
    return {
        "revision": r.revision, "dry_run": r.dry_run, "changed": r.changed, "lines": r.lines(),
        "changes": [{"kind": c.key.kind, "namespace": c.key.namespace, "name": c.key.name, "action": c.action,
                     "resource_version": c.resource_version, "generation": c.generation} for c in r.changes],
        "warnings": [str(w) for w in r.warnings],
    }


def find_service(registry: Registry, service: str, namespace: str) -> ServiceEntry:
    """The registry's service named ``service`` (short name or FQDN) in ``namespace``; 404 naming the known
    services if there is none."""
    host = resolve_host(service, namespace, registry.domain_suffix)
    entry = registry.service(host)
    if entry is None:
        services = ", ".join(f"{s.name} (namespace {s.namespace})" for s in registry.services) or "none"
        raise HttpError(404, f"there is no service {service!r} in namespace {namespace} (host {host}); "
                             f"known services: {services}", known_services=[s.fqdn for s in registry.services])
    return entry

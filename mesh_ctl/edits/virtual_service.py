"""Set or clear a route block (``fault``, ``retries``) of a service's VirtualService.

Which routes: every route that forwards calls, or with a subset the routes that send calls to that subset
alone (:func:`mesh_ctl.edits.routes.choose`). The block is replaced as a whole by the value given (what the
value leaves out takes Istio's default), or removed; nothing else of the VirtualService changes. Without a
VirtualService one is created, named after the service, whose one route keeps the routing the service had
(the topology's split), so that adding a fault does not move traffic.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from mesh_ctl.edits.lookup import HostConfig
from mesh_ctl.edits.model import NETWORKING_V1, Change, Edit, EditRefused, kept_metadata
from mesh_ctl.edits.routes import HttpRoute, choose, http_routes

KIND = "VirtualService"
# field -> the block in words, as messages use it
ROUTE_FIELDS: dict[str, str] = {"fault": "a fault", "retries": "a retry policy"}


def set_route_policy(field: str, value: Mapping[str, Any] | None, config: HostConfig, subset: str | None = None,
                     name_taken: bool = False) -> Edit:
    """The VirtualService with ``field`` set to ``value`` (None: removed) on the routes of ``subset`` (None:
    every route that forwards calls). ``name_taken``: a VirtualService named after the service exists but is
    for other hosts (then none can be created). Raises :class:`EditRefused`."""
    if field not in ROUTE_FIELDS:
        raise ValueError(f"not a route field: {field}")
    service = config.service
    short, namespace = service.name, service.namespace
    if subset is not None:
        names, where = config.subsets()
        if subset not in names:
            raise EditRefused(f"subset {subset} of {short} does not exist (subsets from {where}: "
                              f"{', '.join(names) or 'none'})")
    existing = config.virtual_service
    if existing is None:
        if value is None:
            return Edit(KIND, namespace, short, None, notes=(f"{short} has no VirtualService: there is no "
                                                             f"{field} to clear",))
        if name_taken:
            raise EditRefused(f"{KIND} {namespace}/{short} exists but is not for host {short}: give {short} a "
                              "VirtualService of its own first (mesh_ctl apply -f)")
        doc, created, source = _new(config), True, "topology"
    else:
        doc = copy.deepcopy(existing.to_dict())
        doc["metadata"] = kept_metadata(doc)
        created, source = False, ""
    name = str(doc["metadata"]["name"])
    resource = f"{KIND} {namespace}/{name}"
    routes = http_routes(doc["spec"], namespace, service.domain_suffix)
    ns_flag = f" -n {namespace}" if namespace != "default" else ""
    chosen = choose(routes, service.fqdn, subset, what=ROUTE_FIELDS[field], resource=resource,
                    shift_hint=f"mesh_ctl set-weight {short} {subset}=100{ns_flag}")
    changes = []
    http: list[dict[str, Any]] = doc["spec"]["http"]
    for r in chosen:
        block = http[r.index]
        before = copy.deepcopy(block.get(field))
        if value is None:
            block.pop(field, None)
        else:
            block[field] = copy.deepcopy(dict(value))
        changes.append(Change(r.path, r.label, r.to_text(service.fqdn), before, block.get(field)))
    notes = _notes(field, routes, chosen, http, service.fqdn, subset)
    return Edit(KIND, namespace, name, doc, created, tuple(changes), tuple(notes), source)


def _new(config: HostConfig) -> dict[str, Any]:
    """A VirtualService whose one route sends calls where they go without one (the topology's split)."""
    short = config.service.name
    split = config.default_split()
    if not split:
        route: list[dict[str, Any]] = [{"destination": {"host": short}}]
    elif len(split) == 1:
        route = [{"destination": {"host": short, "subset": split[0][0]}}]
    else:
        route = [{"destination": {"host": short, "subset": s}, "weight": w} for s, w in split]
    return {"apiVersion": NETWORKING_V1, "kind": KIND,
            "metadata": {"name": short, "namespace": config.service.namespace},
            "spec": {"hosts": [short], "http": [{"route": route}]}}


def _notes(field: str, routes: list[HttpRoute], chosen: list[HttpRoute], http: list[dict[str, Any]], host: str,
           subset: str | None) -> list[str]:
    notes = []
    picked = {r.index for r in chosen}
    for r in routes:
        if r.index in picked:
            continue
        why = "it answers by itself (direct response)" if not r.forwards else f"it does not send calls to {subset}"
        notes.append(f"{r.label} ({r.to_text(host)}) is left as it is: {why}")
    other = "retries" if field == "fault" else "fault"
    both = [r.label for r in chosen if http[r.index].get(field) is not None and http[r.index].get(other) is not None]
    if both:
        notes.append(f"{', '.join(both)} also {'has' if len(both) == 1 else 'have'} {ROUTE_FIELDS[other]}: "
                     "the fault filter answers before the router, so an injected abort is never retried")
    return notes

"""``POST /v1/set-policy``: set or clear one policy block of a service's VirtualService or DestinationRule,
what `mesh_ctl fault|retries|lb|outlier` call.

    {"service": "payment", "namespace": "default", "field": "fault",
     "value": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 30}}}, "subset": "v2", "dry_run": false}

``field`` is the Istio field written: ``fault`` and ``retries`` (VirtualService ``http[]``, on every route
that forwards calls, or with ``subset`` on the routes that send calls to that subset alone), ``loadBalancer``
and ``outlierDetection`` (DestinationRule ``trafficPolicy``). ``value`` is the block as Istio writes it,
replacing the old one whole; null removes it. The edit (:mod:`mesh_ctl.edits`) runs under the store's writer
lock and its result is validated like any apply. Answers: 200 with the store's result, ``resource``,
``host``, ``created``, ``targets`` (each block's path, label, destinations, ``before`` and ``after``),
``notes`` and the ``document`` (stored, or for a dry run the one that would be); 404 no such service; 422 the
edit cannot be made as asked (``error`` says why and what to do) or the result is invalid (``problems``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from mesh_ctl.edits import ROUTE_FIELDS, Edit, EditRefused, set_route_policy, set_traffic_policy
from mesh_ctl.edits.lookup import host_config, named
from mesh_ctl.resources import InvalidConfig, Resource
from mesh_ctl.store import StoreSnapshot
from mesh_ctl.xds.answers import audit_change, find_service, invalid, result_json
from mesh_ctl.xds.web import HttpError

if TYPE_CHECKING:
    from mesh_ctl.server import ControlPlane


class SetPolicyBody(BaseModel):
    service: str = Field(min_length=1, description="short name or FQDN")
    namespace: str = Field("default", min_length=1)
    field: Literal["fault", "retries", "loadBalancer", "outlierDetection"] = Field(
        description="the Istio field: VirtualService http[].fault / .retries, DestinationRule "
                    "trafficPolicy.loadBalancer / .outlierDetection")
    value: dict[str, Any] | None = Field(None, description="the block as Istio writes it; null removes it")
    subset: str | None = Field(None, min_length=1, description="fault and retries only: the routes that send "
                                                               "calls to this subset alone")
    dry_run: bool = False


async def set_policy(cp: ControlPlane, body: SetPolicyBody) -> dict[str, Any]:
    service = find_service(cp.registry, body.service, body.namespace)
    on_routes = body.field in ROUTE_FIELDS
    if body.subset is not None and not on_routes:
        raise HttpError(400, f"subset applies to fault and retries only, not to {body.field}")
    kind = "VirtualService" if on_routes else "DestinationRule"
    edits: list[Edit] = []

    def make(snapshot: StoreSnapshot) -> list[Resource]:
        config = host_config(snapshot.resources, service)
        same_name = named(snapshot.resources, kind, service.namespace, service.name)
        taken = same_name is not None and same_name not in (config.virtual_service, config.destination_rule)
        if on_routes:
            edit = set_route_policy(body.field, body.value, config, body.subset, taken)
        else:
            edit = set_traffic_policy(body.field, body.value, config, taken)
        edits.append(edit)
        doc = edit.document
        if doc is None:
            return []
        return [Resource(doc["apiVersion"], doc["kind"], doc["metadata"], doc["spec"], body.field, 0, doc)]

    try:
        result = await asyncio.to_thread(cp.store.update, make, body.dry_run)
    except EditRefused as e:
        raise HttpError(422, str(e)) from None
    except InvalidConfig as e:
        raise invalid(e) from None
    (edit,) = edits
    audit_change(f"set-policy {body.field} of {service.name}.{service.namespace}", result)
    stored = cp.store.get(kind, edit.namespace, edit.name)
    document = edit.document if body.dry_run or stored is None else dict(stored.raw or stored.to_dict())
    return {**result_json(result), "host": service.fqdn, "resource": edit.resource, "field": body.field,
            "created": edit.created and result.changed, "before_source": edit.before_source,
            "targets": [c.to_json() for c in edit.changes], "notes": list(edit.notes),
            "document": document if edit.document is not None else None}

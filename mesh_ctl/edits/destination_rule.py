"""Set or clear a ``trafficPolicy`` block (``loadBalancer``, ``outlierDetection``) of a service's
DestinationRule.

The DestinationRule edited is the host's in the service's namespace; the block is replaced as a whole (what
the value leaves out takes Istio's default) or removed, and nothing else changes: subsets, other policies,
port-level settings. Without a DestinationRule one is created, named after the service, with the topology's
subsets (they acted as the host's DestinationRule until then, and a rule without them would leave routes to
v1/v2 without a destination). Policies that override the DR-level block for some calls are named in notes:
a subset's own block (Istio merges subset policies part by part), a ``portLevelSettings`` entry for the
service port (it replaces the DR-level policy as a whole: its omitted parts take the defaults).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from mesh_ctl.edits.lookup import HostConfig
from mesh_ctl.edits.model import NETWORKING_V1, Change, Edit, EditRefused, kept_metadata

KIND = "DestinationRule"
TRAFFIC_POLICY_FIELDS: dict[str, str] = {"loadBalancer": "load balancer", "outlierDetection": "outlier detection"}


def set_traffic_policy(field: str, value: Mapping[str, Any] | None, config: HostConfig,
                       name_taken: bool = False) -> Edit:
    """The DestinationRule with ``trafficPolicy.<field>`` set to ``value`` (None: removed). ``name_taken``: a
    DestinationRule named after the service exists for another host. Raises :class:`EditRefused`."""
    if field not in TRAFFIC_POLICY_FIELDS:
        raise ValueError(f"not a traffic policy field: {field}")
    service = config.service
    short, namespace = service.name, service.namespace
    existing = config.destination_rule
    notes: list[str] = []
    elsewhere = [f"{r.namespace}/{r.name}" for r in config.destination_rules if r.namespace != namespace]
    if existing is None:
        if value is None:
            return Edit(KIND, namespace, short, None,
                        notes=(f"{short} has no DestinationRule in namespace {namespace}: there is no {field} to "
                               "clear",))
        if name_taken:
            raise EditRefused(f"{KIND} {namespace}/{short} exists but is not for host {short}: give {short} a "
                              "DestinationRule of its own first (mesh_ctl apply -f)")
        spec: dict[str, Any] = {"host": short}
        if not config.destination_rules and service.subsets:
            spec["subsets"] = [{"name": s.name, "labels": dict(s.labels)} for s in service.subsets]
            notes.append(f"created with the topology's subsets ({', '.join(s.name for s in service.subsets)}), "
                         "which acted as its DestinationRule until now")
        doc: dict[str, Any] = {"apiVersion": NETWORKING_V1, "kind": KIND,
                               "metadata": {"name": short, "namespace": namespace}, "spec": spec}
        created = True
    else:
        doc = copy.deepcopy(existing.to_dict())
        doc["metadata"] = kept_metadata(doc)
        created = False
    if elsewhere:
        notes.append(f"{short} also has DestinationRule {', '.join(elsewhere)} (another namespace): a client in "
                     "that namespace uses that one instead")
    spec = doc["spec"]
    policy: dict[str, Any] = dict(spec.get("trafficPolicy") or {})
    before = copy.deepcopy(policy.get(field))
    if value is None:
        policy.pop(field, None)
    else:
        policy[field] = copy.deepcopy(dict(value))
    if policy:
        spec["trafficPolicy"] = policy
    else:
        spec.pop("trafficPolicy", None)
    change = Change(f"spec.trafficPolicy.{field}", f"trafficPolicy.{field}", "", before, policy.get(field))
    notes.extend(_overrides(field, spec, service.port))
    return Edit(KIND, namespace, str(doc["metadata"]["name"]), doc, created, (change,), tuple(notes))


def _brief(value: object) -> str:
    if isinstance(value, Mapping) and set(value) == {"simple"}:
        return str(value["simple"])
    return json.dumps(value, separators=(", ", ": "), sort_keys=True)


def _port(entry: Mapping[str, Any]) -> object:
    return (entry.get("port") or {}).get("number")


def _overrides(field: str, spec: Mapping[str, Any], service_port: int) -> list[str]:
    """The policies that take precedence over ``trafficPolicy.<field>`` for some of the host's calls."""
    out = []
    for entry in (spec.get("trafficPolicy") or {}).get("portLevelSettings") or ():
        if _port(entry) != service_port:
            continue
        if field in entry:
            out.append(f"portLevelSettings for port {service_port} has its own {field} ({_brief(entry[field])}), "
                       "which the service's calls use instead")
        else:
            out.append(f"portLevelSettings for port {service_port} replaces the DestinationRule-level policy for "
                       f"the service's calls, and has no {field}: they get Istio's default {field}, not this one")
    for subset in spec.get("subsets") or ():
        name, policy = subset.get("name"), subset.get("trafficPolicy") or {}
        if field in policy:
            out.append(f"subset {name} has its own {field} ({_brief(policy[field])}): calls to {name} keep it (a "
                       "subset's policy overrides the DestinationRule's)")
        elif any(_port(e) == service_port for e in policy.get("portLevelSettings") or ()):
            out.append(f"subset {name} has portLevelSettings for port {service_port}, which replace this policy "
                       f"for calls to {name}")
    return out

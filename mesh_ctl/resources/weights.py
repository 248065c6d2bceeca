"""``mesh_ctl set-weight payment v1=90 v2=10`` as a pure function: the VirtualService to apply.

With an existing VirtualService, everything is kept except the destinations of its *default route* (the
last ``http`` entry without ``match``; one is appended if there is none): they become one destination per
subset, in the order given, with the given weights. A destination already present for a subset keeps its
other fields (``port``, ``headers``); the host is the one the default route already used, else
``service_host``. Without one, a new ``networking.istio.io/v1`` VirtualService named after the service is
returned. The result still goes through :meth:`mesh_ctl.store.ConfigStore.apply`, which validates it.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from typing import Any

from mesh_ctl.resources.model import InvalidConfig, ValidationProblem
from mesh_ctl.resources.names import is_dns1123_label

ORIGIN = "<set-weight>"


def _fail(namespace: str, name: str, path: str, reason: str) -> InvalidConfig:
    return InvalidConfig([ValidationProblem(ORIGIN, "VirtualService", f"{namespace}/{name}", path, reason)])


def weights_virtual_service(
    service_host: str,
    namespace: str,
    weights: Mapping[str, int],
    existing_vs: Mapping[str, Any] | None = None,
    known_subsets: Collection[str] | None = None,
) -> dict[str, Any]:
    """The VirtualService document that sends ``weights`` (subset -> weight) of the default route.

    ``known_subsets``: the subsets the host's DestinationRule defines, when known; an unknown subset is an
    error here already. Raises :class:`InvalidConfig` naming the weight that is wrong."""
    name = str((existing_vs or {}).get("metadata", {}).get("name") or service_host.split(".", maxsplit=1)[0])
    if not weights:
        raise _fail(namespace, name, "weights", "give at least one subset=weight")
    for subset, weight in weights.items():
        path = f"weights[{subset}]"
        if not is_dns1123_label(subset):
            raise _fail(namespace, name, path, f"subset name is invalid: {subset}")
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0 or weight > 2**31 - 1:
            raise _fail(namespace, name, path, f"weight must be an integer >= 0, got {weight!r}")
        if known_subsets is not None and subset not in known_subsets:
            known = ", ".join(sorted(known_subsets)) or "none"
            raise _fail(
                namespace,
                name,
                path,
                f"subset {subset} not found in the DestinationRule of host {service_host} (subsets: {known})",
            )
    if len(weights) > 1 and sum(weights.values()) == 0:
        raise _fail(namespace, name, "weights", "total destination weight = 0: at least one weight must be > 0")

    if existing_vs is None:
        vs: dict[str, Any] = {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hosts": [service_host], "http": []},
        }
    else:
        vs = copy.deepcopy(dict(existing_vs))
        meta = {k: v for k, v in vs.get("metadata", {}).items() if k in ("name", "namespace", "labels", "annotations")}
        vs["metadata"] = meta
    http: list[dict[str, Any]] = vs["spec"].setdefault("http", [])
    default = next((r for r in reversed(http) if not r.get("match")), None)
    if default is None:
        default = {}
        http.append(default)
    old = {str((d.get("destination") or {}).get("subset", "")): d for d in default.get("route") or ()}
    host = next(
        (str(d["destination"]["host"]) for d in default.get("route") or () if (d.get("destination") or {}).get("host")),
        service_host,
    )
    route = []
    for subset, weight in weights.items():
        dest = copy.deepcopy(old.get(subset)) or {"destination": {"host": host, "subset": subset}}
        dest["destination"]["subset"] = subset
        dest["weight"] = weight
        route.append(dest)
    default["route"] = route
    return vs

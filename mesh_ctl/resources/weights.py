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

ORIGIN = "set-weight"
MAX_WEIGHT = 100  # a weight is a percentage (Istio's docs: "weights across destinations should add up to 100")


def _fail(namespace: str, name: str, path: str, reason: str) -> InvalidConfig:
    return InvalidConfig([ValidationProblem(ORIGIN, "VirtualService", f"{namespace}/{name}", path, reason)])


def relative_shares(weights: Mapping[str, int]) -> str:
    """``v1 66.7 %, v2 33.3 %``: what Istio makes of weights that do not add up to 100 (weight / total)."""
    total = sum(weights.values())
    return ", ".join(f"{s} {100 * w / total:.3g} %" for s, w in weights.items()) if total else "no traffic"


def sum_problem(weights: Mapping[str, int]) -> str | None:
    """Why weights that do not add up to 100 are refused, and what Istio would do with them (None: they do)."""
    total = sum(weights.values())
    if total == MAX_WEIGHT:
        return None
    numbers = " + ".join(str(w) for w in weights.values())
    return (f"the weights add up to {total} ({numbers}), not 100. Istio would accept them and give each subset "
            f"its weight divided by the total ({relative_shares(weights)}); set-weight refuses them so that a "
            "typo cannot move traffic. Give weights that add up to 100, or pass --relative to mean the shares "
            "above")


def weights_virtual_service(
    service_host: str,
    namespace: str,
    weights: Mapping[str, int],
    existing_vs: Mapping[str, Any] | None = None,
    known_subsets: Collection[str] | None = None,
    relative: bool = False,
) -> dict[str, Any]:
    """The VirtualService document that sends ``weights`` (subset -> weight) of the default route.

    Each weight is 0 to 100 and, unless ``relative``, they add up to 100. ``known_subsets``: the subsets the host's
    DestinationRule defines, when known; an unknown subset is an error here already. Raises
    :class:`InvalidConfig` naming the weight that is wrong."""
    name = str((existing_vs or {}).get("metadata", {}).get("name") or service_host.split(".", maxsplit=1)[0])
    if not weights:
        raise _fail(namespace, name, "weights", "give at least one subset=weight")
    for subset, weight in weights.items():
        path = f"weights[{subset}]"
        if not is_dns1123_label(subset):
            raise _fail(namespace, name, path, f"subset name is invalid: {subset}")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
            raise _fail(namespace, name, path, f"a weight is a percentage from 0 to 100, got {weight!r}")
        if known_subsets is not None and subset not in known_subsets:
            known = ", ".join(sorted(known_subsets)) or "none"
            raise _fail(
                namespace,
                name,
                path,
                f"subset {subset} not found in the DestinationRule of host {service_host} (subsets: {known})",
            )
    if sum(weights.values()) == 0:
        raise _fail(namespace, name, "weights", "all weights are 0: at least one subset must get traffic "
                    "(Istio refuses a route whose total weight is 0)")
    problem = None if relative else sum_problem(weights)
    if problem is not None:
        raise _fail(namespace, name, "weights", problem)

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


def default_route_weights(spec: Mapping[str, Any]) -> list[tuple[str, int]] | None:
    """The (subset, weight) split of a VirtualService's default route (the last http entry without
    ``match``), or None if it has none. One destination gets 100 (Istio's rule for a lone destination)."""
    http = spec.get("http") or []
    default = next((r for r in reversed(http) if isinstance(r, Mapping) and not r.get("match")), None)
    if default is None:
        return None
    route = [d for d in default.get("route") or () if isinstance(d, Mapping)]
    out = []
    for d in route:
        dest = d.get("destination") or {}
        subset = str(dest.get("subset") or "") or f"({dest.get('host', '?')})"
        out.append((subset, 100 if len(route) == 1 else int(d.get("weight") or 0)))
    return out

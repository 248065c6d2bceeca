"""Checks that need more than one resource, run on the state as it would be after a change.

- A VirtualService destination (route, mirror, mirrors; http, tcp, tls) naming a ``subset`` needs a
  DestinationRule for that host, visible from the VirtualService's namespace (same namespace, or exported to
  it; ``exportTo`` defaults to ``*``), that defines the subset; when no DestinationRule is visible, the
  caller's ``implicit`` subsets (minimesh's topology) count instead. Istio accepts a dangling subset (istioctl
  analyze reports IST0101) and then fails the calls; minimesh refuses it.
- Two VirtualServices bound to the mesh that claim the same host, where both are visible to some namespace,
  conflict (Istio merges VirtualServices only for gateways; for sidecars it silently keeps the oldest:
  istioctl analyze IST0109). The newer one is refused, naming the other.
- Removing or changing a DestinationRule so that a stored VirtualService loses its subset is refused on
  the DestinationRule, naming the VirtualService.

Only problems this change introduces are reported: a stored resource that was already broken (e.g. stored by
an older version) does not block unrelated applies.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mesh_ctl.resources.common import visible_to
from mesh_ctl.resources.model import Resource, ResourceKey
from mesh_ctl.resources.names import host_matches, resolve_host
from mesh_ctl.resources.virtual_service import MESH_GATEWAY

State = Mapping[ResourceKey, Resource]
# Subsets known without a DestinationRule (minimesh's topology gives each service implicit subsets):
# resolved host -> subset names, or None when the host has none.
ImplicitSubsets = Callable[[str], Collection[str] | None]


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem found in a state, before deciding whom to blame."""

    key: ResourceKey  # the resource whose field is wrong
    path: str
    reason: str
    related: tuple[ResourceKey, ...] = ()  # other resources involved (the DR lacking the subset, the other VS)
    host: str = ""  # the resolved host concerned
    detail: str = ""  # the missing subset's name, for missing_subsets


def _destinations(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for i, http in enumerate(spec.get("http") or ()):
        base = f"spec.http[{i}]"
        for j, route in enumerate(http.get("route") or ()):
            yield f"{base}.route[{j}].destination", route.get("destination") or {}
        if isinstance(http.get("mirror"), Mapping):
            yield f"{base}.mirror", http["mirror"]
        for j, mirror in enumerate(http.get("mirrors") or ()):
            yield f"{base}.mirrors[{j}].destination", mirror.get("destination") or {}
    for kind in ("tcp", "tls"):
        for i, r in enumerate(spec.get(kind) or ()):
            for j, route in enumerate(r.get("route") or ()):
                yield f"spec.{kind}[{i}].route[{j}].destination", route.get("destination") or {}


def _applies_to_mesh(spec: Mapping[str, Any]) -> bool:
    gateways = spec.get("gateways") or []
    return not gateways or MESH_GATEWAY in gateways


def missing_subsets(state: State, implicit: ImplicitSubsets | None = None) -> list[Finding]:
    drs = [r for r in state.values() if r.kind == "DestinationRule"]
    resolved = {r.key: resolve_host(str(r.spec.get("host", "")), r.namespace) for r in drs}
    out: list[Finding] = []
    for vs in state.values():
        if vs.kind != "VirtualService":
            continue
        for path, dest in _destinations(vs.spec):
            subset = dest.get("subset")
            if not subset:
                continue
            written = str(dest.get("host", ""))
            host = resolve_host(written, vs.namespace)
            candidates = [
                dr
                for dr in drs
                if host_matches(resolved[dr.key], host)
                and visible_to(dr.spec.get("exportTo"), dr.namespace, vs.namespace)
            ]
            if any(subset == s.get("name") for dr in candidates for s in dr.spec.get("subsets") or ()):
                continue
            if not candidates and implicit is not None and subset in (implicit(host) or ()):
                continue
            if candidates:
                names = ", ".join(
                    dr.name if dr.namespace == vs.namespace else f"{dr.namespace}/{dr.name}" for dr in candidates
                )
                reason = f"subset {subset} not found in DestinationRule {names} (host {written})"
            else:
                reason = (
                    f"subset {subset} not found: no DestinationRule for host {written} ({host}) is visible "
                    f"from namespace {vs.namespace}"
                )
            out.append(Finding(vs.key, f"{path}.subset", reason, tuple(dr.key for dr in candidates), host, subset))
    return out


def _visibility(spec: Mapping[str, Any], namespace: str) -> frozenset[str] | None:
    """The namespaces a resource is visible to; None means all."""
    export_to = spec.get("exportTo") or ["*"]
    if "*" in export_to:
        return None
    return frozenset(namespace if e == "." else e for e in export_to)


def host_conflicts(state: State, order: Sequence[ResourceKey]) -> list[Finding]:
    """VirtualServices claiming a host another (earlier in ``order``) already claims; blamed on the later."""
    rank = {key: i for i, key in enumerate(order)}
    services = sorted(
        (r for r in state.values() if r.kind == "VirtualService" and _applies_to_mesh(r.spec)),
        key=lambda r: rank.get(r.key, -1),
    )
    claimed: dict[str, list[tuple[Resource, frozenset[str] | None]]] = {}
    out: list[Finding] = []
    for vs in services:
        seen_here: set[str] = set()
        visibility = _visibility(vs.spec, vs.namespace)
        for i, written in enumerate(vs.spec.get("hosts") or ()):
            host = resolve_host(str(written), vs.namespace)
            if host in seen_here:
                continue
            seen_here.add(host)
            for other, other_vis in claimed.get(host, ()):
                if visibility is None or other_vis is None or visibility & other_vis:
                    shown = written if host == written else f"{written} ({host})"
                    out.append(
                        Finding(
                            vs.key,
                            f"spec.hosts[{i}]",
                            f"host {shown} is already claimed by VirtualService {other.namespace}/"
                            f"{other.name}: merge the routes into one VirtualService (for sidecars "
                            "Istio uses only the oldest; istioctl analyze IST0109)",
                            (other.key,),
                            host,
                        )
                    )
                    break
            claimed.setdefault(host, []).append((vs, visibility))
    return out


def duplicate_destination_rules(state: State) -> list[Finding]:
    """Warnings: several DestinationRules for one host in one namespace (minimesh's translator uses one)."""
    by_host: dict[tuple[str, str], list[Resource]] = {}
    for r in state.values():
        if r.kind == "DestinationRule" and "workloadSelector" not in r.spec:
            host = resolve_host(str(r.spec.get("host", "")), r.namespace)
            by_host.setdefault((r.namespace, host), []).append(r)
    out: list[Finding] = []
    for (_ns, host), rules in by_host.items():
        for r in rules[1:]:
            out.append(
                Finding(
                    r.key,
                    "spec.host",
                    f"DestinationRule {rules[0].namespace}/{rules[0].name} is also for "
                    f"host {host}: Istio merges them, minimesh uses only one",
                    (rules[0].key,),
                    host,
                )
            )
    return out

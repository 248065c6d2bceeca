"""What `mesh_ctl up` says is in force: the topology's defaults *as changed by the stored Istio resources*.

The control plane's store survives `down` (by design, like a cluster's etcd), so a VirtualService, a STRICT
PeerAuthentication or an AuthorizationPolicy applied in an earlier run still decides the traffic of this one.
The banner must show that, not the topology's 50/50: :func:`in_force` reads the stored resources the way the
translator does (:class:`mesh_ctl.translate.istio.IstioConfig`: which VirtualService a caller sees for a
service, each workload's effective mTLS mode, the AuthorizationPolicies that apply to it) and returns

- ``splits``: per (caller, service), the default route's subset weights in force (what ``traffic_lines`` draws);
- ``lines``: in words, each stored resource's effect, and what it means for the client outside the mesh.

Pure: no I/O. The resources come from the control plane's API (``GET /v1/resources``) once it is up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh_ctl.resources.weights import default_route_weights
from mesh_ctl.topology import Service, Topology, Workload
from mesh_ctl.translate.istio import index_resources

Split = tuple[tuple[str, int], ...]  # (subset, weight) of a default route


@dataclass(frozen=True, slots=True)
class InForce:
    splits: Mapping[tuple[str, str], Split] = field(default_factory=dict)  # (caller, service) -> split
    lines: tuple[str, ...] = ()
    stored: int = 0  # how many Istio resources the store holds

    def split(self, caller: str, service: Service) -> Split:
        """The split in force for ``caller`` -> ``service``: a stored VirtualService's, else the topology's."""
        return self.splits.get((caller, service.name)) or tuple((s.name, s.weight) for s in service.subsets)


def _shares(split: Split) -> str:
    total = sum(w for _, w in split)
    return ", ".join(f"{s} {100 * w / total:.3g}%" if total else f"{s} 0%" for s, w in split)


def _route_notes(spec: Mapping[str, Any]) -> list[str]:
    """What else the VirtualService's http routes do, besides the default split: matches, mirrors, retries."""
    http = [r for r in spec.get("http") or () if isinstance(r, Mapping)]
    notes = []
    matched = [r for r in http if r.get("match")]
    if matched:
        notes.append(f"{len(matched)} route{'s' if len(matched) > 1 else ''} with a match before it")
    for key, what in (("mirror", "mirroring"), ("fault", "fault injection"), ("retries", "retries"),
                      ("timeout", "a timeout")):
        if any(r.get(key) for r in http):
            notes.append(what)
    return notes


def in_force(topology: Topology, resources: Sequence[Mapping[str, Any]],
             outside_caller_target: str | None = None) -> InForce:
    """The stored ``resources``' effect on ``topology`` (``outside_caller_target``: the workload that the
    client outside the mesh calls, if there is one, so its fate under STRICT or an ALLOW policy is said)."""
    if not resources:
        return InForce()
    try:
        istio = index_resources(list(resources), topology.domain_suffix)
    except ValueError as e:  # the banner is a report: it never stops `up` (the control plane says more)
        line = (f"in force: {len(resources)} stored Istio resources, which could not be read here ({e}); see "
                "`mesh_ctl get vs`, `mesh_ctl get dr` and logs/control-plane.log")
        return InForce(lines=(line,), stored=len(resources))
    splits: dict[tuple[str, str], Split] = {}
    lines = [f"in force (the config store keeps what was applied across runs; `mesh_ctl up --fresh` starts "
             f"without it): {len(resources)} Istio resource{'s' if len(resources) != 1 else ''}"]
    described: set[str] = set()
    for caller in topology.workloads:
        for service in topology.called_services(caller):
            vs = istio.virtual_service(service.fqdn(topology.domain_suffix), caller.namespace)
            if vs is None:
                continue
            split = tuple(default_route_weights(vs.config.spec) or ())
            if split:
                splits[(caller.name, service.name)] = split
            if vs.config.label in described:
                continue
            described.add(vs.config.label)
            default = _shares(tuple(s for s in split if s[1])) if split else "no default route"
            topo = _shares(tuple((s.name, s.weight) for s in service.subsets))
            notes = _route_notes(vs.config.spec)
            lines.append(f"  {vs.config.label}: {service.name} -> {default}"
                         f"{' (and ' + ', '.join(notes) + ')' if notes else ''}"
                         f"{f'; the topology says {topo}' if topo and topo != default else ''}")
    lines += _mtls_lines(topology, istio, outside_caller_target)
    lines += _authz_lines(topology.workloads, istio)
    others = [r for r in resources if r.get("kind") == "DestinationRule"]
    for r in others:
        meta = r.get("metadata") or {}
        lines.append(f"  DestinationRule {meta.get('namespace', 'default')}/{meta.get('name', '?')}: host "
                     f"{(r.get('spec') or {}).get('host', '?')}, subsets "
                     f"{', '.join(str(s.get('name')) for s in (r.get('spec') or {}).get('subsets') or ()) or 'none'}")
    return InForce(splits, tuple(lines), len(resources))


def _mtls_lines(topology: Topology, istio: Any, outside_caller_target: str | None) -> list[str]:
    modes = {w.name: istio.mtls(w.namespace, w.labels) for w in topology.workloads}
    changed = {name: p for name, p in modes.items() if p.mode != "PERMISSIVE" or p.port_modes}
    if not changed:
        return []
    groups: dict[tuple[str, str], list[str]] = {}  # (mode and ports, decided by) -> workloads
    for name, policy in changed.items():
        ports = " ".join(f"port {p}: {m}" for p, m in sorted(policy.port_modes.items()))
        by = ", ".join(policy.decided_by) or "PeerAuthentication"
        groups.setdefault((f"{policy.mode}{f' ({ports})' if ports else ''}", by), []).append(name)
    out = [f"  mTLS {mode} for {', '.join(names)} ({by})" for (mode, by), names in groups.items()]
    target = changed.get(outside_caller_target or "")
    if target is not None and target.mode == "STRICT":
        out.append(f"  so the client outside the mesh is refused by {outside_caller_target}: "
                   "`mesh_ctl mtls permissive` lets it in again")
    return out


def _authz_lines(workloads: Sequence[Workload], istio: Any) -> list[str]:
    out = []
    for w in workloads:
        policies = istio.authorization(w.namespace, w.labels)
        if policies:
            names = ", ".join(f"{p.config.label} ({p.action}{', dry run' if p.dry_run else ''})" for p in policies)
            out.append(f"  authorization for {w.name}: {names}")
    return out

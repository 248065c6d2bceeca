"""The stored resources a verb edits for one service host, and the subsets the host has."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mesh_ctl.registry import ServiceEntry
from mesh_ctl.resources import Resource
from mesh_ctl.resources.names import resolve_host


@dataclass(frozen=True, slots=True)
class HostConfig:
    """What is stored for one service host: its VirtualService in the service's namespace (the one the verbs
    edit; Istio would merge several, minimesh uses the first), the DestinationRules for it (the one in the
    service's namespace first), and the topology's subsets, which act as a DestinationRule until one exists."""

    service: ServiceEntry
    virtual_service: Resource | None
    destination_rules: tuple[Resource, ...]

    @property
    def host(self) -> str:
        return self.service.fqdn

    @property
    def destination_rule(self) -> Resource | None:
        """The DestinationRule the verbs edit: the host's in the service's namespace."""
        return next((r for r in self.destination_rules if r.namespace == self.service.namespace), None)

    def subsets(self) -> tuple[list[str], str]:
        """The subset names calls may use, and where they come from (for messages)."""
        if self.destination_rules:
            names = [str(s.get("name")) for r in self.destination_rules for s in r.spec.get("subsets") or ()]
            where = ", ".join(f"DestinationRule {r.namespace}/{r.name}" for r in self.destination_rules)
            return list(dict.fromkeys(names)), where
        return [s.name for s in self.service.subsets], "the topology (no DestinationRule)"

    def default_split(self) -> list[tuple[str, int]]:
        """The routing without a VirtualService: the topology's subsets with a weight, as far as they are
        defined (the translator's ``subset_weights``); [] means the whole service."""
        defined, _ = self.subsets()
        return [(s.name, s.weight) for s in self.service.subsets if s.weight > 0 and s.name in defined]


def host_config(resources: Iterable[Resource], service: ServiceEntry) -> HostConfig:
    host, namespace = service.fqdn, service.namespace
    listed: Sequence[Resource] = list(resources)

    def resolved(name: object, ns: str) -> str:
        return resolve_host(str(name), ns, service.domain_suffix)

    vs = next((r for r in listed if r.kind == "VirtualService" and r.namespace == namespace
               and any(resolved(h, namespace) == host for h in r.spec.get("hosts") or ())), None)
    rules = sorted((r for r in listed if r.kind == "DestinationRule" and resolved(r.spec.get("host", ""),
                                                                                  r.namespace) == host),
                   key=lambda r: r.namespace != namespace)
    return HostConfig(service, vs, tuple(rules))


def named(resources: Iterable[Resource], kind: str, namespace: str, name: str) -> Resource | None:
    return next((r for r in resources if r.kind == kind and r.namespace == namespace and r.name == name), None)

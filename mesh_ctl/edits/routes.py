"""A VirtualService's ``http`` routes seen as traffic shares, and which of them a ``--subset`` means.

An Istio route block (``fault``, ``retries``) belongs to a whole ``http`` route, whatever destination each
call then goes to. So "the fault of subset v2" can only be put on routes whose every call goes to v2: the
routes whose destinations with traffic (weight > 0, or the only one) are all subset v2 of the service. A
route that sends some calls to v2 and some elsewhere cannot take it without hitting those other calls too:
that is refused, with what to do instead. Without ``--subset`` every route that forwards calls takes it
(routes that answer by themselves, ``directResponse``, never reach the service).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mesh_ctl.edits.model import EditRefused
from mesh_ctl.resources.names import resolve_host


@dataclass(frozen=True, slots=True)
class Share:
    host: str  # the destination's FQDN
    subset: str  # "" = every endpoint of the host
    percent: float


@dataclass(frozen=True, slots=True)
class HttpRoute:
    index: int
    name: str
    matches: bool  # has a ``match`` (else it takes every call that reaches it)
    forwards: bool  # has destinations (not a direct response)
    shares: tuple[Share, ...]  # the destinations that get calls, with their share

    @property
    def path(self) -> str:
        return f"spec.http[{self.index}]"

    @property
    def label(self) -> str:
        return f"http[{self.index}]" + (f" {self.name}" if self.name else "")

    def to_text(self, service_host: str) -> str:
        """``v1 90%, v2 10%``; ``v2``; ``payment (all subsets)``; another host by its name."""
        if not self.forwards:
            return "(direct response)"
        if not self.shares:
            return "(no destination with traffic)"
        parts = []
        for s in self.shares:
            if s.host == service_host:
                what = s.subset or f"{service_host.split('.', maxsplit=1)[0]} (all subsets)"
            else:
                what = f"{s.host}/{s.subset}" if s.subset else s.host
            parts.append(what if len(self.shares) == 1 else f"{what} {s.percent:.4g}%")
        return ", ".join(parts)

    def only(self, host: str, subset: str) -> bool:
        return bool(self.shares) and all(s.host == host and s.subset == subset for s in self.shares)

    def reaches(self, host: str, subset: str) -> bool:
        return any(s.host == host and s.subset in (subset, "") for s in self.shares)


def http_routes(spec: Mapping[str, Any], namespace: str, domain_suffix: str) -> list[HttpRoute]:
    out = []
    for i, http in enumerate(spec.get("http") or ()):
        destinations = [d for d in http.get("route") or () if isinstance(d, Mapping)]
        weights = [1 if len(destinations) == 1 else max(int(d.get("weight") or 0), 0) for d in destinations]
        total = sum(weights)
        shares = tuple(
            Share(resolve_host(str((d.get("destination") or {}).get("host", "")), namespace, domain_suffix),
                  str((d.get("destination") or {}).get("subset") or ""), 100 * w / total)
            for d, w in zip(destinations, weights, strict=True) if w > 0)
        out.append(HttpRoute(i, str(http.get("name") or ""), bool(http.get("match")), bool(destinations), shares))
    return out


def choose(routes: Sequence[HttpRoute], host: str, subset: str | None, *, what: str, resource: str,
           shift_hint: str) -> list[HttpRoute]:
    """The routes a block for ``subset`` (None: every call) goes on; :class:`EditRefused` when there is none,
    or when a route sends calls both to ``subset`` and elsewhere. ``what``: the block in words (``a fault``);
    ``shift_hint``: the command that sends the default route to the subset alone."""
    forwarding = [r for r in routes if r.forwards]
    if not forwarding:
        raise EditRefused(f"{resource} has no route that forwards calls (only direct responses): there is no "
                          f"route to put {what} on")
    if subset is None:
        return forwarding
    chosen = [r for r in forwarding if r.only(host, subset)]
    mixed = [r for r in forwarding if r.reaches(host, subset) and not r.only(host, subset)]
    if mixed:
        r = mixed[0]
        if r.matches:
            fix = (f"give that route subset {subset} as its only destination (edit the VirtualService: mesh_ctl get "
                   f"vs {resource.rsplit('/', maxsplit=1)[-1]} -o yaml, then mesh_ctl apply -f)")
        else:
            fix = f"shift that route to {subset} alone first ({shift_hint})"
        raise EditRefused(
            f"route {r.label} of {resource} sends calls to {r.to_text(host)}, not only to subset {subset}. An Istio "
            f"{what.split(' ', 1)[-1]} belongs to a whole http route, not to one of its destinations, so it would "
            f"also hit the calls that go elsewhere. To put it on {subset} alone, {fix}; or leave out --subset to "
            "put it on every call")
    if not chosen:
        routed = "; ".join(f"{r.label}: {r.to_text(host)}" for r in forwarding)
        raise EditRefused(
            f"no route of {resource} sends calls to subset {subset} alone ({routed}), so there is no route to "
            f"put {what} on. Give {subset} a route of its own first: e.g. {shift_hint}, or a header-matched "
            "route to it (examples/vs-header-canary.yaml)")
    return chosen

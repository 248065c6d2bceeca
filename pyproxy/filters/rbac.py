"""The RBAC HTTP filter (``envoy.filters.http.rbac``), Envoy's semantics.

Compiled once per snapshot (:class:`RbacFilter`), evaluated per request against what the request and its
connection say (:class:`RequestFacts`):

- ``rules`` unset: everything is allowed. ``ALLOW``: allowed iff some policy matches (so no policies = deny
  all, Istio's ``spec: {}``). ``DENY``: denied iff some policy matches. ``LOG``: never changes the decision
  (Istio's AUDIT); the matched policy is recorded.
- A policy matches when any of its permissions and any of its principals match.
- ``url_path`` sees the path without its query string; ``header`` uses the route matcher's semantics (``:method``,
  ``:authority``, ``:path`` are headers too); ``authenticated.principal_name`` matches the peer certificate's
  URI SANs (then DNS SANs, then the subject, as Envoy does); ``destination_port`` is the local port of the
  downstream connection; the IP principals see the peer address (no x-forwarded-for trust).
- ``shadow_rules`` are evaluated the same way but only counted and recorded.
The decision and the matched policy feed the access log (``rbac_access_denied_matched_policy[...]``) and
stats; a denied request is answered 403 "RBAC: access denied" (gRPC: 7 PERMISSION_DENIED) with a local reply.

Per route, ``typed_per_filter_config`` may carry an ``RBACPerRoute``: its ``rbac`` replaces the listener's
rules for that route, and an empty one turns the filter off there (Envoy's semantics).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from pyproxy.config.model import RbacConfig, RbacMatcher, RbacPerRoute, RbacPolicy, RbacRules
from pyproxy.filters.api import CONTINUE, STOP, FilterCallbacks, HttpFilter, Status
from pyproxy.http2.hpack import Header
from pyproxy.proxy.errors import RbacDenied
from pyproxy.routing.table import _header_matches

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(slots=True)
class RequestFacts:
    """What RBAC looks at, gathered once per request."""

    headers: Sequence[Header]
    path: str  # without the query string
    destination_port: int
    peer_ip: str
    uri_sans: tuple[str, ...]
    dns_sans: tuple[str, ...]
    subject: str
    authenticated: bool


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy: str  # the policy that decided ("" when none matched)
    shadow_allowed: bool | None = None
    shadow_policy: str = ""


class _Compiled:
    __slots__ = ("bheader", "children", "kind", "matcher", "networks")

    def __init__(self, matcher: RbacMatcher) -> None:
        self.kind = matcher.kind
        self.matcher = matcher
        self.children = tuple(_Compiled(c) for c in matcher.children)
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(c) for c in matcher.cidrs)
        self.bheader = matcher.header.name.encode() if matcher.header is not None else b""

    def matches(self, f: RequestFacts) -> bool:
        kind = self.kind
        if kind == "any":
            return True
        if kind == "and":
            return all(c.matches(f) for c in self.children)
        if kind == "or":
            return any(c.matches(f) for c in self.children)
        if kind == "not":
            return not self.children[0].matches(f)
        m = self.matcher
        if kind == "header":
            assert m.header is not None
            return _header_matches(self.bheader, m.header, f.headers)
        if kind == "url_path":
            return m.string is not None and m.string.matches(f.path)
        if kind in ("destination_port", "destination_port_range"):
            return m.ports[0] <= f.destination_port < m.ports[1]
        if kind == "authenticated":
            if not f.authenticated:
                return False
            if m.string is None:
                return True
            names = f.uri_sans or f.dns_sans or ((f.subject,) if f.subject else ())
            return any(m.string.matches(n) for n in names)
        # source_ip / direct_remote_ip / remote_ip
        try:
            ip = ipaddress.ip_address(f.peer_ip)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)


class _Rules:
    __slots__ = ("action", "policies")

    def __init__(self, rules: RbacRules) -> None:
        self.action = rules.action
        self.policies: tuple[tuple[RbacPolicy, tuple[_Compiled, ...], tuple[_Compiled, ...]], ...] = tuple(
            (p, tuple(_Compiled(x) for x in p.permissions), tuple(_Compiled(x) for x in p.principals))
            for p in rules.policies)

    def evaluate(self, f: RequestFacts) -> tuple[bool, str]:
        """(allowed, policy that decided)."""
        matched = ""
        for policy, perms, princs in self.policies:
            if any(p.matches(f) for p in perms) and any(p.matches(f) for p in princs):
                matched = policy.name
                break
        if self.action == "ALLOW":
            return bool(matched), matched
        if self.action == "DENY":
            return not matched, matched
        return True, matched  # LOG


@dataclass(slots=True)
class RbacCounters:
    """Envoy's ``http.<prefix>.rbac.{allowed,denied,shadow_allowed,shadow_denied}`` (+ LOG matches)."""

    allowed: int = 0
    denied: int = 0
    shadow_allowed: int = 0
    shadow_denied: int = 0
    logged: int = 0


class RbacFilter(HttpFilter):
    __slots__ = ("_per_route", "_rules", "_shadow", "config", "counters")

    def __init__(self, name: str, config: RbacConfig, counters: RbacCounters | None = None) -> None:
        super().__init__(name)
        self.config = config
        self._rules = _Rules(config.rules) if config.rules is not None else None
        self._shadow = _Rules(config.shadow_rules) if config.shadow_rules is not None else None
        self.counters = counters or RbacCounters()
        # RBACPerRoute overrides, compiled on first use (the route table outlives no snapshot's filters).
        self._per_route: dict[int, tuple[RbacPerRoute, RbacFilter | None]] = {}

    def on_request_headers(self, cb: FilterCallbacks, end_stream: bool) -> Status:
        rbac: RbacFilter | None = self
        route = cb.route
        if route is not None and route.per_filter:
            override = route.per_filter.get(self.name)
            if isinstance(override, RbacPerRoute):
                rbac = self._override(override)
                if rbac is None:
                    return CONTINUE  # an empty RBACPerRoute: the filter is off on this route
        assert rbac is not None
        peer = cb.peer_facts()
        identity = peer.peer
        path = cb.path.decode("latin-1")
        q = path.find("?")
        facts = RequestFacts(headers=cb.request_headers, path=path if q < 0 else path[:q],
                             destination_port=peer.local_port, peer_ip=peer.peer_address[0],
                             uri_sans=identity.uri_sans, dns_sans=identity.dns_sans, subject=identity.subject,
                             authenticated=identity.presented)
        decision = rbac.evaluate(facts)
        if decision.allowed:
            return CONTINUE
        cb.send_local_reply(RbacDenied(decision.policy))
        return STOP

    def _override(self, per_route: RbacPerRoute) -> RbacFilter | None:
        cached = self._per_route.get(id(per_route))
        if cached is not None and cached[0] is per_route:
            return cached[1]
        compiled = (RbacFilter(self.name, per_route.rbac, self.counters) if per_route.rbac is not None
                    else None)
        if len(self._per_route) > 4096:
            self._per_route.clear()
        self._per_route[id(per_route)] = (per_route, compiled)
        return compiled

    def evaluate(self, facts: RequestFacts) -> Decision:
        counters = self.counters
        allowed, policy = (True, "") if self._rules is None else self._rules.evaluate(facts)
        if self._rules is not None and self._rules.action == "LOG":
            if policy:
                counters.logged += 1
        elif allowed:
            counters.allowed += 1
        else:
            counters.denied += 1
        shadow_allowed: bool | None = None
        shadow_policy = ""
        if self._shadow is not None:
            shadow_allowed, shadow_policy = self._shadow.evaluate(facts)
            if shadow_allowed:
                counters.shadow_allowed += 1
            else:
                counters.shadow_denied += 1
        return Decision(allowed, policy, shadow_allowed, shadow_policy)

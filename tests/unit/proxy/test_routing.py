"""Route selection: Envoy's virtual host domain order, path/header/grpc matchers, weighted clusters."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from pyproxy.config.model import (
    DomainIndex,
    HeaderMatcher,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    StringMatcher,
    VirtualHost,
    WeightedCluster,
)
from pyproxy.routing.table import RouteTable


def _route(name: str, cluster: str = "c", **match: object) -> Route:
    return Route(name=name, match=RouteMatch(**match), action=RouteAction(cluster=cluster))  # type: ignore[arg-type]


def _index(vhosts: tuple[VirtualHost, ...]) -> DomainIndex:
    """What the translator builds (tested in tests/unit/config): exact / suffix / prefix / wildcard."""
    exact: dict[str, VirtualHost] = {}
    suffixes: list[tuple[str, VirtualHost]] = []
    prefixes: list[tuple[str, VirtualHost]] = []
    wildcard = None
    for vh in vhosts:
        for d in (d.lower() for d in vh.domains):
            if d == "*":
                wildcard = vh
            elif d.startswith("*"):
                suffixes.append((d[1:], vh))
            elif d.endswith("*"):
                prefixes.append((d[:-1], vh))
            else:
                exact[d] = vh
    return DomainIndex(exact, tuple(sorted(suffixes, key=lambda i: -len(i[0]))),
                       tuple(sorted(prefixes, key=lambda i: -len(i[0]))), wildcard)


def _table(*vhosts: VirtualHost) -> RouteTable:
    return RouteTable(RouteConfiguration(name="rc", virtual_hosts=vhosts, domain_index=_index(vhosts)))


def _vh(name: str, domains: tuple[str, ...], *routes: Route) -> VirtualHost:
    return VirtualHost(name=name, domains=domains, routes=routes or (_route(name, prefix="/"),))


def test_domain_order_exact_suffix_prefix_default() -> None:
    table = _table(_vh("default", ("*",)), _vh("prefix", ("pay*",)), _vh("suffix", ("*.example.com",)),
                   _vh("longer-suffix", ("*.api.example.com",)), _vh("exact", ("payment:8080", "Payment")))
    def vh(authority: str) -> str:
        found = table.virtual_host(authority.encode())
        assert found is not None
        return found.vhost.name
    assert vh("payment:8080") == "exact"
    assert vh("PAYMENT") == "exact"  # case-insensitive
    assert vh("x.api.example.com") == "longer-suffix"
    assert vh("x.example.com") == "suffix"
    assert vh("paystation") == "prefix"
    assert vh("other") == "default"
    # A wildcard needs at least one character: "*.example.com" does not match ".example.com".
    assert vh(".example.com") == "default"


def test_no_virtual_host_means_no_route() -> None:
    table = _table(_vh("only", ("payment",)))
    assert table.select(b"other", b"/x", [], True) is None


def test_first_matching_route_wins_and_paths() -> None:
    routes = (
        _route("exact", path="/payment.PaymentService/Charge"),
        _route("regex", safe_regex=re.compile(r"/payment\.PaymentService/(Refund|GetPayment)")),
        _route("prefix-ci", prefix="/PAYMENT.", case_sensitive=False),
        _route("catch-all", prefix="/"),
    )
    table = _table(VirtualHost(name="v", domains=("*",), routes=routes))
    def name(path: str) -> str:
        sel = table.select(b"a", path.encode(), [], True)
        assert sel is not None
        return sel[1].route.name
    assert name("/payment.PaymentService/Charge") == "exact"
    assert name("/payment.PaymentService/Charge?x=1") == "exact"  # query ignored for path match
    assert name("/payment.PaymentService/Refund") == "regex"
    assert name("/payment.PaymentService/RefundX") == "prefix-ci"  # regex is a full match
    assert name("/other.Service/M") == "catch-all"


def test_header_matchers_follow_envoy_rules_for_absent_headers() -> None:
    exact = StringMatcher(kind="exact", value="v2")
    routes = (
        _route("canary", headers=(HeaderMatcher(name="x-canary", string_match=exact),)),
        _route("not-v2", headers=(HeaderMatcher(name="x-canary", string_match=exact, invert_match=True),)),
        _route("present", headers=(HeaderMatcher(name="x-debug"),)),
        _route("absent", headers=(HeaderMatcher(name="x-debug", present_match=False),)),
    )
    table = _table(VirtualHost(name="v", domains=("*",), routes=routes))
    def name(headers: list[tuple[bytes, bytes]]) -> str | None:
        sel = table.select(b"a", b"/", headers, True)
        return sel[1].route.name if sel else None
    assert name([(b"x-canary", b"v2")]) == "canary"
    assert name([(b"x-canary", b"v1")]) == "not-v2"
    # Absent header with an inverted string match does not match (Envoy's HeaderUtility::matchHeaders).
    assert name([(b"x-debug", b"1")]) == "present"
    assert name([]) == "absent"
    # Repeated values are joined with ",".
    join = _table(VirtualHost(name="v", domains=("*",), routes=(
        _route("joined", headers=(HeaderMatcher(name="x-a", string_match=StringMatcher(kind="exact",
                                                                                          value="1,2")),)),)))
    assert join.select(b"a", b"/", [(b"x-a", b"1"), (b"x-a", b"2")], True) is not None


def test_grpc_match_requires_grpc_content_type() -> None:
    table = _table(VirtualHost(name="v", domains=("*",), routes=(_route("g", prefix="/", grpc=True),)))
    assert table.select(b"a", b"/x", [], True) is not None
    assert table.select(b"a", b"/x", [], False) is None


def test_weighted_clusters_follow_weights() -> None:
    route = Route(name="w", match=RouteMatch(prefix="/"), action=RouteAction(weighted_clusters=(
        WeightedCluster("v1", 90), WeightedCluster("v2", 10), WeightedCluster("v3", 0))))
    table = _table(VirtualHost(name="v", domains=("*",), routes=(route,)))
    sel = table.select(b"a", b"/", [], True)
    assert sel is not None
    rng = random.Random(7)
    counts = Counter(sel[1].pick_cluster(rng) for _ in range(20000))
    assert counts["v3"] == 0
    assert counts["v1"] / 20000 == pytest.approx(0.9, abs=0.01)

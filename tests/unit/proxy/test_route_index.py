"""The route index (issue 9.6) picks exactly the route a scan of every route in order picks (Envoy's rule: the
first route whose whole match succeeds), and its cost does not grow with the number of exact/prefix routes."""

from __future__ import annotations

import re
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from pyproxy.config.model import (
    DomainIndex,
    HeaderMatcher,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    StringMatcher,
    VirtualHost,
)
from pyproxy.http2.hpack import Header
from pyproxy.routing.table import INDEX_MIN_ROUTES, CompiledRoute, CompiledVirtualHost, RouteTable

# Few characters, so that paths, prefixes and case variants collide often; "?" (a prefix may reach into the
# query string, an exact path never does), "é" (two UTF-8 bytes) and "İ" (whose
# lower case is two characters) for the byte/text and case-folding corners.
PIECES = ["/", "a", "A", "b", "B", "/a", "/A", "é", "İ", "-", "?"]
text = st.lists(st.sampled_from(PIECES), max_size=4).map("".join)
REGEXES = [re.compile(p) for p in ("/a.*", "/[ab]+", ".*", "/A")]


def reference(routes: Sequence[CompiledRoute], path: bytes, headers: Sequence[Header],
              is_grpc: bool) -> CompiledRoute | None:
    """The old ``RouteTable.select``: every route in order."""
    return next((r for r in routes if r.matches(path, headers, is_grpc)), None)


@st.composite
def header_matchers(draw: st.DrawFn) -> tuple[HeaderMatcher, ...]:
    out = []
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["present", "exact", "prefix"]))
        value = draw(st.sampled_from(["1", "2", ""]))
        matcher = None if kind == "present" else StringMatcher("exact" if kind == "exact" else "prefix", value)
        out.append(HeaderMatcher(name=draw(st.sampled_from(["x-h", "x-k"])), string_match=matcher,
                                 present_match=draw(st.booleans()), invert_match=draw(st.booleans()),
                                 treat_missing_header_as_empty=draw(st.booleans())))
    return tuple(out)


@st.composite
def route_matches(draw: st.DrawFn) -> RouteMatch:
    kind = draw(st.sampled_from(["prefix", "prefix", "path", "path", "regex", "none"]))
    common = {"case_sensitive": draw(st.booleans()), "headers": draw(header_matchers()), "grpc": draw(st.booleans())}
    if kind == "prefix":
        return RouteMatch(prefix=draw(st.sampled_from(["", "/"])) + draw(text), **common)  # type: ignore[arg-type]
    if kind == "path":
        return RouteMatch(path="/" + draw(text), **common)  # type: ignore[arg-type]
    if kind == "regex":
        return RouteMatch(safe_regex=draw(st.sampled_from(REGEXES)), **common)  # type: ignore[arg-type]
    return RouteMatch(**common)  # type: ignore[arg-type]


@st.composite
def requests(draw: st.DrawFn, near: Sequence[str] = ()) -> tuple[bytes, list[Header], bool]:
    """A request; its path often starts with one of ``near`` (the routes' paths and prefixes, in another case
    sometimes), so that the corners are reached: a prefix ending in the query string, a path one byte off."""
    use_near: bool = bool(near) and draw(st.booleans())
    start: str = draw(st.sampled_from(near)) if use_near else "/"
    if draw(st.booleans()):
        start = draw(st.sampled_from([start, start.upper(), start.lower(), start[:-1]]))
    path = (start + draw(text)).encode()
    if draw(st.booleans()):
        path += b"?" + draw(text).encode()  # the query string: exact paths ignore it, prefixes see it
    headers: list[Header] = [(b"content-type", b"application/grpc")]
    for _ in range(draw(st.integers(0, 3))):
        headers.append((draw(st.sampled_from([b"x-h", b"x-k"])), draw(st.sampled_from([b"1", b"2", b""]))))
    return path, headers, draw(st.booleans())


def vhost(matches: Sequence[RouteMatch]) -> VirtualHost:
    routes = tuple(Route(name=f"r{i}", match=m, action=RouteAction(cluster=f"c{i}")) for i, m in enumerate(matches))
    return VirtualHost(name="vh", domains=("*",), routes=routes)


@settings(max_examples=500, deadline=None)
@given(st.lists(route_matches(), max_size=30), st.data())
def test_the_index_picks_the_first_route_a_scan_picks(matches: list[RouteMatch], data: st.DataObject) -> None:
    vh = vhost(matches)
    indexed = CompiledVirtualHost(vh, index_min_routes=0)
    assert indexed.indexed
    near = [s for m in matches for s in (m.prefix, m.path) if s]
    for _ in range(10):
        path, headers, is_grpc = data.draw(requests(near))
        expected = reference(indexed.routes, path, headers, is_grpc)
        got = indexed.first_match(path, headers, is_grpc)
        assert got is expected, (path, headers, is_grpc, expected and expected.route.name, got and got.route.name)
        # Every route whose path condition holds is a candidate (the index narrows, never hides).
        candidates = set(indexed.candidates(path))
        assert {i for i, r in enumerate(indexed.routes) if r.matches(path, headers, is_grpc)} <= candidates


def test_small_virtual_hosts_are_scanned_and_big_ones_indexed() -> None:
    small = CompiledVirtualHost(vhost([RouteMatch(prefix="/")] * (INDEX_MIN_ROUTES - 1)))
    big = CompiledVirtualHost(vhost([RouteMatch(prefix="/")] * INDEX_MIN_ROUTES))
    assert not small.indexed and big.indexed


def test_the_cost_does_not_grow_with_the_number_of_exact_and_prefix_routes() -> None:
    matches = [RouteMatch(path=f"/payment.PaymentService/M{i}") for i in range(20_000)]
    matches += [RouteMatch(prefix=f"/p{i}/") for i in range(5_000)]
    matches += [RouteMatch(path="/payment.PaymentService/Charge"), RouteMatch(prefix="")]
    vh = vhost(matches)
    table = RouteTable(RouteConfiguration(name="rc", virtual_hosts=(vh,), domain_index=DomainIndex(wildcard=vh)))
    cvh = table.virtual_host(b"payment")
    assert cvh is not None
    # The request's exact route and the catch-all: 2 candidates out of 25,002 routes; a prefix route and the
    # catch-all; the catch-all alone.
    assert cvh.candidates(b"/payment.PaymentService/Charge") == [25_000, 25_001]
    assert cvh.candidates(b"/p4999/x?q=1") == [24_999, 25_001]
    assert cvh.candidates(b"/nothing") == [25_001]
    # Lookups per request: the exact dict, and one per distinct prefix length (0, 4, 5, 6, 7 here).
    assert len(cvh._prefix_lengths) == 5
    selected = table.select(b"payment", b"/payment.PaymentService/Charge", [], True)
    assert selected is not None and selected[1].route.name == "r25000"
    selected = table.select(b"payment", b"/payment.PaymentService/M7?x", [], True)
    assert selected is not None and selected[1].route.name == "r7"

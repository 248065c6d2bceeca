"""Route selection, compiled once per route configuration.

``RouteTable(route_config)`` indexes the virtual hosts by domain (Envoy's order: exact, then the longest
``*.suffix`` wildcard, then the longest ``prefix.*`` wildcard, then ``*``), and for each route precomputes
what the request path needs (bytes prefixes, cumulative weights). ``select(authority, path, headers,
is_grpc)`` returns the first matching route of the virtual host, or None (Envoy: 404, flag NR). A virtual
host's routes are indexed by their exact path and prefix (:class:`CompiledVirtualHost`), so the cost of a
request does not grow with the number of such routes (issue 9.6: 21,141 routes scanned per request).

Header matchers see multiple values of a header joined with "," (Envoy's behaviour).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence

from pyproxy.config.model import (
    DomainIndex,
    HeaderMatcher,
    HeaderMutation,
    Route,
    RouteAction,
    RouteConfiguration,
    VirtualHost,
)
from pyproxy.http2.hpack import Header

_CACHE_MAX = 1024


class CompiledMutation:
    """A HeaderMutation with byte keys: ``remove`` names and ``add`` (name, value, append) triples."""

    __slots__ = ("add", "remove")

    def __init__(self, mutation: HeaderMutation) -> None:
        self.remove = frozenset(name.lower().encode() for name in mutation.remove)
        self.add = tuple((opt.key.lower().encode(), opt.value.encode(), opt.append)
                         for opt in mutation.add if opt.value or opt.keep_empty_value)


def compile_mutations(*mutations: HeaderMutation) -> tuple[CompiledMutation, ...]:
    return tuple(CompiledMutation(m) for m in mutations if not m.empty)


class CompiledRoute:
    """A route plus what is needed to evaluate it fast (including its header mutations per cluster)."""

    __slots__ = ("_bprefix", "_cum", "_exact", "_mutations", "clusters", "config", "grpc_trailers",
                 "header_matchers", "per_filter", "route", "total", "vhost")

    def __init__(self, route: Route, vhost: VirtualHost | None = None,
                 config: RouteConfiguration | None = None) -> None:
        self.route = route
        self.vhost = vhost
        self.config = config
        self._mutations: dict[str, tuple[tuple[CompiledMutation, ...], tuple[CompiledMutation, ...]]] = {}
        # typed_per_filter_config by filter name, the most specific level winning (route over virtual host),
        # as Envoy resolves it for filters that do not merge levels (fault, RBAC).
        per_filter: dict[str, object] = dict(vhost.per_filter_config) if vhost is not None else {}
        per_filter.update(route.per_filter_config)
        self.per_filter = per_filter
        self.grpc_trailers = route.grpc_trailers
        m = route.match
        self._bprefix: bytes | None = m.prefix.encode() if (m.prefix is not None and m.case_sensitive) else None
        self._exact: bytes | None = m.path.encode() if (m.path is not None and m.case_sensitive) else None
        self.header_matchers: tuple[tuple[bytes, HeaderMatcher], ...] = tuple(
            (h.name.encode(), h) for h in m.headers)
        action = route.action
        self.clusters: tuple[str, ...] = ()
        self._cum: list[int] = []
        self.total = 0
        if isinstance(action, RouteAction):
            if action.weighted_clusters:
                acc = 0
                names = []
                for wc in action.weighted_clusters:
                    if wc.weight <= 0:
                        continue
                    acc += wc.weight
                    self._cum.append(acc)
                    names.append(wc.name)
                self.clusters = tuple(names)
                self.total = acc
            elif action.cluster is not None:
                self.clusters = (action.cluster,)

    def matches(self, path: bytes, headers: Sequence[Header], is_grpc: bool) -> bool:
        route = self.route
        m = route.match
        if self._bprefix is not None:
            if not path.startswith(self._bprefix):
                return False
        elif self._exact is not None:
            # Envoy compares the path without the query string.
            q = path.find(b"?")
            if (path if q < 0 else path[:q]) != self._exact:
                return False
        else:
            spath = path.decode("latin-1")
            q = spath.find("?")
            if q >= 0:
                spath = spath[:q]
            if m.prefix is not None:
                if not spath.lower().startswith(m.prefix.lower()):
                    return False
            elif m.path is not None:
                if spath.lower() != m.path.lower():
                    return False
            elif m.safe_regex is not None and m.safe_regex.fullmatch(spath) is None:
                return False
        if m.grpc and not is_grpc:
            return False
        return all(_header_matches(bname, matcher, headers) for bname, matcher in self.header_matchers)

    def pick_cluster(self, rng: random.Random) -> str:
        """The cluster for this request (weighted choice when there are several)."""
        clusters = self.clusters
        if len(clusters) == 1:
            return clusters[0]
        r = rng.randrange(self.total)
        return clusters[bisect.bisect_right(self._cum, r)]

    def weighted_cluster_mutations(self, name: str) -> tuple[HeaderMutation, HeaderMutation] | None:
        action = self.route.action
        if isinstance(action, RouteAction):
            for wc in action.weighted_clusters:
                if wc.name == name:
                    return wc.request_headers, wc.response_headers
        return None

    def mutations(self, cluster: str) -> tuple[tuple[CompiledMutation, ...], tuple[CompiledMutation, ...]]:
        """(request, response) header mutations for ``cluster``, in Envoy's order of evaluation: weighted
        cluster, route, virtual host, route configuration. Computed once per cluster and kept here, so they
        live exactly as long as this route table."""
        cached = self._mutations.get(cluster)
        if cached is None:
            wc = self.weighted_cluster_mutations(cluster)
            empty = HeaderMutation()
            vh, rc = self.vhost, self.config
            request = compile_mutations(wc[0] if wc else empty, self.route.request_headers,
                                        vh.request_headers if vh else empty, rc.request_headers if rc else empty)
            response = compile_mutations(wc[1] if wc else empty, self.route.response_headers,
                                         vh.response_headers if vh else empty,
                                         rc.response_headers if rc else empty)
            cached = self._mutations[cluster] = (request, response)
        return cached


def _header_matches(bname: bytes, matcher: HeaderMatcher, headers: Sequence[Header]) -> bool:
    """Envoy's ``HeaderUtility::matchHeaders``, including its rules for absent headers."""
    values = [v for n, v in headers if n == bname]
    presence_type = matcher.string_match is None
    if not values and not matcher.treat_missing_header_as_empty:
        if matcher.invert_match:
            return presence_type and matcher.present_match
        return presence_type and not matcher.present_match
    if presence_type:
        result = matcher.present_match
    else:
        assert matcher.string_match is not None
        result = matcher.string_match.matches(b",".join(values).decode("latin-1"))
    return result != matcher.invert_match


# Below this many routes a virtual host is scanned in order: for the usual handful of routes that costs less
# than the index's lookups (measured with bench.run: the per-request path must not get slower).
INDEX_MIN_ROUTES = 8


class CompiledVirtualHost:
    """A virtual host's routes, and an index that finds the first matching one without looking at every route.

    Envoy's rule: the FIRST route, in order, whose whole match succeeds wins. Each route is filed by its path
    condition: a case-sensitive ``path`` under its bytes, a case-sensitive ``prefix`` under its bytes (with the
    set of prefix lengths in use), case-insensitive ones under their lower-cased text, and any other (regex, no
    path condition) in ``scan``. A request gathers the routes filed under its path, under each of its prefixes
    of a length in use, and ``scan``: a superset of the routes whose path condition holds, found with one dict
    lookup per distinct prefix length whatever the number of routes. They are tried in route order; the first
    whose whole match succeeds (path, gRPC, headers) is the one a scan of every route finds.
    """

    __slots__ = ("_ci", "_exact", "_exact_ci", "_prefix", "_prefix_ci", "_prefix_ci_lengths", "_prefix_lengths",
                 "_scan", "indexed", "routes", "vhost")

    def __init__(self, vhost: VirtualHost, config: RouteConfiguration | None = None,
                 index_min_routes: int = INDEX_MIN_ROUTES) -> None:
        self.vhost = vhost
        self.routes = tuple(CompiledRoute(r, vhost, config) for r in vhost.routes)
        self.indexed = len(self.routes) >= index_min_routes
        self._exact: dict[bytes, list[int]] = {}
        self._prefix: dict[bytes, list[int]] = {}
        self._exact_ci: dict[str, list[int]] = {}
        self._prefix_ci: dict[str, list[int]] = {}
        scan: list[int] = []
        if self.indexed:
            for i, route in enumerate(self.routes):
                m = route.route.match
                if m.prefix is not None:
                    if m.case_sensitive:
                        self._prefix.setdefault(m.prefix.encode(), []).append(i)
                    else:
                        self._prefix_ci.setdefault(m.prefix.lower(), []).append(i)
                elif m.path is not None:
                    if m.case_sensitive:
                        self._exact.setdefault(m.path.encode(), []).append(i)
                    else:
                        self._exact_ci.setdefault(m.path.lower(), []).append(i)
                else:
                    scan.append(i)
        self._scan = tuple(scan)
        self._prefix_lengths = tuple(sorted({len(p) for p in self._prefix}))
        self._prefix_ci_lengths = tuple(sorted({len(p) for p in self._prefix_ci}))
        self._ci = bool(self._exact_ci or self._prefix_ci)

    def candidates(self, path: bytes) -> list[int]:
        """The indices, in route order, of the routes whose path condition may hold for ``path`` (all of
        them when the virtual host is not indexed)."""
        if not self.indexed:
            return list(range(len(self.routes)))
        q = path.find(b"?")
        bare = path if q < 0 else path[:q]  # Envoy compares exact paths without the query string
        found: list[int] = []
        hit = self._exact.get(bare)
        if hit is not None:
            found += hit
        prefixes = self._prefix
        size = len(path)  # a case-sensitive prefix sees the query string too (CompiledRoute.matches)
        for n in self._prefix_lengths:
            if n > size:
                break
            hit = prefixes.get(path[:n])
            if hit is not None:
                found += hit
        if self._ci:
            low = bare.decode("latin-1").lower()
            hit = self._exact_ci.get(low)
            if hit is not None:
                found += hit
            prefixes_ci = self._prefix_ci
            size = len(low)
            for n in self._prefix_ci_lengths:
                if n > size:
                    break
                hit = prefixes_ci.get(low[:n])
                if hit is not None:
                    found += hit
        if self._scan:
            found += self._scan
        found.sort()
        return found

    def first_match(self, path: bytes, headers: Sequence[Header], is_grpc: bool) -> CompiledRoute | None:
        routes = self.routes
        if not self.indexed:
            for route in routes:
                if route.matches(path, headers, is_grpc):
                    return route
            return None
        for i in self.candidates(path):
            route = routes[i]
            if route.matches(path, headers, is_grpc):
                return route
        return None


class RouteTable:
    """Per route configuration: compiled virtual hosts, looked up through the translator's domain index."""

    def __init__(self, config: RouteConfiguration) -> None:
        self.config = config
        self._compiled = {id(vh): CompiledVirtualHost(vh, config) for vh in config.virtual_hosts}
        self._cache: dict[bytes, CompiledVirtualHost | None] = {}

    def virtual_host(self, authority: bytes) -> CompiledVirtualHost | None:
        try:
            return self._cache[authority]
        except KeyError:
            pass
        host = authority.decode("latin-1").lower()
        if self.config.ignore_port_in_host_matching:
            host = _strip_port(host)
        vh = find_virtual_host(self.config.domain_index, host)
        found = self._compiled.get(id(vh)) if vh is not None else None
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[authority] = found
        return found

    def select(self, authority: bytes, path: bytes, headers: Sequence[Header],
               is_grpc: bool) -> tuple[CompiledVirtualHost, CompiledRoute] | None:
        cvh = self.virtual_host(authority)
        if cvh is None:
            return None
        route = cvh.first_match(path, headers, is_grpc)
        return None if route is None else (cvh, route)


def find_virtual_host(index: DomainIndex, host: str) -> VirtualHost | None:
    """Envoy's order: exact, longest ``*suffix``, longest ``prefix*``, then ``*``. ``host`` is lower-case."""
    found = index.exact.get(host)
    if found is not None:
        return found
    for suffix, vh in index.suffixes:
        if len(host) > len(suffix) and host.endswith(suffix):
            return vh
    for prefix, vh in index.prefixes:
        if len(host) > len(prefix) and host.startswith(prefix):
            return vh
    return index.wildcard


def _strip_port(host: str) -> str:
    if host.startswith("["):  # [v6]:port
        end = host.find("]")
        return host[:end + 1] if end > 0 else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host

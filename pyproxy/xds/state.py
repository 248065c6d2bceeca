"""What the proxy has accepted from xDS, and the decision for each response: ACK or NACK, and which snapshot.

Pure (no I/O, no clock): :class:`XdsState.handle` takes a DiscoveryResponse and returns what to send back
(the ACK/NACK and any new subscriptions) and whether a new snapshot can be installed. The ADS client does the
I/O; tests drive this class with hand-made responses.

Rules (Envoy's, state of the world):
- Every resource of a response is decoded and translated; one bad resource rejects the whole response
  (NACK: previous version, this nonce, ``error_detail`` with every problem and its field path). Nothing of a
  rejected response is kept, and the last good configuration keeps serving.
- LDS and CDS responses are the complete set (a missing name is a removal); RDS, EDS and SDS responses carry
  the subscribed names (names are added and removed by subscription).
- Cross-resource validation before accepting: a route configuration may only name clusters that exist (static
  or from CDS); the names listeners and clusters depend on (RDS route configurations, EDS assignments, SDS
  secrets) become subscriptions.
- A snapshot is only built from a consistent state: a listener whose route configuration or secrets have not
  arrived yet keeps its previous version (or is not served yet); a cluster removed from CDS while a route in
  the installed configuration still uses it is kept until no route does (so the order in which the control
  plane pushes types never breaks a request).
- Unchanged resources (same serialized bytes) are not translated again, and keep their model object, which
  lets the runtime reuse what it compiled from them.
- Local secrets (the identity agent's ``default`` and ``ROOTCA``, :meth:`XdsState.install_local_secrets`)
  resolve SDS names like pushed ones. Names in ``local_only`` are never asked of the control plane; for other
  names a Secret pushed over SDS wins (the control plane's trust bundle during a root rotation).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from pyproxy.config import model as m
from pyproxy.config import xds_resources as xr
from pyproxy.config.errors import ConfigError

LISTENER, ROUTE, CLUSTER, ENDPOINT, SECRET = xr.LISTENER, xr.ROUTE, xr.CLUSTER, xr.ENDPOINT, xr.SECRET
WILDCARD_TYPES = (CLUSTER, LISTENER)
SHORT = {LISTENER: "LDS", ROUTE: "RDS", CLUSTER: "CDS", ENDPOINT: "EDS", SECRET: "SDS"}
INVALID_ARGUMENT = 3


@dataclass
class TypeState:
    type_url: str
    version: str = ""  # last accepted version_info
    nonce: str = ""  # nonce of the last response received
    names: set[str] = field(default_factory=set)  # subscribed names (ignored for wildcard types)
    resources: dict[str, tuple[bytes, object]] = field(default_factory=dict)  # name -> (serialized, model)
    received: bool = False  # at least one response accepted
    last_error: str = ""


@dataclass
class Outcome:
    """What to do after a response."""

    requests: list[discovery_pb2.DiscoveryRequest]
    accepted: bool
    error: str = ""


class XdsState:
    def __init__(self, static: m.Snapshot, node: Any, local_only: frozenset[str] = frozenset()) -> None:
        self.static = static
        self.node = node  # envoy.config.core.v3.Node proto
        self.types: dict[str, TypeState] = {t: TypeState(t) for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)}
        self.installed: m.Snapshot = static
        self.generation = 0
        self.local_secrets: dict[str, m.TlsSecret | m.ValidationSecret] = {}
        self.local_only = local_only  # SDS names only the proxy itself provides (not subscribed over ADS)

    # ------------------------------------------------------------------------------------- requests

    def initial_requests(self, with_node: bool = True) -> list[discovery_pb2.DiscoveryRequest]:
        """What to send on a new stream: wildcard LDS/CDS and every known subscription, with the versions
        already accepted (so an unchanged control plane need not push again)."""
        dyn = self.static.dynamic
        out = []
        order = []
        if dyn is not None and dyn.cds:
            order.append(CLUSTER)
        order.append(ENDPOINT)
        if dyn is not None and dyn.lds:
            order.append(LISTENER)
        order += [ROUTE, SECRET]
        first = True
        for type_url in order:
            ts = self.types[type_url]
            if type_url not in WILDCARD_TYPES and not ts.names:
                continue
            out.append(self._request(ts, version=ts.version, nonce="", node=with_node or first))
            first = False
        return out

    def _request(self, ts: TypeState, *, version: str, nonce: str, node: bool,
                 error: str | None = None) -> discovery_pb2.DiscoveryRequest:
        req = discovery_pb2.DiscoveryRequest(type_url=ts.type_url, version_info=version, response_nonce=nonce)
        if node:
            req.node.CopyFrom(self.node)
        if ts.type_url not in WILDCARD_TYPES:
            req.resource_names.extend(sorted(ts.names))
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=INVALID_ARGUMENT, message=error))
        return req

    # ------------------------------------------------------------------------------------- responses

    def handle(self, resp: discovery_pb2.DiscoveryResponse, send_node: bool = False,
               install: Callable[[m.Snapshot], None] | None = None,
               translated: tuple[dict[str, tuple[bytes, object]], list[str]] | None = None) -> Outcome:
        """Validate ``resp``; if it is good, apply it, build the snapshot and call ``install`` with it. If
        ``install`` raises (e.g. a new listener's address cannot be bound), the response is undone and
        NACKed with that reason, as Envoy does. ``translated``: :meth:`translate` of ``resp``, done already."""
        ts = self.types.get(resp.type_url)
        if ts is None:
            # A type we never asked for: NACK it so the server knows (Envoy does the same).
            bogus = TypeState(resp.type_url)
            return Outcome([self._request(bogus, version="", nonce=resp.nonce, node=send_node,
                                          error=f"unsupported type URL {resp.type_url}")], False,
                           f"unsupported type URL {resp.type_url}")
        ts.nonce = resp.nonce
        new, problems = translated if translated is not None else self.translate(resp)
        if not problems:
            problems = self._cross_check(ts.type_url, new)
        if problems:
            error = "; ".join(problems)
            ts.last_error = error
            return Outcome([self._request(ts, version=ts.version, nonce=resp.nonce, node=send_node, error=error)],
                           False, error)
        # Apply, tentatively: the snapshot must also install.
        saved = {t: (s.resources, s.names, s.version, s.received) for t, s in self.types.items()}
        if ts.type_url in WILDCARD_TYPES:
            ts.resources = new
        else:
            merged = {k: v for k, v in ts.resources.items() if k in ts.names}
            merged.update(new)
            ts.resources = merged
        ts.version = resp.version_info
        ts.received = True
        subscriptions = self._update_subscriptions(send_node)
        if install is not None:
            try:
                snapshot = self.build_snapshot()
                install(snapshot)
            except Exception as e:
                for t, (res, names, version, received) in saved.items():
                    s = self.types[t]
                    s.resources, s.names, s.version, s.received = res, names, version, received
                error = f"cannot apply: {e}"
                ts.last_error = error
                return Outcome([self._request(ts, version=ts.version, nonce=resp.nonce, node=send_node,
                                              error=error)], False, error)
            self.installed = snapshot
        ts.last_error = ""
        requests = [self._request(ts, version=ts.version, nonce=resp.nonce, node=send_node), *subscriptions]
        return Outcome(requests, True)

    def translate(self, resp: discovery_pb2.DiscoveryResponse) -> tuple[dict[str, tuple[bytes, object]], list[str]]:
        """Decode and translate every resource of ``resp`` (those whose bytes did not change keep their model):
        ``(name -> (bytes, model), problems)``. Changes no state, so it may run in a worker thread while the
        proxy goes on serving (a route configuration of 20,000 routes takes seconds, issue 9.6)."""
        ts = self.types.get(resp.type_url)
        known = ts.resources if ts is not None else {}
        problems: list[str] = []
        new: dict[str, tuple[bytes, object]] = {}
        for i, any_msg in enumerate(resp.resources):
            if any_msg.type_url != resp.type_url:
                kind = SHORT.get(resp.type_url, resp.type_url)
                problems.append(f"resources[{i}]: type {any_msg.type_url} in a {kind} response")
                continue
            raw = any_msg.value
            try:
                proto = xr.decode_resource(resp.type_url, any_msg)
                name = resource_name(proto)
                previous = known.get(name)
                if previous is not None and previous[0] == raw:
                    new[name] = previous
                    continue
                name, model = xr.translate_resource(resp.type_url, proto, runtime=self.static.runtime)
            except ConfigError as e:
                problems.extend(str(e).splitlines())
                continue
            except Exception as e:
                problems.append(f"resources[{i}]: {e}")
                continue
            if name in new:
                problems.append(f"resources[{i}]: duplicate resource name {name!r}")
                continue
            new[name] = (raw, model)
        return new, problems

    def _cross_check(self, type_url: str, new: dict[str, tuple[bytes, object]]) -> list[str]:
        problems: list[str] = []
        if type_url in (ROUTE, LISTENER):
            known = set(self.static.clusters) | set(self.types[CLUSTER].resources)
            for name, (_, model) in new.items():
                if isinstance(model, m.RouteConfiguration):
                    if not model.validate_clusters:
                        continue  # Envoy's default for RDS: unknown clusters answer 503 at request time
                    refs = xr.referenced_clusters(model)
                    what = f"route_configuration {name!r}"
                elif isinstance(model, m.Listener):
                    refs = set()
                    for chain in _chains(model):
                        rc = chain.hcm.route_config
                        if rc is not None and rc.validate_clusters:
                            refs |= xr.referenced_clusters(rc)
                    what = f"listener {name!r}"
                else:
                    continue
                for missing in sorted(refs - known):
                    problems.append(f"{what}: references unknown cluster {missing!r}")
        return problems

    def _update_subscriptions(self, send_node: bool) -> list[discovery_pb2.DiscoveryRequest]:
        """RDS/EDS/SDS names follow what listeners and clusters reference; changed sets are requested."""
        listeners: list[m.Listener] = [model for _, model in self.types[LISTENER].resources.values()
                                       if isinstance(model, m.Listener)]
        listeners += list(self.static.listeners.values())
        clusters: list[m.Cluster] = [model for _, model in self.types[CLUSTER].resources.values()
                                     if isinstance(model, m.Cluster)]
        clusters += list(self.static.clusters.values())
        wanted = {
            ROUTE: set().union(*(xr.referenced_routes(li) for li in listeners)) if listeners else set(),
            ENDPOINT: {n for c in clusters if (n := xr.eds_name(c)) is not None},
            SECRET: (set().union(*(xr.referenced_secrets(li) for li in listeners),
                                 *(xr.referenced_secrets(c) for c in clusters)) - self.local_only),
        }
        out = []
        for type_url, names in wanted.items():
            ts = self.types[type_url]
            if names != ts.names:
                ts.names = set(names)
                ts.resources = {k: v for k, v in ts.resources.items() if k in names}
                out.append(self._request(ts, version=ts.version, nonce=ts.nonce, node=send_node))
        return out

    # ------------------------------------------------------------------------------------- snapshots

    def initial_fetch_done(self) -> bool:
        """Every type we depend on has answered once (Envoy's init manager): the proxy may say it is ready."""
        dyn = self.static.dynamic
        if dyn is None:
            return True
        for type_url in (CLUSTER, LISTENER):
            if ((type_url == CLUSTER and dyn.cds) or (type_url == LISTENER and dyn.lds)) and \
                    not self.types[type_url].received:
                return False
        for type_url in (ENDPOINT, ROUTE, SECRET):
            ts = self.types[type_url]
            have = set(ts.resources) | set(self.local_secrets) if type_url == SECRET else set(ts.resources)
            if ts.names and not ts.names <= have:
                return False
        return True

    def install_local_secrets(self, secrets: Iterable[m.TlsSecret | m.ValidationSecret],
                              install: Callable[[m.Snapshot], None]) -> m.Snapshot:
        """Add or replace secrets made in the proxy and install the snapshot they give; if ``install`` raises,
        nothing changes and the error propagates."""
        saved, generation = dict(self.local_secrets), self.generation
        self.local_secrets.update((s.name, s) for s in secrets)
        try:
            snapshot = self.build_snapshot()
            install(snapshot)
        except BaseException:
            self.local_secrets = saved
            raise
        finally:
            self.generation = generation  # counts what xDS brought (the client's back-off looks at it)
        self.installed = snapshot
        return snapshot

    def build_snapshot(self) -> m.Snapshot:
        """The most complete consistent snapshot from what was accepted (see the module docstring)."""
        installed = self.installed
        routes: dict[str, m.RouteConfiguration] = {
            name: model for name, (_, model) in self.types[ROUTE].resources.items()}  # type: ignore[misc]
        # Local secrets first; pushed ones replace them except for names only the proxy provides.
        secrets: dict[str, object] = dict(self.local_secrets)
        secrets.update((name, model) for name, (_, model) in self.types[SECRET].resources.items()
                       if name not in self.local_only)
        endpoints = {name: model for name, (_, model) in self.types[ENDPOINT].resources.items()}
        # Clusters: static + CDS, EDS assignments applied, secrets resolved (static ones may use EDS/SDS too).
        clusters: dict[str, m.Cluster] = {}
        dynamic_clusters = [(name, model) for name, (_, model) in self.types[CLUSTER].resources.items()]
        for name, model in [*self.static.clusters.items(), *dynamic_clusters]:
            assert isinstance(model, m.Cluster)
            resolved = _resolve_cluster(model, endpoints, secrets)
            if resolved is None:  # still warming: keep the previous version if there is one
                old = installed.clusters.get(name)
                if old is not None:
                    clusters[name] = old
                else:
                    clusters[name] = dataclasses.replace(model, load_assignment=m.ClusterLoadAssignment(name, ()))
                continue
            clusters[name] = resolved
        # Listeners: static + LDS; a listener waits for its routes and secrets.
        listeners: dict[str, m.Listener] = {}
        dynamic_listeners = [(name, model) for name, (_, model) in self.types[LISTENER].resources.items()]
        for name, model in [*self.static.listeners.items(), *dynamic_listeners]:
            assert isinstance(model, m.Listener)
            needed = xr.referenced_routes(model)
            resolved_listener = _resolve_listener(model, secrets) if needed <= set(routes) else None
            if resolved_listener is None:
                old_listener = installed.listeners.get(name)
                if old_listener is not None:
                    listeners[name] = old_listener
                    for rname in xr.referenced_routes(old_listener):
                        if rname not in routes and rname in installed.route_configs:
                            routes[rname] = installed.route_configs[rname]
                continue
            listeners[name] = resolved_listener
        # Keep clusters that routes still use even if CDS dropped them (push order must not break requests).
        for rc in routes.values():
            for cname in xr.referenced_clusters(rc):
                if cname not in clusters and cname in installed.clusters:
                    clusters[cname] = installed.clusters[cname]
        self.generation += 1
        parts = [f"{t}:{self.types[t].version}" for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET)]
        if self.local_secrets:  # a renewed certificate is a new configuration version
            parts.append(f"local:{sorted(self.local_secrets.items())!r}")
        version = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
        source = dict(self.static.source) if isinstance(self.static.source, dict) else {}
        frozen = {t: dict(ts.resources) for t, ts in self.types.items()}
        versions = {SHORT[t]: ts.version for t, ts in self.types.items()}
        source["dynamic"] = lambda: _dump_source(frozen, versions)  # rendered only when /config_dump asks
        return dataclasses.replace(self.static, version=f"xds-{version}", listeners=listeners,
                                   clusters=clusters, route_configs=routes, source=source)

    def status(self) -> dict[str, dict[str, object]]:
        return {SHORT[t]: {"version": ts.version, "resources": sorted(ts.resources), "names": sorted(ts.names),
                           "last_error": ts.last_error} for t, ts in self.types.items()}


def _chains(listener: m.Listener) -> Iterable[m.FilterChain]:
    yield from listener.filter_chains
    if listener.default_filter_chain is not None:
        yield listener.default_filter_chain


def _resolve_tls(tls: m.TlsContext | None, secrets: dict[str, object]) -> m.TlsContext | bool | None:
    """Replace SDS names with the secrets' files; False when a secret has not arrived yet."""
    if tls is None:
        return None
    certs = []
    changed = False
    for cert in tls.certificates:
        if cert.sds_name is not None and cert.cert_chain_file is None:
            secret = secrets.get(cert.sds_name)
            if not isinstance(secret, m.TlsSecret):
                return False  # not arrived yet (or a CA bundle where a certificate is expected)
            certs.append(m.CertificateSource(cert_chain_file=secret.cert_chain_file,
                                             private_key_file=secret.private_key_file, sds_name=cert.sds_name))
            changed = True
        else:
            certs.append(cert)
    validation = tls.validation
    if validation is not None and validation.sds_name is not None and validation.trusted_ca_file is None:
        ca = secrets.get(validation.sds_name)
        if not isinstance(ca, m.ValidationSecret):
            return False
        # Envoy appends the secret's own SAN matchers to the context's.
        validation = dataclasses.replace(
            validation, trusted_ca_file=ca.trusted_ca_file,
            match_subject_alt_names=validation.match_subject_alt_names + ca.match_subject_alt_names)
        changed = True
    if not changed:
        return tls
    return dataclasses.replace(tls, certificates=tuple(certs), validation=validation)


def _resolve_cluster(cluster: m.Cluster, endpoints: dict[str, object],
                     secrets: dict[str, object]) -> m.Cluster | None:
    out = cluster
    name = xr.eds_name(cluster)
    if name is not None:
        cla = endpoints.get(name)
        if cla is None:
            return None
        assert isinstance(cla, m.ClusterLoadAssignment)
        out = dataclasses.replace(out, load_assignment=cla)
    tls = _resolve_tls(cluster.tls, secrets)
    if tls is False:
        return None
    if tls is not cluster.tls:
        out = dataclasses.replace(out, tls=tls)  # type: ignore[arg-type]
    return out


def _resolve_listener(listener: m.Listener, secrets: dict[str, object]) -> m.Listener | None:
    chains = []
    changed = False
    for chain in listener.filter_chains:
        tls = _resolve_tls(chain.tls, secrets)
        if tls is False:
            return None
        if tls is not chain.tls:
            chains.append(dataclasses.replace(chain, tls=tls))  # type: ignore[arg-type]
            changed = True
        else:
            chains.append(chain)
    default = listener.default_filter_chain
    if default is not None:
        tls = _resolve_tls(default.tls, secrets)
        if tls is False:
            return None
        if tls is not default.tls:
            default = dataclasses.replace(default, tls=tls)  # type: ignore[arg-type]
            changed = True
    if not changed:
        return listener
    return dataclasses.replace(listener, filter_chains=tuple(chains), default_filter_chain=default)


_MESSAGES = {LISTENER: listener_pb2.Listener, ROUTE: route_pb2.RouteConfiguration, CLUSTER: cluster_pb2.Cluster,
             ENDPOINT: endpoint_pb2.ClusterLoadAssignment, SECRET: secret_pb2.Secret}


def resource_name(proto: Any) -> str:
    """The name a resource is known by (ClusterLoadAssignment: its cluster_name)."""
    if isinstance(proto, endpoint_pb2.ClusterLoadAssignment):
        return str(proto.cluster_name)
    return str(proto.name)


def _dump_source(resources: dict[str, dict[str, tuple[bytes, object]]],
                 versions: dict[str, str]) -> dict[str, object]:
    """The accepted resources as JSON-able dicts for /config_dump (secrets are listed by name only)."""
    from google.protobuf import json_format

    out: dict[str, object] = {}
    for type_url, key in ((LISTENER, "listeners"), (ROUTE, "routes"), (CLUSTER, "clusters"),
                          (ENDPOINT, "endpoints")):
        items = []
        for raw, _ in resources[type_url].values():
            proto = _MESSAGES[type_url].FromString(raw)
            items.append(json_format.MessageToDict(proto, preserving_proto_field_name=True))
        out[key] = items
    out["secrets"] = [{"name": name} for name in resources[SECRET]]
    out["versions"] = versions
    return out

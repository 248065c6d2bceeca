"""The ADS server: ``envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources``, state
of the world, on grpc.aio.

One stream = one :class:`Connection`. Its first request names the node; :func:`identify` resolves it against
the registry (a workload's sidecar, or a proxyless gRPC client) and the node's resources are translated
(``mesh_ctl.translate``) from the current :class:`Generation` (registry + stored Istio resources). Then the
stream loop takes, one at a time, the client's requests (:mod:`mesh_ctl.xds.protocol` decides: respond,
ACK, NACK, stale) and wake-ups from :meth:`AdsServer.update`, which re-translates every connected proxy
for a new generation and wakes only the connections whose per-resource versions moved.

A wake-up pushes, in the order CDS, EDS, LDS, RDS (Istio's "make before break": clusters before the
endpoints and routes that use them), each type whose version for the stream's subscription changed. A type
still awaiting the ACK of its previous response is not pushed again until that arrives (go-control-plane's
flow control), and neither is any type after it in that order, so the order holds across round trips.
Responses to a first request or to a subscription change go out at once.

A proxy that connects is answered from the configuration that was *applied*, never an older one: before it is
translated, ``catch_up`` (the control plane's hook) makes the generation current if the store has moved on and
the debounce has not flushed yet (an ``apply`` has returned, so that is what the user expects the proxy to
get). A generation installed while a new connection was being translated makes it translate again before its
first response, so no connection is ever registered with resources of a superseded generation.

SDS: the server answers ``envoy.extensions.transport_sockets.tls.v3.Secret`` requests with ``ROOTCA`` only,
the CA's trust bundle (:meth:`AdsServer.set_trust_bundle`, called again on every root rotation: the new
bundle is pushed to every sidecar that subscribed to it). ``default`` (the workload's key and certificate) is
never served: the key is made in the sidecar and never leaves it, its agent provides ``default`` locally.
A request naming ``default`` gets a response without it (the state of the world of what this server has).

Resource handling: each stream has one reader task feeding a queue; the handler is the only writer, so the
per-type state needs no lock. Translation runs in a worker thread (:func:`asyncio.to_thread`) so a large
recompute never stalls the streams. Error handling: an unknown node or a node whose translation fails ends
its stream with a gRPC status naming the reason; a translation error during an update keeps the proxy's
previous resources (the last good config keeps serving) and is logged.

Metrics (istiod's, :mod:`mesh_ctl.monitoring`): ``pilot_xds`` counts the open streams by proxy version; each
response sent is one ``pilot_xds_pushes{type}`` with its ``pilot_xds_push_time`` (building the response to
written), ``pilot_xds_send_time`` (the write) and ``pilot_xds_config_size_bytes``; a NACK is one
``pilot_total_xds_rejects{type}`` and one ``pilot_xds_<type>_reject{node, err}``; a stale nonce one
``pilot_xds_expired_nonce``. A wake-up waits in the connection's queue for ``pilot_proxy_queue_time``; from the
change that caused it (the first store change of the debounced batch, given to :meth:`AdsServer.update`) to the
moment every type the proxy subscribed to has been sent at its current version is its
``pilot_proxy_convergence_time`` (types held back for an ACK count: the proxy has not received them yet).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
import grpc.aio
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from mesh_ctl.monitoring.families import ControlPlaneMetrics
from mesh_ctl.registry import Registry
from mesh_ctl.translate.errors import TranslationError, UnknownProxyError
from mesh_ctl.translate.istio import ROOT_NAMESPACE, IstioConfig, index_resources
from mesh_ctl.translate.names import SECRET_TYPE, SHORT_NAMES, TYPE_URLS
from mesh_ctl.translate.proxy import Proxy, ProxyResources, identify, translate_for_proxy
from mesh_ctl.translate.secrets import check_trust_bundle, with_root_ca
from mesh_ctl.translate.tls import TlsMaterial
from mesh_ctl.xds.protocol import Received, TypeState, receive
from mesh_ctl.xds.status import type_status

log = logging.getLogger("mesh_ctl.xds")

Context: TypeAlias = "grpc.aio.ServicerContext[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse]"

# The types served, in push order (SDS last: only ROOTCA, see the module docstring).
PUSH_ORDER = (*TYPE_URLS, SECRET_TYPE)
SHORT = {**SHORT_NAMES, SECRET_TYPE: "SDS"}


def short(type_url: str) -> str:
    return SHORT.get(type_url, type_url.rsplit(".", 1)[-1])


def metric_type(type_url: str) -> str:
    """Istio's ``type`` label (``model.GetMetricType``): ``cds``, ``eds``, ``lds``, ``rds``, ``sds``."""
    return short(type_url).lower()


def proxy_version(node: base_pb2.Node) -> str:
    """The ``version`` label of ``pilot_xds``: Istio's node metadata ``ISTIO_VERSION``, else the user agent's."""
    field = node.metadata.fields.get("ISTIO_VERSION")
    if field is not None and field.string_value:
        return str(field.string_value)
    return node.user_agent_version or "unknown"


@dataclass(frozen=True, slots=True)
class Generation:
    """Everything translation reads, frozen: the registry and the stored resources at one store revision."""

    revision: str
    registry: Registry
    istio: IstioConfig
    resources: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def build(cls, registry: Registry, resources: Sequence[Mapping[str, Any]], revision: str,
              root_namespace: str = ROOT_NAMESPACE) -> Generation:
        """``root_namespace``: where mesh-wide PeerAuthentication / AuthorizationPolicy live."""
        docs = tuple(resources)
        return cls(revision, registry, index_resources(docs, registry.domain_suffix, root_namespace), docs)


class _Closed:
    """The reader's last event: the client half-closed (error None) or the stream failed."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


_WAKE = object()


@dataclass(eq=False)
class Connection:
    """One ADS stream and what the server knows about it."""

    id: str
    node: base_pb2.Node
    proxy: Proxy
    peer: str
    resources: ProxyResources
    revision: str  # the store revision ``resources`` were translated from
    connected_at: float = field(default_factory=time.time)
    types: dict[str, TypeState] = field(default_factory=dict)
    events: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    wake_reason: str | None = None
    warned: frozenset[str] = frozenset()
    queued_at: float | None = None  # monotonic: when the pending wake-up was queued
    changed_at: float | None = None  # monotonic: the earliest change not yet sent in full (convergence)

    @property
    def name(self) -> str:
        """What `proxy-status` calls it: ``<workload>.<namespace>`` for a sidecar (istioctl's pod.ns), the
        node id for a proxyless client."""
        w = self.proxy.workload
        return f"{w.name}.{w.namespace}" if w is not None else self.node.id

    def wake(self, reason: str, since: float | None = None) -> None:
        """Queue a push; ``since`` (monotonic): when the change behind it happened (default: now)."""
        now = time.monotonic()
        if self.wake_reason is None:
            self.events.put_nowait(_WAKE)
            self.queued_at = now
        self.wake_reason = reason
        since = now if since is None else min(since, now)
        self.changed_at = since if self.changed_at is None else min(self.changed_at, since)

    def fully_sent(self) -> bool:
        """Every subscribed type was sent at its current version."""
        return all(state.sent_version == self.current_version(t)
                   for t, state in self.types.items() if state.requested)

    def current_version(self, type_url: str) -> str | None:
        state = self.types.get(type_url)
        if state is None or not state.requested:
            return None
        return self.resources.type_version(type_url, state.subscribed)

    def status(self) -> dict[str, Any]:
        w = self.proxy.workload
        return {
            "name": self.name, "connection": self.id, "node_id": self.node.id, "kind": self.proxy.kind,
            "workload": w.name if w is not None else None, "namespace": self.proxy.namespace,
            "peer": self.peer, "connected_at": self.connected_at, "revision": self.revision,
            "user_agent": f"{self.node.user_agent_name} {self.node.user_agent_version}".strip(),
            "types": [type_status(t, self.types.get(t), self.current_version(t)).to_json()
                      for t in PUSH_ORDER if t in TYPE_URLS or t in self.types],
        }


@dataclass
class Stats:
    connects: int = 0
    disconnects: int = 0
    updates: int = 0  # generations applied
    woken: int = 0  # connections woken by updates
    pushes: dict[str, int] = field(default_factory=dict)  # per short type
    nacks: dict[str, int] = field(default_factory=dict)
    last_update_ms: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"connects": self.connects, "disconnects": self.disconnects, "updates": self.updates,
                "woken": self.woken, "pushes": dict(self.pushes), "nacks": dict(self.nacks),
                "last_update_ms": self.last_update_ms}


@dataclass(frozen=True, slots=True)
class UpdateReport:
    revision: str
    proxies: int  # connected proxies re-translated
    woken: int  # of which some resources changed
    failed: int  # translation failed: kept their previous resources
    elapsed_ms: float


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    """The servicer. Use :meth:`update` to install a new generation (after the debounce) and
    :meth:`set_trust_bundle` for the CA's trust bundle (at start and after every rotation).

    ``tls``: where sidecar TLS contexts take their certificates from, ``sds`` (Istio's, the default) or
    ``files`` (the registry's certificate files, for sidecars without an agent). ``trust_bundle``: the CA's
    current roots (PEM), served as the SDS secret ``ROOTCA``; None: no ``ROOTCA`` is served (the sidecar's
    agent provides one)."""

    def __init__(self, generation: Generation, *, identifier: str | None = None,
                 on_push: Callable[[Connection, str, str], None] | None = None, tls: TlsMaterial = "sds",
                 trust_bundle: bytes | None = None,
                 catch_up: Callable[[], Awaitable[None]] | None = None,
                 metrics: ControlPlaneMetrics | None = None) -> None:
        if trust_bundle is not None:
            check_trust_bundle(trust_bundle)
        self._trust_bundle = trust_bundle
        self._tls: TlsMaterial = tls
        self._generation = generation
        self._connections: dict[str, Connection] = {}
        self._cache: dict[str, ProxyResources] = {}  # node id -> resources for the current generation
        self._nonce_prefix = secrets.token_hex(3)
        self._counter = itertools.count(1)
        self._identifier = identifier or f"minimesh-{socket.gethostname()}-{os.getpid()}"
        self._on_push = on_push
        self._catch_up = catch_up
        self.stats = Stats()
        self.metrics = metrics or ControlPlaneMetrics(process=False)
        self._record_known(generation)

    # ------------------------------------------------------------------------------------------ queries

    @property
    def generation(self) -> Generation:
        return self._generation

    def connections(self) -> list[Connection]:
        return sorted(self._connections.values(), key=lambda c: (c.name, c.id))

    def status(self) -> list[dict[str, Any]]:
        """Each connection's status. One whose resources are not yet computed for the installed generation
        (its translation is still running: seconds for a big configuration) is STALE wherever it would
        otherwise show SYNCED with the previous configuration."""
        out = []
        current = self._generation.revision
        for c in self.connections():
            st = c.status()
            if c.revision != current:
                for t in st["types"]:
                    if t["status"] == "SYNCED":
                        t["status"] = "STALE"
            out.append(st)
        return out

    def resources_of(self, name_or_node: str) -> ProxyResources | None:
        """The resources last computed for a connected proxy (by `proxy-status` name or node id)."""
        for c in self.connections():
            if name_or_node in (c.name, c.node.id, c.id):
                return c.resources
        return None

    @property
    def trust_bundle(self) -> bytes | None:
        return self._trust_bundle

    # ------------------------------------------------------------------------------------------ updates

    def set_trust_bundle(self, trust_bundle: bytes | None, reason: str = "trust bundle changed") -> int:
        """Serve ``trust_bundle`` (PEM roots; during a rotation ``[old, new]``) as ``ROOTCA`` from now on and
        push it to every connected sidecar that subscribed to it; returns how many connections were woken.
        Raises ValueError (and changes nothing) if it is not PEM certificates. Call it on the event loop
        (from another thread: ``loop.call_soon_threadsafe``)."""
        if trust_bundle is not None:
            count = check_trust_bundle(trust_bundle)
            log.info("trust bundle: %d certificate%s (%s)", count, "s" if count != 1 else "", reason)
        self._trust_bundle = trust_bundle
        self._cache = {node_id: with_root_ca(r, trust_bundle) for node_id, r in self._cache.items()}
        woken = 0
        for c in self._connections.values():
            new = with_root_ca(c.resources, trust_bundle)
            changed = new.changed(c.resources)
            c.resources = new
            if changed:
                woken += 1
                c.wake(f"{reason} (SDS changed)")
        return woken

    def _record_known(self, generation: Generation) -> None:
        self.metrics.known_config(len(generation.registry.services),
                                  sum(1 for d in generation.resources if d.get("kind") == "VirtualService"))

    async def update(self, generation: Generation, reason: str, since: float | None = None) -> UpdateReport:
        """Install ``generation``: re-translate every connected proxy, wake those whose resources changed.
        ``since`` (``time.monotonic()``): when the change happened, for ``pilot_proxy_convergence_time``
        (default: now)."""
        started = time.monotonic()
        since = started if since is None else since
        self._generation = generation
        self._record_known(generation)
        self._cache = {}
        conns = list(self._connections.values())
        nodes = {c.node.id: c.node for c in conns}
        results = await asyncio.to_thread(_translate_many, generation, nodes, self._tls)
        # The trust bundle is added here, on the loop: one set meanwhile is not lost.
        results = {n: with_root_ca(r, self._trust_bundle) if isinstance(r, ProxyResources) else r
                   for n, r in results.items()}
        woken = failed = 0
        if self._generation is generation:  # not superseded meanwhile
            for node_id, result in results.items():
                if isinstance(result, ProxyResources):
                    self._cache[node_id] = result
            for c in conns:
                result = results.get(c.node.id, c.resources)
                if not isinstance(result, ProxyResources):
                    failed += 1
                    log.error("translation for %s failed at revision %s, it keeps its previous config: %s",
                              c.name, generation.revision, result)
                    continue
                changed = result.changed(c.resources)
                c.resources = result
                c.revision = generation.revision
                self._log_warnings(c)
                if changed:
                    woken += 1
                    c.wake(f"{reason} ({', '.join(short(t) for t in changed)} changed)", since)
        elapsed = (time.monotonic() - started) * 1000
        self.stats.updates += 1
        self.stats.woken += woken
        self.stats.last_update_ms = elapsed
        log.info("revision %s (%s): %d proxies translated in %.1f ms, %d to push, %d failed",
                 generation.revision, reason, len(conns), elapsed, woken, failed)
        return UpdateReport(generation.revision, len(conns), woken, failed, elapsed)

    def _log_warnings(self, conn: Connection) -> None:
        fresh = set(conn.resources.warnings) - conn.warned
        for warning in sorted(fresh):
            log.warning("%s: %s", conn.name, warning)
        conn.warned = frozenset(conn.resources.warnings)

    async def _translate_current(self, node: base_pb2.Node) -> tuple[ProxyResources, str]:
        """The node's resources for the generation that is current when this returns: a generation installed
        while translating (its :meth:`update` did not see this connection yet) means translating again.
        The caller registers the connection without awaiting in between, so later updates include it."""
        for _ in range(100):  # each round needs a new generation installed meanwhile: ends at once in practice
            generation = self._generation
            resources = await self._translate(node)
            if self._generation is generation:
                return resources, generation.revision
        raise TranslationError("", "the configuration changed 100 times while this proxy was connecting")

    async def _translate(self, node: base_pb2.Node) -> ProxyResources:
        cached = self._cache.get(node.id)
        if cached is not None:
            return cached
        generation = self._generation
        translated = await asyncio.to_thread(translate_for_proxy, generation.registry, generation.istio, node,
                                             tls=self._tls)
        resources = with_root_ca(translated, self._trust_bundle)
        if self._generation is generation:
            self._cache[node.id] = resources
        return resources

    # ------------------------------------------------------------------------------------------ streams

    async def StreamAggregatedResources(  # noqa: N802 - the gRPC method name
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Context,
    ) -> None:
        events: asyncio.Queue[object] = asyncio.Queue()
        reader = asyncio.create_task(_read(request_iterator, events))
        conn: Connection | None = None
        try:
            first = await events.get()
            if not isinstance(first, discovery_pb2.DiscoveryRequest):
                return
            conn = await self._open(first, context, events)
            await self._on_request(conn, first, context)
            while True:
                event = await events.get()
                if isinstance(event, _Closed):
                    if event.error is not None:
                        log.info("stream of %s ended: %s", conn.name, event.error)
                    return
                if event is _WAKE:
                    reason, conn.wake_reason = conn.wake_reason or "update", None
                    if conn.queued_at is not None:
                        self.metrics.queued(time.monotonic() - conn.queued_at)
                        conn.queued_at = None
                    await self._push_changes(conn, context, reason)
                elif isinstance(event, discovery_pb2.DiscoveryRequest):
                    await self._on_request(conn, event, context)
        finally:
            reader.cancel()
            if conn is not None:
                self._connections.pop(conn.id, None)
                self.metrics.proxy_disconnected(proxy_version(conn.node))
                self.stats.disconnects += 1
                log.info("%s disconnected (%s, stream %s)", conn.name, conn.peer, conn.id)

    async def _open(self, first: discovery_pb2.DiscoveryRequest, context: Context,
                    events: asyncio.Queue[object]) -> Connection:
        node = first.node
        if not node.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first DiscoveryRequest must carry node.id")
        try:
            if self._catch_up is not None:
                await self._catch_up()
            proxy = identify(self._generation.registry, node)
            resources, revision = await self._translate_current(node)
        except UnknownProxyError as e:
            log.warning("refused ADS stream from %s: %s", context.peer(), e)
            await context.abort(grpc.StatusCode.NOT_FOUND, str(e))
            raise  # not reached: abort raises
        except TranslationError as e:
            log.error("cannot translate the configuration of node %r: %s", node.id, e)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"translation failed: {e}")
            raise
        stream = next(self._counter)
        conn = Connection(f"{node.id}-{stream}", node, proxy, context.peer(), resources, revision, events=events)
        self._connections[conn.id] = conn
        self.metrics.proxy_connected(proxy_version(node))
        self.stats.connects += 1
        self._log_warnings(conn)
        log.info("%s connected (%s %s, %s, stream %s)", conn.name, proxy.kind, node.id, conn.peer, conn.id)
        return conn

    async def _on_request(self, conn: Connection, request: discovery_pb2.DiscoveryRequest,
                          context: Context) -> None:
        type_url = request.type_url
        if type_url not in PUSH_ORDER:
            if type_url not in conn.warned:
                log.warning("%s asked for type %r, which this control plane does not serve", conn.name, type_url)
                conn.warned = conn.warned | {type_url}
            return
        state = conn.types.setdefault(type_url, TypeState(type_url))
        error = (request.error_detail.message or f"code {request.error_detail.code}"
                 if request.HasField("error_detail") else None)
        decision = receive(state, version_info=request.version_info, nonce=request.response_nonce,
                           names=request.resource_names, error_message=error)
        kind = short(type_url)
        if decision.received is Received.STALE:
            self.metrics.expired_nonce(metric_type(type_url))
            log.debug("%s %s: stale nonce %r ignored", conn.name, kind, request.response_nonce)
            return
        if decision.nack is not None:
            self.stats.nacks[kind] = self.stats.nacks.get(kind, 0) + 1
            self.metrics.rejected(metric_type(type_url), conn.name, request.error_detail.code)
            log.warning("NACK %s from %s: version %s (nonce %s) rejected, it keeps version %r: %s", kind,
                        conn.name, decision.nack.version, decision.nack.nonce, request.version_info,
                        decision.nack.message)
        elif decision.received is Received.ACK:
            log.debug("ACK %s from %s: version %s", kind, conn.name, state.acked_version)
        if decision.respond:
            reason = "first request" if decision.received is Received.FIRST else "subscription changed"
            await self._send(conn, state, context, reason)
        if decision.received in (Received.ACK, Received.NACK):
            await self._push_changes(conn, context, "change held back until the previous ACK")

    async def _push_changes(self, conn: Connection, context: Context, reason: str) -> None:
        """Push every type whose version moved, in :data:`PUSH_ORDER`, stopping at the first type that
        must wait for an ACK (so clusters always reach the client before what uses them)."""
        for type_url in PUSH_ORDER:
            state = conn.types.get(type_url)
            if state is None or not state.requested:
                continue
            version = conn.resources.type_version(type_url, state.subscribed)
            if version == state.sent_version:
                continue
            if state.awaiting_ack:
                return
            await self._send(conn, state, context, reason)
        if conn.changed_at is not None and conn.fully_sent():
            self.metrics.converged(time.monotonic() - conn.changed_at)
            conn.changed_at = None

    async def _send(self, conn: Connection, state: TypeState, context: Context,
                    reason: str) -> None:
        started = time.monotonic()
        type_url = state.type_url
        resources = conn.resources.of(type_url)
        subscribed = state.subscribed
        names = sorted(resources) if subscribed is None else sorted(n for n in subscribed if n in resources)
        version = conn.resources.type_version(type_url, subscribed)
        nonce = f"{self._nonce_prefix}-{next(self._counter)}"
        response = discovery_pb2.DiscoveryResponse(version_info=version, type_url=type_url, nonce=nonce)
        response.control_plane.identifier = self._identifier
        encoded = conn.resources.encoded.get(type_url, {})
        for name in names:
            data = encoded.get(name)
            if data is None:
                response.resources.add().Pack(resources[name])
            else:  # serialized already, off the event loop (ProxyResources.encoded)
                response.resources.add(type_url=type_url, value=data)
        state.record_sent(version, nonce, names)
        kind = short(type_url)
        self.stats.pushes[kind] = self.stats.pushes.get(kind, 0) + 1
        missing = sorted((subscribed or frozenset()) - set(names))
        log.info("push %s to %s: version %s, %d resources, nonce %s (%s)%s", kind, conn.name, version, len(names),
                 nonce, reason, f"; not found: {', '.join(missing)}" if missing else "")
        if self._on_push is not None:
            self._on_push(conn, type_url, version)
        writing = time.monotonic()
        try:
            await context.write(response)
        except Exception:
            self.metrics.send_failed(metric_type(type_url))
            raise
        done = time.monotonic()
        self.metrics.pushed(metric_type(type_url), done - started, done - writing, response.ByteSize())


def _translate_many(generation: Generation, nodes: Mapping[str, base_pb2.Node], tls: TlsMaterial,
                    ) -> dict[str, ProxyResources | Exception]:
    out: dict[str, ProxyResources | Exception] = {}
    for node_id, node in nodes.items():
        try:
            out[node_id] = translate_for_proxy(generation.registry, generation.istio, node, tls=tls)
        except (TranslationError, UnknownProxyError) as e:
            out[node_id] = e
        except Exception as e:  # a translator bug must not take every stream down: log it, keep serving
            log.exception("translation of %s raised", node_id)
            out[node_id] = e
    return out


async def _read(requests: AsyncIterator[discovery_pb2.DiscoveryRequest], events: asyncio.Queue[object]) -> None:
    try:
        async for request in requests:
            events.put_nowait(request)
    except asyncio.CancelledError:
        events.put_nowait(_Closed(None))
        raise
    except Exception as e:  # the stream broke (client gone, reset): end the handler
        events.put_nowait(_Closed(e))
    else:
        events.put_nowait(_Closed(None))

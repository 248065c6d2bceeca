"""The proxy at run time: the installed snapshot, listeners, clusters, timers, output coalescing.

Snapshot swap (:meth:`Runtime.install`): a new :class:`~pyproxy.config.model.Snapshot` is compiled into
per-listener :class:`ListenerEntry` objects (chain contexts, SSL contexts, route tables) *before* anything
changes; if compiling fails nothing changes and the error is raised to the caller (the xDS client NACKs it).
Then the references are swapped in one step. New connections and new streams use the new snapshot;
connections already open keep the chain context they were accepted with, and every stream keeps the route it
was routed with, so streams in flight finish on the old configuration.

Output coalescing: handlers never write to sockets directly. They mark connections "dirty" and the read loop
that triggered them calls :meth:`Runtime.flush` once per batch of input, so the frames a request produces on
several connections go out in one ``send`` per connection.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVarTuple

import trio

from pyproxy.config.model import FilterChain, Listener, Snapshot, SocketAddress, TlsContext
from pyproxy.proxy.context import ChainContext, encode_peer_metadata
from pyproxy.proxy.downstream import (
    connection_bound,
    count_timeout,
    handle_connection,
    needs_inspection,
    select_filter_chain,
)
from pyproxy.proxy.parking import FirstBytes, Parked
from pyproxy.routing.table import RouteTable
from pyproxy.stats import ListenerCounters, ProxyStats
from pyproxy.timers import TimerHandle, Timers
from pyproxy.tls import build_context
from pyproxy.upstream.cluster import ClusterManager

if TYPE_CHECKING:
    from pyproxy.proxy.interfaces import ServedConnection
    from pyproxy.upstream.interfaces import Flushable

log = logging.getLogger("pyproxy")
Ts = TypeVarTuple("Ts")


@dataclass
class ListenerEntry:
    listener: Listener
    contexts: dict[int, ChainContext]  # by id() of the FilterChain
    ssl_contexts: dict[int, ssl.SSLContext] = field(default_factory=dict)
    socket: socket.socket | None = None
    scope: trio.CancelScope | None = None
    counters: ListenerCounters = field(default_factory=ListenerCounters)
    # envoy.resource_limits.listener.<name>.connection_limit (None = no limit)
    connection_limit: int | None = None


def _tls_shape(tls: TlsContext | None) -> TlsContext | None:
    """A TlsContext without its material (certificate, key and CA files): what the policy is."""
    if tls is None:
        return None
    certs = tuple(dataclasses.replace(c, cert_chain_file=None, private_key_file=None) for c in tls.certificates)
    validation = tls.validation
    if validation is not None:
        validation = dataclasses.replace(validation, trusted_ca_file=None)
    return dataclasses.replace(tls, certificates=certs, validation=validation)


def _same_except_tls_material(a: FilterChain, b: FilterChain) -> bool:
    if a == b:
        return True
    return _tls_shape(a.tls) == _tls_shape(b.tls) and dataclasses.replace(a, tls=b.tls) == b


class Runtime:
    def __init__(self, snapshot: Snapshot, inherited: dict[tuple[str, int], socket.socket] | None = None,
                 seed: int | None = None) -> None:
        self.log = log
        # Listening sockets handed over at start (``--listen-fd``, see pyproxy.io.inherited), by address.
        self.inherited = inherited or {}
        # Randomness, in two streams (``--seed`` makes both reproducible; without it they are seeded from the OS):
        # - ``rng``: every decision made for a request, in the order requests make them (weighted cluster,
        #   load balancer, mirror sampling, retry back-off, outlier enforcement on a request's result, faults).
        #   Nothing else may draw from it: the same seed and the same sequence of calls then give the same
        #   decisions.
        # - ``background_rng``: what timers and connections draw at moments that depend on timing
        #   (keepalive jitter, xDS reconnect back-off, outlier detection's interval evaluation); were it the
        #   same stream, a PING or a reconnect would shift every later request's decisions.
        self.seed = seed
        self.rng = random.Random(seed)
        self.background_rng = random.Random(None if seed is None else f"pyproxy-background:{seed}")
        self.timers = Timers(after_callbacks=self.flush)
        self.clusters = ClusterManager(self)
        self.stats = ProxyStats()
        self.snapshot = snapshot
        self.route_tables: dict[str, RouteTable] = {}
        self.listeners: dict[str, ListenerEntry] = {}
        self.downstream_connections: set[ServedConnection] = set()
        # Accepted sockets counted against the overload manager's global limit (every listener that does not
        # set ignore_global_conn_limit; the admin listener is not one of them, as in Envoy).
        self.global_cx_active = 0
        # Accepted connections that have not sent a byte yet.
        self.first_bytes = FirstBytes(self._parked_ready, self._parked_expired)
        self._dirty: list[Flushable] = []
        self._ssl_contexts: dict[TlsContext, ssl.SSLContext] = {}
        self._nursery: trio.Nursery | None = None
        self.shutting_down = False
        self.ready = trio.Event()

    # ------------------------------------------------------------------------------------- plumbing

    # FilterEnv: time and randomness for HTTP filters (pyproxy.filters.api).
    def now(self) -> float:
        return trio.current_time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self.timers.call_later(delay, callback)

    def mark_dirty(self, conn: Flushable) -> None:
        if not conn.dirty:
            conn.dirty = True
            self._dirty.append(conn)

    def flush(self) -> None:
        dirty = self._dirty
        if not dirty:
            return
        self._dirty = []
        for conn in dirty:
            conn.flush()

    def spawn(self, fn: Callable[[*Ts], Awaitable[object]], *args: *Ts) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    def ssl_context(self, tls: TlsContext) -> ssl.SSLContext:
        """One SSLContext per distinct TLS configuration, reused across snapshots (certificates are read once;
        a rotated certificate is a new TlsContext, hence a new context for new connections only)."""
        ctx = self._ssl_contexts.get(tls)
        if ctx is None:
            if len(self._ssl_contexts) > 256:
                self._ssl_contexts.clear()
            ctx = self._ssl_contexts[tls] = build_context(tls)
        return ctx

    def listener_entry(self, name: str) -> ListenerEntry | None:
        return self.listeners.get(name)

    # ------------------------------------------------------------------------------------- snapshots

    def compile(self, snapshot: Snapshot) -> tuple[dict[str, ListenerEntry], dict[str, RouteTable]]:
        """Everything derived from ``snapshot``; raises on problems without changing anything."""
        # Unchanged route configurations keep their compiled table (and its per-route caches).
        route_tables: dict[str, RouteTable] = {}
        for name, rc in snapshot.route_configs.items():
            old_table = self.route_tables.get(name)
            route_tables[name] = old_table if old_table is not None and old_table.config == rc else RouteTable(rc)
        peer_metadata = encode_peer_metadata(snapshot.node)
        entries: dict[str, ListenerEntry] = {}
        recorder = self.stats.recorder(snapshot.node)
        for name, listener in snapshot.listeners.items():
            contexts: dict[int, ChainContext] = {}
            ssl_contexts: dict[int, ssl.SSLContext] = {}
            chains = list(listener.filter_chains)
            if listener.default_filter_chain is not None:
                chains.append(listener.default_filter_chain)
            for chain in chains:
                # Keyed by identity: chain names are optional and need not be unique.
                contexts[id(chain)] = ChainContext(self, listener, chain, snapshot.node, recorder, peer_metadata,
                                                   snapshot.runtime)
                if chain.tls is not None:
                    ssl_contexts[id(chain)] = self.ssl_context(chain.tls)
            entries[name] = ListenerEntry(listener, contexts, ssl_contexts,
                                          counters=self.stats.listener_counters(name),
                                          connection_limit=snapshot.listener_connection_limit(name))
        return entries, route_tables

    def install(self, snapshot: Snapshot) -> None:
        """Swap in ``snapshot`` (compiled first; raises and changes nothing if it cannot be used)."""
        entries, route_tables = self.compile(snapshot)
        old = self.listeners
        # Keep listening sockets of listeners whose address did not change.
        for name, entry in entries.items():
            prev = old.get(name)
            if prev is not None and prev.listener.address == entry.listener.address:
                entry.socket, entry.scope = prev.socket, prev.scope
        self.snapshot = snapshot
        self.route_tables = route_tables
        self.listeners = entries
        self.clusters.update(snapshot.clusters)
        self._drain_changed_connections()
        if self._nursery is not None:
            for name, prev in old.items():
                entry2 = entries.get(name)
                if (entry2 is None or entry2.socket is not prev.socket) and prev.scope is not None:
                    prev.scope.cancel()
            for entry in entries.values():
                if entry.socket is None:
                    self._open_listener(entry)

    def _drain_changed_connections(self) -> None:
        """Envoy's filter-chain update: connections accepted under a filter chain that no longer exists as it
        was (TLS mode, RBAC policies, HCM settings...) get a GOAWAY, so their clients open new connections that
        the new chain serves; streams in flight finish. Route (RDS) and cluster changes need none of this."""
        current: dict[str, set[int]] = {}
        for name, entry in self.listeners.items():
            current[name] = {id(ctx.chain) for ctx in entry.contexts.values()}
        for conn in list(self.downstream_connections):
            chain = conn.ctx.chain
            listener_entry = self.listeners.get(conn.ctx.listener.name)
            if listener_entry is not None and (
                    id(chain) in current[conn.ctx.listener.name]
                    # an equal chain (a rebuilt snapshot, or only new certificate material as SDS rotates
                    # it, which applies to new handshakes only, as in Envoy): nothing to do
                    or any(_same_except_tls_material(ctx.chain, chain) for ctx in listener_entry.contexts.values())):
                continue
            conn.drain()

    def _open_listener(self, entry: ListenerEntry) -> None:
        addr = entry.listener.address
        handed_over = self.inherited.get((addr.host, addr.port))
        if handed_over is not None:
            # A copy: closing the listener (a drain, an LDS removal) leaves the inherited socket to the next one.
            sock = handed_over.dup()
            sock.setblocking(False)
            self._serve_listener(entry, sock, "inherited socket")
            return
        family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Envoy binds IPv6 listeners v6-only unless ipv4_compat asks for a dual-stack socket.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if entry.listener.ipv4_compat else 1)
            sock.bind((addr.host, addr.port))
            sock.listen(1024)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise OSError(e.errno, f"listener {entry.listener.name}: cannot bind {addr}: {e.strerror}") from e
        self._serve_listener(entry, sock)

    def _serve_listener(self, entry: ListenerEntry, sock: socket.socket, how: str = "") -> None:
        entry.socket = sock
        entry.scope = trio.CancelScope()
        self.spawn(self._accept_loop, entry.listener.name, sock, entry.scope)
        log.info("listener %s on %s%s", entry.listener.name,
                 SocketAddress(entry.listener.address.host, sock.getsockname()[1]), f" ({how})" if how else "")

    async def _accept_loop(self, name: str, sock: socket.socket, scope: trio.CancelScope) -> None:
        with scope:
            try:
                while True:
                    try:
                        conn, _ = sock.accept()
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(sock)
                        continue
                    except OSError as e:
                        if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                            log.error("listener %s: accept failed (%s); pausing", name, e)
                            await trio.sleep(0.1)
                            continue
                        if e.errno in (errno.ECONNABORTED, errno.EPROTO):
                            continue
                        raise
                    self._admit(name, conn)
            finally:
                try:
                    trio.lowlevel.notify_closing(sock)
                except Exception:
                    pass
                sock.close()

    def _admit(self, name: str, conn: socket.socket) -> None:
        """Envoy's connection limits at accept: over the overload manager's global limit or the listener's
        runtime limit, the socket is closed at once and counted (``downstream_global_cx_overflow``,
        ``downstream_cx_overflow``); otherwise it counts until it closes. A counter per listener: nothing here
        costs more than a comparison."""
        entry = self.listeners.get(name)
        if entry is None:
            conn.close()
            return
        counters = entry.counters
        global_limit = self.snapshot.max_downstream_connections
        counted = not entry.listener.ignore_global_conn_limit
        if counted and global_limit is not None and self.global_cx_active >= global_limit:
            conn.close()
            counters.downstream_global_cx_overflow += 1
            return
        limit = entry.connection_limit
        if limit is not None and counters.downstream_cx_active >= limit:
            conn.close()
            counters.downstream_cx_overflow += 1
            return
        counters.downstream_cx_total += 1
        counters.downstream_cx_active += 1
        if counted:
            self.global_cx_active += 1
        self._park(entry, name, conn, counted)

    def _park(self, entry: ListenerEntry, name: str, conn: socket.socket, counted: bool) -> None:
        """Park the new connection until its first byte (:mod:`pyproxy.proxy.parking`), with the deadline of
        the Envoy timer that applies before it: the listener filters' timeout when the listener inspects the
        first bytes, else the chosen chain's transport_socket_connect_timeout / HCM idle_timeout /
        max_connection_duration (the connection exists from accept then)."""
        counters = entry.counters
        listener = entry.listener
        accepted = trio.current_time()
        try:
            conn.setblocking(False)
            port = conn.getsockname()[1]
        except OSError:
            self._closed_parked(conn, counters, counted)
            return
        chain = None
        if needs_inspection(listener):
            timeout = listener.listener_filters_timeout
            deadline = accepted + timeout if timeout else math.inf
            cause = "listener_filters_timeout"
        else:
            chain = select_filter_chain(listener, port, False, None)
            if chain is None:  # handle_connection says why and closes it
                self.spawn(self._serve, name, conn, counters, counted, accepted, False)
                return
            deadline, cause = connection_bound(chain, accepted, tls=chain.tls is not None)
        self.first_bytes.park(Parked(conn, deadline, (entry, name, counted, accepted, chain, cause)))

    def _parked_ready(self, parked: Parked) -> None:
        entry, name, counted, accepted, _, _ = parked.info
        self.spawn(self._serve, name, parked.sock, entry.counters, counted, accepted, False)

    def _parked_expired(self, parked: Parked) -> None:
        entry, name, counted, accepted, chain, cause = parked.info
        counters = entry.counters
        if cause == "listener_filters_timeout":
            counters.downstream_pre_cx_timeout += 1
            if entry.listener.continue_on_listener_filters_timeout:
                self.spawn(self._serve, name, parked.sock, counters, counted, accepted, True)
                return
        elif chain is not None:
            count_timeout(entry.contexts[id(chain)], counters, cause)
        self._closed_parked(parked.sock, counters, counted)

    def _closed_parked(self, conn: socket.socket, counters: ListenerCounters, counted: bool) -> None:
        conn.close()
        counters.downstream_cx_active -= 1
        counters.downstream_cx_destroy += 1
        if counted:
            self.global_cx_active -= 1

    async def _serve(self, name: str, conn: socket.socket, counters: ListenerCounters, counted: bool,
                     accepted: float, filters_timed_out: bool) -> None:
        try:
            await handle_connection(self, name, conn, counters, accepted, filters_timed_out)
        finally:
            counters.downstream_cx_active -= 1
            counters.downstream_cx_destroy += 1
            if counted:
                self.global_cx_active -= 1

    # ------------------------------------------------------------------------------------- lifecycle

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled. Listener bind errors are raised before ``task_status.started``."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.timers.run)
            nursery.start_soon(self.first_bytes.run)
            self.install(self.snapshot)
            if self.snapshot.dynamic is None:
                self.ready.set()  # with xDS, the ADS client says when the initial fetch is done
            task_status.started()

    def start_draining(self) -> None:
        """Stop accepting, GOAWAY every downstream connection (they close when their streams end)."""
        self.shutting_down = True
        for entry in self.listeners.values():
            if entry.scope is not None:
                entry.scope.cancel()
        for conn in list(self.downstream_connections):
            conn.drain()
        # Connections that never sent a byte have nothing in flight: closed now, as Envoy's listeners
        # close (with no codec yet, there is no GOAWAY to send either).
        self.first_bytes.close_all(lambda parked: self._closed_parked(parked.sock, parked.info[0].counters,
                                                                       parked.info[2]))

    async def wait_idle(self) -> None:
        """Return once no downstream stream is in flight (polled: only used while shutting down)."""
        while self.active_streams:  # noqa: ASYNC110 - streams end in many places; a poll is simplest here
            await trio.sleep(0.05)

    @property
    def active_streams(self) -> int:
        return sum(len(c.streams) for c in self.downstream_connections)

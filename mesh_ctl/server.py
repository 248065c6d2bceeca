"""`mesh_ctl serve`: the control plane process (istiod's role, for a laptop).

Pieces, wired here and nowhere else::

    ConfigStore (mesh_ctl.store)      durable, versioned Istio resources in <state dir>/store.json
        | subscribe: "revision N is out"  (from the committing thread -> call_soon_threadsafe)
    Debouncer (xds/debounce.py)       100 ms quiet period, 1 s at most
        | flush: snapshot -> Generation(registry, normalized resources, revision)
    AdsServer (xds/ads.py)            re-translates connected proxies, pushes only what changed
    gRPC server                       ADS on --xds-address (plain h2c, loopback: istiod's 15010)
    CA (mesh_ctl.ca.control)          IstioCertificateService/CreateCertificate on the same gRPC server;
        | subscribe: trust bundle changed  (root rotation) -> _on_trust_bundle
    management API (xds/api.py)       HTTP/JSON on --api-address (istiod's 15014): what the CLI calls, FastAPI on
                   (ca/api.py)        uvicorn (xds/web.py), only with the owner's credential (<run dir>/api-token)
                                      + /v1/ca/*: status, root, rotate-root, tokens
                                      + /metrics: istiod's metrics (mesh_ctl.monitoring), same credential
    service graph (mesh_ctl.graph)    /ui/* on the same server: GraphFeed scrapes every sidecar's stats (the
                                      registry's prometheus ports) while a page watches; Access: login codes

The registry is built once from the topology (and its placement, the same options as `mesh_ctl up`) and the
run's certificate directory. Restart-safety: the store is loaded before the ADS port opens, translation is
deterministic, so a proxy that reconnects after a restart is answered with the very versions it already
runs. SIGTERM / SIGINT: stop accepting, give streams ``grace`` seconds, remove the discovery file, exit 0.

Discovery: with a run dir, ``<run dir>/control-plane.json`` says where the APIs are (pid, addresses), so CLI
commands find the control plane without flags (:mod:`mesh_ctl.client`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from envoy.service.discovery.v3 import ads_pb2_grpc

from mesh_ctl.ca.control import ControlPlaneCA
from mesh_ctl.ca.material import CaConfigError
from mesh_ctl.ca.options import CaOptions
from mesh_ctl.ca.service import add_to_server as add_ca_service
from mesh_ctl.credential import TOKEN_FILE, ensure_token
from mesh_ctl.graph import model as graph_model
from mesh_ctl.graph.access import Access
from mesh_ctl.graph.feed import GraphFeed
from mesh_ctl.monitoring import ControlPlaneMetrics
from mesh_ctl.registry import Registry
from mesh_ctl.runtime.state import RunDir, read_json, remove, write_json
from mesh_ctl.store import ConfigStore, StoreCorrupt, StoreEvent, StoreSnapshot
from mesh_ctl.telemetry.window import Row
from mesh_ctl.translate import check_resource
from mesh_ctl.xds.ads import AdsServer, Generation
from mesh_ctl.xds.debounce import DEBOUNCE_AFTER, DEBOUNCE_MAX, Debouncer
from mesh_ctl.xds.openapi import management_app
from mesh_ctl.xds.parsing import FileParser
from mesh_ctl.xds.web import ApiServer, allowed_hosts

log = logging.getLogger("mesh_ctl.server")

DISCOVERY_FILE = "control-plane.json"
DEFAULT_XDS_ADDRESS = "127.0.0.1:15010"
DEFAULT_API_ADDRESS = "127.0.0.1:15014"
# Keep idle ADS streams alive and notice dead peers; let clients ping as often as every 10 s.
GRPC_OPTIONS = [
    ("grpc.so_reuseport", 0),  # a second control plane on the same port must fail, not share it
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def split_address(text: str) -> tuple[str, int]:
    """``127.0.0.1:15010`` / ``[::1]:15010`` -> (host, port); port 0 = any free port."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not 0 <= int(port) <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class ServeOptions:
    registry: Registry
    state_dir: Path
    xds_address: str = DEFAULT_XDS_ADDRESS
    api_address: str = DEFAULT_API_ADDRESS
    run_dir: RunDir | None = None  # where to write the discovery file
    debounce_after: float = DEBOUNCE_AFTER
    debounce_max: float = DEBOUNCE_MAX
    refresh_interval: float = 2.0  # how often to look for store.json changed by another process
    grace: float = 1.0  # for open ADS streams on shutdown (they never end by themselves)
    ca: CaOptions = field(default_factory=CaOptions.from_env)  # directories resolved from run_dir / state_dir


class ControlPlane:
    """The running control plane. ``await start()``, then ``await stop()``; or ``await run(stop_event)``."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.registry = options.registry
        suffix = self.registry.domain_suffix
        self.store = ConfigStore(options.state_dir, checks=[lambda doc: check_resource(doc, suffix)],
                                 implicit_subsets=self._implicit_subsets)
        snapshot = self.store.snapshot()
        self.metrics = ControlPlaneMetrics()  # this control plane's registry, served at /metrics
        self.ads = AdsServer(Generation.build(self.registry, snapshot.normalized(), str(snapshot.revision)),
                             catch_up=self._catch_up, metrics=self.metrics)
        self._flush_lock = asyncio.Lock()
        self.debouncer = Debouncer(self._flush, quiet=options.debounce_after, max_delay=options.debounce_max)
        run_root = options.run_dir.root if options.run_dir is not None else None
        self.ca = ControlPlaneCA.open(options.ca.resolve(run_root, options.state_dir), self.registry.trust_domain,
                                      metrics=self.metrics)
        self.ads.set_trust_bundle("".join(self.ca.trust_bundle()).encode(), "CA roots loaded")  # SDS ROOTCA
        self.started_at = time.time()
        self.xds_address = ""
        self.api_address = ""
        self._grpc: grpc.aio.Server | None = None
        # The owner's credential for the management API (mesh_ctl.xds.web): made once, kept across restarts so
        # the CLI goes on working while the supervisor restarts the control plane.
        self.token_file = (options.run_dir.root if options.run_dir is not None else options.state_dir) / TOKEN_FILE
        self.token_file.parent.mkdir(parents=True, exist_ok=True)
        self._token = ensure_token(self.token_file)
        self._http: ApiServer | None = None
        self.parser = FileParser()  # the management API's files are parsed in a process of its own
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: list[object] = []
        # The service graph (mesh_ctl.graph): scrapes the sidecars only while a page or snapshot watches.
        self.graph = GraphFeed(self._stats_targets, self._build_graph)
        self.graph_access = Access()

    def _stats_targets(self) -> list[tuple[str, str]]:
        """(workload, stats address) of every sidecar: the registry knows where each one listens."""
        return [(w.name, join_address(w.address, w.prometheus_port)) for w in self.registry.workloads
                if w.prometheus_port is not None]

    def _build_graph(self, rows: list[Row], window_s: float, unreachable: Sequence[Mapping[str, str]],
                     ) -> dict[str, Any]:
        return graph_model.build(rows, self.registry, self.store.list(), window_s, unreachable)

    def _implicit_subsets(self, host: str) -> tuple[str, ...] | None:
        """The topology's subsets of ``host`` act as an implicit DestinationRule (the translator does the
        same), so `set-weight` and VirtualServices work before any DestinationRule is applied."""
        service = self.registry.service(host)
        if service is None or not service.subsets:
            return None
        return tuple(s.name for s in service.subsets)

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def on_commit(event: StoreEvent) -> None:
            self.metrics.config_changed((c.key.kind, c.action) for c in event.changes)
            loop.call_soon_threadsafe(self.debouncer.trigger, f"revision {event.revision}")

        self._unsubscribe.append(self.store.subscribe(on_commit))
        self._tasks.append(asyncio.create_task(self.debouncer.run(), name="debouncer"))
        self._tasks.append(asyncio.create_task(self._watch_store_file(), name="store-refresh"))
        self._unsubscribe.append(self.ca.subscribe(self._on_trust_bundle))
        self._tasks.append(asyncio.create_task(self.ca.run(), name="ca-rotation"))

        server = grpc.aio.server(options=GRPC_OPTIONS)
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.ads, server)
        add_ca_service(self.ca.servicer, server)
        host, port = split_address(self.options.xds_address)
        bound = server.add_insecure_port(join_address(host, port))
        if bound == 0:
            raise OSError(f"cannot listen on {self.options.xds_address} (in use?)")
        await server.start()
        self._grpc = server
        self.xds_address = join_address(host, bound)

        api_host, api_port = split_address(self.options.api_address)
        self._http = ApiServer(management_app(self, self.ca, allowed_hosts(api_host), self._token))
        api_host, api_port = await self._http.start(api_host, api_port)
        self.api_address = join_address(api_host, api_port)
        self._write_discovery()
        log.info("control plane up: xDS (ADS + CA, plain gRPC) on %s, management API on http://%s, store %s at "
                 "revision %s, %d workloads, %d services", self.xds_address, self.api_address,
                 self.store.path, self.store.revision, len(self.registry.workloads), len(self.registry.services))

    async def stop(self) -> None:
        log.info("control plane stopping")
        for unsubscribe in self._unsubscribe:
            if callable(unsubscribe):
                unsubscribe()
        await self.graph.close()  # ends the pages' event streams, so the HTTP server stops at once
        if self._http is not None:
            await self._http.close()
        self.parser.close()
        if self._grpc is not None:
            await self._grpc.stop(self.options.grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._remove_discovery()
        log.info("control plane stopped")

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    # ------------------------------------------------------------------------------------------ pushes

    def _on_trust_bundle(self, bundle: list[str]) -> None:
        """The CA's trust bundle changed (a root rotation published or retired a root): every sidecar gets it
        as its SDS ``ROOTCA`` secret (pushed now to the connected ones)."""
        self.metrics.triggered("secret")
        woken = self.ads.set_trust_bundle("".join(bundle).encode(), f"CA root rotation: {len(bundle)} root(s)")
        log.info("trust bundle changed: %d root(s), pushed to %d proxies", len(bundle), woken)

    async def _catch_up(self) -> None:
        """A proxy is connecting: if an applied change still waits for the debounce, install it now, so the
        proxy's first configuration is the applied one (the batch's own flush then finds nothing to do)."""
        if str(self.store.revision) != self.ads.generation.revision:
            await self._install_latest("a proxy connected before the debounced push")

    async def _flush(self, reasons: list[str]) -> None:
        since = self.debouncer.batch_started
        if since is not None:
            self.metrics.debounced(asyncio.get_running_loop().time() - since)
        self.metrics.triggered("config", len(reasons))
        await self._install_latest(f"{len(reasons)} store change{'s' if len(reasons) > 1 else ''}", since)

    async def _install_latest(self, reason: str, since: float | None = None) -> None:
        """Translate the store's latest revision for every connected proxy, unless it already is the pushed one.
        One at a time: the debouncer's flush and a connecting proxy's catch-up share a lock. ``since``: the
        loop time of the change (for the convergence time; default: now)."""
        async with self._flush_lock:
            await self._install_latest_locked(reason, since)

    async def _install_latest_locked(self, reason: str, since: float | None = None) -> None:
        snapshot = await asyncio.to_thread(self.store.snapshot)
        revision = str(snapshot.revision)
        if revision == self.ads.generation.revision:
            return
        try:  # normalizing and indexing a big configuration costs CPU: off the event loop
            generation = await asyncio.to_thread(_generation, self.registry, snapshot, revision)
        except Exception:
            log.exception("revision %s cannot be indexed for translation; proxies keep the previous one", revision)
            return
        await self.ads.update(generation, reason, since)

    async def set_ready(self, name: str, namespace: str, ready: bool) -> bool:
        """Workload ``namespace/name`` became (not) ready (its app or sidecar died or is back, says the
        supervisor): the proxies' EDS leave it out until it is ready again. Whether anything changed."""
        async with self._flush_lock:
            registry = self.registry.with_ready(name, namespace, ready)
            if registry is self.registry:
                return False
            self.registry = registry
            self.metrics.triggered("endpoint")
            generation = replace(self.ads.generation, registry=registry)
            await self.ads.update(generation, f"endpoint {namespace}/{name} {'ready' if ready else 'not ready'}")
        return True

    async def _watch_store_file(self) -> None:
        """Pick up a store.json that another process replaced (the store notifies on refresh)."""
        while True:
            await asyncio.sleep(self.options.refresh_interval)
            try:
                await asyncio.to_thread(self.store.refresh)
            except Exception:
                log.exception("re-reading %s failed; keeping the revision in memory", self.store.path)

    # ------------------------------------------------------------------------------------------ discovery

    def _discovery_path(self) -> Path | None:
        return self.options.run_dir.root / DISCOVERY_FILE if self.options.run_dir is not None else None

    def _write_discovery(self) -> None:
        path = self._discovery_path()
        if path is not None:
            write_json(path, {"pid": os.getpid(), "xds_address": self.xds_address,
                              "api_address": self.api_address, "state_dir": str(self.options.state_dir),
                              "token_file": str(self.token_file),
                              "started_at": self.started_at, "argv": sys.argv})

    def _remove_discovery(self) -> None:
        path = self._discovery_path()
        if path is None:
            return
        with contextlib.suppress(Exception):
            data = read_json(path)
            if isinstance(data, dict) and data.get("pid") == os.getpid():
                remove(path)


def _generation(registry: Registry, snapshot: StoreSnapshot, revision: str) -> Generation:
    return Generation.build(registry, snapshot.normalized(), revision)


def serve(options: ServeOptions) -> int:
    """Run until SIGTERM / SIGINT; the exit code."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await ControlPlane(options).run(stop)

    try:
        asyncio.run(main())
    except (OSError, ValueError, StoreCorrupt, CaConfigError) as e:
        log.error("cannot start: %s", e)
        return 1
    return 0

"""The ADS client: one ``StreamAggregatedResources`` stream to the control plane, for as long as the proxy runs.

It connects through the bootstrap's static ADS cluster (its hosts, TLS settings and connect timeout), sends the
subscriptions, and hands every response to :class:`~pyproxy.xds.state.XdsState`, which decides ACK or NACK
and builds the snapshot that :meth:`Runtime.install` swaps in (new streams use it; streams in flight finish
on the old one). When the control plane goes away the proxy keeps serving the last good configuration and
reconnects with Envoy's back-off (jittered, 500 ms doubling up to 30 s); on reconnect it resends its
subscriptions with the versions it already has, so the control plane can tell what it must push.

Readiness: the runtime is marked ready once the initial fetch completed (CDS and LDS answered, every
referenced RDS/EDS/SDS resource received) or after ``initial_fetch_timeout`` (Envoy's default 15 s), and
once every ``local_only`` secret is there (no timeout for those: a sidecar without its certificate is not ready).

Local secrets: :meth:`AdsClient.publish_local_secrets` is how the identity agent hands over ``default`` and
``ROOTCA``; names in ``local_only`` are never subscribed to over ADS.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import trio
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from pyproxy.config.model import Snapshot, TlsSecret, ValidationSecret
from pyproxy.io.transport import TransportClosed
from pyproxy.upstream.connection import ConnectError, connect
from pyproxy.xds.grpc import GrpcChannel, GrpcError
from pyproxy.xds.state import SHORT, XdsState

if TYPE_CHECKING:
    from pyproxy.proxy.runtime import Runtime

log = logging.getLogger("pyproxy.xds")

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0


def node_proto(static: Snapshot) -> Any:
    """The bootstrap's node as a proto (exactly what was configured), plus Envoy-style user agent fields."""
    node = base_pb2.Node()
    source = static.source if isinstance(static.source, dict) else {}
    raw = source.get("node")
    if isinstance(raw, dict):
        json_format.ParseDict(raw, node, ignore_unknown_fields=True)
    else:
        node.id = static.node.id
        node.cluster = static.node.cluster
    if static.node.id:
        node.id = static.node.id
    if static.node.cluster:
        node.cluster = static.node.cluster
    node.user_agent_name = "pyproxy"
    from pyproxy import __version__

    node.user_agent_version = __version__
    return node


class AdsClient:
    def __init__(self, runtime: Runtime, static: Snapshot, *, local_only: Collection[str] = ()) -> None:
        assert static.dynamic is not None
        self.runtime = runtime
        self.dynamic = static.dynamic
        self.state = XdsState(static, node_proto(static), local_only=frozenset(local_only))
        self.connected = False
        self.sessions = 0
        self._fetched = False  # initial fetch complete, or its timeout passed

    async def run(self) -> None:
        """Forever: connect, stream, reconnect with back-off."""
        timeout = self.dynamic.initial_fetch_timeout
        if timeout:
            self.runtime.timers.call_later(timeout, self._initial_fetch_timed_out)
        backoff = BACKOFF_BASE
        while True:
            accepted_before = self._accepted_count()
            try:
                await self._session()
            except* (ConnectError, GrpcError, OSError, TransportClosed) as group:
                for e in group.exceptions:
                    log.warning("xDS: control plane %s: %s", self._target(), e)
            self.connected = False
            if self._accepted_count() > accepted_before:
                backoff = BACKOFF_BASE  # the stream worked for a while: start the back-off again
            delay = self.runtime.background_rng.uniform(backoff / 2, backoff)
            log.info("xDS: reconnecting in %.1fs (serving the last good configuration)", delay)
            await trio.sleep(delay)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _accepted_count(self) -> int:
        return self.state.generation

    def _target(self) -> str:
        cluster = self.runtime.clusters.get(self.dynamic.ads_cluster)
        if cluster is None or not cluster.hosts:
            return self.dynamic.ads_cluster
        return f"{self.dynamic.ads_cluster} ({', '.join(str(h.address) for h in cluster.hosts)})"

    async def _session(self) -> None:
        cluster = self.runtime.clusters.get(self.dynamic.ads_cluster)
        if cluster is None:
            raise ConnectError(f"ADS cluster {self.dynamic.ads_cluster!r} not found")
        host = cluster.pick_host(self.runtime.background_rng)
        if host is None:
            raise ConnectError(f"ADS cluster {self.dynamic.ads_cluster!r} has no hosts")
        transport = await connect(host.address.host, host.address.port, cluster.config.tls, cluster.ssl_context,
                                  cluster.config.connect_timeout, cluster.address_family,
                                  cluster.config.source_address)
        channel = GrpcChannel(transport, self.dynamic.ads_cluster)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel.run)
            call = channel.open_call(ADS_METHOD)
            self.sessions += 1
            log.info("xDS: connected to %s (session %d)", host.address, self.sessions)
            node_every_time = not self.dynamic.set_node_on_first_message_only
            for request in self.state.initial_requests(with_node=node_every_time):
                call.send(request.SerializeToString())
            self.connected = True
            try:
                while True:
                    message = await call.receive()
                    if message is None:
                        raise GrpcError(14, "the control plane ended the stream")
                    response = discovery_pb2.DiscoveryResponse.FromString(message)
                    # Translating is pure and can take seconds (a route configuration of 20,000 routes): in a
                    # worker thread, so that the event loop keeps serving requests meanwhile (the GIL is
                    # handed back to it every few milliseconds). Applying the result is done here, on the loop.
                    translated = await trio.to_thread.run_sync(self.state.translate, response)
                    outcome = self.state.handle(response, send_node=node_every_time, install=self._install,
                                                translated=translated)
                    kind = SHORT.get(response.type_url, response.type_url)
                    if outcome.accepted:
                        log.info("xDS: %s version %s accepted (%d resources)", kind, response.version_info,
                                 len(response.resources))
                        if self.state.initial_fetch_done():
                            self._ready()
                    else:
                        log.warning("xDS: %s version %s rejected (NACK): %s", kind, response.version_info,
                                    outcome.error)
                    for request in outcome.requests:
                        call.send(request.SerializeToString())
            finally:
                nursery.cancel_scope.cancel()

    def _install(self, snapshot: Snapshot) -> None:
        self.runtime.install(snapshot)
        self.runtime.flush()

    def publish_local_secrets(self, *secrets: TlsSecret | ValidationSecret) -> None:
        """Install a snapshot with these proxy-made secrets (raises, changing nothing, if it cannot be)."""
        self.state.install_local_secrets(secrets, self._install)
        if self.state.initial_fetch_done():  # e.g. ROOTCA was subscribed but the control plane sent none
            self._ready()
        self._maybe_ready()

    def _ready(self) -> None:
        if not self._fetched:
            self._fetched = True
            log.info("xDS: initial configuration complete")
        self._maybe_ready()

    def _initial_fetch_timed_out(self) -> None:
        if not self._fetched:
            self._fetched = True
            log.warning("xDS: initial fetch not complete after %.0fs; serving what has arrived",
                        self.dynamic.initial_fetch_timeout or 0)
        self._maybe_ready()

    def _maybe_ready(self) -> None:
        if not self._fetched or self.runtime.ready.is_set():
            return
        if not self.state.local_only <= set(self.state.local_secrets):
            return  # e.g. the identity agent has no certificate yet
        self.runtime.ready.set()

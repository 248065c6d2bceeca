"""``pyproxy``: the command line, with Envoy's flags (``-c``/``--config-path``, ``--config-yaml``, ``-l``,
``--mode validate``, ``--service-node``/``--service-cluster``...), and the process lifecycle.

SIGTERM/SIGINT or ``POST /quitquitquit``: stop accepting, send GOAWAY on every downstream connection, let
streams in flight finish for up to ``--drain-time-s`` seconds, then exit 0. A configuration that cannot be
used is reported with its field paths and the process exits 1 before binding anything.

Identity agent (istio-agent's role, :mod:`pyproxy.agent`): with ``--ca-address`` the proxy makes its own key,
gets its certificate from the mesh's CA with the bootstrap token (``--token-path``) and publishes it as the
SDS secrets ``default`` and ``ROOTCA``; ``/ready`` then also waits for the first certificate.

Metrics merging (Istio's 15020): ``--merged-stats-address`` serves ``/stats/prometheus`` with the agent's metrics,
the proxy's and, with ``--app-metrics-url``, the app's, fetched at each scrape (:mod:`pyproxy.admin.merged`).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from pyproxy import __version__

if TYPE_CHECKING:
    from pyproxy.agent.manager import SecretManager

log = logging.getLogger("pyproxy")

_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL,
           "off": logging.CRITICAL + 10}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyproxy", description="minimesh's HTTP/2 (gRPC) sidecar, configured "
                                "with an Envoy v3 bootstrap.")
    p.add_argument("-c", "--config-path", help="Envoy v3 bootstrap file (YAML, JSON, .pb or .pb_text)")
    p.add_argument("--config-yaml", help="YAML merged over the bootstrap file (Envoy semantics)")
    p.add_argument("-l", "--log-level", default="info", choices=sorted(_LEVELS))
    p.add_argument("--mode", choices=["serve", "validate", "init_only"], default="serve",
                   help="validate: check the configuration and exit (0 = valid); init_only: the same, plus "
                        "bind every listener once")
    p.add_argument("--service-node", help="overrides node.id")
    p.add_argument("--service-cluster", help="overrides node.cluster")
    p.add_argument("--stats-address", metavar="HOST:PORT", action="append", default=[],
                   help="also serve /stats/prometheus here (Istio's 15090); repeatable")
    p.add_argument("--merged-stats-address", metavar="HOST:PORT", action="append", default=[],
                   help="also serve /stats/prometheus here with the agent's, the proxy's and the app's metrics "
                        "merged (Istio's 15020); repeatable")
    p.add_argument("--app-metrics-url", metavar="URL",
                   help="the app's Prometheus metrics (http://HOST:PORT/PATH), fetched for every scrape of the "
                        "merged endpoint; an app that does not answer is left out (needs --merged-stats-address)")
    p.add_argument("--drain-time-s", type=float, default=5.0,
                   help="graceful shutdown: how long streams in flight may take (default 5)")
    p.add_argument("--log-path", help="write logs to this file instead of stderr")
    p.add_argument("--admin-token-file", metavar="FILE",
                   help="the admin API's changing endpoints (POST /quitquitquit) need 'Authorization: Bearer <the "
                        "file's content>' (pyproxy's own flag; without it they are open, as in Envoy)")
    p.add_argument("--listen-fd", metavar="FD", type=int, action="append", default=[],
                   help="an inherited listening TCP socket (socket activation): the listener on its address uses "
                        "it instead of binding; connections wait in its backlog while pyproxy restarts")
    p.add_argument("--seed", type=_seed, metavar="N",
                   help="seed the random decisions made for requests (weighted clusters, load balancing, retry "
                        "back-off, fault and mirror sampling, outlier enforcement): the same seed and the same "
                        "sequence of calls give the same decisions (pyproxy's own flag; default: from the OS)")
    p.add_argument("--version", action="version", version=f"pyproxy {__version__}")
    agent = p.add_argument_group("identity agent", "make a key, get its certificate from the mesh's CA and "
                                 "serve it as the SDS secrets 'default' and 'ROOTCA' (istio-agent's job)")
    agent.add_argument("--ca-address", metavar="HOST:PORT",
                       help="the CA (istio.v1.auth.IstioCertificateService), e.g. the control plane's 15010")
    agent.add_argument("--ca-root", metavar="FILE",
                       help="verify the CA over TLS with this root bundle (default: plaintext gRPC, loopback)")
    agent.add_argument("--token-path", metavar="FILE",
                       help="the workload's bootstrap token (JWT), read again for every request")
    agent.add_argument("--cert-ttl", metavar="DURATION", default="24h",
                       help="requested certificate lifetime (Istio SECRET_TTL; e.g. 24h, 90m, 5s; default 24h)")
    agent.add_argument("--key-algorithm", choices=["rsa", "ecdsa"], default="rsa",
                       help="rsa (2048, default) or ecdsa (P-256; Istio ECC_SIGNATURE_ALGORITHM=ECDSA)")
    agent.add_argument("--trust-domain", default="cluster.local", help="SPIFFE trust domain (default cluster.local)")
    agent.add_argument("--namespace", help="overrides the bootstrap's node.metadata NAMESPACE")
    agent.add_argument("--service-account", help="overrides the bootstrap's node.metadata SERVICE_ACCOUNT")
    agent.add_argument("--secret-dir", metavar="DIR",
                       help="where the private key directory is made (default /dev/shm, else the temp dir)")
    envoy = p.add_argument_group("Envoy's other flags", "accepted so that Envoy launch scripts work unchanged")
    envoy.add_argument("--service-zone", help="overrides node.locality.zone")
    envoy.add_argument("--admin-address-path", metavar="FILE",
                       help="write the admin listener's address (HOST:PORT, the port it really got) to FILE")
    envoy.add_argument("--allow-unknown-static-fields", "--allow-unknown-fields", action="store_true",
                       help="ignore (with a warning) unknown fields in the bootstrap instead of refusing it")
    envoy.add_argument("--drain-strategy", choices=["gradual", "immediate"], default="gradual",
                       help="accepted; draining always sends GOAWAY at once and waits --drain-time-s")
    envoy.add_argument("--hot-restart-version", action="store_true", help="print that hot restart is disabled")
    envoy.add_argument("--local-address-ip-version", choices=["v4", "v6"], help=argparse.SUPPRESS)
    # Accepted with no effect here: process model, hot restart, logging details and build features that a
    # one-event-loop Python process does not have.
    for flag in ("--base-id", "--base-id-path", "--concurrency", "--restart-epoch", "--parent-shutdown-time-s",
                 "--log-format", "--component-log-level", "--file-flush-interval-msec", "--file-flush-min-size-kb",
                 "--disable-extensions", "--socket-path", "--socket-mode", "--stats-tag"):
        envoy.add_argument(flag, action="append" if flag == "--stats-tag" else "store", help=argparse.SUPPRESS)
    for flag in ("--disable-hot-restart", "--use-dynamic-base-id", "--log-format-escaped",
                 "--log-format-prefix-with-location", "--enable-fine-grain-logging", "--enable-mutex-tracing",
                 "--enable-core-dump", "--cpuset-threads", "--reject-unknown-dynamic-fields",
                 "--ignore-unknown-dynamic-fields", "--skip-hot-restart-on-no-parent",
                 "--skip-hot-restart-parent-stats", "--skip-deprecated-logs"):
        envoy.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    return p


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2^64-1, got {text}")
    return value


def _setup_logging(level: str, path: str | None) -> None:
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s][%(name)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[level])


def _parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"pyproxy: invalid address {text!r} (expected HOST:PORT)")
    return host.strip("[]") or "0.0.0.0", int(port)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.hot_restart_version:
        print("hot restart is disabled: pyproxy has no hot restart")
        return 0
    _setup_logging(args.log_level, args.log_path)
    if not args.config_path and not args.config_yaml:
        print("pyproxy: a configuration is required (-c BOOTSTRAP.yaml or --config-yaml)", file=sys.stderr)
        return 1
    from pyproxy.config.bootstrap import load_bootstrap
    from pyproxy.config.errors import ConfigError

    try:
        snapshot = load_bootstrap(args.config_path, args.config_yaml, service_node=args.service_node,
                                  service_cluster=args.service_cluster, service_zone=args.service_zone,
                                  allow_unknown_fields=args.allow_unknown_static_fields)
    except ConfigError as e:
        print(f"pyproxy: invalid configuration {args.config_path or ''}:\n{e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"pyproxy: cannot read configuration: {e}", file=sys.stderr)
        return 1
    for warning in snapshot.warnings:
        log.warning("configuration: %s", warning)
    agent_options = None
    if args.ca_address or args.token_path or args.ca_root:
        from pyproxy.agent.options import AgentConfigError, AgentOptions

        try:
            if not args.ca_address:
                raise AgentConfigError("--token-path/--ca-root need --ca-address")
            if snapshot.dynamic is None:
                raise AgentConfigError("--ca-address needs a bootstrap with dynamic_resources.ads_config: the "
                                       "certificate is served to TLS contexts as the SDS secrets default/ROOTCA")
            agent_options = AgentOptions.build(
                ca_address=args.ca_address, token_path=args.token_path, node=snapshot.node, ca_root=args.ca_root,
                ttl=args.cert_ttl, key_algorithm=args.key_algorithm, trust_domain=args.trust_domain,
                namespace=args.namespace, service_account=args.service_account, secret_dir=args.secret_dir)
        except AgentConfigError as e:
            print(f"pyproxy: identity agent: {e}", file=sys.stderr)
            return 1
    if args.mode == "validate":
        print(f"configuration '{args.config_path}' OK")
        return 0
    if args.mode == "init_only":
        return _init_only(snapshot)
    if args.concurrency not in (None, "1"):
        log.info("--concurrency %s: pyproxy runs one event loop per process; the flag is ignored",
                 args.concurrency)
    stats_addresses = [_parse_address(a) for a in args.stats_address]
    merged_addresses = [_parse_address(a) for a in args.merged_stats_address]
    app_metrics_url = None
    if args.app_metrics_url:
        from pyproxy.admin.app_scrape import AppMetricsUrl

        if not merged_addresses:
            print("pyproxy: --app-metrics-url needs --merged-stats-address (where the merged metrics are served)",
                  file=sys.stderr)
            return 1
        try:
            app_metrics_url = AppMetricsUrl.parse(args.app_metrics_url)
        except ValueError as e:
            print(f"pyproxy: --app-metrics-url: {e}", file=sys.stderr)
            return 1
    admin_token = None
    if args.admin_token_file:
        try:
            admin_token = Path(args.admin_token_file).read_text().strip()
        except OSError as e:
            print(f"pyproxy: --admin-token-file: cannot read {args.admin_token_file}: {e.strerror}", file=sys.stderr)
            return 1
        if len(admin_token) < 16:
            print(f"pyproxy: --admin-token-file: {args.admin_token_file} holds no credential (under 16 characters)",
                  file=sys.stderr)
            return 1
    from pyproxy.io.inherited import InheritedSocketError, adopt

    try:
        inherited = adopt(args.listen_fd)
    except InheritedSocketError as e:
        print(f"pyproxy: {e}", file=sys.stderr)
        return 1
    _raise_fd_limit(snapshot)
    _one_malloc_arena()
    try:
        return trio.run(functools.partial(serve, snapshot, stats_addresses, args.drain_time_s, agent_options,
                                          admin_address_path=args.admin_address_path, admin_token=admin_token,
                                          inherited=inherited, seed=args.seed,
                                          merged_addresses=merged_addresses, app_metrics_url=app_metrics_url))
    except KeyboardInterrupt:
        return 0


def _one_malloc_arena() -> None:
    """``MALLOC_ARENA_MAX=1``, set before any thread starts. glibc gives each thread that allocates a malloc
    arena of its own and keeps what it grew to; pyproxy's other threads are trio's workers, which translate xDS
    resources off the event loop. Measured with a 25,906-route table: the sidecar went from 54 to 281 MB with
    per-thread arenas, to 167 MB with one. The workers rarely run, so sharing the arena costs nothing."""
    if os.environ.get("MALLOC_ARENA_MAX") is not None:
        return  # the operator's choice
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, 1)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc


def _raise_fd_limit(snapshot: object) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Go programs do at start): a distribution's default
    soft limit of 1,024 would make accept fail (EMFILE) long before the connection limits the configuration
    asks for. Envoy leaves the limit to its launcher; pyproxy does this itself, and warns when the global
    connection limit (or, without one, the per-listener limits) cannot be met with the descriptors it has."""
    import resource

    from pyproxy.config.model import Snapshot

    assert isinstance(snapshot, Snapshot)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, e)
    wanted = snapshot.max_downstream_connections
    if wanted is None:
        limits = [snapshot.listener_connection_limit(name) for name in snapshot.listeners]
        wanted = sum(limit for limit in limits if limit is not None) if all(
            limit is not None for limit in limits) and limits else None
    # Each downstream connection is one descriptor; upstream pools, the admin API and xDS need some more.
    if wanted is not None and soft != resource.RLIM_INFINITY and wanted + 64 > soft:
        log.warning("open files limit %d is below the connection limits configured (%d downstream connections "
                    "+ upstreams): accept will fail with EMFILE before they are reached", soft, wanted)


def _init_only(snapshot: object) -> int:
    """Envoy's ``--mode init_only``: initialise (here: bind every listener and the admin address), then exit."""
    from pyproxy.config.model import Snapshot
    from pyproxy.proxy.runtime import Runtime

    assert isinstance(snapshot, Snapshot)

    async def bind_and_close() -> int:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(Runtime(snapshot).run)
                if snapshot.admin.address is not None:
                    for listener in await trio.open_tcp_listeners(snapshot.admin.address.port,
                                                                  host=snapshot.admin.address.host):
                        await listener.aclose()
            except OSError as e:
                log.error("%s", e)
                return 1
            finally:
                nursery.cancel_scope.cancel()
        return 0

    return trio.run(bind_and_close)


def _write_admin_address(path: str, host: str, port: int) -> None:
    """``--admin-address-path``: the admin address as Envoy writes it (``HOST:PORT``, IPv6 in brackets)."""
    text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


async def serve(snapshot: object, stats_addresses: list[tuple[str, int]], drain_time: float,
                agent_options: object = None, *, admin_address_path: str | None = None,
                admin_token: str | None = None,
                inherited: dict[tuple[str, int], socket.socket] | None = None, seed: int | None = None,
                merged_addresses: Sequence[tuple[str, int]] = (), app_metrics_url: object = None) -> int:
    from pyproxy.admin.app_scrape import AppMetricsUrl
    from pyproxy.admin.merged import MergedStats
    from pyproxy.admin.server import AdminServer
    from pyproxy.config.model import Snapshot
    from pyproxy.proxy.runtime import Runtime

    assert isinstance(snapshot, Snapshot)
    assert app_metrics_url is None or isinstance(app_metrics_url, AppMetricsUrl)
    runtime = Runtime(snapshot, inherited, seed=seed)
    if seed is not None:
        log.info("random decisions seeded with %d (--seed)", seed)
    quit_event = trio.Event()
    admin = AdminServer(runtime, time.time(), quit_event.set, admin_token)
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(runtime.run)
        except OSError as e:
            log.error("%s", e)
            nursery.cancel_scope.cancel()
            return 1
        if snapshot.admin.address is not None:
            bound = await nursery.start(admin.serve, snapshot.admin.address.host, snapshot.admin.address.port)
            if admin_address_path:
                _write_admin_address(admin_address_path, snapshot.admin.address.host, bound)
        for host, port in stats_addresses:
            await nursery.start(functools.partial(admin.serve, host, port, prometheus_only=True))
        merged = MergedStats(runtime, app_metrics_url)
        for host, port in merged_addresses:
            await nursery.start(functools.partial(admin.serve, host, port, merged=merged))
        if snapshot.dynamic is not None:
            from pyproxy.xds.client import AdsClient

            if agent_options is not None:
                from pyproxy.agent.pki import WORKLOAD_SECRET

                ads = AdsClient(runtime, snapshot, local_only=(WORKLOAD_SECRET,))
                merged.agent = start_agent(nursery, runtime, ads, agent_options)
            else:
                ads = AdsClient(runtime, snapshot)
            nursery.start_soon(ads.run)
            log.info("pyproxy %s started; waiting for xDS from cluster %s", __version__,
                     snapshot.dynamic.ads_cluster)
        else:
            log.info("pyproxy %s ready (config version %s)", __version__, snapshot.version or "static")
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as waiters:
                async def on_signal() -> None:
                    async for _ in signals:
                        quit_event.set()
                        return

                waiters.start_soon(on_signal)
                await quit_event.wait()
                waiters.cancel_scope.cancel()
        log.info("shutting down: draining for up to %.1fs", drain_time)
        runtime.start_draining()
        with trio.move_on_after(drain_time):
            await runtime.wait_idle()
        nursery.cancel_scope.cancel()
    return 0


def start_agent(nursery: trio.Nursery, runtime: object, ads: object, options: object) -> SecretManager:
    """The identity agent publishes into the ADS client's state; files it removes are those the installed
    snapshot no longer names. Returns it (its state feeds the agent's metrics)."""
    from pyproxy.agent.manager import SecretManager
    from pyproxy.agent.options import AgentOptions
    from pyproxy.agent.store import files_in_use
    from pyproxy.proxy.runtime import Runtime
    from pyproxy.xds.client import AdsClient

    assert isinstance(runtime, Runtime) and isinstance(ads, AdsClient) and isinstance(options, AgentOptions)
    manager = SecretManager(options, ads.publish_local_secrets, files_in_use=lambda: files_in_use(runtime.snapshot))
    nursery.start_soon(manager.run)
    return manager


if __name__ == "__main__":
    sys.exit(main())

"""Start the local mesh: the control plane, payment v1 and v2 and a load client, each with its sidecar, on
loopback.

The control plane (`mesh_ctl serve`, istiod's role) starts first, on 127.0.0.1:15010 (xDS, plain gRPC) and
:15014 (the API the other commands use); every sidecar gets its listeners, routes, clusters and endpoints from
it over ADS, so `mesh_ctl apply -f vs.yaml` or `mesh_ctl set-weight payment v1=90 v2=10` changes the live
traffic. Its Istio resources are kept in <run dir>/store across runs. If it dies, the supervisor starts it
again (the sidecars keep serving meanwhile). `--static` runs without a control plane instead: each sidecar's
bootstrap holds its whole configuration (for learning and debugging; nothing can change it).

Each workload gets its own 127.0.0.x address (127.0.0.10, .11, .12 ...) or, where only 127.0.0.1 works,
its own block of ports; sidecars use Istio's ports (15001 outbound, 15006 inbound, 15000 admin, 15090
Prometheus) and talk mTLS with certificates generated for the run. The client's calls are split between
v1 and v2 (50/50 by default, until a VirtualService says otherwise). Ctrl-C (or `mesh_ctl down`) stops
everything, the control plane last; --detach runs in the background.

Identity: each sidecar makes its key and gets its certificate (spiffe://cluster.local/ns/<ns>/sa/<sa>) from the
control plane's CA, renewing it at half its lifetime: --cert-ttl sets that lifetime (Istio's SECRET_TTL,
default 24h; e.g. 6s to watch renewals). `mesh_ctl proxy-config secret <workload>` shows the certificate in use.

--seed N makes the sidecars' random decisions reproducible (which subset a weighted route picks, which endpoint the
load balancer picks, retry back-off jitter, fault and mirror sampling): each sidecar gets pyproxy's --seed, derived
from N and its workload's name (mesh_ctl.runtime.specs.sidecar_seed), so the same N and the same sequence of calls
give the same decisions. A topology file can say `seed: N` instead; --seed wins.

--non-mesh-client adds `legacy-client`, a pod outside the mesh: its own address, no sidecar, plain gRPC straight
to payment-v1's inbound port (15006) at --non-mesh-rps calls per second. Mutual TLS is PERMISSIVE by default,
so its calls succeed; after `mesh_ctl mtls strict` the sidecar refuses them at the handshake: the live summary
and `mesh_ctl status` show its results apart (OK vs errors now, its first error and what it means), and its
log (<run dir>/logs/legacy-client.log) says when its calls started failing and why.

Prometheus: `up` also runs a Prometheus (the `prometheus` on PATH, e.g. Debian's package) on the control plane's
address, port 9090 (+ the port offset), and prints its URL. It scrapes every sidecar (Istio's job `envoy-stats`,
/stats/prometheus), the control plane (`istiod`) and the apps every --scrape-interval (default 15s), found through
target files in <run dir>/prometheus/targets/ that the supervisor keeps current. --no-prometheus runs none; when
none is installed `up` says so in one line, with the command that installs it, and runs the rest.

Logs: <run dir>/logs/ holds each process's output (<workload>.log, <workload>-sidecar.log with the access log,
control-plane.log) and the supervisor's own lines (supervisor.log). Each file is rotated when it reaches
--log-max-size (default 10m = 10 MiB), keeping --log-max-files files (default 3: x.log, x.log.1, x.log.2), so a
mesh left running for days takes at most 30 MiB per log.

Environment: MINIMESH_HOME (run dir), MINIMESH_BASE_ADDRESS, MINIMESH_PORT_OFFSET, MINIMESH_ADDRESS_MODE,
MINIMESH_CONTROL_PLANE_ADDRESS provide defaults for --run-dir, --base-address, --port-offset, --address-mode,
--control-plane-address.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from mesh_ctl.addressing import ADDRESS_MODES, can_bind, plan
from mesh_ctl.ca.options import parse_duration
from mesh_ctl.commands._common import add_run_dir, positive_float, positive_int
from mesh_ctl.runtime import control
from mesh_ctl.runtime.local import Supervisor, UpOptions
from mesh_ctl.runtime.logs import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, MIN_MAX_BYTES, parse_size
from mesh_ctl.runtime.prepare import StartupError, preflight
from mesh_ctl.runtime.prometheus import (
    DEFAULT_SCRAPE_INTERVAL,
    PrometheusOptions,
    find_binary,
    missing_message,
    parse_scrape_interval,
)
from mesh_ctl.runtime.specs import (
    DEFAULT_CONTROL_PLANE_HOST,
    DEFAULT_NON_MESH_RPS,
    ControlPlaneAddresses,
    non_mesh_client,
)
from mesh_ctl.runtime.state import RunDir, StateError, new_run_id, resolve_run_dir
from mesh_ctl.topology import MAX_SEED, default_topology, load_topology

PROXY_LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")
MIN_CERT_TTL = timedelta(seconds=1)  # the bounds pyproxy's agent and the CA accept (Istio's max: 90 days)
MAX_CERT_TTL = timedelta(days=90)
DEFAULT_CERT_TTL = "24h"  # Istio's SECRET_TTL; passed explicitly, so every sidecar's argv says it


def cert_ttl(text: str) -> str:
    """A certificate lifetime (``24h``, ``90m``, ``6s``, ``30d``), returned as a Go duration in hours, minutes
    or seconds: the form pyproxy's --cert-ttl reads (it knows no days)."""
    try:
        value = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not MIN_CERT_TTL <= value <= MAX_CERT_TTL:
        raise argparse.ArgumentTypeError(f"must be between 1s and 90d (2160h), got {text!r}")
    seconds = value.total_seconds()
    if seconds.is_integer():
        for unit, size in (("h", 3600), ("m", 60)):
            if seconds % size == 0:
                return f"{int(seconds) // size}{unit}"
        return f"{int(seconds)}s"
    return f"{seconds}s"


def mesh_seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_SEED}, got {text}")
    return value


def log_size(text: str) -> int:
    """A log file's cap: bytes, or with a unit (``10m``, ``512k``, ``1g``; powers of 1024, as in Docker's
    ``max-size``); 0 turns rotation off."""
    try:
        value = parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if 0 < value < MIN_MAX_BYTES:
        raise argparse.ArgumentTypeError(f"must be 0 (no rotation) or at least 1k, got {text!r}")
    return value


def scrape_interval(text: str) -> str:
    try:
        return parse_scrape_interval(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_dir(p)
    p.add_argument("--topology", metavar="FILE", help="topology YAML (default: the built-in payment demo)")
    p.add_argument("--rps", type=positive_float, help="calls per second of the load client (default: 50)")
    p.add_argument("--concurrency", type=positive_int, help="calls in flight of the load client (default: 4)")
    p.add_argument("--detach", action="store_true", help="run in the background; return once ready")
    p.add_argument("--no-summary", action="store_true",
                   help="no live summary (the totals still print at exit)")
    p.add_argument("--base-address", metavar="ADDR", default=os.environ.get("MINIMESH_BASE_ADDRESS"),
                   help="first workload address (default: 127.0.0.10, or 127.0.0.1 in the shared mode)")
    p.add_argument("--port-offset", metavar="N", type=int,
                   default=os.environ.get("MINIMESH_PORT_OFFSET", "0"),
                   help="added to every port, to run beside another mesh (default: 0)")
    p.add_argument("--address-mode", choices=ADDRESS_MODES,
                   default=os.environ.get("MINIMESH_ADDRESS_MODE", "auto"),
                   help="per-workload: one 127.0.0.x each; shared: one address, a port block each; "
                        "auto: per-workload if 127.0.0.x can be bound (default)")
    p.add_argument("--control-plane-address", metavar="ADDR",
                   default=os.environ.get("MINIMESH_CONTROL_PLANE_ADDRESS", DEFAULT_CONTROL_PLANE_HOST),
                   help="loopback address of the control plane; it listens on ports 15010 (xDS) and 15014 "
                        "(API) plus the port offset (default: 127.0.0.1)")
    p.add_argument("--static", action="store_true",
                   help="no control plane: static sidecar bootstraps holding the whole configuration")
    p.add_argument("--proxy-log-level", choices=PROXY_LOG_LEVELS, default="info", help="sidecar log level")
    p.add_argument("--cert-ttl", metavar="DURATION", type=cert_ttl,
                   help="lifetime of the sidecars' certificates, renewed at half of it (Istio's SECRET_TTL; "
                        "e.g. 24h, 90m, 6s; default: 24h)")
    p.add_argument("--seed", metavar="N", type=mesh_seed,
                   help="seed every sidecar's random decisions (weighted routes, load balancing, back-off, sampling): "
                        "the same N and the same calls give the same picks (default: the topology's seed, else "
                        "random)")
    p.add_argument("--fresh", action="store_true",
                   help="start without the Istio resources applied in earlier runs (they are kept in the run dir's "
                        "store across runs; --fresh sets them aside in store.before-fresh-<time>/)")
    p.add_argument("--non-mesh-client", action="store_true",
                   help="also run legacy-client: no sidecar, plain gRPC to payment-v1's inbound port (15006), "
                        "like a pod outside the mesh (refused once `mesh_ctl mtls strict`)")
    p.add_argument("--non-mesh-rps", metavar="N", type=positive_float,
                   help=f"calls per second of legacy-client (default: {DEFAULT_NON_MESH_RPS:g})")
    p.add_argument("--log-max-size", metavar="SIZE", type=log_size, default=DEFAULT_MAX_BYTES,
                   help="rotate each file in <run dir>/logs/ when it reaches SIZE (bytes, or 512k, 10m, 1g: powers "
                        "of 1024, as Docker's max-size; 0: never) (default: 10m)")
    p.add_argument("--log-max-files", metavar="N", type=positive_int, default=DEFAULT_MAX_FILES,
                   help="files kept per log, the current one included: x.log, x.log.1, ... x.log.<N-1> "
                        f"(default: {DEFAULT_MAX_FILES})")
    p.add_argument("--no-prometheus", action="store_true",
                   help="do not run Prometheus (by default `up` runs one on the control plane's address, port 9090 "
                        "plus the port offset, scraping the sidecars, the control plane and the apps)")
    p.add_argument("--prometheus-port", metavar="PORT", type=port_number,
                   help="Prometheus's port (default: 9090 plus the port offset, or the next free one of the ten "
                        "after it when that is taken, e.g. by a Prometheus already running; given here, a taken "
                        "port stops `up`)")
    p.add_argument("--scrape-interval", metavar="DURATION", type=scrape_interval, default=DEFAULT_SCRAPE_INTERVAL,
                   help=f"how often Prometheus scrapes every target (1s to 5m; default: {DEFAULT_SCRAPE_INTERVAL})")
    p.add_argument("--ready-timeout", metavar="SECONDS", type=positive_float, default=30.0,
                   help="how long each start-up step may take (default: 30)")
    p.add_argument("--supervise", action="store_true", help=argparse.SUPPRESS)  # the --detach child
    p.add_argument("--run-id", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    run_dir = RunDir(resolve_run_dir(args.run_dir))
    try:
        if args.static and args.cert_ttl is not None:
            raise ValueError("--cert-ttl sets what the sidecars ask the control plane's CA for: not with --static "
                             "(its certificates are files written at start-up)")
        if args.non_mesh_rps is not None and not args.non_mesh_client:
            raise ValueError("--non-mesh-rps needs --non-mesh-client")
        topology = load_topology(Path(args.topology)) if args.topology else default_topology()
        topology = topology.with_load(args.rps, args.concurrency)
        if args.seed is not None:
            topology = replace(topology, seed=args.seed)
        placement = plan(topology, base_address=args.base_address, port_offset=args.port_offset,
                         mode=args.address_mode)
        control_plane = (None if args.static
                         else ControlPlaneAddresses.for_offset(args.control_plane_address, args.port_offset))
        non_mesh = (non_mesh_client(topology, placement, args.non_mesh_rps or DEFAULT_NON_MESH_RPS)
                    if args.non_mesh_client else None)
        prometheus = _prometheus(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if prometheus is None and not args.no_prometheus:  # none installed: said once, here, and not again
        print(missing_message(), flush=True)
        args.no_prometheus = True  # so that the background supervisor of --detach does not look again
    run_id = args.run_id or new_run_id()
    if args.detach and not args.supervise:
        try:
            preflight(run_dir, placement, sys.stdout, holding_lock=False, control_plane=control_plane,
                      prometheus=prometheus)
        except (control.MeshRunningError, StartupError, StateError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return control.launch_detached(run_dir, run_id, _forwarded(args, run_dir.root), sys.stdout,
                                       timeout=4 * args.ready_timeout + 30)
    options = UpOptions(
        run_dir=run_dir, topology=topology, placement=placement, run_id=run_id,
        proxy_log_level=args.proxy_log_level, ready_timeout=args.ready_timeout,
        live_summary=not (args.no_summary or args.supervise), foreground=not args.supervise,
        control_plane=control_plane, port_offset=args.port_offset, non_mesh=non_mesh,
        cert_ttl=None if control_plane is None else args.cert_ttl or DEFAULT_CERT_TTL, fresh=args.fresh,
        log_max_bytes=args.log_max_size, log_max_files=args.log_max_files, prometheus=prometheus,
    )
    return Supervisor(options).run()


PROMETHEUS_PORT_TRIES = 10  # ports after the default one tried when it is taken


def port_number(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1 to 65535)")
    return port


def _prometheus(args: argparse.Namespace) -> PrometheusOptions | None:
    """The run's Prometheus: None with --no-prometheus or when there is no ``prometheus`` on PATH."""
    if args.no_prometheus:
        return None
    binary = find_binary()
    if binary is None:
        return None
    options = PrometheusOptions.for_offset(binary, args.control_plane_address, args.port_offset,
                                           args.scrape_interval, port=args.prometheus_port)
    if args.prometheus_port is None and not can_bind(options.host, options.port):
        # 9090 is every Prometheus's port: Debian's package starts one there as a service. Move rather than
        # refuse (the mesh's other ports are its own); the URL is printed and recorded in state.json.
        free = next((p for p in range(options.port + 1, min(options.port + PROMETHEUS_PORT_TRIES, 65535) + 1)
                     if can_bind(options.host, p)), None)
        if free is not None:
            moved = replace(options, port=free)
            print(f"prometheus: {options.address} is in use (another Prometheus?); this run's is on "
                  f"{moved.address}", flush=True)
            options = moved
        args.prometheus_port = options.port  # the --detach child starts it there, and says nothing again
    return options


def _forwarded(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The options of this `up --detach` for the background `up --supervise`, with absolute paths."""
    out = ["--run-dir", str(run_dir), "--port-offset", str(args.port_offset),
           "--address-mode", args.address_mode, "--proxy-log-level", args.proxy_log_level,
           "--ready-timeout", str(args.ready_timeout), "--control-plane-address", args.control_plane_address,
           "--log-max-size", str(args.log_max_size), "--log-max-files", str(args.log_max_files)]
    if args.static:
        out.append("--static")
    if args.topology:
        out += ["--topology", str(Path(args.topology).absolute())]
    if args.rps is not None:
        out += ["--rps", str(args.rps)]
    if args.concurrency is not None:
        out += ["--concurrency", str(args.concurrency)]
    if args.base_address:
        out += ["--base-address", args.base_address]
    if args.cert_ttl is not None:
        out += ["--cert-ttl", args.cert_ttl]
    if args.seed is not None:
        out += ["--seed", str(args.seed)]
    if args.non_mesh_client:
        out.append("--non-mesh-client")
    if args.fresh:
        out.append("--fresh")
    if args.non_mesh_rps is not None:
        out += ["--non-mesh-rps", str(args.non_mesh_rps)]
    if args.no_prometheus:
        out.append("--no-prometheus")
    out += ["--scrape-interval", args.scrape_interval]
    if args.prometheus_port is not None:
        out += ["--prometheus-port", str(args.prometheus_port)]
    return out

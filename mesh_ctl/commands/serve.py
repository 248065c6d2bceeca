"""Run the control plane: the config store, the workload registry, translation, the ADS server (xDS v3) and
the management API the other commands use.

    mesh_ctl serve [--xds-address 127.0.0.1:15010] [--api-address 127.0.0.1:15014] [--state-dir DIR]
                   [--run-dir DIR] [--topology FILE] [--certs DIR]
                   [--base-address ADDR] [--port-offset N] [--address-mode MODE]

The registry is the topology (default: the built-in payment demo; with --run-dir, the run's topology.yaml
if there is one) placed with the same options as `mesh_ctl up`, and the run's certificates (--certs, default
<run dir>/certs). Istio resources are kept in --state-dir (default <run dir>/store) and survive restarts.
Sidecars and proxyless gRPC clients connect to --xds-address (plain gRPC, loopback only, like istiod's
15010). Runs until SIGTERM or Ctrl-C. `mesh_ctl up` starts it for the local mesh.

The management API (--api-address) answers only its owner: every call needs the credential in
<run dir>/api-token (without --run-dir: <state dir>/api-token), made 0600 on the first start. The CLI reads it
from the run dir it is given, or from $MINIMESH_API_TOKEN_FILE.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path

from mesh_ctl.addressing import ADDRESS_MODES, plan
from mesh_ctl.ca import options as ca_options
from mesh_ctl.commands._common import add_run_dir, positive_float
from mesh_ctl.registry import Registry
from mesh_ctl.runtime.state import RunDir, resolve_run_dir
from mesh_ctl.server import DEFAULT_API_ADDRESS, DEFAULT_XDS_ADDRESS, ServeOptions, serve, split_address
from mesh_ctl.topology import default_topology, load_topology
from mesh_ctl.xds.debounce import DEBOUNCE_AFTER, DEBOUNCE_MAX

LOG_LEVELS = ("debug", "info", "warning", "error")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_dir(p)
    p.add_argument("--xds-address", metavar="HOST:PORT", default=DEFAULT_XDS_ADDRESS,
                   help=f"ADS (xDS v3, plain gRPC) listen address; port 0 = any (default: {DEFAULT_XDS_ADDRESS})")
    p.add_argument("--api-address", metavar="HOST:PORT", default=DEFAULT_API_ADDRESS,
                   help=f"management API (HTTP/JSON) listen address (default: {DEFAULT_API_ADDRESS})")
    p.add_argument("--state-dir", metavar="DIR", help="where the config store lives (default: <run dir>/store)")
    p.add_argument("--topology", metavar="FILE",
                   help="topology YAML (default: <run dir>/topology.yaml if present, else the built-in demo)")
    p.add_argument("--certs", metavar="DIR", help="workload certificates, <DIR>/<workload>/{cert-chain,key,"
                                                  "root-cert}.pem (default: <run dir>/certs if present)")
    p.add_argument("--base-address", metavar="ADDR", default=os.environ.get("MINIMESH_BASE_ADDRESS"),
                   help="first workload address, as for `mesh_ctl up`")
    p.add_argument("--port-offset", metavar="N", type=int, default=os.environ.get("MINIMESH_PORT_OFFSET", "0"),
                   help="added to every workload port, as for `mesh_ctl up` (default: 0)")
    p.add_argument("--address-mode", choices=ADDRESS_MODES, default=os.environ.get("MINIMESH_ADDRESS_MODE", "auto"),
                   help="as for `mesh_ctl up` (default: auto)")
    p.add_argument("--debounce-after", metavar="SECONDS", type=positive_float, default=DEBOUNCE_AFTER,
                   help=f"quiet period before a push (default: {DEBOUNCE_AFTER})")
    p.add_argument("--debounce-max", metavar="SECONDS", type=positive_float, default=DEBOUNCE_MAX,
                   help=f"longest delay of a push while changes keep coming (default: {DEBOUNCE_MAX})")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    ca_options.add_arguments(p)


def _loopback(address: str, what: str) -> None:
    host, _ = split_address(address)
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"{what} {address}: minimesh's control plane listens on loopback only (plain, "
                         "unauthenticated gRPC, like istiod's 15010)")


def build_options(args: argparse.Namespace) -> ServeOptions:
    run_dir = RunDir(resolve_run_dir(args.run_dir))
    if args.topology:
        topology = load_topology(Path(args.topology))
    elif run_dir.topology.is_file():
        topology = load_topology(run_dir.topology)
    else:
        topology = default_topology()
    placement = plan(topology, base_address=args.base_address, port_offset=args.port_offset,
                     mode=args.address_mode)
    certs = Path(args.certs) if args.certs else (run_dir.certs if run_dir.certs.is_dir() else None)
    if certs is not None and not certs.is_dir():
        raise ValueError(f"--certs {certs}: not a directory")
    _loopback(args.xds_address, "--xds-address")
    _loopback(args.api_address, "--api-address")
    return ServeOptions(
        registry=Registry.from_topology(topology, placement, certs),
        state_dir=Path(args.state_dir) if args.state_dir else run_dir.root / "store",
        xds_address=args.xds_address,
        api_address=args.api_address,
        run_dir=run_dir,
        debounce_after=args.debounce_after,
        debounce_max=max(args.debounce_max, args.debounce_after),
        ca=ca_options.from_args(args),
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        options = build_options(args)
    except ValueError as e:  # TopologyError, AddressingError, RegistryError, bad addresses
        print(f"error: {e}", file=sys.stderr)
        return 2
    return serve(options)

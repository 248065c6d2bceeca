"""Show the local mesh: its control plane (xDS and API addresses, pid), each workload's address, ports,
processes (alive or dead) and the latest summary of each load client (totals, and the split of the last
second: "now"). A client whose calls fail also shows its statuses now (``now OK=0 UNAVAILABLE=5``), the first
message of each failing status and what it means: e.g. `up --non-mesh-client`'s ``legacy-client`` (no sidecar)
once `mesh_ctl mtls strict` makes the sidecars refuse plaintext.

The run's Prometheus (when `up` started one): its URL, pid and state (``ready`` once it answers ``/-/ready``).

``-o json`` prints the same as one JSON document (``running``, ``control_plane`` (null with `up --static`),
``prometheus`` (null without one: ``url``, ``pid``, ``alive``, ``ready``, ``restarts``, ``log``),
``workloads[]``, ``summary[]`` ...).
"""

from __future__ import annotations

import argparse
import json
import sys

from mesh_ctl.commands._common import add_run_dir
from mesh_ctl.runtime import control
from mesh_ctl.runtime.state import RunDir, StateError, resolve_run_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_dir(p)
    p.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")


def run(args: argparse.Namespace) -> int:
    run_dir = RunDir(resolve_run_dir(args.run_dir))
    try:
        if args.output == "json":
            print(json.dumps(control.status(run_dir), indent=2))
        else:
            print("\n".join(control.status_text(run_dir)))
    except StateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0

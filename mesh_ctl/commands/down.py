"""Stop the local mesh started by `mesh_ctl up` and wait until every process is gone and its ports are free.

The load client stops first and the control plane last; the control plane's store (<run dir>/store: every
applied Istio resource) is kept for the next `mesh_ctl up`.

Works from any shell, and also after the supervisor died: processes recorded in the run dir's state file
are stopped only if they are still the ones it started (same PID, command line and start time).
"""

from __future__ import annotations

import argparse
import sys

from mesh_ctl.commands._common import add_run_dir, positive_float
from mesh_ctl.runtime import control
from mesh_ctl.runtime.state import RunDir, StateError, resolve_run_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_dir(p)
    p.add_argument("--timeout", metavar="SECONDS", type=positive_float, default=120.0,
                   help="how long to wait for the supervisor to stop everything (default: 120)")


def run(args: argparse.Namespace) -> int:
    try:
        return control.down(RunDir(resolve_run_dir(args.run_dir)), sys.stdout, timeout=args.timeout)
    except StateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

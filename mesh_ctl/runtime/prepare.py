"""Before anything starts: refuse a running mesh or busy addresses, then write what the processes read.

:func:`prepare` writes the run dir's ``topology.yaml``, the certificates (the root is kept across runs,
workload certificates are new every run) and one bootstrap per sidecar, each validated as an Envoy
``Bootstrap`` first, so a bad configuration fails here with a field path instead of in a sidecar's log.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

import yaml

from mesh_ctl.addressing import Placement, busy_sockets, can_bind
from mesh_ctl.bootstrap import build_ads_bootstraps, build_bootstraps, to_yaml, validate_bootstrap
from mesh_ctl.ca.files import load_or_create_root, write_workload_files
from mesh_ctl.credential import ensure_token
from mesh_ctl.runtime import control
from mesh_ctl.runtime.prometheus import PrometheusOptions
from mesh_ctl.runtime.specs import ControlPlaneAddresses
from mesh_ctl.runtime.state import RunDir
from mesh_ctl.topology import Topology, topology_to_dict


class StartupError(RuntimeError):
    pass


def prepare(run_dir: RunDir, topology: Topology, placement: Placement,
            control_plane: ControlPlaneAddresses | None = None) -> dict[str, Path]:
    """Write the owner's credential (if there is none yet), topology.yaml, the certificates and one validated
    bootstrap per sidecar; return their paths.

    With ``control_plane`` the bootstraps point at its xDS address (ADS); without, they are static."""
    rd = run_dir
    rd.root.mkdir(parents=True, exist_ok=True)
    ensure_token(rd.api_token)  # the owner's credential: the control plane's API and the sidecars' admin need it
    rd.topology.write_text(yaml.safe_dump(topology_to_dict(topology), sort_keys=False))
    if control_plane is None:
        ca, _ = load_or_create_root(rd.certs / "ca", topology.trust_domain)
        certs = {w.name: write_workload_files(rd.certs / w.name, ca, topology.spiffe_id(w))
                 for w in topology.workloads}
        bootstraps = build_bootstraps(topology, placement, certs)
    else:  # the control plane's CA owns certs/ca; each sidecar makes its key and asks it for a certificate
        bootstraps = build_ads_bootstraps(topology, placement, control_plane.xds)
    paths: dict[str, Path] = {}
    for name, bootstrap in bootstraps.items():
        validate_bootstrap(bootstrap)
        path = rd.bootstraps / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_yaml(bootstrap))
        paths[name] = path
    return paths


def preflight(run_dir: RunDir, placement: Placement, out: TextIO, *, holding_lock: bool,
              control_plane: ControlPlaneAddresses | None = None,
              prometheus: PrometheusOptions | None = None) -> None:
    """Refuse to start over a running mesh or on busy addresses (the control plane's and Prometheus's too);
    clean up after a dead supervisor."""
    if not holding_lock:
        control.ensure_not_running(run_dir)
    running = control.running_supervisor(run_dir)
    if running is not None:  # alive although it does not hold the lock (lock file removed by hand?)
        raise control.MeshRunningError(
            f"a mesh is already running from {run_dir.root} (run {running.run_id}, supervisor pid "
            f"{running.supervisor_pid}); stop it with `mesh_ctl down --run-dir {run_dir.root}`")
    for line in control.clean_stale(run_dir):
        print(line, file=out)
    busy = busy_sockets(placement)
    if control_plane is not None:
        busy += [s for s in control_plane.sockets() if not can_bind(s[2], s[3])]
    if prometheus is not None:
        busy += [s for s in prometheus.sockets() if not can_bind(s[2], s[3])]
    if busy:
        listed = "\n".join(f"  {host}:{port}  ({workload} {role})" for workload, role, host, port in busy)
        raise StartupError(f"these addresses are in use (another mesh? see `mesh_ctl status`):\n{listed}\n"
                           "Choose others with --base-address / --port-offset (--control-plane-address for the "
                           "control plane and Prometheus), or --no-prometheus.")

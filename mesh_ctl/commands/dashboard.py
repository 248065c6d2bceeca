"""Open the mesh's web views, like `istioctl dashboard`: prints the URL (``--open`` opens it in a browser).

    mesh_ctl dashboard [graph]          the control plane's live service graph (one-time login URL)
    mesh_ctl dashboard prometheus       the run's Prometheus, when `mesh_ctl up` started one
    mesh_ctl dashboard envoy WORKLOAD   a sidecar's admin page

The graph is served by the control plane's management API, which only its owner may use: this command
asks it (with the owner's credential, as every command does) for a one-time login code valid 60 s, and
prints ``http://<api>/ui/login?code=...``. Opening it trades the code for a session cookie and shows the
graph; the URL is then spent, so the one left in the browser's history opens nothing.
"""

from __future__ import annotations

import argparse
import sys
import webbrowser

from mesh_ctl import client
from mesh_ctl.runtime.state import RunDir, StateError, read_state, resolve_run_dir

VIEWS = ("graph", "prometheus", "envoy")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("view", nargs="?", default="graph", choices=VIEWS, help="what to open (default: graph)")
    p.add_argument("workload", nargs="?", help="for envoy: the workload whose sidecar to open")
    p.add_argument("--open", action="store_true", help="also open the URL in the default browser")
    client.add_arguments(p)


def _state(args: argparse.Namespace) -> tuple[RunDir, object]:
    run_dir = RunDir(resolve_run_dir(args.run_dir))
    state = read_state(run_dir)
    if state is None:  # the words of `mesh_ctl status`
        raise StateError(f"no mesh is running from {run_dir.root} (start one with `mesh_ctl up`)")
    return run_dir, state


def url(args: argparse.Namespace) -> str:
    """The URL of the view; ControlPlaneError / StateError / ValueError with the message to print."""
    if args.view != "envoy" and args.workload:
        raise ValueError(f"{args.view} takes no workload (got {args.workload!r})")
    if args.view == "graph":
        c = client.from_args(args)
        answer = c.call("POST", "/v1/ui/login-code", {})
        return f"http://{c.endpoint.address}{answer['path']}"
    run_dir, state = _state(args)
    processes = getattr(state, "processes", [])
    if args.view == "prometheus":
        recorded = getattr(state, "prometheus", None)  # the URL `up` records in state.json when it starts one
        if isinstance(recorded, str) and recorded:
            return recorded if recorded.endswith("/") else recorded + "/"
        for p in processes:
            if p.role == "prometheus" or p.name == "prometheus":
                address = p.addresses.get("web") or p.addresses.get("http") or next(iter(p.addresses.values()), "")
                if address:
                    return f"http://{address}/"
        raise StateError(f"no Prometheus is running for {run_dir.root} (`mesh_ctl up` starts one when "
                         "prometheus is installed: apt-get install prometheus)")
    sidecars = {p.workload: p for p in processes if p.role == "sidecar"}
    if not args.workload:
        raise ValueError(f"envoy needs a workload: one of {', '.join(sorted(sidecars)) or '(none)'}")
    p = sidecars.get(args.workload)
    if p is None or "admin" not in p.addresses:
        raise ValueError(f"no sidecar for workload {args.workload!r}; the sidecars are: "
                         f"{', '.join(sorted(sidecars)) or '(none)'}")
    return f"http://{p.addresses['admin']}/"


def run(args: argparse.Namespace) -> int:
    try:
        where = url(args)
    except client.ControlPlaneError as e:
        client.print_error(e)
        return 1
    except (StateError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(where)
    if args.view == "graph":
        print("(a one-time link, valid 60 s: open it in a browser)", file=sys.stderr)
    if args.open and not webbrowser.open(where):
        print("no browser could be started here: open the URL above yourself", file=sys.stderr)
    return 0

"""One module per `mesh_ctl` command. Adding a command = add ``commands/<name>.py`` + a line below.

Each module provides (its docstring is the command's ``--help`` description)::

    def add_arguments(parser: ArgumentParser) -> None
    def run(args: Namespace) -> int                the exit code

Only the module of the command being run is imported, so `mesh_ctl status` does not pay for what `up`
needs (certificates, Envoy protos). Module names use ``_`` where the command uses ``-`` (``set-weight`` ->
``set_weight.py``).
"""

COMMANDS: dict[str, str] = {
    "up": "start the local mesh (payment v1 + v2, a load client, a sidecar each)",
    "down": "stop the local mesh (and clean up after a crashed one)",
    "status": "list the workloads of the local mesh and the latest traffic summary",
    "serve": "run the control plane (config store, registry, xDS v3 ADS server, CA, management API)",
    "apply": "create or update Istio resources from files (-f FILE|DIR|-)",
    "get": "show stored Istio resources (-o yaml|json)",
    "delete": "delete Istio resources (by kind and name, or -f FILE)",
    "set-weight": "split a service's traffic between subsets (set-weight payment v1=90 v2=10)",
    "fault": "inject faults into a service's calls (fault payment --abort UNAVAILABLE --percent 30)",
    "retries": "set how a service's calls are retried (retries payment --attempts 3 --on unavailable)",
    "lb": "choose a service's load balancer: lb payment least-request|round-robin|random",
    "outlier": "eject failing endpoints (outlier payment --consecutive-errors 3 --interval 5s)",
    "mtls": "set the mutual TLS mode: mtls strict|permissive|disable [-n NS] [--workload W] (a PeerAuthentication)",
    "analyze": "validate Istio resources without applying them (-f FILE)",
    "proxy-status": "xDS sync state of every connected proxy (SYNCED / STALE / NOT SENT / NACKED)",
    "proxy-config": "a proxy's live listeners, routes, clusters, endpoints or secret (certificates)",
    "ca": "the mesh's CA: status, trust bundle, rotate-root, mint-token",
    "dashboard": "print (or --open) the URL of the live service graph, Prometheus or a sidecar's admin page",
    "top": "live rps, success % and p50/p99 per service, version and edge, read from the sidecars",
}

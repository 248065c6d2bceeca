"""mesh_ctl: the minimesh CLI and control plane.

Architecture (data flows top to bottom; each layer only imports the ones below it)::

    cli.py                argparse command tree; one module per command in commands/ (thin: parse -> call)
    commands/<cmd>.py     up, down, status (the local mesh); serve (the control plane); apply, get, delete,
                          set-weight, fault, retries, lb, outlier, analyze, proxy-status, proxy-config,
                          dashboard (clients of the control plane); top (reads the sidecars)
    runtime/              how a mesh is run: local processes (local.py) today; compose / kind later
      local.py            supervisor: start the control plane -> apps -> sidecars -> client, wait ready, live
                          summary, restart a dead control plane, stop in reverse order
      procs.py            spawn with PDEATHSIG, identity check via /proc, stop by PID (TERM -> KILL)
      state.py            run dir layout and the JSON state file that `down` / `status` read
      summary.py          the load client's JSON lines -> per-version counts (total and live), errors, latency
      identity.py         bootstrap tokens for each sidecar (its proof of identity to the CA)
    bootstrap.py          topology + placement -> one Envoy v3 bootstrap per sidecar: ADS to the control plane
                          (default) or the whole configuration, static (`up --static`) (pure)
    server.py             `mesh_ctl serve`: store + registry + ADS server (xds/) + CA + management API, wired
    xds/                  ADS state of the world: versions, nonces, ACK/NACK, debounced pushes, proxy status
    graph/                the live service graph served on the management API (/ui/*: page, SSE, login codes)
    telemetry/            the sidecars' Istio metrics -> per-edge rps, success %, p50/p99 (top and graph/)
    client.py             how commands find and call the control plane's management API
    store.py              durable, versioned Istio resources; resources/ validates them (field paths)
    edits/                the policy verbs' edits of a VirtualService / DestinationRule (pure; run by the store)
    translate/            registry + Istio resources -> xDS resources per proxy (pure)
    registry.py           the workloads and services the control plane knows (from the topology)
    ca/                   roots (self-signed or cacerts), bootstrap tokens, CreateCertificate (a CSR is signed
                          only for the identity its token proves), root rotation with overlap
    addressing.py         where each workload lives: 127.0.0.x per workload, or port blocks on 127.0.0.1
    topology.py           ONE description of services and workloads (built-in default or a YAML file)

``topology`` and ``addressing`` know nothing about processes, so the control plane's registry and the
Docker Compose / kind modes reuse them: `mesh_ctl up` writes the topology it runs into the run dir and starts
`mesh_ctl serve` with the same placement, so the control plane's registry says exactly where every sidecar
is. Everything a running mesh writes lives in the run dir (``$MINIMESH_HOME`` or ``./.minimesh``): state,
logs, certificates, bootstraps, and the control plane's store (kept across runs).
"""

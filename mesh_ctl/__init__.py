"""mesh_ctl: the minimesh CLI and (later) control plane.

Architecture (data flows top to bottom; each layer only imports the ones below it)::

    cli.py                argparse command tree; one module per command in commands/ (thin: parse -> call)
    commands/<cmd>.py     up, down, status ... : read options, call the runtime, print
    runtime/              how a mesh is run: local processes (local.py) today; compose / kind later
      local.py            supervisor: start apps -> sidecars -> client, wait ready, live summary, stop
      procs.py            spawn with PDEATHSIG, identity check via /proc, stop by PID (TERM -> KILL)
      state.py            run dir layout and the JSON state file that `down` / `status` read
      summary.py          the load client's JSON lines -> per-version counts, errors, latency
    bootstrap.py          topology + placement + cert paths -> one Envoy v3 bootstrap per sidecar (pure)
    ca/                   self-signed root + SPIFFE workload certificates (signing is a pure function)
    addressing.py         where each workload lives: 127.0.0.x per workload, or port blocks on 127.0.0.1
    topology.py           ONE description of services and workloads (built-in default or a YAML file)

``topology`` and ``addressing`` know nothing about processes, so the control plane's registry and the
Docker Compose / kind modes can reuse them. Everything a running mesh writes lives in the run dir
(``$MINIMESH_HOME`` or ``./.minimesh``): state, logs, certificates, bootstraps.
"""

"""How a mesh runs. Today: local processes on loopback (`mesh_ctl up`); later: Docker Compose, kind.

    specs.py     topology + placement -> what to run, in which order, how to tell it is ready (pure)
    prepare.py   refuse a running mesh / busy addresses; write certificates + validated bootstraps
    local.py     the supervisor: start in groups (apps -> sidecars -> clients), wait ready, state file,
                 live summary, stop in reverse order on a signal
    control.py   from outside the supervisor: start it detached, `down`, `status`, stale-state clean-up
    procs.py     spawn (own session, PDEATHSIG), recognise a PID as ours (/proc cmdline + start time),
                 stop by PID (SIGTERM -> grace -> SIGKILL)
    state.py     run dir layout, state.json, the supervisor lock (flock)
    summary.py   the load clients' JSON lines -> totals per version / status, latency, failing now?, first errors
    render.py    tables and lines for people

Invariants: every process is started by exactly one supervisor, which holds the run dir's lock for its
whole life; every process it starts is recorded in state.json before the next one starts; nothing is
ever signalled unless its PID, argv and start time match the record.
"""

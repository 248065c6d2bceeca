"""The benchmark users run: unary gRPC through 0, 1 and 2 sidecars, with and without mTLS.

``python -m bench.run`` compares pyproxy with nginx and HAProxy (whichever are installed) in one run, on the
same shapes, the same gRPC server and the same load generator, and prints ratios against the targets.

Architecture (every box is its own OS process; only loopback is used)::

    run.py (orchestrator: starts everything, samples /proc, prints the report)
      |  JSON lines on stdin/stdout
      v
    loadgen.py  --h2c-->  [sidecar A]  --h2c or mTLS-->  [sidecar B]  --h2c-->  server.py
    (grpc.aio, one channel per target)     proxies/{nginx,haproxy,pyproxy}.py    (grpcio, raw bytes)

- :mod:`bench.certs`    CA + SPIFFE server/client certificates for the mTLS hop, made fresh per run.
- :mod:`bench.server`   generic unary gRPC handler on raw bytes (no protobuf on the hot path).
- :mod:`bench.loadgen`  closed-loop throughput at concurrency C and per-call latency at concurrency 1.
- :mod:`bench.proxies`  one module per proxy: a :class:`~bench.proxies.base.Hop` -> config, start, ready.
- :mod:`bench.shapes`   direct / 1-sidecar / 2-sidecars / 2-sidecars-mtls as chains of hops.
- :mod:`bench.procfs`   CPU (utime+stime) and RSS of a process tree from ``/proc``.
- :mod:`bench.measure`  warm-up, repetitions, phases, long run.
- :mod:`bench.report`   table, ratios, PASS/FAIL verdicts, JSON.

Resource handling: every process is started through :class:`bench.procs.ProcessSet` and stopped by PID in a
``finally`` (also on Ctrl-C and SIGTERM). Error handling: a proxy that fails to start or fails requests marks
its own (proxy, shape) result ``failed: <reason>``; the rest of the run goes on.
"""

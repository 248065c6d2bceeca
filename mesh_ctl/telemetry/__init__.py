"""Traffic read from the sidecars' Istio metrics: what `mesh_ctl top` and the control plane's graph share.

Three small steps, each a module:

* :mod:`.scrape`: fetch every sidecar's ``/stats/prometheus`` (blocking ``urllib``, one timeout per target;
  the control plane calls it in a thread, never on its event loop);
* :mod:`.sample`: parse the exposition texts into cumulative counters per edge (``EdgeKey``: source
  workload/version -> destination service/workload/version), from ``reporter="source"`` series, else
  ``reporter="destination"``; and whether the destination reported the edge as mTLS;
* :mod:`.window`: two samples -> per-edge rows over the measured time between them (rps, success %, p50/p99
  with Prometheus's ``histogram_quantile``), and aggregates per service and version.
"""

"""The control plane's own metrics, under istiod's names and labels (issue 11, item 2).

Architecture (each module only uses the ones above it; none imports the rest of mesh_ctl)::

    families.py    every metric family, declared once in one :class:`ControlPlaneMetrics` per control plane
                   (its own ``CollectorRegistry``: tests run several control planes in one process), with
                   the table name -> Istio source; plus the small recording methods the control plane calls
    exposition.py  the Prometheus text format (0.0.4) istiod serves: counters keep their bare names
                   (``pilot_xds_pushes``, no ``_total``), no ``_created`` series
    route.py       ``GET /metrics`` on the management API (istiod's 15014), behind the owner's credential

Where the numbers come from: ``mesh_ctl.xds.ads`` (pushes, connections, NACKs, queue, convergence and send
times), ``mesh_ctl.server`` (debounce, triggers, config events), ``mesh_ctl.xds.verdicts`` (the validation
verdicts of ``apply``), ``mesh_ctl.ca.service`` (CSRs, issuances, refusals) and the CA's roots (expiry gauges, read at
scrape time). Recording is a dictionary lookup and an addition on the control plane's event loop or CA
thread; the data plane never pays for it.
"""

from mesh_ctl.monitoring.exposition import CONTENT_TYPE, render
from mesh_ctl.monitoring.families import ControlPlaneMetrics

__all__ = ["CONTENT_TYPE", "ControlPlaneMetrics", "render"]

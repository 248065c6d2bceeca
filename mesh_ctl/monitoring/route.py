"""``GET /metrics`` on the management API: the control plane's metrics, istiod's 15014 ``/metrics``.

Not a public path: like every route but ``/ready`` and ``/openapi.json`` it needs the owner's credential
(``mesh_ctl.xds.web``), which the run's Prometheus sends from the run dir's ``api-token`` file
(``authorization: {credentials_file: ...}``). The registry is read when a scrape comes, never before: the
document (``python -m mesh_ctl.xds.openapi``) is built without a control plane.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import Response

from mesh_ctl.monitoring.exposition import CONTENT_TYPE, render
from mesh_ctl.monitoring.families import ControlPlaneMetrics


def router(metrics: Callable[[], ControlPlaneMetrics]) -> APIRouter:
    r = APIRouter()

    @r.get("/metrics", summary="the control plane's metrics under istiod's names (Prometheus text format 0.0.4)",
           response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}})
    async def metrics_text() -> Response:
        m = metrics()
        return Response(render(m.registry, m.bare_counters), media_type=CONTENT_TYPE)

    return r

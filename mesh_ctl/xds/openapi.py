"""The management API as an application: :func:`management_app` is what the control plane serves, and
:func:`document` its OpenAPI document without a running control plane (``python -m mesh_ctl.xds.openapi``
prints it; ``docs/api/openapi.json`` is its published copy, kept equal by a test). Clients and fuzzers
(schemathesis) start from it; the live server serves the same at ``GET /openapi.json``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from mesh_ctl.ca.api import router as ca_router
from mesh_ctl.graph.access import COOKIE
from mesh_ctl.graph.routes import router as graph_router
from mesh_ctl.monitoring.route import router as metrics_router
from mesh_ctl.xds.api import router as api_router
from mesh_ctl.xds.web import build_app

if TYPE_CHECKING:
    from mesh_ctl.ca.control import ControlPlaneCA
    from mesh_ctl.server import ControlPlane

if TYPE_CHECKING:
    from fastapi import FastAPI

TITLE = "minimesh control plane"
API_VERSION = "1"  # of the management API's OpenAPI document


def management_app(cp: ControlPlane, ca: ControlPlaneCA, allowed_hosts: list[str], token: str) -> FastAPI:
    """The management API's routes (:mod:`mesh_ctl.xds.api`, :mod:`mesh_ctl.ca.api`, ``/metrics`` of
    :mod:`mesh_ctl.monitoring.route`, the service graph's ``/ui/*`` of :mod:`mesh_ctl.graph.routes`) behind its
    guard (:func:`mesh_ctl.xds.web.build_app`)."""
    ui = cp.graph_access if cp is not None else None
    app = build_app(TITLE, API_VERSION, allowed_hosts, token, ui.valid if ui is not None else None, COOKIE)
    app.include_router(api_router(cp))
    app.include_router(ca_router(ca))
    app.include_router(metrics_router(lambda: cp.metrics))
    if cp is not None:
        app.include_router(graph_router(cp.graph, cp.graph_access))
    else:  # the published document: the routes are described, never called
        from mesh_ctl.graph.access import Access
        from mesh_ctl.graph.feed import GraphFeed
        app.include_router(graph_router(GraphFeed(list, lambda *_: {}), Access()))
    return app


def document() -> dict[str, Any]:
    """The document (the routers are only described here, never called)."""
    return management_app(cast("ControlPlane", None), cast("ControlPlaneCA", None), ["127.0.0.1"], "x" * 64).openapi()


def main() -> None:
    print(json.dumps(document(), indent=1, sort_keys=True))


if __name__ == "__main__":
    main()

"""The management API's OpenAPI document, without a running control plane: ``python -m mesh_ctl.xds.openapi``
prints it; ``docs/api/openapi.json`` is its published copy (a test keeps the two equal). Clients and fuzzers
(schemathesis) start from it. The live server serves the same at ``GET /openapi.json``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from mesh_ctl.ca.api import router as ca_router
from mesh_ctl.xds.api import router as api_router
from mesh_ctl.xds.web import build_app

if TYPE_CHECKING:
    from mesh_ctl.ca.control import ControlPlaneCA
    from mesh_ctl.server import ControlPlane

API_VERSION = "1"  # mesh_ctl.server.API_VERSION


def document() -> dict[str, Any]:
    """The document (the routers are only described here, never called)."""
    app = build_app("minimesh control plane", API_VERSION, ["127.0.0.1"], "x" * 64)
    app.include_router(api_router(cast("ControlPlane", None)))
    app.include_router(ca_router(cast("ControlPlaneCA", None)))
    return app.openapi()


def main() -> None:
    print(json.dumps(document(), indent=1, sort_keys=True))


if __name__ == "__main__":
    main()

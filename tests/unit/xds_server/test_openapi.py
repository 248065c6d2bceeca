"""The management API's published OpenAPI document (docs/api/openapi.json) is the one the server serves."""

from __future__ import annotations

import json
from pathlib import Path

from mesh_ctl.xds.openapi import document

PUBLISHED = Path(__file__).resolve().parents[3] / "docs" / "api" / "openapi.json"


def test_the_published_document_is_current() -> None:
    assert json.loads(PUBLISHED.read_text()) == document(), (
        "the API changed: regenerate with `python -m mesh_ctl.xds.openapi > docs/api/openapi.json`")


def test_every_route_is_described_with_its_body() -> None:
    paths = document()["paths"]
    assert {"/v1/apply", "/v1/analyze", "/v1/delete", "/v1/set-weight", "/v1/resources", "/v1/proxy-status",
            "/v1/proxy-config", "/v1/workloads", "/v1/info", "/ready", "/v1/ca/status", "/v1/ca/root",
            "/v1/ca/rotate-root", "/v1/ca/tokens", "/metrics"} <= set(paths)
    schema = paths["/v1/set-weight"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/SetWeightBody"}

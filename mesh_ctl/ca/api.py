"""The CA's routes on the control plane's management API (HTTP/JSON, loopback only, like the rest of it).

    GET  /v1/ca/status        mode, phase, signing root, trust bundle (fingerprints, not-after), counters
    GET  /v1/ca/root          {"bundle": [pem, ...], "pem": "<all of them>"}: what proxies must trust
    POST /v1/ca/rotate-root   {"publish_delay_s": 10} starts a rotation; {"step": true, "force": false}
                              moves one in progress to its next phase now
    POST /v1/ca/tokens        {"namespace", "service_account", "ttl_s"} -> {"token", "expires_at", ...}

Refusals: 409 (rotation not possible now, with the reason), 400 (bad request).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from mesh_ctl.ca.control import ControlPlaneCA
from mesh_ctl.ca.rotation import RotationError
from mesh_ctl.ca.tokens import MAX_TOKEN_TTL
from mesh_ctl.xds.httpd import HttpError, HttpServer, Request, Response


def install_routes(http: HttpServer, ca: ControlPlaneCA) -> None:
    api = _CaApi(ca)
    http.route("GET", "/v1/ca/status", api.status)
    http.route("GET", "/v1/ca/root", api.root)
    http.route("POST", "/v1/ca/rotate-root", api.rotate_root)
    http.route("POST", "/v1/ca/tokens", api.tokens)


def _seconds(body: dict[str, Any], key: str, *, minimum: float) -> timedelta | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise HttpError(400, f"{key} must be a number >= {minimum:g}")
    return timedelta(seconds=value)


class _CaApi:
    def __init__(self, ca: ControlPlaneCA) -> None:
        self.ca = ca

    async def status(self, _: Request) -> Response:
        return Response(200, self.ca.status())

    async def root(self, _: Request) -> Response:
        bundle = self.ca.trust_bundle()
        return Response(200, {"bundle": bundle, "pem": "".join(bundle)})

    async def rotate_root(self, request: Request) -> Response:
        body = request.json()
        try:
            if body.get("step"):
                await self.ca.step(force=bool(body.get("force")))
            else:
                await self.ca.rotate(_seconds(body, "publish_delay_s", minimum=0))
        except RotationError as e:
            raise HttpError(409, str(e), ca=self.ca.status()) from None
        return Response(200, self.ca.status())

    async def tokens(self, request: Request) -> Response:
        body = request.json()
        namespace, sa = body.get("namespace"), body.get("service_account")
        if not isinstance(namespace, str) or not isinstance(sa, str):
            raise HttpError(400, "namespace and service_account must be strings")
        ttl = _seconds(body, "ttl_s", minimum=1)
        if ttl is not None and ttl > MAX_TOKEN_TTL:
            raise HttpError(400, f"ttl_s must be at most {int(MAX_TOKEN_TTL.total_seconds())}")
        try:
            return Response(200, self.ca.mint_token(namespace, sa, ttl))
        except ValueError as e:
            raise HttpError(400, str(e)) from None

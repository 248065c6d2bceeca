"""The CA's routes on the control plane's management API (HTTP/JSON; the owner's credential, like the rest).

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

from fastapi import APIRouter
from pydantic import BaseModel, Field

from mesh_ctl.ca.control import ControlPlaneCA
from mesh_ctl.ca.rotation import RotationError
from mesh_ctl.ca.tokens import MAX_TOKEN_TTL
from mesh_ctl.xds.web import HttpError, audit, caller

MAX_SECONDS = 366 * 86400  # no duration of the CA's API is longer (found by fuzzing: 10^14 s overflowed)


class RotateBody(BaseModel):
    publish_delay_s: float | None = Field(None, ge=0, description="start a rotation: how long the new root is "
                                                                     "trusted before it signs")
    step: bool = Field(False, description="move a rotation in progress to its next phase now")
    force: bool = False


class TokenBody(BaseModel):
    namespace: str
    service_account: str
    ttl_s: float | None = Field(None, ge=1, description=f"at most {int(MAX_TOKEN_TTL.total_seconds())} s "
                                                        "(hours, as Kubernetes' service-account tokens)")


def router(ca: ControlPlaneCA) -> APIRouter:
    api = _CaApi(ca)
    r = APIRouter()

    @r.get("/v1/ca/status", summary="mode, phase, signing root, trust bundle, counters")
    async def status() -> dict[str, Any]:
        return await api.status()

    @r.get("/v1/ca/root", summary="the trust bundle proxies must trust")
    async def root() -> dict[str, Any]:
        return await api.root()

    @r.post("/v1/ca/rotate-root", summary="start a root rotation, or move one to its next phase")
    async def rotate_root(body: RotateBody) -> dict[str, Any]:
        return await api.rotate_root(body.model_dump(exclude_none=True))

    @r.post("/v1/ca/tokens", summary="mint a bootstrap token for a namespace and service account")
    async def tokens(body: TokenBody) -> dict[str, Any]:
        return await api.tokens(body.model_dump(exclude_none=True))

    return r


def _seconds(body: dict[str, Any], key: str, *, minimum: float) -> timedelta | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not minimum <= value <= MAX_SECONDS:
        raise HttpError(400, f"{key} must be a number of seconds from {minimum:g} to {MAX_SECONDS:g} (a year)")
    return timedelta(seconds=value)


class _CaApi:
    def __init__(self, ca: ControlPlaneCA) -> None:
        self.ca = ca

    async def status(self) -> dict[str, Any]:
        return self.ca.status()

    async def root(self) -> dict[str, Any]:
        bundle = self.ca.trust_bundle()
        return {"bundle": bundle, "pem": "".join(bundle)}

    async def rotate_root(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            if body.get("step"):
                await self.ca.step(force=bool(body.get("force")))
            else:
                await self.ca.rotate(_seconds(body, "publish_delay_s", minimum=0))
        except RotationError as e:
            raise HttpError(409, str(e), ca=self.ca.status()) from None
        return self.ca.status()

    async def tokens(self, body: dict[str, Any]) -> dict[str, Any]:
        namespace, sa = body.get("namespace"), body.get("service_account")
        if not isinstance(namespace, str) or not isinstance(sa, str):
            raise HttpError(400, "namespace and service_account must be strings")
        ttl = _seconds(body, "ttl_s", minimum=1)
        if ttl is not None and ttl > MAX_TOKEN_TTL:
            raise HttpError(400, f"ttl_s must be at most {int(MAX_TOKEN_TTL.total_seconds())} s "
                                 f"({MAX_TOKEN_TTL.total_seconds() / 3600:g} h: bootstrap tokens live hours, as "
                                 "Kubernetes' service-account tokens do)")
        try:
            minted = self.ca.mint_token(namespace, sa, ttl)
        except ValueError as e:
            raise HttpError(400, str(e)) from None
        audit.info("bootstrap token for ns/%s/sa/%s, valid until %s, minted for %s", namespace, sa,
                   minted.get("expires_at"), caller())
        return minted

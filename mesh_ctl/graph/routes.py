"""The graph's HTTP routes, on the management API's app (behind :class:`mesh_ctl.xds.web.Guard`).

    POST /v1/ui/login-code   (credential) a one-time login code and the path that spends it
    GET  /ui/login?code=C    spends the code: session cookie, 303 to /ui/graph (401 for a used/expired code)
    GET  /ui/graph           the page (static/graph.html)
    GET  /ui/static/NAME     its script, style and Cytoscape.js
    GET  /ui/graph.json      one graph document (:mod:`.model`)
    GET  /ui/events          server-sent events: ``event: graph`` with a document every second

The ``/ui/`` routes are left out of the published OpenAPI document: they are for a browser, not a client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse

from mesh_ctl.graph.access import COOKIE, Access
from mesh_ctl.graph.feed import GraphFeed, TooManyWatchers

STATIC = Path(__file__).parent / "static"
ASSETS = {"graph.js": "text/javascript", "graph.css": "text/css", "cytoscape.min.js": "text/javascript"}
# The page loads its own files only: no inline script, no other origin, no framing.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                           "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
                "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
USED_CODE = ("this login code was used already, has expired (60 s) or is not this control plane's: run "
             "`mesh_ctl dashboard` again for a new one")


def router(feed: GraphFeed, access: Access) -> APIRouter:
    r = APIRouter()

    @r.post("/v1/ui/login-code", summary="a one-time code (60 s) that opens the service graph in a browser "
                                         "(GET /ui/login?code=...)")
    async def login_code() -> dict[str, Any]:
        code = access.new_code()
        return {"code": code, "expires_in_s": access.code_ttl, "path": f"/ui/login?code={code}"}

    @r.get("/ui/login", include_in_schema=False)
    async def login(code: str = "") -> Response:
        session = access.redeem(code) if code else None
        if session is None:
            return JSONResponse({"error": USED_CODE}, 401)
        response = RedirectResponse("/ui/graph", 303, headers={"Cache-Control": "no-store",
                                                               "Referrer-Policy": "no-referrer"})
        response.set_cookie(COOKIE, session, max_age=int(access.session_ttl), path="/ui", httponly=True,
                            samesite="strict")
        return response

    @r.get("/ui/graph", include_in_schema=False)
    async def page() -> Response:
        return FileResponse(STATIC / "graph.html", media_type="text/html", headers=PAGE_HEADERS)

    @r.get("/ui/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in ASSETS:
            return JSONResponse({"error": f"no such file: {name}"}, 404)
        return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-cache",
                                                                             "X-Content-Type-Options": "nosniff"})

    @r.get("/ui/graph.json", include_in_schema=False)
    async def snapshot() -> Response:
        try:
            doc = await feed.snapshot()
        except TooManyWatchers as e:
            return JSONResponse({"error": str(e)}, 503)
        if doc is None:
            return JSONResponse({"error": "no graph yet: the sidecars did not answer in time"}, 503)
        return JSONResponse(doc, headers={"Cache-Control": "no-store"})

    @r.get("/ui/events", include_in_schema=False)
    async def events() -> Response:
        if feed.watchers >= feed.max_subscribers:
            return JSONResponse({"error": f"{feed.max_subscribers} graph pages are open already"}, 503)
        return StreamingResponse(_stream(feed), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return r


async def _stream(feed: GraphFeed) -> AsyncIterator[str]:
    try:
        async with feed.subscribe() as queue:
            yield "retry: 2000\n\n"
            while True:
                doc = await queue.get()
                if doc is None:
                    return
                yield f"event: graph\ndata: {json.dumps(doc, separators=(',', ':'))}\n\n"
    except TooManyWatchers as e:
        yield f"event: failure\ndata: {json.dumps({'error': str(e)})}\n\n"

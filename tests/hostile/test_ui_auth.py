"""The service graph's browser access against a real `mesh_ctl serve`: a one-time login code (asked for with the
owner's credential) becomes an HttpOnly, SameSite=Strict session cookie that opens the read-only UI and nothing
else; without it, or with a spent code, the UI is closed; the API's guarantees (Origin, credential) hold."""

from __future__ import annotations

import http.client
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mesh_ctl.graph.access import COOKIE, Access
from tests.hostile.test_api_auth import JSON, call, owner
from tests.integration.test_control_plane import ControlPlane, free_block
from tests.support.procs import ProcessGroup, free_port

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def cp(procs: ProcessGroup) -> Iterator[ControlPlane]:
    root = Path(tempfile.mkdtemp(prefix="minimesh-ui-auth-"))
    plane = ControlPlane(procs, root / "run", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", free_block())
    plane.start()
    yield plane
    shutil.rmtree(root, ignore_errors=True)


def raw(cp: ControlPlane, method: str, path: str, headers: dict[str, str] | None = None,
        body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request without following redirects: status, headers (lower-case), body."""
    host, port = cp.api.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def login_code(cp: ControlPlane) -> dict[str, Any]:
    status, answer = call(cp, "POST", "/v1/ui/login-code", {}, {**JSON, **owner(cp)})
    assert status == 200, answer
    return answer


def session(cp: ControlPlane) -> str:
    status, headers, _ = raw(cp, "GET", login_code(cp)["path"])
    assert status == 303 and headers["location"] == "/ui/graph"
    cookie = headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=strict", "Path=/ui", "Max-Age="):
        assert attribute.lower() in cookie.lower(), cookie
    name, _, rest = cookie.partition("=")
    assert name == COOKIE
    return rest.split(";")[0]


def test_a_login_code_needs_the_credential_and_opens_the_ui_once(cp: ControlPlane) -> None:
    status, answer = call(cp, "POST", "/v1/ui/login-code", {}, JSON)
    assert status == 401 and "owner's credential" in answer["error"]
    code = login_code(cp)
    assert code["expires_in_s"] == 60 and code["path"] == f"/ui/login?code={code['code']}"
    status, headers, _ = raw(cp, "GET", code["path"])
    assert status == 303
    cookie = headers["set-cookie"].split(";")[0]
    status, headers, body = raw(cp, "GET", "/ui/graph", {"Cookie": cookie})
    assert status == 200 and b"service graph" in body
    assert "default-src 'self'" in headers["content-security-policy"]
    # The same code again: spent. A made-up one: refused. Neither sets a cookie.
    for path in (code["path"], "/ui/login?code=" + "A" * 32, "/ui/login"):
        status, headers, body = raw(cp, "GET", path)
        assert status == 401 and "set-cookie" not in headers, (path, status)
        assert "mesh_ctl dashboard" in json.loads(body)["error"]


def test_without_a_session_the_ui_is_closed_and_says_how_to_open_it(cp: ControlPlane) -> None:
    for path in ("/ui/graph", "/ui/graph.json", "/ui/events", "/ui/static/graph.js"):
        for headers in ({}, {"Cookie": f"{COOKIE}=" + "x" * 43}, {"Cookie": "other=1"}):
            status, _, body = raw(cp, "GET", path, headers)
            assert status == 401, (path, headers, status)
            assert "mesh_ctl dashboard" in json.loads(body)["error"]


def test_the_cookie_opens_only_the_read_only_ui(cp: ControlPlane) -> None:
    cookie = {"Cookie": f"{COOKIE}={session(cp)}"}
    status, _, script = raw(cp, "GET", "/ui/static/graph.js", cookie)
    assert status == 200 and b"EventSource" in script
    # The snapshot: this control plane's workloads, whose sidecars are not running here (named unreachable).
    status, _, snapshot = raw(cp, "GET", "/ui/graph.json", cookie)
    assert status == 200, snapshot
    doc = json.loads(snapshot)
    assert {n["id"] for n in doc["nodes"]} == {"client", "payment-v1", "payment-v2"} and doc["edges"] == []
    assert {u["sidecar"] for u in doc["unreachable"]} == {"client", "payment-v1", "payment-v2"}
    status, _, _ = raw(cp, "GET", "/ui/static/../server.py", cookie)
    assert status == 404
    # Never the API: not a read, not a change, not the CA.
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/v1/resources", None), ("GET", "/v1/ca/root", None),
        ("POST", "/v1/set-weight", {"service": "payment", "weights": {"v1": 100}}),
        ("POST", "/v1/ui/login-code", {}), ("POST", "/ui/graph.json", {})]
    for method, path, body in requests:
        data = json.dumps(body).encode() if body is not None else None
        status, _, answer = raw(cp, method, path, {**cookie, **JSON}, data)
        assert status == 401, (method, path, status, answer)
    # A page of another origin is refused even with the cookie (the browser would send it on a same-site
    # request only, but the server does not rely on that); the page's own origin may read the UI.
    status, _, _ = raw(cp, "GET", "/ui/graph", {**cookie, "Origin": "http://evil.example"})
    assert status == 403
    status, _, _ = raw(cp, "GET", "/ui/static/graph.css", {**cookie, "Origin": f"http://{cp.api}"})
    assert status == 200
    status, _, _ = raw(cp, "POST", "/v1/set-weight", {**owner(cp), **JSON, "Origin": f"http://{cp.api}"},
                       json.dumps({"service": "payment", "weights": {"v1": 100}}).encode())
    assert status == 403  # the API still refuses every browser page, its own origin included


def test_codes_expire_and_sessions_expire() -> None:
    now = [1000.0]
    access = Access(clock=lambda: now[0], code_ttl=60, session_ttl=3600)
    late, soon = access.new_code(), access.new_code()
    now[0] += 30
    sid = access.redeem(soon)
    assert sid is not None and access.valid(sid) and access.redeem(soon) is None
    now[0] += 31  # 61 s after it was made
    assert access.redeem(late) is None
    assert access.valid(sid)
    now[0] += 3600
    assert not access.valid(sid) and not access.valid(None) and not access.valid("")

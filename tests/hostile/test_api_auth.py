"""Issue 9.1, reproduced against a real `mesh_ctl serve`: anyone on the machine could mint a bootstrap token for
any workload (and so become it), apply policies and shift traffic through the management API; a web page could
reach it too. Now only the owner's credential opens it, browsers and foreign Host names are refused, token
lifetimes are capped, and every change says who asked."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_control_plane import DR, ControlPlane, free_block
from tests.support.procs import ProcessGroup, free_port

pytestmark = pytest.mark.timeout(120)
NOBODY = 65534


def call(cp: ControlPlane, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(f"http://{cp.api}{path}", data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, {"text": text.decode(errors="replace")}


@pytest.fixture
def cp(procs: ProcessGroup) -> Iterator[ControlPlane]:
    # A run dir others may traverse (as ~/project/.minimesh usually is): only the credential file is private.
    root = Path(tempfile.mkdtemp(prefix="minimesh-auth-"))
    root.chmod(0o755)
    plane = ControlPlane(procs, root / "run", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", free_block())
    plane.start()
    (root / "run").chmod(0o755)
    yield plane
    subprocess.run(["rm", "-rf", str(root)], check=False)


def owner(cp: ControlPlane) -> dict[str, str]:
    return {"Authorization": f"Bearer {(cp.run_dir / 'api-token').read_text().strip()}"}


JSON = {"Content-Type": "application/json"}


def test_without_the_owners_credential_nothing_is_answered(cp: ControlPlane) -> None:
    # The attack: mint a token for sa/client, then apply and shift traffic, with no credential.
    for method, path, body in (("POST", "/v1/ca/tokens", {"namespace": "default", "service_account": "client"}),
                               ("POST", "/v1/apply", {"files": [{"text": DR}]}),
                               ("POST", "/v1/set-weight", {"service": "payment", "weights": {"v1": 100}}),
                               ("GET", "/v1/resources", None), ("GET", "/v1/ca/root", None),
                               ("GET", "/metrics", None)):  # istiod's metrics tell about the mesh too
        for headers in ({**JSON}, {**JSON, "Authorization": "Bearer " + "0" * 64}, {**JSON, "Authorization": "x"}):
            status, answer = call(cp, method, path, body, headers)
            assert status == 401, (method, path, headers, status, answer)
            assert "needs its owner's credential" in answer["error"]
    assert cp.cli("get", "dr").returncode == 0  # the CLI, as the owner, is let in without being asked
    status, _ = call(cp, "GET", "/v1/resources", headers=owner(cp))
    assert status == 200
    # What needs no credential tells nothing about the mesh.
    assert call(cp, "GET", "/ready") == (200, {"ready": True})
    status, doc = call(cp, "GET", "/openapi.json")
    assert status == 200 and "/v1/apply" in doc["paths"]


def test_the_credential_file_is_readable_by_the_owner_only(cp: ControlPlane) -> None:
    token = cp.run_dir / "api-token"
    info = token.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.getuid()
    if os.getuid() != 0:
        pytest.skip("needs root to act as another user (CI runs as root)")
    # Another user of the machine can see the run dir but not the credential.
    done = subprocess.run(["cat", str(token)], user=NOBODY, capture_output=True, text=True, check=False, timeout=30)
    assert done.returncode != 0 and "Permission denied" in done.stderr, done.stderr


def test_browsers_and_foreign_host_names_are_refused(cp: ControlPlane) -> None:
    auth = {**owner(cp), **JSON}
    body = {"namespace": "default", "service_account": "client"}
    status, answer = call(cp, "POST", "/v1/ca/tokens", body, {**auth, "Origin": "https://evil.example"})
    assert status == 403 and "cross-origin request" in answer["error"]
    # A page's "simple request" (text/plain, no preflight) never reaches a handler.
    status, answer = call(cp, "POST", "/v1/ca/tokens", headers={**owner(cp), "Content-Type": "text/plain"},
                          raw=json.dumps(body).encode())
    assert status == 415 and "must be JSON" in answer["error"]
    # DNS rebinding: a name that resolves to 127.0.0.1 but is not this server's.
    status, _ = call(cp, "GET", "/v1/resources", headers={**auth, "Host": "evil.example"})
    assert status == 400
    status, answer = call(cp, "POST", "/v1/apply", headers={**auth, "Content-Length": str(4 * 1024 * 1024)},
                          raw=b"{}")
    assert status == 413


def test_token_lifetimes_are_hours_and_every_change_says_who_asked(cp: ControlPlane) -> None:
    auth = {**owner(cp), **JSON}
    status, answer = call(cp, "POST", "/v1/ca/tokens",
                          {"namespace": "default", "service_account": "client", "ttl_s": 366 * 86400}, auth)
    assert status == 400 and answer["error"].startswith("ttl_s must be at most 86400 s (24 h"), answer
    status, minted = call(cp, "POST", "/v1/ca/tokens",
                          {"namespace": "default", "service_account": "client", "ttl_s": 3600}, auth)
    assert status == 200 and minted["token"]
    assert "virtualservice.networking.istio.io/payment created" in cp.cli("set-weight", "payment", "v1=90",
                                                                          "v2=10").stdout
    assert cp.proc is not None
    log = cp.proc.output()
    me = f"uid {os.getuid()}"
    assert f"bootstrap token for ns/default/sa/client, valid until {minted['expires_at']}, minted for {me}" in log, log
    audit = [line for line in log.splitlines() if "set-weight payment" in line and "mesh_ctl.audit" in line]
    assert audit and me in audit[0] and "(mesh_ctl/set-weight (user " in audit[0], log[-3000:]
    assert "virtualservice.networking.istio.io/payment created (revision 1)" in audit[0]

"""How CLI commands reach the running control plane: find its management API, call it, surface its errors.

Where the control plane is (first match wins):

1. ``--control-plane HOST:PORT`` (the management API address, istiod's 15014);
2. ``$MINIMESH_CONTROL_PLANE``;
3. the run dir's ``control-plane.json``, written by `mesh_ctl serve --run-dir` (and so by `mesh_ctl up`),
   if the process it names is alive;
4. ``127.0.0.1:15014``.

Calls are blocking (``http.client``) with a timeout; the API answers JSON. A refused connection, a
timeout, or an error answer raise :class:`ControlPlaneError`, whose text is what the CLI prints; an
invalid-config answer (422) carries the validator's lines in ``problems``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from mesh_ctl.resources.loader import files_in
from mesh_ctl.resources.model import LoadError, ValidationProblem
from mesh_ctl.runtime.state import RunDir, StateError, read_json, resolve_run_dir

ENV_CONTROL_PLANE = "MINIMESH_CONTROL_PLANE"
DISCOVERY_FILE = "control-plane.json"  # the same name as mesh_ctl.server.DISCOVERY_FILE
DEFAULT_API = "127.0.0.1:15014"
TIMEOUT = 30.0


class ControlPlaneError(RuntimeError):
    """The call failed; ``status`` is the HTTP status (0: no answer); ``problems`` the validator's lines."""

    def __init__(self, message: str, status: int = 0, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {}

    @property
    def problems(self) -> list[str]:
        return [str(p) for p in self.body.get("problems", [])]

    @property
    def warnings(self) -> list[str]:
        return [str(w) for w in self.body.get("warnings", [])]


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str  # host:port of the management API
    source: str  # how it was found, for error messages
    info: dict[str, Any] = field(default_factory=dict)  # the discovery file's content, if any

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host.strip("[]"), int(port)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def discovery(run_dir: RunDir) -> dict[str, Any] | None:
    """The run dir's control-plane.json if its process is alive, else None."""
    try:
        data = read_json(run_dir.root / DISCOVERY_FILE)
    except StateError:
        return None
    if isinstance(data, dict) and _alive(data.get("pid")) and isinstance(data.get("api_address"), str):
        return data
    return None


def find(control_plane: str | None = None, run_dir: str | os.PathLike[str] | None = None) -> Endpoint:
    if control_plane:
        return Endpoint(control_plane, "--control-plane")
    env = os.environ.get(ENV_CONTROL_PLANE)
    if env:
        return Endpoint(env, f"${ENV_CONTROL_PLANE}")
    rd = RunDir(resolve_run_dir(run_dir))
    data = discovery(rd)
    if data is not None:
        return Endpoint(str(data["api_address"]), str(rd.root / DISCOVERY_FILE), data)
    # The run dir's control plane is not running right now (it is being restarted, or was killed): still talk
    # to *its* address, never silently to another mesh's control plane at the default address.
    try:
        stale = read_json(rd.root / DISCOVERY_FILE)
    except StateError:
        stale = None
    if isinstance(stale, dict) and isinstance(stale.get("api_address"), str):
        return Endpoint(str(stale["api_address"]),
                        f"{rd.root / DISCOVERY_FILE} (its control plane, pid {stale.get('pid')}, is not running)",
                        stale)
    return Endpoint(DEFAULT_API, f"the default (no control plane recorded in {rd.root / DISCOVERY_FILE})")


class Client:
    def __init__(self, endpoint: Endpoint, timeout: float = TIMEOUT) -> None:
        self.endpoint = endpoint
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, str | None] | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (query or {}).items() if v is not None}
        target = f"{path}?{urlencode(params)}" if params else path
        host, port = self.endpoint.host_port
        conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            conn.request(method, target, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (ConnectionError, OSError, http.client.HTTPException) as e:
            raise ControlPlaneError(
                f"cannot reach the control plane at {self.endpoint.address} ({self.endpoint.source}): {e}. "
                "Is `mesh_ctl serve` (or `mesh_ctl up`) running? Use --control-plane HOST:PORT to point at it."
            ) from None
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            raise ControlPlaneError(f"{self.endpoint.address} answered {response.status} with non-JSON: "
                                    f"{raw[:200]!r}", response.status) from None
        if not isinstance(data, dict):
            raise ControlPlaneError(f"unexpected answer from {self.endpoint.address}: {data!r}", response.status)
        if response.status >= 400:
            raise ControlPlaneError(str(data.get("error", f"HTTP {response.status}")), response.status, data)
        return data

    # ------------------------------------------------------------------------------------------ the API

    def info(self) -> dict[str, Any]:
        return self.call("GET", "/v1/info")

    def apply(self, files: list[dict[str, str]], dry_run: bool = False) -> dict[str, Any]:
        return self.call("POST", "/v1/apply", {"files": files, "dry_run": dry_run})

    def analyze(self, files: list[dict[str, str]]) -> dict[str, Any]:
        return self.call("POST", "/v1/analyze", {"files": files})

    def resources(self, kind: str | None = None, namespace: str | None = None, name: str | None = None,
                  ) -> dict[str, Any]:
        return self.call("GET", "/v1/resources", query={"kind": kind, "namespace": namespace, "name": name})

    def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/v1/delete", body)

    def set_weight(self, service: str, namespace: str, weights: dict[str, int], dry_run: bool = False,
                   ) -> dict[str, Any]:
        return self.call("POST", "/v1/set-weight", {"service": service, "namespace": namespace,
                                                    "weights": weights, "dry_run": dry_run})

    def proxy_status(self) -> dict[str, Any]:
        return self.call("GET", "/v1/proxy-status")

    def proxy_config(self, proxy: str) -> dict[str, Any]:
        return self.call("GET", "/v1/proxy-config", query={"proxy": proxy})

    def workloads(self) -> dict[str, Any]:
        return self.call("GET", "/v1/workloads")


def connect(control_plane: str | None = None, run_dir: str | os.PathLike[str] | None = None) -> Client:
    return Client(find(control_plane, run_dir))


def read_files(paths: list[str], recursive: bool = False) -> list[dict[str, str]]:
    """The ``-f`` arguments as ``{"origin", "text"}`` (directories expanded like kubectl, ``-`` = stdin).
    Raises :class:`mesh_ctl.resources.LoadError` naming every file that cannot be read."""
    out: list[dict[str, str]] = []
    problems: list[ValidationProblem] = []
    for arg in paths:
        if arg == "-":
            out.append({"origin": "<stdin>", "text": sys.stdin.read()})
            continue
        p = Path(arg)
        files = files_in(p, recursive) if p.is_dir() else [p]
        if p.is_dir() and not files:
            problems.append(ValidationProblem(str(p), "", "", "", "no .yaml, .yml or .json files in this directory"))
        for f in files:
            try:
                out.append({"origin": str(f), "text": f.read_text(encoding="utf-8")})
            except OSError as e:
                problems.append(ValidationProblem(str(f), "", "", "", f"cannot read: {e.strerror or e}"))
            except UnicodeDecodeError as e:
                problems.append(ValidationProblem(str(f), "", "", "", f"not UTF-8 text: {e.reason}"))
    if problems:
        raise LoadError(problems)
    return out


# ---------------------------------------------------------------------------------------------- for commands


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--control-plane`` and ``--run-dir``, shared by every command that talks to the control plane."""
    parser.add_argument("--control-plane", metavar="HOST:PORT", default=None,
                        help=f"the control plane's management API (default: ${ENV_CONTROL_PLANE}, else the run "
                             f"dir's {DISCOVERY_FILE}, else {DEFAULT_API})")
    parser.add_argument("--run-dir", metavar="DIR",
                        help="the mesh's run dir, to find the control plane (default: $MINIMESH_HOME, else "
                             "./.minimesh)")


def from_args(args: argparse.Namespace) -> Client:
    return connect(getattr(args, "control_plane", None), getattr(args, "run_dir", None))


def print_error(e: ControlPlaneError) -> None:
    """The error as kubectl prints it: the validator's lines when there are some, else the message."""
    if e.problems:
        for line in e.problems:
            print(line, file=sys.stderr)
    else:
        print(f"error: {e}", file=sys.stderr)
    for line in e.warnings:
        print(f"Warning: {line}", file=sys.stderr)

"""How CLI commands reach the running control plane: find its management API, call it, surface its errors.

Where the control plane is (first match wins):

1. ``--control-plane HOST:PORT`` (the management API address, istiod's 15014);
2. ``$MINIMESH_CONTROL_PLANE``;
3. the run dir's ``control-plane.json``, written by `mesh_ctl serve --run-dir` (and so by `mesh_ctl up`),
   if the process it names is alive;
4. ``127.0.0.1:15014``.

Calls are blocking (``http.client``) with a timeout; the API answers JSON. A refused connection, a
timeout, or an error answer raise :class:`ControlPlaneError`, whose text is what the CLI prints, once; an
invalid-config answer (422) carries the validator's lines in ``problems``. The text says where the address
came from, in plain words, and what to do when that is clear::

    no control plane is running for run dir .minimesh (nothing recorded in .minimesh/control-plane.json);
    start one with: mesh_ctl up --detach
    cannot reach the control plane at 127.0.0.1:9 (from --control-plane): connection refused
"""

from __future__ import annotations

import argparse
import getpass
import http.client
import json
import os
import shlex
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from mesh_ctl.resources.loader import read_paths
from mesh_ctl.resources.model import LoadError
from mesh_ctl.runtime.state import RunDir, StateError, read_json, resolve_run_dir

ENV_CONTROL_PLANE = "MINIMESH_CONTROL_PLANE"
DISCOVERY_FILE = "control-plane.json"  # the same name as mesh_ctl.server.DISCOVERY_FILE
DEFAULT_API = "127.0.0.1:15014"
ENV_TOKEN_FILE = "MINIMESH_API_TOKEN_FILE"
TIMEOUT = 30.0


def _user_agent() -> str:
    """``mesh_ctl/apply (user alice, pid 123)``: what the control plane's audit log says asked."""
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), "") if sys.argv else ""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid {os.getuid()}"
    return f"mesh_ctl/{command or 'client'} (user {user}, pid {os.getpid()})"


USER_AGENT = _user_agent()


class ControlPlaneError(RuntimeError):
    """The call failed; ``status`` is the HTTP status (0: no answer); ``problems`` the validator's lines.

    ``str(e)`` is the whole message, with the hint (what to do) after a ``;`` when there is one; ``brief`` is
    the message without the hint."""

    def __init__(self, message: str, status: int = 0, body: dict[str, Any] | None = None, hint: str = "") -> None:
        super().__init__(f"{message}; {hint}" if hint else message)
        self.brief = message
        self.hint = hint
        self.status = status
        self.body = body or {}

    @property
    def problems(self) -> list[str]:
        return [str(p) for p in self.body.get("problems", [])]

    @property
    def warnings(self) -> list[str]:
        return [str(w) for w in self.body.get("warnings", [])]

    @property
    def counts(self) -> dict[str, int]:
        """What refused files held (``files``, ``documents``, ...: :meth:`mesh_ctl.resources.loader.Loaded.counts`)."""
        counts = self.body.get("counts")
        return {str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else {}


def shown(path: Path) -> str:
    """``path`` as the user would write it: relative to the current directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd())) or "."
    except ValueError:
        return str(path)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the management API is, and how that was decided (for the error messages)."""

    address: str  # host:port of the management API
    source: str  # how it was found, in words ("--control-plane", "mesh_ctl up")
    info: dict[str, Any] = field(default_factory=dict)  # the discovery file's content, if any
    how: str = ""  # "flag", "env", "recorded", "exited" (recorded, its process is gone), "default"; "": given
    run_dir: Path | None = None  # the run dir looked into (how = recorded, exited, default)
    run_dir_arg: str | None = None  # --run-dir as given, repeated in the hint
    token_file: Path | None = None  # the owner's credential for the API (None: the run dir's api-token)

    def credential_file(self) -> Path:
        """Where the API credential is: given, else recorded by the control plane, else ``$MINIMESH_API_TOKEN_FILE``,
        else the run dir's ``api-token``."""
        if self.token_file is not None:
            return self.token_file
        recorded = self.info.get("token_file")
        if isinstance(recorded, str) and recorded:
            return Path(recorded)
        env = os.environ.get(ENV_TOKEN_FILE)
        if env:
            return Path(env)
        return RunDir(self.run_dir or resolve_run_dir(None)).api_token

    @property
    def host_port(self) -> tuple[str, int]:
        host, sep, port = self.address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ControlPlaneError(f"invalid control plane address {self.address!r} ({self.where()}): "
                                    f"expected HOST:PORT, e.g. 127.0.0.1:15014")
        return host.strip("[]"), int(port)

    @property
    def discovery_file(self) -> str:
        return shown((self.run_dir or Path(".minimesh").absolute()) / DISCOVERY_FILE)

    def where(self) -> str:
        """How the address was found, in a few words (no parentheses: it goes inside some)."""
        if self.how == "recorded":
            return f"recorded in {self.discovery_file}"
        if self.how == "exited":
            return f"recorded in {self.discovery_file} by pid {self.info.get('pid')}, which has exited"
        if self.how == "default":
            return f"the default address; nothing is recorded in {self.discovery_file}"
        return f"from {self.source}"

    def unreachable(self, err: BaseException, timeout: float) -> ControlPlaneError:
        """The error for a call that got no answer."""
        if self.how in ("default", "exited") and isinstance(err, ConnectionRefusedError):
            run_dir = shown(self.run_dir) if self.run_dir is not None else ".minimesh"
            why = (f"nothing recorded in {self.discovery_file}" if self.how == "default"
                   else f"the one recorded in {self.discovery_file}, pid {self.info.get('pid')}, has exited")
            flag = f" --run-dir {shlex.quote(self.run_dir_arg)}" if self.run_dir_arg else ""
            return ControlPlaneError(f"no control plane is running for run dir {run_dir} ({why})",
                                     hint=f"start one with: mesh_ctl up --detach{flag}")
        hint = ""
        if self.how == "recorded" and isinstance(err, ConnectionRefusedError):
            hint = "it may be starting or stopping: see mesh_ctl status"
        return ControlPlaneError(
            f"cannot reach the control plane at {self.address} ({self.where()}): {_reason(err, timeout)}", hint=hint)


def _reason(err: BaseException, timeout: float) -> str:
    """Why a connection failed, in plain words (no errno)."""
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(err, socket.gaierror):
        return f"unknown host ({err.strerror or err})"
    if isinstance(err, http.client.RemoteDisconnected):
        return "the connection was closed before an answer"
    if isinstance(err, http.client.HTTPException):
        return f"not an HTTP answer ({type(err).__name__})"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror[:1].lower() + err.strerror[1:]
    return str(err) or type(err).__name__


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
    rd = RunDir(resolve_run_dir(run_dir))
    if control_plane:
        return Endpoint(control_plane, "--control-plane", how="flag", run_dir=rd.root)
    env = os.environ.get(ENV_CONTROL_PLANE)
    if env:
        return Endpoint(env, f"${ENV_CONTROL_PLANE}", how="env", run_dir=rd.root)
    arg = os.fspath(run_dir) if run_dir else None
    data = discovery(rd)
    if data is not None:
        return Endpoint(str(data["api_address"]), str(rd.root / DISCOVERY_FILE), data, "recorded", rd.root, arg)
    # The run dir's control plane is not running right now (it is being restarted, or was killed): still talk
    # to *its* address, never silently to another mesh's control plane at the default address.
    try:
        stale = read_json(rd.root / DISCOVERY_FILE)
    except StateError:
        stale = None
    if isinstance(stale, dict) and isinstance(stale.get("api_address"), str):
        return Endpoint(str(stale["api_address"]), str(rd.root / DISCOVERY_FILE), stale, "exited", rd.root, arg)
    return Endpoint(DEFAULT_API, "the default address", {}, "default", rd.root, arg)


class Client:
    """Calls the management API with the owner's credential (``token``, else read from the endpoint's
    :meth:`Endpoint.credential_file` at each call: it may be made while the control plane starts)."""

    def __init__(self, endpoint: Endpoint, timeout: float = TIMEOUT, token: str | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, str | None] | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (query or {}).items() if v is not None}
        target = f"{path}?{urlencode(params)}" if params else path
        host, port = self.endpoint.host_port
        conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        token, unreadable = self._credential()
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            headers["User-Agent"] = USER_AGENT
            if token:
                headers["Authorization"] = f"Bearer {token}"
            conn.request(method, target, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise self.endpoint.unreachable(e, self.timeout) from None
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            raise ControlPlaneError(f"{self.endpoint.address} answered {response.status} with non-JSON: "
                                    f"{raw[:200]!r}", response.status) from None
        if not isinstance(data, dict):
            raise ControlPlaneError(f"unexpected answer from {self.endpoint.address}: {data!r}", response.status)
        if response.status == 401:
            where = self.endpoint.credential_file()
            why = (f"{shown(where)} cannot be read ({unreadable})" if unreadable
                   else f"the credential in {shown(where)} is not this control plane's")
            raise ControlPlaneError(f"the control plane at {self.endpoint.address} refused the call: {why}",
                                    401, data, hint="only the user who started the mesh (who can read that file) "
                                                    "can control it")
        if response.status >= 400:
            raise ControlPlaneError(str(data.get("error", f"HTTP {response.status}")), response.status, data)
        return data

    def _credential(self) -> tuple[str | None, str]:
        """The API credential, or None and why it could not be read."""
        if self.token is not None:
            return self.token, ""
        try:
            return self.endpoint.credential_file().read_text().strip(), ""
        except OSError as e:
            return None, e.strerror or str(e)

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
                   relative: bool = False) -> dict[str, Any]:
        return self.call("POST", "/v1/set-weight", {"service": service, "namespace": namespace,
                                                    "weights": weights, "dry_run": dry_run, "relative": relative})

    def set_policy(self, service: str, namespace: str, field: str, value: dict[str, Any] | None,
                   subset: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        """Set (``value``) or clear (None) one Istio policy block of the service: ``fault``, ``retries``,
        ``loadBalancer``, ``outlierDetection`` (see :mod:`mesh_ctl.xds.policy_api`)."""
        return self.call("POST", "/v1/set-policy", {"service": service, "namespace": namespace, "field": field,
                                                    "value": value, "subset": subset, "dry_run": dry_run})

    def proxy_status(self) -> dict[str, Any]:
        return self.call("GET", "/v1/proxy-status")

    def proxy_config(self, proxy: str) -> dict[str, Any]:
        return self.call("GET", "/v1/proxy-config", query={"proxy": proxy})

    def workloads(self) -> dict[str, Any]:
        return self.call("GET", "/v1/workloads")

    def set_ready(self, name: str, namespace: str, ready: bool) -> dict[str, Any]:
        return self.call("PUT", f"/v1/workloads/{namespace}/{name}/ready", {"ready": ready})


def connect(control_plane: str | None = None, run_dir: str | os.PathLike[str] | None = None) -> Client:
    return Client(find(control_plane, run_dir))


def payload(texts: list[tuple[str, str]]) -> list[dict[str, str]]:
    """``(origin, text)`` pairs as the API takes them."""
    return [{"origin": origin, "text": text} for origin, text in texts]


def read_files(paths: list[str], recursive: bool = False) -> list[dict[str, str]]:
    """The ``-f`` arguments as ``{"origin", "text"}`` (directories expanded like kubectl, ``-`` = stdin).
    Raises :class:`mesh_ctl.resources.LoadError` naming every file that cannot be read."""
    inputs = read_paths(paths, recursive)
    if inputs.problems:
        raise LoadError(inputs.problems)
    return payload(inputs.texts)


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

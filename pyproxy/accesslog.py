"""Access logs with Envoy's format strings (``envoy.access_loggers.stdout/stderr/file``).

A format string is compiled once per snapshot into a list of small functions; a request only pays for it
when an access log is configured. Supported command operators (Envoy's names): START_TIME, REQ(X?Y):N,
RESP(X?Y):N, TRAILER(X?Y):N, PROTOCOL, RESPONSE_CODE, RESPONSE_FLAGS, RESPONSE_CODE_DETAILS,
CONNECTION_TERMINATION_DETAILS, GRPC_STATUS, GRPC_STATUS_NUMBER, BYTES_RECEIVED, BYTES_SENT, DURATION,
RESPONSE_DURATION, UPSTREAM_HOST, UPSTREAM_CLUSTER, UPSTREAM_CLUSTER_RAW, UPSTREAM_LOCAL_ADDRESS,
UPSTREAM_REQUEST_ATTEMPT_COUNT, UPSTREAM_TRANSPORT_FAILURE_REASON, ROUTE_NAME, DOWNSTREAM_REMOTE_ADDRESS,
DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT, DOWNSTREAM_LOCAL_ADDRESS, DOWNSTREAM_PEER_URI_SAN,
DOWNSTREAM_LOCAL_URI_SAN, UPSTREAM_PEER_URI_SAN, REQUESTED_SERVER_NAME, CONNECTION_ID, HOSTNAME. Unknown
operators are rejected when the configuration is loaded (``compile_format`` raises ValueError).
"""

from __future__ import annotations

import datetime
import json
import re
import socket
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from pyproxy.config.model import AccessLog

if TYPE_CHECKING:
    from pyproxy.proxy.record import RequestRecord

DEFAULT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    '%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% '
    '"%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" '
    '"%UPSTREAM_HOST%"\n'
)

Field = Callable[["RequestRecord"], str | None]
_OPERATOR = re.compile(r"%([A-Z_]+)(?:\(([^)]*)\))?(?::(\d+))?%")


def _header(headers: list[tuple[bytes, bytes]] | None, names: list[bytes]) -> str | None:
    if not headers:
        return None
    for name in names:
        for n, v in headers:
            if n == name:
                return v.decode("latin-1")
    return None


def _header_op(which: str, arg: str) -> Field:
    names = [n.strip().lower().encode() for n in arg.split("?")]

    def request(s: RequestRecord) -> str | None:
        return _header(s.request_headers, names)

    def response(s: RequestRecord) -> str | None:
        return _header(s.response_headers, names)

    def trailer(s: RequestRecord) -> str | None:
        return _header(s.response_trailers_seen, names)

    return {"REQ": request, "RESP": response, "TRAILER": trailer}[which]


def _start_time(s: RequestRecord) -> str:
    ts = datetime.datetime.fromtimestamp(s.start_wallclock, datetime.UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _duration(s: RequestRecord) -> str:
    return str(int((s.end_time - s.start_time) * 1000))


def _resp_duration(s: RequestRecord) -> str | None:
    if not s.response_headers_time:
        return None
    return str(int((s.response_headers_time - s.start_time) * 1000))


def _addr(pair: tuple[str, int] | None, with_port: bool = True) -> str | None:
    if not pair or not pair[0]:
        return None
    host, port = pair
    if not with_port:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_GRPC_NAMES: dict[int, str] = {0: "OK", 1: "Canceled", 2: "Unknown", 3: "InvalidArgument", 4: "DeadlineExceeded",
               5: "NotFound", 6: "AlreadyExists", 7: "PermissionDenied", 8: "ResourceExhausted",
               9: "FailedPrecondition", 10: "Aborted", 11: "OutOfRange", 12: "Unimplemented", 13: "Internal",
               14: "Unavailable", 15: "DataLoss", 16: "Unauthenticated"}

_HOSTNAME = socket.gethostname()

_SIMPLE: dict[str, Field] = {
    "START_TIME": _start_time,
    "PROTOCOL": lambda s: "HTTP/2",
    "RESPONSE_CODE": lambda s: str(s.response_code),
    "RESPONSE_FLAGS": lambda s: s.flags,
    "RESPONSE_CODE_DETAILS": lambda s: s.details or None,
    "GRPC_STATUS_NUMBER": lambda s: None if s.grpc_status is None else str(s.grpc_status),
    "GRPC_STATUS": lambda s: None if s.grpc_status is None else _GRPC_NAMES.get(s.grpc_status,
                                                                                 str(s.grpc_status)),
    "BYTES_RECEIVED": lambda s: str(s.bytes_received),
    "BYTES_SENT": lambda s: str(s.bytes_sent),
    "DURATION": _duration,
    "RESPONSE_DURATION": _resp_duration,
    "UPSTREAM_HOST": lambda s: str(s.host.address) if s.host is not None else None,
    "UPSTREAM_CLUSTER": lambda s: s.cluster.name if s.cluster is not None else None,
    "UPSTREAM_CLUSTER_RAW": lambda s: s.cluster.name if s.cluster is not None else None,
    "UPSTREAM_LOCAL_ADDRESS": lambda s: _addr(s.upstream_local),
    "UPSTREAM_REQUEST_ATTEMPT_COUNT": lambda s: str(s.attempts),
    "CONNECTION_TERMINATION_DETAILS": lambda s: None,  # set by network filters pyproxy does not have
    "UPSTREAM_TRANSPORT_FAILURE_REASON": lambda s: s.failure_reason or None,
    "ROUTE_NAME": lambda s: s.route.route.name if s.route is not None and s.route.route.name else None,
    "DOWNSTREAM_REMOTE_ADDRESS": lambda s: _addr(s.down.peer_address),
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": lambda s: _addr(s.down.peer_address, with_port=False),
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": lambda s: _addr(s.down.peer_address),
    "DOWNSTREAM_LOCAL_ADDRESS": lambda s: _addr(s.down.transport.local_address),
    "DOWNSTREAM_PEER_URI_SAN": lambda s: ",".join(s.down.peer.uri_sans) or None,
    "DOWNSTREAM_LOCAL_URI_SAN": lambda s: s.ctx.local_principal or None,
    "UPSTREAM_PEER_URI_SAN": lambda s: (s.upstream_principal or None),
    "REQUESTED_SERVER_NAME": lambda s: s.down.requested_server_name,
    "CONNECTION_ID": lambda s: str(id(s.down) & 0xFFFFFFFF),
    "HOSTNAME": lambda s: _HOSTNAME,
}



def _operator(name: str, arg: str | None, max_len: int | None) -> Field:
    if name in ("REQ", "RESP", "TRAILER"):
        if not arg:
            raise ValueError(f"%{name}(...)% needs a header name")
        fn = _header_op(name, arg)
    elif name in _SIMPLE:
        if arg:
            raise ValueError(f"%{name}% takes no argument")
        fn = _SIMPLE[name]
    else:
        raise ValueError(f"unsupported access log command operator %{name}%")
    if max_len is None:
        return fn

    def truncated(s: RequestRecord) -> str | None:
        value = fn(s)
        return value[:max_len] if value is not None else None

    return truncated


def compile_format(fmt: str) -> Callable[[RequestRecord], str]:
    """Compile an Envoy text format (``-`` stands for a missing value, as in Envoy)."""
    parts: list[str | Field] = []
    pos = 0
    for m in _OPERATOR.finditer(fmt):
        if m.start() > pos:
            parts.append(fmt[pos:m.start()])
        parts.append(_operator(m.group(1), m.group(2), int(m.group(3)) if m.group(3) else None))
        pos = m.end()
    if pos < len(fmt):
        parts.append(fmt[pos:])
    if "%%" in fmt:
        parts = [p.replace("%%", "%") if isinstance(p, str) else p for p in parts]

    def render(s: RequestRecord) -> str:
        out = []
        for p in parts:
            if isinstance(p, str):
                out.append(p)
            else:
                value = p(s)
                out.append("-" if value is None else value)
        return "".join(out)

    return render


def compile_json(fields: tuple[tuple[str, str], ...]) -> Callable[[RequestRecord], str]:
    compiled = []
    for key, fmt in fields:
        m = _OPERATOR.fullmatch(fmt)
        if m is not None:  # a single operator keeps its value (null when missing)
            compiled.append((key, _operator(m.group(1), m.group(2), int(m.group(3)) if m.group(3) else None),
                             True))
        else:
            compiled.append((key, compile_format(fmt), False))

    def render(s: RequestRecord) -> str:
        obj = {}
        for key, fn, _single in compiled:
            obj[key] = fn(s)
        return json.dumps(obj, separators=(",", ":")) + "\n"

    return render


class AccessLogger:
    def __init__(self, config: AccessLog) -> None:
        self.config = config
        if config.json_format is not None:
            self.render = compile_json(config.json_format)
        else:
            self.render = compile_format(config.format or DEFAULT_FORMAT)
        self._file: IO[str] | None = None

    def _sink(self) -> IO[str]:
        if self.config.sink == "stdout":
            return sys.stdout
        if self.config.sink == "stderr":
            return sys.stderr
        if self._file is None:
            assert self.config.path is not None
            self._file = _open_shared(self.config.path)
        return self._file

    def log(self, stream: RequestRecord) -> None:
        try:
            self._sink().write(self.render(stream))
        except OSError:
            pass


_FILES: dict[str, IO[str]] = {}


def _open_shared(path: str) -> IO[str]:
    """One line-buffered handle per path for the whole process, like Envoy's AccessLogManager: loggers are
    rebuilt with every listener update, the file is not reopened (no descriptor per update)."""
    f = _FILES.get(path)
    if f is None or f.closed:
        f = _FILES[path] = open(path, "a", buffering=1)  # noqa: SIM115 - kept for the process
    return f

"""Pieces shared by the per-kind semantic checks: the report, headers, exportTo, selectors, percentages.

Rules and wording follow Istio's ``pkg/config/validation`` (validation.go, virtualservice.go); where
minimesh words a reason its own way the Istio rule is named in a comment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh_ctl.resources.names import is_dns1123_label, istio_duration_problem
from mesh_ctl.resources.schema import child, entry


@dataclass
class Report:
    """Errors reject the document; warnings are shown but accepted (Istio's webhook warnings)."""

    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    def error(self, path: str, reason: str | None) -> None:
        if reason:
            self.errors.append((path, reason))

    def warn(self, path: str, reason: str) -> None:
        self.warnings.append((path, reason))


# RFC 7230 token characters (Istio validHeaderNameRegex).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~A-Za-z0-9]+\Z")
_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HEADER_VARIABLE = re.compile(r"[A-Z_][A-Z0-9_]*(\(.*?\))?(:[0-9]+)?\Z")


def header_match_name_problem(name: str) -> str | None:
    """Istio ``ValidateHTTPHeaderNameOrJwtClaimRoute`` (JWT claim keys are handled by the caller)."""
    if not name:
        return "header name cannot be empty"
    if name in _PSEUDO_HEADERS or _HEADER_NAME.match(name):
        return None
    return f"header name {name} is not a valid header name"


def is_jwt_claim_route(name: str) -> bool:
    return name.startswith("@request.auth.claims")


def request_add_set_name_problem(name: str) -> str | None:
    """``ValidateHTTPHeaderWithAuthorityOperationName``: request add/set may name :authority/host."""
    if not name:
        return "header name cannot be empty"
    low = name.lower()
    if (name.startswith(":") or low == "host") and low not in (":authority", "host"):
        return f'invalid header "{name}": header cannot have ":" prefix'
    return None


def header_operation_name_problem(name: str) -> str | None:
    """``ValidateHTTPHeaderOperationName``: request remove and every response operation."""
    if not name:
        return "header name cannot be empty"
    if name.lower() == "host":
        return f'invalid header "{name}": cannot set Host header'
    if name.startswith(":"):
        return f'invalid header "{name}": header cannot have ":" prefix'
    return None


def header_value_problem(value: str) -> str | None:
    """``ValidateHTTPHeaderValue``: no control characters; ``%`` only as ``%%`` or ``%VARIABLE%``."""
    if _CONTROL_CHARS.search(value):
        return f"header value configuration {value!r} is invalid (control characters)"
    i = 0
    while i < len(value):
        if value[i] != "%":
            i += 1
            continue
        if value.startswith("%%", i):
            i += 2
            continue
        end = value.find("%", i + 1)
        if end == -1:
            return f"header value configuration {value!r}: unterminated variable expression (use %% for a %)"
        if not _HEADER_VARIABLE.match(value, i + 1, end):
            return f"header value configuration {value!r}: invalid variable {value[i : end + 1]}"
        i = end + 1
    return None


def check_header_operations(report: Report, headers: Mapping[str, Any] | None, path: str) -> None:
    """``headers.request`` / ``headers.response``: set/add/remove names and values."""
    if not headers:
        return
    for side in ("request", "response"):
        ops = headers.get(side)
        if not isinstance(ops, Mapping):
            continue
        side_path = child(path, side)
        for op in ("set", "add"):
            for name, value in (ops.get(op) or {}).items():
                p = entry(child(side_path, op), name)
                if side == "request":
                    report.error(p, request_add_set_name_problem(name))
                else:
                    report.error(p, header_operation_name_problem(name))
                if isinstance(value, str):
                    report.error(p, header_value_problem(value))
        for i, name in enumerate(ops.get("remove") or ()):
            report.error(f"{child(side_path, 'remove')}[{i}]", header_operation_name_problem(name))


def duration_precision(report: Report, value: Any, path: str) -> None:
    """The ms-precision half of Istio's ValidateDuration (the CRD's CEL rule already checks >= 1ms)."""
    if isinstance(value, str):
        problem = istio_duration_problem(value)
        if (
            problem is not None
            and problem != "duration must be greater than 1ms"
            and not problem.startswith("invalid duration")
        ):
            report.error(path, problem)


def percentage_problem(value: float) -> str | None:
    """Istio ``validatePercentage`` (fault injection percentages)."""
    if value < 0.0 or value > 100.0 or 0.0 < value < 0.0001:
        return f"percentage {value} is neither 0.0, nor in range [0.0001, 100.0]"
    return None


def percent_problem(value: int) -> str | None:
    """Istio ``ValidatePercent`` (integer percentages)."""
    if value < 0 or value > 100:
        return f"percentage {value} is not in range 0..100"
    return None


def port_problem(port: int) -> str | None:
    if 1 <= port <= 65535:
        return None
    return f"port number {port} must be in the range 1..65535"


def check_export_to(
    report: Report, export_to: Sequence[str] | None, namespace: str, path: str, has_selector: bool = False
) -> None:
    """Istio ``validateExportTo`` for VirtualService and DestinationRule (``~`` is for ServiceEntry only)."""
    if not export_to:
        return
    seen: set[str] = set()
    for i, e in enumerate(export_to):
        p = f"{path}[{i}]"
        key = namespace if e == "." else e
        if key in seen:
            report.error(
                p,
                f"duplicate entries in exportTo: . and current namespace {namespace}"
                if key != e
                else (f"duplicate entries in exportTo for entry {e}"),
            )
            continue
        if key != "*" and not is_dns1123_label(key):
            report.error(p, f"only . or * or a valid namespace name is allowed in exportTo, got {e!r}")
            continue
        seen.add(key)
    if has_selector and seen and seen != {namespace}:
        report.error(path, "destination rule with workload selector cannot have exportTo beyond current namespace")
    if "*" in seen and len(export_to) > 1:
        report.error(path, "cannot have both public (*) and non-public exportTo values for a resource")


def visible_to(export_to: Sequence[str] | None, owner_namespace: str, namespace: str) -> bool:
    """Is a resource of ``owner_namespace`` with this ``exportTo`` visible from ``namespace``?

    Istio's default for VirtualService and DestinationRule is ``*`` (MeshConfig defaultVirtualServiceExportTo /
    defaultDestinationRuleExportTo, which minimesh does not change)."""
    if not export_to:
        return True
    return any(e in ("*", namespace) or (e == "." and namespace == owner_namespace) for e in export_to)


def check_workload_selector(report: Report, selector: Mapping[str, Any] | None, path: str, field_name: str) -> None:
    """Istio ``validateWorkloadSelector``: empty keys and ``*`` are caught by the CRD's CEL rules already;
    an empty selector applies to the whole namespace, which Istio warns about."""
    if selector is not None and not selector.get(field_name):
        report.warn(path, "workload selector specified without labels: applies to every workload in the namespace")

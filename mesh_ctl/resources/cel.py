"""Hand-written equivalents of the CRDs' ``x-kubernetes-validations`` CEL rules, keyed by their message.

The API server evaluates these CEL rules; minimesh has no CEL interpreter, so each rule the four supported
CRDs use is written out below in Python, next to its CEL text. A rule is evaluated only when both its
message and its rule text match an entry here, so a rule that changes upstream is reported (in
:data:`UNEVALUATED`) instead of being checked wrongly; ``tests/unit/resources/test_crds.py`` fails if any
rule of the supported kinds is not evaluated.

Rules not evaluated: none in VirtualService, DestinationRule, PeerAuthentication and AuthorizationPolicy
(checked by the test above). Rules of kinds minimesh does not load (Gateway, ServiceEntry, Sidecar,
Telemetry, WasmPlugin, WorkloadEntry, RequestAuthentication, ...) are not evaluated because those kinds
are refused before schema validation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh_ctl.resources.names import parse_duration_ns


@dataclass(frozen=True, slots=True)
class CelRule:
    rule: str  # the CEL text, whitespace-normalised
    holds: Callable[[Any], bool]  # True when the rule is satisfied by `self`
    field: str = ""  # where to report a violation, relative to the node (Kubernetes' fieldPath)


def _duration_at_least_1ms(v: Any) -> bool:
    ns = parse_duration_ns(v) if isinstance(v, str) else None
    return ns is not None and ns >= 1_000_000


def _ports_in_range(v: Any) -> bool:
    try:
        return all(0 < int(k) <= 65535 for k in v)
    except (TypeError, ValueError):  # int("http") is a CEL evaluation error: the request is rejected
        return False


def _port_level_mtls_has_selector(v: Any) -> bool:
    if "portLevelMtls" not in v:
        return True
    selector = v.get("selector")
    labels = selector.get("matchLabels") if isinstance(selector, Mapping) else None
    return isinstance(labels, Mapping) and len(labels) > 0


def _service_accounts_alone(v: Any) -> bool:
    if "serviceAccounts" in v or "notServiceAccounts" in v:
        return not any(k in v for k in ("principals", "notPrincipals", "namespaces", "notNamespaces"))
    return True


RULES: dict[str, CelRule] = {
    "must be a valid duration greater than 1ms": CelRule("duration(self) >= duration('1ms')", _duration_at_least_1ms),
    "wildcard not allowed in label key match": CelRule(
        'self.all(key, !key.contains("*"))', lambda v: all("*" not in k for k in v)
    ),
    "key must not be empty": CelRule("self.all(key, key.size() != 0)", lambda v: all(len(k) != 0 for k in v)),
    "wildcard not allowed in label value match": CelRule('!self.contains("*")', lambda v: "*" not in v),
    "Cannot set serviceAccounts with namespaces or principals": CelRule(
        "(has(self.serviceAccounts) || has(self.notServiceAccounts)) ? (!has(self.principals) && "
        "!has(self.notPrincipals) && !has(self.namespaces) && !has(self.notNamespaces)) : true",
        _service_accounts_alone,
        "serviceAccounts",
    ),
    "cross namespace referencing is not currently supported": CelRule("self.size() == 0", lambda v: len(v) == 0),
    "only one of targetRefs or selector can be set": CelRule(
        "(has(self.selector) ? 1 : 0) + (has(self.targetRef) ? 1 : 0) + (has(self.targetRefs) ? 1 : 0) <= 1",
        lambda v: sum(k in v for k in ("selector", "targetRef", "targetRefs")) <= 1,
    ),
    "port must be between 1-65535": CelRule("self.all(key, 0 < int(key) && int(key) <= 65535)", _ports_in_range),
    "portLevelMtls requires selector": CelRule(
        "has(self.portLevelMtls) ? (((has(self.selector) && has(self.selector.matchLabels)) ? "
        "self.selector.matchLabels : {}).size() > 0) : true",
        _port_level_mtls_has_selector,
        "portLevelMtls",
    ),
}

# (message, rule) of every rule met in a schema but not evaluated: filled as schemas are walked.
UNEVALUATED: set[tuple[str, str]] = set()


def normalise(rule: str) -> str:
    return " ".join(rule.split())


def lookup(message: str, rule: str) -> CelRule | None:
    """The Python equivalent of a CRD rule, or None (and the rule is recorded in :data:`UNEVALUATED`)."""
    known = RULES.get(message)
    if known is not None and normalise(known.rule) == normalise(rule):
        return known
    UNEVALUATED.add((message, rule))
    return None

"""AuthorizationPolicy -> ``envoy.filters.http.rbac`` filters on a sidecar's inbound HTTP connection manager
(Istio's ``pilot/pkg/security/authz/builder``).

Which policies apply to a workload (Istio's ``ListAuthorizationPolicies``): those of its namespace without a
selector or whose ``selector.matchLabels`` it carries, and those of the root namespace without a selector or
whose selector it carries (a root-namespace selector matches workloads of every namespace).

What the inbound HCM gets, before the router, each filter named ``envoy.filters.http.rbac`` with an
``envoy.extensions.filters.http.rbac.v3.RBAC``:

1. AUDIT policies -> ``rules: {action: LOG}`` (never changes the decision; the match is logged);
2. DENY policies -> ``rules: {action: DENY}``;
3. ALLOW policies -> ``rules: {action: ALLOW}``.

A filter exists only when some policy of its action applies, so with no ALLOW policy everything not denied
is allowed; an ALLOW policy without rules (``spec: {}``) contributes Istio's match-never policy, so its ALLOW
filter denies everything; ``rules: [{}]`` matches everything. Each rule is one RBAC policy named
``ns[<namespace>]-policy[<name>]-rule[<index>]`` (:mod:`.rbac`). Policies annotated ``istio.io/dry-run: "true"``
go to ``shadow_rules`` instead (evaluated, counted, never enforced); ``shadow_rules_stat_prefix`` is set as
Istio sets it (``istio_dry_run_allow_`` / ``istio_dry_run_deny_``). The evaluation order CUSTOM -> DENY ->
ALLOW is the filter order; CUSTOM (ext_authz providers) is refused. A denied call is answered by the data
plane: HTTP 403 "RBAC: access denied", for gRPC trailers-only grpc-status 7 PERMISSION_DENIED.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mesh_ctl.registry import Labels, matches
from mesh_ctl.translate.errors import TranslationError
from mesh_ctl.translate.names import RBAC, RBAC_TYPE
from mesh_ctl.translate.peer_authn import selector_labels
from mesh_ctl.translate.rbac import MATCH_NEVER, rbac_policy
from mesh_ctl.translate.values import Json, array, join, obj, string

if TYPE_CHECKING:
    from mesh_ctl.translate.istio import Config

Action = Literal["ALLOW", "DENY", "AUDIT"]
_ACTIONS = ("ALLOW", "DENY", "AUDIT", "CUSTOM")  # the proto's enum numbers
CUSTOM_REFUSED = "CUSTOM authorization (ext_authz providers) is not supported"
DRY_RUN_ANNOTATION = "istio.io/dry-run"
SHADOW_ALLOW_PREFIX = "istio_dry_run_allow_"
SHADOW_DENY_PREFIX = "istio_dry_run_deny_"
# Filter order and the RBAC action each Istio action becomes.
FILTER_ORDER: tuple[tuple[Action, str], ...] = (("AUDIT", "LOG"), ("DENY", "DENY"), ("ALLOW", "ALLOW"))
_SPEC_FIELDS = {"selector", "action", "rules"}
_SPEC_REASONS = {
    "provider": "`provider` belongs to action CUSTOM, which minimesh does not support",
    "targetRef": "targetRef binds a policy to waypoints or gateways, which minimesh does not have: use "
                 "selector.matchLabels",
    "targetRefs": "targetRefs binds a policy to waypoints or gateways, which minimesh does not have: use "
                  "selector.matchLabels",
}
_TRUE = ("true", "1", "t")


@dataclass(frozen=True, slots=True)
class AuthzEntry:
    """One AuthorizationPolicy, read: selector (None: the whole namespace), action, dry-run, rules."""

    config: Config
    selector: Mapping[str, str] | None
    action: Action
    dry_run: bool
    rules: tuple[Any, ...]


def _action(value: object, path: str) -> Action:
    if value is None:
        return "ALLOW"
    if isinstance(value, int) and not isinstance(value, bool):
        name = _ACTIONS[value] if 0 <= value < len(_ACTIONS) else str(value)
    else:
        name = string(value, path).upper()
    if name == "CUSTOM":
        raise TranslationError(path, CUSTOM_REFUSED)
    if name not in ("ALLOW", "DENY", "AUDIT"):
        raise TranslationError(path, f"unknown action {value!r} (ALLOW, DENY, AUDIT)")
    return name  # type: ignore[return-value]


def parse_authorization_policy(config: Config) -> AuthzEntry:
    """Read the envelope of an AuthorizationPolicy (its rules are read by :func:`check_authorization_policy`
    and when filters are built); raises TranslationError with the field path."""
    action = _action(config.spec.get("action"), "spec.action")  # first: CUSTOM explains `provider` too
    spec = obj(config.spec, "spec", _SPEC_FIELDS, _SPEC_REASONS)
    dry = config.annotations.get(DRY_RUN_ANNOTATION)
    dry_run = dry is not None and str(dry).lower() in _TRUE
    if dry_run and action == "AUDIT":
        raise TranslationError(f"metadata.annotations[{DRY_RUN_ANNOTATION}]",
                               "dry-run only applies to ALLOW and DENY policies (AUDIT never enforces anyway)")
    return AuthzEntry(config, selector_labels(spec), action, dry_run, tuple(array(spec.get("rules"), "spec.rules")))


def check_authorization_policy(config: Config) -> None:
    """Translate every rule once (without a workload port) so unsupported fields are reported."""
    entry = parse_authorization_policy(config)
    for i, rule in enumerate(entry.rules):
        rbac_policy(rule, join("spec.rules", i), config.namespace, None)


def applies_to(entry: AuthzEntry, namespace: str, labels: Labels, root_namespace: str) -> bool:
    ns = entry.config.namespace
    if ns not in (namespace, root_namespace):
        return False
    return entry.selector is None or matches(labels, entry.selector)


def policy_name(entry: AuthzEntry, rule: int) -> str:
    """Istio's RBAC policy name: ``ns[<namespace>]-policy[<name>]-rule[<index>]``."""
    return f"ns[{entry.config.namespace}]-policy[{entry.config.name}]-rule[{rule}]"


def _shadow_prefix(shadow_action: str | None) -> str:
    """Istio's ``shadowRuleStatPrefix`` (an absent shadow config reads as ALLOW there)."""
    if shadow_action is None or shadow_action == "ALLOW":
        return SHADOW_ALLOW_PREFIX
    return SHADOW_DENY_PREFIX if shadow_action == "DENY" else ""


def _policies(entry: AuthzEntry, port: int | None) -> dict[str, Json]:
    out: dict[str, Json] = {}
    try:
        if not entry.rules:
            out[policy_name(entry, 0)] = MATCH_NEVER
        for i, rule in enumerate(entry.rules):
            if rule is None:
                continue  # Istio skips a null rule
            out[policy_name(entry, i)] = rbac_policy(rule, join("spec.rules", i), entry.config.namespace, port)
    except TranslationError as e:
        raise e.in_resource(entry.config.label) from None
    return out


def rbac_filters(entries: Iterable[AuthzEntry], port: int | None) -> list[Json]:
    """The RBAC HTTP filters for the policies that apply to one workload (empty: no filter at all), in
    Istio's order. ``port`` is the workload port the inbound listener serves."""
    chosen = sorted(entries, key=lambda e: (e.config.namespace, e.config.name))
    out: list[Json] = []
    for action, rbac_action in FILTER_ORDER:
        members = [e for e in chosen if e.action == action]
        if not members:
            continue
        enforced: dict[str, Json] = {}
        shadow: dict[str, Json] = {}
        for e in members:
            (shadow if e.dry_run else enforced).update(_policies(e, port))
        config: Json = {"@type": RBAC_TYPE}
        if any(not e.dry_run for e in members):
            config["rules"] = {"action": rbac_action, "policies": enforced}
        has_shadow = any(e.dry_run for e in members)
        if has_shadow:
            config["shadow_rules"] = {"action": rbac_action, "policies": shadow}
        config["shadow_rules_stat_prefix"] = _shadow_prefix(rbac_action if has_shadow else None)
        out.append({"name": RBAC, "typed_config": config})
    return out

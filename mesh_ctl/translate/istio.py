"""The stored Istio resources, indexed once for lookups by host: which VirtualService and DestinationRule
apply to a service as seen from a given proxy.

Lookup rules (Istio's, simplified where noted):

- Host names: a name without a dot is short for ``<name>.<resource namespace>.svc.<suffix>``; anything
  with a dot is taken as written (``payment.default`` is *not* expanded, as in Istio). ``*.suffix`` and
  ``*`` are wildcards.
- Visibility: ``exportTo`` (default ``*``; ``.`` = the resource's namespace; ``~`` = nowhere; or namespace
  names). A VirtualService with ``gateways`` applies to sidecars only if the list contains ``mesh``.
- VirtualService for a service: an exact host beats the longest matching wildcard; among equals the first in
  the order the resources were given wins (Istio: the oldest; it does not merge them for sidecars).
- DestinationRule for a service: searched in the proxy's namespace, then the service's, then the root
  namespace ``istio-system`` (Istio's lookup path); an exact host beats a wildcard; a ``workloadSelector``
  must match the proxy's labels. Istio also merges several DRs for one host; minimesh takes the first.
- PeerAuthentication and AuthorizationPolicy for a workload: see :mod:`.peer_authn` and :mod:`.authz`
  (workload selector > namespace > root namespace, which is ``istio-system`` unless configured).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mesh_ctl.registry import Labels, matches
from mesh_ctl.translate.authz import AuthzEntry, applies_to, parse_authorization_policy
from mesh_ctl.translate.errors import TranslationError
from mesh_ctl.translate.peer_authn import MtlsPolicy, PeerAuthnEntry, compose, parse_peer_authentication
from mesh_ctl.translate.values import ANY_KEY, array, join, obj, string

ROOT_NAMESPACE = "istio-system"
MESH_GATEWAY = "mesh"
VIRTUAL_SERVICE = "VirtualService"
DESTINATION_RULE = "DestinationRule"
PEER_AUTHENTICATION = "PeerAuthentication"
AUTHORIZATION_POLICY = "AuthorizationPolicy"
KINDS = (VIRTUAL_SERVICE, DESTINATION_RULE, PEER_AUTHENTICATION, AUTHORIZATION_POLICY)
_CONFIG_PATHS = {
    VIRTUAL_SERVICE: ("networking.istio.io", "virtual-service"),
    DESTINATION_RULE: ("networking.istio.io", "destination-rule"),
    PEER_AUTHENTICATION: ("security.istio.io", "peer-authentication"),
    AUTHORIZATION_POLICY: ("security.istio.io", "authorization-policy"),
}
_API_GROUPS = ("networking.istio.io/", "security.istio.io/")


@dataclass(frozen=True, slots=True)
class Config:
    """One Istio resource: kind, name, namespace, its spec, and its position in the input (for ties), plus
    the metadata translation reads: annotations (``istio.io/dry-run``) and ``creationTimestamp`` (the
    oldest PeerAuthentication of a scope wins)."""

    kind: str
    name: str
    namespace: str
    spec: Mapping[str, Any]
    order: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    created: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def config_path(self) -> str:
        """Istio's ``istio.config`` metadata value for resources generated from this one."""
        group, kind = _CONFIG_PATHS.get(self.kind, ("networking.istio.io", self.kind.lower()))
        return f"/apis/{group}/v1/namespaces/{self.namespace}/{kind}/{self.name}"


def resolve_host(host: str, namespace: str, domain_suffix: str) -> str:
    """Istio's ``ResolveShortnameToFQDN``: only a name without any dot is expanded."""
    if host == "*" or "." in host or ":" in host:
        return host
    return f"{host}.{namespace}.svc.{domain_suffix}"


def host_matches(pattern: str, fqdn: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return fqdn.endswith(pattern[1:]) and len(fqdn) > len(pattern) - 1
    return pattern == fqdn


def _specificity(pattern: str) -> int:
    """Higher is more specific: an exact host beats every wildcard, longer wildcards beat shorter ones."""
    return 1_000_000 if not pattern.startswith("*") else len(pattern)


def exported_to(export_to: Sequence[str], owner_namespace: str, viewer_namespace: str) -> bool:
    if not export_to:
        return True
    for target in export_to:
        if target == "*" or (target == "." and viewer_namespace == owner_namespace) or target == viewer_namespace:
            return True
    return False


@dataclass(frozen=True, slots=True)
class VirtualServiceEntry:
    config: Config
    hosts: tuple[str, ...]  # resolved
    export_to: tuple[str, ...]
    for_sidecars: bool  # no gateways, or "mesh" among them


@dataclass(frozen=True, slots=True)
class DestinationRuleEntry:
    config: Config
    host: str  # resolved
    export_to: tuple[str, ...]
    selector: Labels | None


@dataclass(frozen=True, slots=True)
class IstioConfig:
    """The VirtualServices and DestinationRules of the mesh, ready for per-proxy lookups."""

    virtual_services: tuple[VirtualServiceEntry, ...] = ()
    destination_rules: tuple[DestinationRuleEntry, ...] = ()
    peer_authentications: tuple[PeerAuthnEntry, ...] = ()
    authorization_policies: tuple[AuthzEntry, ...] = ()
    root_namespace: str = ROOT_NAMESPACE

    def mtls(self, namespace: str, labels: Labels) -> MtlsPolicy:
        """The effective PeerAuthentication settings of a workload (:func:`.peer_authn.compose`)."""
        return compose(self.peer_authentications, namespace, labels, self.root_namespace)

    def authorization(self, namespace: str, labels: Labels) -> tuple[AuthzEntry, ...]:
        """The AuthorizationPolicies that apply to a workload (:func:`.authz.applies_to`)."""
        return tuple(e for e in self.authorization_policies
                     if applies_to(e, namespace, labels, self.root_namespace))

    def virtual_service(self, fqdn: str, viewer_namespace: str) -> VirtualServiceEntry | None:
        best: tuple[int, int] | None = None
        found = None
        for vs in self.virtual_services:
            if not vs.for_sidecars or not exported_to(vs.export_to, vs.config.namespace, viewer_namespace):
                continue
            for pattern in vs.hosts:
                if host_matches(pattern, fqdn):
                    key = (_specificity(pattern), -vs.config.order)
                    if best is None or key > best:
                        best, found = key, vs
        return found

    def destination_rule(self, fqdn: str, service_namespace: str, viewer_namespace: str,
                         viewer_labels: Labels) -> DestinationRuleEntry | None:
        for namespace in dict.fromkeys((viewer_namespace, service_namespace, self.root_namespace)):
            best: tuple[int, int] | None = None
            found = None
            for dr in self.destination_rules:
                if dr.config.namespace != namespace or not host_matches(dr.host, fqdn):
                    continue
                if not exported_to(dr.export_to, namespace, viewer_namespace):
                    continue
                if dr.selector is not None and (namespace != viewer_namespace or not matches(viewer_labels,
                                                                                            dr.selector)):
                    continue
                key = (_specificity(dr.host), -dr.config.order)
                if best is None or key > best:
                    best, found = key, dr
            if found is not None:
                return found
        return None


def parse_config(resource: Mapping[str, Any], order: int = 0) -> Config:
    """The header of an Istio resource dict; raises TranslationError for kinds minimesh does not take."""
    if not isinstance(resource, Mapping):
        raise TranslationError("", f"expected an Istio resource (a mapping), got {type(resource).__name__}")
    kind = resource.get("kind")
    api_version = resource.get("apiVersion", "")
    meta = resource.get("metadata") or {}
    name = meta.get("name", "") if isinstance(meta, Mapping) else ""
    namespace = (meta.get("namespace") if isinstance(meta, Mapping) else None) or "default"
    label = f"{kind} {namespace}/{name}"
    if isinstance(api_version, str) and api_version and not api_version.startswith(_API_GROUPS):
        raise TranslationError("apiVersion", f"{api_version!r} is not an Istio API group", label)
    if kind not in KINDS:
        raise TranslationError("kind", f"{kind!r} is not supported (supported: {', '.join(KINDS)})", label)
    spec = resource.get("spec")
    if spec is None and kind == AUTHORIZATION_POLICY:
        spec = {}  # `spec: {}` is often written as no spec at all: the allow-nothing policy
    if not isinstance(spec, Mapping):
        raise TranslationError("spec", "is required", label)
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    created = meta.get("creationTimestamp") if isinstance(meta, Mapping) else None
    return Config(str(kind), str(name), str(namespace), spec, order,
                  {str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, Mapping) else {},
                  str(created or ""))


def _string_list(value: object, path: str) -> tuple[str, ...]:
    return tuple(string(v, join(path, i)) for i, v in enumerate(array(value, path)))


Entry = VirtualServiceEntry | DestinationRuleEntry | PeerAuthnEntry | AuthzEntry


def index_config(config: Config, domain_suffix: str) -> Entry:
    """Index one resource (its top-level fields only; :func:`mesh_ctl.translate.check_resource` checks the
    rest)."""
    spec = config.spec
    try:
        if config.kind == PEER_AUTHENTICATION:
            return parse_peer_authentication(config)
        if config.kind == AUTHORIZATION_POLICY:
            return parse_authorization_policy(config)
        if config.kind == VIRTUAL_SERVICE:
            hosts = _string_list(spec.get("hosts"), "spec.hosts")
            gateways = _string_list(spec.get("gateways"), "spec.gateways")
            return VirtualServiceEntry(
                config=config,
                hosts=tuple(resolve_host(h, config.namespace, domain_suffix) for h in hosts),
                export_to=_string_list(spec.get("exportTo"), "spec.exportTo"),
                for_sidecars=not gateways or MESH_GATEWAY in gateways,
            )
        selector = None
        if spec.get("workloadSelector") is not None:
            ws = obj(spec["workloadSelector"], "spec.workloadSelector", {"matchLabels"})
            labels = obj(ws.get("matchLabels"), "spec.workloadSelector.matchLabels", ANY_KEY)
            selector = {str(k): str(v) for k, v in labels.items()}
        return DestinationRuleEntry(
            config=config,
            host=resolve_host(string(spec.get("host", ""), "spec.host"), config.namespace, domain_suffix),
            export_to=_string_list(spec.get("exportTo"), "spec.exportTo"),
            selector=selector,
        )
    except TranslationError as e:
        raise e.in_resource(config.label) from None


def index_resources(resources: Iterable[Mapping[str, Any]], domain_suffix: str = "cluster.local",
                    root_namespace: str = ROOT_NAMESPACE) -> IstioConfig:
    vss: list[VirtualServiceEntry] = []
    drs: list[DestinationRuleEntry] = []
    pas: list[PeerAuthnEntry] = []
    aps: list[AuthzEntry] = []
    for i, resource in enumerate(resources):
        entry = index_config(parse_config(resource, i), domain_suffix)
        if isinstance(entry, VirtualServiceEntry):
            vss.append(entry)
        elif isinstance(entry, DestinationRuleEntry):
            drs.append(entry)
        elif isinstance(entry, PeerAuthnEntry):
            pas.append(entry)
        else:
            aps.append(entry)
    return IstioConfig(tuple(vss), tuple(drs), tuple(pas), tuple(aps), root_namespace)

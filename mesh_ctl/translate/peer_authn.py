"""PeerAuthentication -> the mTLS mode of a workload's inbound port (Istio's ``ComposePeerAuthentication``).

Scope and precedence, as in Istio (``pilot/pkg/security/authn/policy_applier.go``, ``model/authentication.go``):

- mesh-wide: a policy in the root namespace (``istio-system`` unless configured) without a selector;
- namespace-wide: a policy in the workload's namespace without a selector (an empty ``matchLabels`` counts
  as none);
- workload: a policy in the workload's namespace whose ``selector.matchLabels`` are all among the workload's
  labels. A policy with a selector in the root namespace applies to nothing (Istio ignores it too).

Within one scope the oldest policy wins (``metadata.creationTimestamp``, then the order the store keeps,
which is creation order). The mode starts at PERMISSIVE; the mesh, namespace and workload policies each
replace it unless their mode is UNSET (or absent). ``portLevelMtls`` is read from the workload policy only:
a port's mode replaces the workload's for that workload port, UNSET inherits it.

The workload port: minimesh's topology has no separate ``targetPort``, so it is the service port (8080 for
``payment``); the local addressing only moves the app's listening port when workloads share 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from mesh_ctl.registry import Labels, matches
from mesh_ctl.translate.errors import TranslationError
from mesh_ctl.translate.values import ANY_KEY, integer, join, obj, string

if TYPE_CHECKING:
    from mesh_ctl.translate.istio import Config

MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]
MODES: tuple[MtlsMode, ...] = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")  # the proto's enum numbers
DEFAULT_MODE: MtlsMode = "PERMISSIVE"  # Istio's mode when nothing (or only UNSET) is set
_SPEC_FIELDS = {"selector", "mtls", "portLevelMtls"}
_SPEC_REASONS = {
    "targetRef": "targetRef is not a PeerAuthentication field (use selector.matchLabels)",
    "targetRefs": "targetRefs is not a PeerAuthentication field (use selector.matchLabels)",
}


def parse_mode(value: object, path: str) -> MtlsMode:
    """``mtls.mode`` as written (a name, any case, or the enum number)."""
    if value is None:
        return "UNSET"
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(MODES):
            return MODES[value]
        raise TranslationError(path, f"unknown mTLS mode {value} (0-3: UNSET, DISABLE, PERMISSIVE, STRICT)")
    name = string(value, path).upper()
    for mode in MODES:
        if mode == name:
            return mode
    raise TranslationError(path, f"unknown mTLS mode {value!r} (UNSET, DISABLE, PERMISSIVE, STRICT)")


def _mtls(value: object, path: str) -> MtlsMode:
    return parse_mode(obj(value, path, {"mode"}).get("mode"), join(path, "mode"))


def selector_labels(spec: Mapping[str, Any], path: str = "spec.selector") -> dict[str, str] | None:
    """``selector.matchLabels``; None when there is no selector or it is empty (Istio: no selector)."""
    if spec.get("selector") is None:
        return None
    sel = obj(spec["selector"], path, {"matchLabels"})
    labels = obj(sel.get("matchLabels"), join(path, "matchLabels"), ANY_KEY)
    return {str(k): str(v) for k, v in labels.items()} or None


@dataclass(frozen=True, slots=True)
class PeerAuthnEntry:
    """One PeerAuthentication, read: its selector (None: namespace or mesh wide), mode and port modes."""

    config: Config
    selector: Mapping[str, str] | None
    mode: MtlsMode
    port_modes: Mapping[int, MtlsMode] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def age_key(self) -> tuple[str, int]:
        """Oldest first: creation time, then the store's (creation) order."""
        return self.config.created, self.config.order


def parse_peer_authentication(config: Config) -> PeerAuthnEntry:
    """Read (and check) a PeerAuthentication; raises TranslationError with the field path."""
    spec = obj(config.spec, "spec", _SPEC_FIELDS, _SPEC_REASONS)
    selector = selector_labels(spec)
    mode = _mtls(spec.get("mtls"), "spec.mtls")
    ports: dict[int, MtlsMode] = {}
    plpath = "spec.portLevelMtls"
    for key, value in obj(spec.get("portLevelMtls"), plpath, ANY_KEY).items():
        kpath = join(plpath, str(key))
        port = integer(key, kpath, 1, 65535)
        if port in ports:
            raise TranslationError(kpath, f"port {port} is given twice")
        ports[port] = _mtls(value, kpath)
    if ports and selector is None:
        raise TranslationError(plpath, "portLevelMtls needs a selector (Istio ignores it on a namespace- or "
                                       "mesh-wide policy): add selector.matchLabels")
    return PeerAuthnEntry(config, selector, mode, MappingProxyType(ports))


@dataclass(frozen=True, slots=True)
class MtlsPolicy:
    """A workload's effective mTLS settings: its mode (never UNSET) and per-workload-port overrides, plus the
    policies that decided (``Kind ns/name``, for messages)."""

    mode: MtlsMode = DEFAULT_MODE
    port_modes: Mapping[int, MtlsMode] = field(default_factory=lambda: MappingProxyType({}))
    decided_by: tuple[str, ...] = ()

    def for_port(self, port: int) -> MtlsMode:
        return self.port_modes.get(port, self.mode)


def _oldest(entries: Iterable[PeerAuthnEntry]) -> PeerAuthnEntry | None:
    return min(entries, key=lambda e: e.age_key, default=None)


def compose(entries: Iterable[PeerAuthnEntry], namespace: str, labels: Labels, root_namespace: str,
            ) -> MtlsPolicy:
    """The effective policy of a workload in ``namespace`` with ``labels`` (see the module docstring)."""
    mesh: list[PeerAuthnEntry] = []
    ns_wide: list[PeerAuthnEntry] = []
    workload: list[PeerAuthnEntry] = []
    for e in entries:
        ns = e.config.namespace
        if e.selector is None:
            if ns == root_namespace:
                mesh.append(e)
            elif ns == namespace:
                ns_wide.append(e)
        elif ns == namespace and ns != root_namespace and matches(labels, e.selector):
            workload.append(e)
    mode: MtlsMode = DEFAULT_MODE
    decided: list[str] = []
    chosen = [_oldest(mesh), _oldest(ns_wide), _oldest(workload)]
    for scope in chosen:
        if scope is not None and scope.mode != "UNSET":
            mode = scope.mode
            decided.append(scope.config.label)
    ports: dict[int, MtlsMode] = {}
    wl = chosen[2]
    if wl is not None:
        for port, port_mode in wl.port_modes.items():
            ports[port] = mode if port_mode == "UNSET" else port_mode
        if wl.port_modes and wl.config.label not in decided:
            decided.append(wl.config.label)
    return MtlsPolicy(mode, MappingProxyType(ports), tuple(decided))

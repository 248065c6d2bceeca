"""The vocabulary of the package: supported kinds, a parsed resource, its identity, and a validation problem.

Everything here is plain data. A :class:`Resource` keeps the document as written (``apiVersion`` included);
:func:`mesh_ctl.resources.normalize.normalized` gives the translator's view of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

DEFAULT_NAMESPACE = "default"
NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"


@dataclass(frozen=True, slots=True)
class KindInfo:
    group: str
    kind: str
    plural: str
    versions: tuple[str, ...]  # served versions, storage version first
    short_names: tuple[str, ...] = ()

    @property
    def storage_version(self) -> str:
        return self.versions[0]


# The kinds minimesh accepts, with the versions the CRDs serve (checked against the CRD file by a test).
KINDS: dict[str, KindInfo] = {
    "VirtualService": KindInfo(NETWORKING, "VirtualService", "virtualservices", ("v1", "v1beta1", "v1alpha3"), ("vs",)),
    "DestinationRule": KindInfo(
        NETWORKING, "DestinationRule", "destinationrules", ("v1", "v1beta1", "v1alpha3"), ("dr",)
    ),
    "PeerAuthentication": KindInfo(SECURITY, "PeerAuthentication", "peerauthentications", ("v1", "v1beta1"), ("pa",)),
    "AuthorizationPolicy": KindInfo(
        SECURITY, "AuthorizationPolicy", "authorizationpolicies", ("v1", "v1beta1"), ("ap",)
    ),
}

# Istio kinds that exist but that minimesh does not implement: named in the error so users know why.
KNOWN_UNSUPPORTED_KINDS = frozenset(
    {
        "Gateway",
        "ServiceEntry",
        "Sidecar",
        "WorkloadEntry",
        "WorkloadGroup",
        "EnvoyFilter",
        "ProxyConfig",
        "RequestAuthentication",
        "Telemetry",
        "WasmPlugin",
        "TrafficExtension",
    }
)


def kind_info(kind_or_alias: str) -> KindInfo | None:
    """``VirtualService``, ``virtualservices``, ``vs``, ``virtualservices.networking.istio.io`` -> its info."""
    low = kind_or_alias.lower()
    for info in KINDS.values():
        names = (info.kind.lower(), info.plural, *info.short_names)
        if low in names or low in (f"{n}.{info.group}" for n in names):
            return info
    return None


class ResourceKey(NamedTuple):
    """A resource's identity: (group, kind, namespace, name)."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Resource:
    """One Istio document as written (after YAML/JSON parsing), plus where it came from.

    ``metadata.namespace`` is filled in with ``default`` when absent; nothing else is changed.
    """

    api_version: str
    kind: str
    metadata: Mapping[str, Any]
    spec: Mapping[str, Any]
    origin: str = "<memory>"
    document: int = 0  # 1-based position in its file (0: not from a file)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the whole document

    @property
    def group(self) -> str:
        return self.api_version.partition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.partition("/")[2]

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or DEFAULT_NAMESPACE)

    @property
    def key(self) -> ResourceKey:
        info = KINDS.get(self.kind)
        group = info.group if info is not None else self.group
        return ResourceKey(group, self.kind, self.namespace, self.name)

    def to_dict(self) -> dict[str, Any]:
        """The document as stored: apiVersion as written, metadata, spec (plain, JSON-serialisable)."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": dict(self.metadata),
            "spec": dict(self.spec),
        }


@dataclass(frozen=True, slots=True)
class ValidationProblem:
    """One reason a document is rejected: where (file, resource, field path) and why (one line)."""

    origin: str
    kind: str
    name: str  # "namespace/name" when known, else ""
    path: str  # e.g. "spec.http[0].route[1].weight"; "" for the document as a whole
    reason: str
    document: int = 0

    def __str__(self) -> str:
        """``FILE: WHERE: FIELD.PATH: reason``, leaving out what is not known: no segment is ever empty.

        WHERE is ``Kind namespace/name`` when both are known, else ``document #N`` (``document #N (Kind)``);
        a problem with the file as a whole (unreadable, empty) is just ``FILE: reason``."""
        if self.kind and self.name:
            where = f"{self.kind} {self.name}"
        elif self.document:
            known = self.kind or self.name
            where = f"document #{self.document}" + (f" ({known})" if known else "")
        else:
            where = self.kind or self.name
        return ": ".join(part for part in (self.origin, where, self.path, self.reason) if part)


class InvalidConfig(Exception):
    """A batch was rejected; nothing changed. ``problems`` lists every reason, in document order;
    ``warnings`` what would have been accepted with a warning."""

    def __init__(self, problems: Sequence[ValidationProblem], warnings: Sequence[ValidationProblem] = ()) -> None:
        self.problems = list(problems)
        self.warnings = list(warnings)
        super().__init__("\n".join(str(p) for p in self.problems))


class LoadError(InvalidConfig):
    """A file could not be read or parsed (YAML/JSON syntax, not a mapping, unreadable path)."""

"""The control plane's registry of workloads: what runs where, as one frozen value.

Istio builds the same picture from Kubernetes (Services, Pods, ServiceAccounts); here it comes from a
:class:`~mesh_ctl.topology.Topology` plus its :class:`~mesh_ctl.addressing.Placement` (addresses and ports on
this machine) and the certificate files ``mesh_ctl up`` writes. It holds:

- services: name, namespace, FQDN ``<name>.<ns>.svc.<suffix>``, port, label selector, and the topology's
  subsets/weights (the implicit DestinationRule subsets and VirtualService split used when no Istio resource
  says otherwise);
- workloads: name, namespace, service account (SPIFFE ID), labels, loopback address, app/sidecar ports,
  certificate files, the services the app calls, and its sidecar's node id in Istio's format
  ``sidecar~<ip>~<workload>.<ns>~<ns>.svc.<suffix>``;
- ad-hoc proxyless gRPC clients (node id, namespace, node metadata), registered while they are connected.

A :class:`Registry` never changes: every change (a proxyless client registering, a new topology) makes a
new one (:meth:`Registry.with_proxyless` ...), so translation (``mesh_ctl.translate``) stays a pure function
of (registry, Istio resources, node).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mesh_ctl.addressing import Placement
from mesh_ctl.ca.files import CertFiles
from mesh_ctl.topology import Topology, Workload

Labels = Mapping[str, str]


class RegistryError(ValueError):
    """An inconsistent registry (e.g. a placement that does not cover the topology)."""


def _frozen(d: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(d or {}))


def matches(labels: Labels, selector: Labels) -> bool:
    """Kubernetes equality-based selection: every selector pair is in ``labels``."""
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True, slots=True)
class SubsetEntry:
    """A subset the topology declares for a service (labels on top of the service selector) and its weight."""

    name: str
    labels: Labels
    weight: int


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    name: str
    namespace: str
    port: int
    selector: Labels
    domain_suffix: str = "cluster.local"
    subsets: tuple[SubsetEntry, ...] = ()

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{self.domain_suffix}"

    def subset(self, name: str) -> SubsetEntry | None:
        return next((s for s in self.subsets if s.name == name), None)


@dataclass(frozen=True, slots=True)
class WorkloadEntry:
    """One workload (app + sidecar). Ports are None when that listener does not exist."""

    name: str
    namespace: str
    service_account: str
    labels: Labels
    address: str
    spiffe_id: str
    node_id: str
    app_port: int | None  # the app's server port (None: it serves nothing)
    outbound_port: int | None  # sidecar outbound listener the app dials (None: it calls nothing)
    inbound_port: int | None  # sidecar inbound listener (None: no service selects it)
    admin_port: int | None = None
    prometheus_port: int | None = None
    certs: CertFiles | None = None
    calls: tuple[str, ...] = ()  # FQDNs of the services the app calls
    canonical_service: str = ""
    canonical_revision: str = "latest"


@dataclass(frozen=True, slots=True)
class ProxylessClient:
    """A plain gRPC client using grpcio's xDS support (``xds:///`` targets), registered by node id."""

    node_id: str
    namespace: str
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def labels(self) -> Labels:
        labels = self.metadata.get("LABELS")
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}


@dataclass(frozen=True, slots=True)
class Registry:
    services: tuple[ServiceEntry, ...]
    workloads: tuple[WorkloadEntry, ...]
    proxyless: tuple[ProxylessClient, ...] = ()
    trust_domain: str = "cluster.local"
    domain_suffix: str = "cluster.local"
    cluster_id: str = "Kubernetes"
    mesh_id: str = "cluster.local"
    access_log_file: str = ""  # Istio's meshConfig.accessLogFile ("" = off)
    access_log_format: str | None = None
    # (namespace, name) of workloads that are not ready (their app or sidecar is down): kept out of EDS until
    # they are back, as Kubernetes takes a pod that is not ready out of its Service's endpoints.
    not_ready: frozenset[tuple[str, str]] = frozenset()

    # ------------------------------------------------------------------------------------------ building

    @classmethod
    def from_topology(
        cls,
        topology: Topology,
        placement: Placement,
        certs: Mapping[str, CertFiles] | Path | None = None,
    ) -> Registry:
        """The registry of a topology placed on this machine.

        ``certs``: each workload's files (as :func:`mesh_ctl.ca.files.write_workload_files` returns them), or
        the certificate directory of a run (``<dir>/<workload>/{cert-chain,key,root-cert}.pem``, the layout
        ``mesh_ctl up`` writes), or None (translation for a sidecar then fails: mTLS needs them).
        """
        suffix = topology.domain_suffix
        services = tuple(
            ServiceEntry(
                name=s.name,
                namespace=s.namespace,
                port=s.port,
                selector=_frozen(s.selector),
                domain_suffix=suffix,
                subsets=tuple(SubsetEntry(b.name, _frozen(b.labels), b.weight) for b in s.subsets),
            )
            for s in topology.services
        )
        workloads = []
        for w in topology.workloads:
            try:
                at = placement.of(w.name)
            except KeyError:
                raise RegistryError(f"the placement has no address for workload {w.name!r}") from None
            workloads.append(WorkloadEntry(
                name=w.name,
                namespace=w.namespace,
                service_account=w.service_account,
                labels=_frozen(w.labels),
                address=at.address,
                spiffe_id=topology.spiffe_id(w),
                node_id=sidecar_node_id(at.address, w.name, w.namespace, suffix),
                app_port=at.app,
                outbound_port=at.outbound,
                inbound_port=at.inbound,
                admin_port=at.admin,
                prometheus_port=at.prometheus,
                certs=_certs_for(w, certs),
                calls=tuple(s.fqdn(suffix) for s in topology.called_services(w)),
                canonical_service=w.canonical_service,
                canonical_revision=w.canonical_revision,
            ))
        return cls(
            services=services,
            workloads=tuple(workloads),
            trust_domain=topology.trust_domain,
            domain_suffix=suffix,
            cluster_id=topology.cluster_id,
            mesh_id=topology.mesh_id,
            access_log_file=topology.access_log_file,
            access_log_format=topology.access_log_format,
        )

    def with_proxyless(self, node_id: str, namespace: str, metadata: Mapping[str, Any] | None = None,
                       ) -> Registry:
        """A registry where ``node_id`` is a proxyless client (replacing an earlier registration)."""
        client = ProxylessClient(node_id, namespace, _frozen(metadata))
        rest = tuple(c for c in self.proxyless if c.node_id != node_id)
        return replace(self, proxyless=(*rest, client))

    def without_proxyless(self, node_id: str) -> Registry:
        return replace(self, proxyless=tuple(c for c in self.proxyless if c.node_id != node_id))

    def with_ready(self, name: str, namespace: str, ready: bool) -> Registry:
        """A registry where workload ``namespace/name`` is (not) ready; this one if nothing changes."""
        key = (namespace, name)
        not_ready = self.not_ready - {key} if ready else self.not_ready | {key}
        return self if not_ready == self.not_ready else replace(self, not_ready=not_ready)

    def is_ready(self, workload: WorkloadEntry) -> bool:
        return (workload.namespace, workload.name) not in self.not_ready

    # ------------------------------------------------------------------------------------------ lookups

    def service(self, fqdn: str) -> ServiceEntry | None:
        return next((s for s in self.services if s.fqdn == fqdn), None)

    def workload(self, name: str, namespace: str) -> WorkloadEntry | None:
        return next((w for w in self.workloads if w.name == name and w.namespace == namespace), None)

    def workload_by_node_id(self, node_id: str) -> WorkloadEntry | None:
        return next((w for w in self.workloads if w.node_id == node_id), None)

    def proxyless_client(self, node_id: str) -> ProxylessClient | None:
        return next((c for c in self.proxyless if c.node_id == node_id), None)

    def endpoints(self, service: ServiceEntry, subset_labels: Labels | None = None) -> tuple[WorkloadEntry, ...]:
        """The workloads ``service`` selects (narrowed by ``subset_labels``), in registry order."""
        selector = dict(service.selector)
        selector.update(subset_labels or {})
        return tuple(w for w in self.workloads if w.namespace == service.namespace and matches(w.labels, selector))

    def selected_by(self, workload: WorkloadEntry) -> tuple[ServiceEntry, ...]:
        """The services whose selector picks ``workload`` (the topology allows at most one)."""
        return tuple(s for s in self.services
                     if s.namespace == workload.namespace and matches(workload.labels, s.selector))

    def service_accounts(self, service: ServiceEntry) -> tuple[str, ...]:
        """SPIFFE IDs of every workload behind ``service``, sorted (Istio's per-service SAN list)."""
        return tuple(sorted({w.spiffe_id for w in self.endpoints(service)}))


def sidecar_node_id(address: str, workload: str, namespace: str, domain_suffix: str = "cluster.local") -> str:
    """Istio's sidecar node id: ``sidecar~<ip>~<pod>.<namespace>~<namespace>.svc.<suffix>``."""
    return f"sidecar~{address}~{workload}.{namespace}~{namespace}.svc.{domain_suffix}"


@dataclass(frozen=True, slots=True)
class NodeIdParts:
    type: str
    address: str
    pod: str
    namespace: str
    dns_domain: str


def parse_node_id(node_id: str) -> NodeIdParts | None:
    """Split an Istio node id ``<type>~<ip>~<pod>.<ns>~<dns domain>``; None if it has another shape."""
    parts = node_id.split("~")
    if len(parts) != 4 or not all(parts):
        return None
    node_type, address, pod_ns, dns_domain = parts
    pod, dot, namespace = pod_ns.rpartition(".")
    if not dot:
        pod, namespace = pod_ns, dns_domain.split(".", 1)[0]
    return NodeIdParts(node_type, address, pod, namespace, dns_domain)


def _certs_for(w: Workload, certs: Mapping[str, CertFiles] | Path | None) -> CertFiles | None:
    if certs is None:
        return None
    if isinstance(certs, Path):
        d = certs / w.name
        return CertFiles(d / "cert-chain.pem", d / "key.pem", d / "root-cert.pem")
    return certs.get(w.name)

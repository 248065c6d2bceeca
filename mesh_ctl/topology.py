"""The one description of a mesh: services, their subsets and weights, and the workloads that run.

The same model feeds `mesh_ctl up` (local processes), and later the control plane's registry and the
Docker Compose / kind modes, so it knows nothing about processes, addresses or files. It mirrors the
Kubernetes + Istio shapes a user would write: a Service selects workloads by labels, subsets pick a version
(like a DestinationRule), weights split the traffic (like a VirtualService), and each workload runs as a
service account whose SPIFFE ID is ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``.

A topology file is YAML (camelCase keys, like Kubernetes); unknown keys are rejected with their path::

    trustDomain: cluster.local          # optional, these four are Istio's defaults
    meshId: cluster.local
    clusterId: Kubernetes
    namespace: default
    accessLogFile: /dev/stdout          # optional: Istio's meshConfig (demo profile); "" = no access logs
    accessLogFormat: "[%START_TIME%] %REQ(:PATH)% %GRPC_STATUS% %DOWNSTREAM_PEER_URI_SAN%"   # optional
    seed: 42                            # optional: reproducible random decisions in every sidecar
    services:
      - name: payment
        port: 8080
        selector: {app: payment}        # default: {app: <name>}
        subsets:
          - {name: v1, labels: {version: v1}, weight: 50}
          - {name: v2, labels: {version: v2}, weight: 50}
    workloads:
      - {name: payment-v1, app: payment-server, serviceAccount: payment, labels: {app: payment, version: v1}}
      - {name: payment-v2, app: payment-server, serviceAccount: payment, labels: {app: payment, version: v2},
         errorRate: 0.3}                # optional, payment-server only: that fraction of calls fails UNAVAILABLE
      - name: client
        app: payment-client
        serviceAccount: client
        labels: {app: client}
        calls: [{service: payment, rps: 50, concurrency: 4}]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, cast

import yaml

AppKind = Literal["payment-server", "payment-client"]
APP_KINDS: tuple[AppKind, ...] = ("payment-server", "payment-client")

DEFAULT_TRUST_DOMAIN = "cluster.local"  # Istio's default trust domain
DEFAULT_CLUSTER_ID = "Kubernetes"  # Istio's default CLUSTER_ID
DEFAULT_NAMESPACE = "default"

CANONICAL_NAME_LABEL = "service.istio.io/canonical-name"
CANONICAL_REVISION_LABEL = "service.istio.io/canonical-revision"

MAX_SEED = 2**63 - 1  # a topology's seed (and `up --seed`): 0 .. 2^63-1

# RFC 1123 label, as Kubernetes requires for names and namespaces.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class TopologyError(ValueError):
    """An invalid topology; the message starts with the field path, e.g. ``workloads[2].calls[0].service``."""


@dataclass(frozen=True, slots=True)
class Subset:
    name: str
    labels: dict[str, str]
    weight: int


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    namespace: str
    port: int
    selector: dict[str, str]
    subsets: tuple[Subset, ...] = ()

    def fqdn(self, domain_suffix: str) -> str:
        return f"{self.name}.{self.namespace}.svc.{domain_suffix}"

    def subset(self, name: str) -> Subset:
        for s in self.subsets:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Call:
    """A workload calls ``service``; for a load generator, at ``rps`` with ``concurrency`` calls in flight."""

    service: str
    rps: float = 50.0
    concurrency: int = 4


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    namespace: str
    app: AppKind
    service_account: str
    labels: dict[str, str]
    calls: tuple[Call, ...] = ()
    error_rate: float = 0.0  # payment-server: the fraction of calls it fails with UNAVAILABLE (its --error-rate)

    @property
    def version(self) -> str | None:
        return self.labels.get("version")

    @property
    def canonical_service(self) -> str:
        """Istio's canonical service: the canonical-name label, else ``app``, else the workload name."""
        for key in (CANONICAL_NAME_LABEL, "app.kubernetes.io/name", "app"):
            if key in self.labels:
                return self.labels[key]
        return self.name

    @property
    def canonical_revision(self) -> str:
        """Istio's canonical revision: the canonical-revision label, else ``version``, else ``latest``."""
        for key in (CANONICAL_REVISION_LABEL, "app.kubernetes.io/version", "version"):
            if key in self.labels:
                return self.labels[key]
        return "latest"

    def matches(self, selector: Mapping[str, str]) -> bool:
        return all(self.labels.get(k) == v for k, v in selector.items())


@dataclass(frozen=True, slots=True)
class Topology:
    services: tuple[Service, ...]
    workloads: tuple[Workload, ...]
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    mesh_id: str = DEFAULT_TRUST_DOMAIN  # Istio's MESH_ID defaults to the trust domain
    cluster_id: str = DEFAULT_CLUSTER_ID
    domain_suffix: str = "cluster.local"  # the DNS suffix of <svc>.<ns>.svc.<suffix>
    access_log_file: str = "/dev/stdout"  # Istio's meshConfig.accessLogFile ("" = off)
    access_log_format: str | None = None  # meshConfig.accessLogFormat (None = Istio's + peer identities)
    # Seeds every sidecar's random decisions (pyproxy --seed, derived per sidecar: runtime.specs.sidecar_seed);
    # None: each sidecar seeds from the OS.
    seed: int | None = None

    # ------------------------------------------------------------------------------------------ lookups

    def service(self, name: str, namespace: str | None = None) -> Service:
        for s in self.services:
            if s.name == name and (namespace is None or s.namespace == namespace):
                return s
        raise KeyError(name)

    def workload(self, name: str) -> Workload:
        for w in self.workloads:
            if w.name == name:
                return w
        raise KeyError(name)

    def endpoints(self, service: Service, subset: str | None = None) -> tuple[Workload, ...]:
        """The workloads behind ``service`` (and ``subset``), in topology order."""
        labels = dict(service.selector)
        if subset is not None:
            labels.update(service.subset(subset).labels)
        return tuple(w for w in self.workloads if w.namespace == service.namespace and w.matches(labels))

    def served_by(self, workload: Workload) -> Service | None:
        """The service that selects ``workload`` (validation guarantees at most one)."""
        for s in self.services:
            if s.namespace == workload.namespace and workload.matches(s.selector):
                return s
        return None

    def called_services(self, workload: Workload) -> tuple[Service, ...]:
        return tuple(self.service(c.service, workload.namespace) for c in workload.calls)

    def spiffe_id(self, workload: Workload) -> str:
        return f"spiffe://{self.trust_domain}/ns/{workload.namespace}/sa/{workload.service_account}"

    def with_load(self, rps: float | None = None, concurrency: int | None = None) -> Topology:
        """A copy where every load-generating call uses ``rps`` / ``concurrency`` (None keeps the file's)."""
        if rps is None and concurrency is None:
            return self
        def adjust(c: Call) -> Call:
            return replace(c, rps=c.rps if rps is None else rps,
                           concurrency=c.concurrency if concurrency is None else concurrency)

        workloads = tuple(
            replace(w, calls=tuple(adjust(c) for c in w.calls)) if w.app == "payment-client" else w
            for w in self.workloads
        )
        t = replace(self, workloads=workloads)
        validate(t)
        return t


# ------------------------------------------------------------------------------------------------ default


def default_topology() -> Topology:
    """payment v1 + v2 behind service ``payment`` (50/50), and a ``client`` calling it at 50 calls/s."""
    ns = DEFAULT_NAMESPACE
    t = Topology(
        services=(
            Service(
                name="payment", namespace=ns, port=8080, selector={"app": "payment"},
                subsets=(
                    Subset("v1", {"version": "v1"}, 50),
                    Subset("v2", {"version": "v2"}, 50),
                ),
            ),
        ),
        workloads=(
            Workload("payment-v1", ns, "payment-server", "payment", {"app": "payment", "version": "v1"}),
            Workload("payment-v2", ns, "payment-server", "payment", {"app": "payment", "version": "v2"}),
            Workload("client", ns, "payment-client", "client", {"app": "client"},
                     calls=(Call("payment", rps=50.0, concurrency=4),)),
        ),
    )
    validate(t)
    return t


# ------------------------------------------------------------------------------------------------ loading


def load_topology(path: Path) -> Topology:
    """Read a topology YAML file; raises :class:`TopologyError` with the field path on any problem."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise TopologyError(f"{path}: {e}") from e
    try:
        return topology_from_dict(doc)
    except TopologyError as e:
        raise TopologyError(f"{path}: {e}") from e


def topology_from_dict(doc: object) -> Topology:
    root = _obj(doc, "", {"trustDomain", "meshId", "clusterId", "domainSuffix", "namespace", "services",
                          "workloads", "accessLogFile", "accessLogFormat", "seed"})
    trust_domain = _str(root.get("trustDomain", DEFAULT_TRUST_DOMAIN), "trustDomain")
    ns_default = _name(root.get("namespace", DEFAULT_NAMESPACE), "namespace")
    services = tuple(_service(s, f"services[{i}]", ns_default)
                     for i, s in enumerate(_list(root.get("services", []), "services")))
    workloads = tuple(_workload(w, f"workloads[{i}]", ns_default)
                      for i, w in enumerate(_list(root.get("workloads"), "workloads")))
    t = Topology(
        services=services,
        workloads=workloads,
        trust_domain=trust_domain,
        mesh_id=_str(root.get("meshId", trust_domain), "meshId"),
        cluster_id=_str(root.get("clusterId", DEFAULT_CLUSTER_ID), "clusterId"),
        domain_suffix=_str(root.get("domainSuffix", "cluster.local"), "domainSuffix"),
        access_log_file=_access_log_file(root.get("accessLogFile", "/dev/stdout")),
        access_log_format=_access_log_format(root.get("accessLogFormat")),
        seed=None if root.get("seed") is None else _int(root["seed"], "seed", 0, MAX_SEED),
    )
    validate(t)
    return t


def _access_log_file(v: object) -> str:
    if not isinstance(v, str) or (v and not v.startswith("/")):
        raise TopologyError(f"accessLogFile: expected an absolute path or \"\" (off), got {v!r}")
    return v


def _access_log_format(v: object) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip():
        raise TopologyError(f"accessLogFormat: expected an Envoy format string, got {v!r}")
    from pyproxy.accesslog import compile_format  # the sidecars' own check: refuse what they would NACK

    try:
        compile_format(v)
    except ValueError as e:
        raise TopologyError(f"accessLogFormat: {e}") from None
    return v


def topology_to_dict(t: Topology) -> dict[str, Any]:
    """The YAML shape of ``t`` (what :func:`topology_from_dict` reads back to an equal topology)."""
    return {
        "trustDomain": t.trust_domain,
        "meshId": t.mesh_id,
        "clusterId": t.cluster_id,
        "domainSuffix": t.domain_suffix,
        "accessLogFile": t.access_log_file,
        **({"accessLogFormat": t.access_log_format} if t.access_log_format is not None else {}),
        **({"seed": t.seed} if t.seed is not None else {}),
        "services": [
            {"name": s.name, "namespace": s.namespace, "port": s.port, "selector": dict(s.selector),
             "subsets": [{"name": b.name, "labels": dict(b.labels), "weight": b.weight} for b in s.subsets]}
            for s in t.services
        ],
        "workloads": [
            {"name": w.name, "namespace": w.namespace, "app": w.app, "serviceAccount": w.service_account,
             "labels": dict(w.labels),
             "calls": [{"service": c.service, "rps": c.rps, "concurrency": c.concurrency} for c in w.calls],
             **({"errorRate": w.error_rate} if w.error_rate else {})}
            for w in t.workloads
        ],
    }


def _service(doc: object, path: str, ns_default: str) -> Service:
    d = _obj(doc, path, {"name", "namespace", "port", "selector", "subsets"})
    name = _name(d.get("name"), f"{path}.name")
    subsets = []
    for i, s in enumerate(_list(d.get("subsets", []), f"{path}.subsets")):
        sp = f"{path}.subsets[{i}]"
        sd = _obj(s, sp, {"name", "labels", "weight"})
        weight = _int(sd.get("weight", 1), f"{sp}.weight", 0, 1_000_000)
        subsets.append(Subset(_name(sd.get("name"), f"{sp}.name"), _labels(sd.get("labels"), f"{sp}.labels"),
                              weight))
    selector = _labels(d["selector"], f"{path}.selector") if "selector" in d else {"app": name}
    return Service(
        name=name,
        namespace=_name(d.get("namespace", ns_default), f"{path}.namespace"),
        port=_int(d.get("port"), f"{path}.port", 1, 65535),
        selector=selector,
        subsets=tuple(subsets),
    )


def _workload(doc: object, path: str, ns_default: str) -> Workload:
    d = _obj(doc, path, {"name", "namespace", "app", "serviceAccount", "labels", "calls", "errorRate"})
    app = d.get("app")
    if app not in APP_KINDS:
        raise TopologyError(f"{path}.app: must be one of {', '.join(APP_KINDS)} (got {app!r})")
    error_rate = d.get("errorRate", 0.0)
    if not isinstance(error_rate, int | float) or isinstance(error_rate, bool) or not 0 <= error_rate <= 1:
        raise TopologyError(f"{path}.errorRate: must be a fraction from 0 to 1 (got {error_rate!r})")
    if error_rate and app != "payment-server":
        raise TopologyError(f"{path}.errorRate: only a payment-server fails calls on purpose (this is a {app})")
    calls = []
    for i, c in enumerate(_list(d.get("calls", []), f"{path}.calls")):
        cp = f"{path}.calls[{i}]"
        cd = _obj(c, cp, {"service", "rps", "concurrency"})
        rps = cd.get("rps", 50.0)
        if not isinstance(rps, int | float) or isinstance(rps, bool) or not 0 < rps <= 100_000:
            raise TopologyError(f"{cp}.rps: must be a number in (0, 100000] (got {rps!r})")
        calls.append(Call(_name(cd.get("service"), f"{cp}.service"), float(rps),
                          _int(cd.get("concurrency", 4), f"{cp}.concurrency", 1, 10_000)))
    name = _name(d.get("name"), f"{path}.name")
    return Workload(
        name=name,
        namespace=_name(d.get("namespace", ns_default), f"{path}.namespace"),
        app=cast(AppKind, app),
        service_account=_name(d.get("serviceAccount", name), f"{path}.serviceAccount"),
        labels=_labels(d.get("labels", {}), f"{path}.labels"),
        calls=tuple(calls),
        error_rate=float(error_rate),
    )


# ------------------------------------------------------------------------------------------------ checks


def validate(t: Topology) -> None:
    """Cross-reference checks; raises :class:`TopologyError` naming the offending field."""
    if not t.workloads:
        raise TopologyError("workloads: at least one workload is required")
    _unique([(s.namespace, s.name) for s in t.services], "services", "service")
    _unique([w.name for w in t.workloads], "workloads", "workload name")
    for i, s in enumerate(t.services):
        _unique([b.name for b in s.subsets], f"services[{i}].subsets", "subset")
        if s.subsets and sum(b.weight for b in s.subsets) == 0:
            raise TopologyError(f"services[{i}].subsets: the weights sum to 0 (no subset would get traffic)")
        for j, b in enumerate(s.subsets):
            if b.weight > 0 and not t.endpoints(s, b.name):
                labels = s.selector | b.labels
                raise TopologyError(f"services[{i}].subsets[{j}]: no workload matches {labels}")
    for i, w in enumerate(t.workloads):
        path = f"workloads[{i}]"
        serving = [s for s in t.services if s.namespace == w.namespace and w.matches(s.selector)]
        if len(serving) > 1:
            names = ", ".join(s.name for s in serving)
            raise TopologyError(f"{path}.labels: selected by more than one service ({names})")
        if w.app == "payment-server" and not serving:
            raise TopologyError(f"{path}: a payment-server must be selected by a service (labels {w.labels})")
        if w.app == "payment-client" and len(w.calls) != 1:
            raise TopologyError(f"{path}.calls: a payment-client calls exactly one service")
        for j, c in enumerate(w.calls):
            if not 0 < c.rps <= 100_000:
                raise TopologyError(f"{path}.calls[{j}].rps: must be in (0, 100000] (got {c.rps})")
            if not 1 <= c.concurrency <= 10_000:
                raise TopologyError(f"{path}.calls[{j}].concurrency: must be in [1, 10000] "
                                    f"(got {c.concurrency})")
            try:
                t.service(c.service, w.namespace)
            except KeyError:
                raise TopologyError(f"{path}.calls[{j}].service: no service {c.service!r} in namespace "
                                    f"{w.namespace!r}") from None


def _unique(items: list[Any], path: str, what: str) -> None:
    seen = set()
    for item in items:
        if item in seen:
            raise TopologyError(f"{path}: duplicate {what} {item!r}")
        seen.add(item)


def _obj(doc: object, path: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise TopologyError(f"{path or '<root>'}: expected a mapping, got {type(doc).__name__}")
    unknown = sorted(str(k) for k in doc if k not in allowed)
    if unknown:
        where = f"{path}." if path else ""
        raise TopologyError(f"{where}{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")
    return cast(dict[str, Any], doc)


def _list(doc: object, path: str) -> list[Any]:
    if not isinstance(doc, list):
        raise TopologyError(f"{path}: expected a list, got {type(doc).__name__}")
    return doc


def _str(v: object, path: str) -> str:
    if not isinstance(v, str) or not v:
        raise TopologyError(f"{path}: expected a non-empty string, got {v!r}")
    return v


def _name(v: object, path: str) -> str:
    s = _str(v, path)
    if not _DNS_LABEL.match(s):
        raise TopologyError(f"{path}: {s!r} is not a DNS label (lower-case letters, digits, '-')")
    return s


def _int(v: object, path: str, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise TopologyError(f"{path}: expected an integer in [{lo}, {hi}], got {v!r}")
    return v


def _labels(v: object, path: str) -> dict[str, str]:
    if not isinstance(v, dict):
        raise TopologyError(f"{path}: expected a mapping of label -> value, got {type(v).__name__}")
    out: dict[str, str] = {}
    for k, val in v.items():
        if not isinstance(k, str) or not isinstance(val, str | int | float) or isinstance(val, bool):
            raise TopologyError(f"{path}.{k}: label keys and values must be strings")
        out[k] = str(val)
    return out


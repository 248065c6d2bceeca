"""A sidecar's xDS resources folded into one static Envoy bootstrap, the way an ADS client resolves them.

``rds`` references become inline ``route_config``s and EDS clusters become STATIC clusters holding their
ClusterLoadAssignment. The result is what the sidecar would run after a complete ADS exchange, so it can be
checked by pyproxy's bootstrap translator (and compared with ``mesh_ctl up``'s bootstraps), and it lets a
pyproxy without an ADS client run Istio-configured routing from a file. A static bootstrap has no SDS, so
the resources must come from ``translate_for_proxy(..., tls="files")``.
"""

from __future__ import annotations

from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from mesh_ctl.registry import Registry
from mesh_ctl.topology import CANONICAL_NAME_LABEL, CANONICAL_REVISION_LABEL
from mesh_ctl.translate.clusters import socket_address
from mesh_ctl.translate.errors import TranslationError
from mesh_ctl.translate.names import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE
from mesh_ctl.translate.proxy import ProxyResources


def resolve_listener(listener: listener_pb2.Listener, resources: ProxyResources) -> listener_pb2.Listener:
    """A copy of ``listener`` with each HTTP connection manager's ``rds`` replaced by the route config."""
    out = listener_pb2.Listener()
    out.CopyFrom(listener)
    for chain in out.filter_chains:
        for f in chain.filters:
            hcm = hcm_pb2.HttpConnectionManager()
            if not f.typed_config.Unpack(hcm) or not hcm.HasField("rds"):
                continue
            name = hcm.rds.route_config_name
            rc = resources.of(ROUTE_TYPE).get(name)
            if rc is None:
                raise TranslationError(f"listener {listener.name}", f"route configuration {name!r} is missing")
            hcm.ClearField("rds")
            hcm.route_config.CopyFrom(rc)
            f.typed_config.Pack(hcm)
    return out


def resolve_cluster(cluster: cluster_pb2.Cluster, resources: ProxyResources) -> cluster_pb2.Cluster:
    """A copy of ``cluster``; an EDS cluster becomes STATIC with its ClusterLoadAssignment."""
    out = cluster_pb2.Cluster()
    out.CopyFrom(cluster)
    if out.type != cluster_pb2.Cluster.EDS:
        return out
    name = out.eds_cluster_config.service_name or out.name
    cla = resources.of(ENDPOINT_TYPE).get(name)
    if cla is None:
        raise TranslationError(f"cluster {cluster.name}", f"load assignment {name!r} is missing")
    out.ClearField("eds_cluster_config")
    out.type = cluster_pb2.Cluster.STATIC
    out.load_assignment.CopyFrom(cla)
    return out


def _sds_socket(ts: Any) -> bool:
    """Whether a ``TransportSocket`` takes certificates from SDS over ADS."""
    for context in (tls_pb2.UpstreamTlsContext(), tls_pb2.DownstreamTlsContext()):
        if ts.typed_config.Unpack(context):
            common = context.common_tls_context
            return bool(len(common.tls_certificate_sds_secret_configs)
                        or common.HasField("combined_validation_context")
                        or common.HasField("validation_context_sds_secret_config"))
    return False


def _check_no_sds(resources: ProxyResources) -> None:
    sockets = [(f"cluster {c.name}", c.transport_socket) for c in resources.of(CLUSTER_TYPE).values()
               if c.HasField("transport_socket")]
    sockets += [(f"listener {lst.name}", fc.transport_socket) for lst in resources.of(LISTENER_TYPE).values()
                for fc in lst.filter_chains if fc.HasField("transport_socket")]
    for where, ts in sockets:
        if _sds_socket(ts):
            raise TranslationError(where, "its TLS certificates come from SDS, which a static bootstrap cannot "
                                          "fetch: translate with tls=\"files\"")


def static_bootstrap(resources: ProxyResources, registry: Registry) -> bootstrap_pb2.Bootstrap:
    """The sidecar's whole configuration as one static bootstrap (node and admin as ``mesh_ctl up`` sets
    them)."""
    if resources.kind != "sidecar":
        raise TranslationError("node", "only a sidecar's resources make an Envoy bootstrap")
    _check_no_sds(resources)
    w = registry.workload_by_node_id(resources.node_id)
    b = bootstrap_pb2.Bootstrap()
    if w is not None:
        labels: dict[str, Any] = dict(w.labels)
        labels.setdefault(CANONICAL_NAME_LABEL, w.canonical_service)
        labels.setdefault(CANONICAL_REVISION_LABEL, w.canonical_revision)
        b.node.id = resources.node_id
        b.node.cluster = f"{w.canonical_service}.{w.namespace}"
        b.node.metadata.update({
            "NAME": w.name, "NAMESPACE": w.namespace, "WORKLOAD_NAME": w.name,
            "SERVICE_ACCOUNT": w.service_account, "CLUSTER_ID": registry.cluster_id, "MESH_ID": registry.mesh_id,
            "INSTANCE_IPS": w.address, "LABELS": labels,
        })
        if w.admin_port is not None:
            address = socket_address(w.address, w.admin_port)["socket_address"]
            b.admin.address.socket_address.address = address["address"]
            b.admin.address.socket_address.port_value = address["port_value"]
    for listener in resources.of(LISTENER_TYPE).values():
        b.static_resources.listeners.append(resolve_listener(listener, resources))
    for cluster in resources.of(CLUSTER_TYPE).values():
        b.static_resources.clusters.append(resolve_cluster(cluster, resources))
    return b

"""Istio resources + the workload registry -> xDS v3 resources per proxy (pure functions).

Data flow, one module per step::

    Istio dicts --istio.index_resources--> IstioConfig (VS/DR by host, exportTo, namespaces; PA, AP)
    Registry (mesh_ctl.registry) + IstioConfig + node --proxy.translate_for_proxy--> ProxyResources
        routes.py      VirtualService http[] -> Envoy routes (matches, weights, timeouts, mirrors, headers)
        fault.py       http[].fault -> the route's HTTPFault (typed_per_filter_config), the fault filter
        retry.py       retries -> RetryPolicy (Istio's defaults when absent)
        policy.py      DestinationRule trafficPolicy -> LB, circuit breakers, outlier detection, TLS mode
        peer_authn.py  PeerAuthentication -> a workload's mTLS mode per port (scope, precedence, UNSET)
        tls.py         TLS contexts (SDS `default`/`ROOTCA` or files), inbound chains per mode, auto-mTLS
        authz.py       AuthorizationPolicy -> RBAC HTTP filters (AUDIT/LOG, DENY, ALLOW; dry-run shadow)
        rbac.py        one policy rule -> one RBAC Policy (principals, namespaces, paths, methods, when ...)
        clusters.py    services -> CDS clusters + EDS ClusterLoadAssignments
        listeners.py   LDS listeners + RDS route configurations
    secrets.with_root_ca(resources, bundle)   + the SDS secret ROOTCA (the CA's trust bundle) for a sidecar
    check.check_resource(resource)   the same code on one resource: TranslationError(path, reason) if
                                     minimesh cannot do something it uses (for the store to refuse it)
    static.static_bootstrap(...)     a sidecar's resources as one resolved Envoy bootstrap

Nothing here does I/O or keeps state: the same inputs give the same protos and the same versions (SHA-256
of the deterministic serialization, per resource), so the ADS server can push only what changed.

A mesh with no Istio resources gets what ``mesh_ctl up``'s static bootstraps configure (same Istio names,
endpoints, weights and mTLS), plus what Istio adds: the default retry policy, unlimited circuit breakers,
``x-envoy-attempt-count``, PERMISSIVE inbound listeners (mTLS and plaintext on one port) and Istio's ALPN.
The topology's subsets and weights act as an implicit DestinationRule and VirtualService until real ones
are applied for that host.

Security (issue 4): sidecar TLS contexts refer to SDS secrets (``default``: the key and chain the sidecar's
agent makes; ``ROOTCA``: the trust bundle the control plane pushes) unless ``tls="files"`` is asked for
(static bootstraps); PeerAuthentication decides each inbound listener's chains and each client's choice of
mTLS or plaintext; AuthorizationPolicy becomes RBAC filters on the inbound HTTP connection manager. The root
namespace (mesh-wide policies) is ``istio-system`` unless ``index_resources(..., root_namespace=...)``.

Proxyless gRPC
--------------

A plain grpcio client can use the mesh without a sidecar: it dials ``xds:///<service>:<port>`` (e.g.
``xds:///payment.default.svc.cluster.local:8080`` or, from the same namespace, ``xds:///payment:8080``) and
finds the control plane through a bootstrap file named by the ``GRPC_XDS_BOOTSTRAP`` environment variable
(or its JSON in ``GRPC_XDS_BOOTSTRAP_CONFIG``), read when the first ``xds:///`` channel is created::

    {"xds_servers": [{"server_uri": "127.0.0.1:15010",          # the control plane's plain xDS port
                      "channel_creds": [{"type": "insecure"}],
                      "server_features": ["xds_v3"]}],
     "node": {"id": "sidecar~127.0.0.20~my-client.default~default.svc.cluster.local",
              "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"}}}

:func:`grpc_xds_bootstrap` writes that document. ``GENERATOR: grpc`` (Istio's grpc-agent sets the same)
makes :func:`translate_for_proxy` answer with what grpcio accepts (REFERENCE.md section 7, Istio's
``grpcgen``): LDS ``<host>:<port>`` API listeners with ``rds`` and the fault and router filters; RDS with the same
routes as a sidecar (weighted subsets, header/path matches; grpcio ignores mirrors and header mutations);
CDS EDS clusters with ``ROUND_ROBIN`` only; EDS with a ``load_balancing_weight`` on every locality.
Endpoints are the apps' own plaintext ports (issue 4 adds mTLS). A client can be registered with
:meth:`mesh_ctl.registry.Registry.with_proxyless` (node id + namespace + metadata); an unregistered node
with ``GENERATOR: grpc`` and a ``NAMESPACE`` is served too.
"""

from mesh_ctl.translate.bootstrap import grpc_xds_bootstrap
from mesh_ctl.translate.check import check_resource
from mesh_ctl.translate.errors import TranslationError, UnknownProxyError
from mesh_ctl.translate.istio import IstioConfig, index_resources
from mesh_ctl.translate.names import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    TYPE_URLS,
)
from mesh_ctl.translate.proxy import ProxyResources, identify, resource_version, translate_for_proxy
from mesh_ctl.translate.secrets import root_ca_secret, with_root_ca
from mesh_ctl.translate.tls import TlsMaterial

__all__ = [
    "CLUSTER_TYPE",
    "ENDPOINT_TYPE",
    "LISTENER_TYPE",
    "ROUTE_TYPE",
    "SECRET_TYPE",
    "TYPE_URLS",
    "IstioConfig",
    "ProxyResources",
    "TlsMaterial",
    "TranslationError",
    "UnknownProxyError",
    "check_resource",
    "grpc_xds_bootstrap",
    "identify",
    "index_resources",
    "resource_version",
    "root_ca_secret",
    "translate_for_proxy",
    "with_root_ca",
]

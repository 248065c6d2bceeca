"""``check_resource``: would this Istio resource translate? (For the store, before it accepts one.)

It runs the same translation code as :func:`~mesh_ctl.translate.translate_for_proxy`, on the resource
alone, with every route match and every port-level policy taken (nothing selected away), so the first
field minimesh cannot do is reported as ``TranslationError(path, reason)``. Cross-resource facts (does the
subset exist? does the host name a service?) are not errors: translation reports them as warnings and the
affected calls fail at run time, as in Istio.

PeerAuthentication: modes and ``portLevelMtls`` are read as translation reads them. AuthorizationPolicy:
every rule is turned into its RBAC policy (ports left as ``destination_port``); refused are action CUSTOM
("CUSTOM authorization (ext_authz providers) is not supported"), ``targetRef(s)``, and conditions pyproxy's
RBAC filter cannot evaluate (path templates, ``destination.ip``, ``connection.sni``, Envoy metadata), so a
policy is never stored and then silently not enforced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mesh_ctl.translate.authz import check_authorization_policy
from mesh_ctl.translate.errors import TranslationError
from mesh_ctl.translate.istio import (
    AUTHORIZATION_POLICY,
    DESTINATION_RULE,
    VIRTUAL_SERVICE,
    index_config,
    parse_config,
)
from mesh_ctl.translate.policy import check_policy
from mesh_ctl.translate.routes import RouteScope, virtual_service_routes
from mesh_ctl.translate.values import ANY_KEY, array, join, obj, string

_VS_FIELDS = {"hosts", "gateways", "http", "exportTo"}
_VS_REASONS = {
    "tcp": "TCP routes are not supported: minimesh routes gRPC (HTTP/2) only",
    "tls": "TLS (SNI) routes are not supported: minimesh routes gRPC (HTTP/2) only",
}
_DR_FIELDS = {"host", "trafficPolicy", "subsets", "exportTo", "workloadSelector"}


def check_resource(resource: Mapping[str, Any], domain_suffix: str = "cluster.local") -> None:
    """Raise :class:`TranslationError` (naming the resource and the field) if ``resource`` uses something
    minimesh cannot translate; return None if it translates."""
    config = parse_config(resource)
    index_config(config, domain_suffix)
    try:
        if config.kind == VIRTUAL_SERVICE:
            obj(config.spec, "spec", _VS_FIELDS, _VS_REASONS)
            for proxyless in (False, True):
                scope = RouteScope(port=80, domain_suffix=domain_suffix, proxy_namespace=config.namespace,
                                   proxy_labels={}, proxyless=proxyless, service_port=lambda _: None,
                                   everything=True)
                virtual_service_routes(config, scope)
        elif config.kind == AUTHORIZATION_POLICY:
            check_authorization_policy(config)
        elif config.kind == DESTINATION_RULE:
            spec = obj(config.spec, "spec", _DR_FIELDS)
            if "trafficPolicy" in spec:
                check_policy(spec["trafficPolicy"], "spec.trafficPolicy")
            for i, subset in enumerate(array(spec.get("subsets"), "spec.subsets")):
                path = join("spec.subsets", i)
                s = obj(subset, path, {"name", "labels", "trafficPolicy"})
                string(s.get("name", ""), join(path, "name"))
                obj(s.get("labels"), join(path, "labels"), ANY_KEY)
                if "trafficPolicy" in s:
                    check_policy(s["trafficPolicy"], join(path, "trafficPolicy"))
    except TranslationError as e:
        raise e.in_resource(config.label) from None

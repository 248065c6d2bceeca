"""Single xDS resources -> model objects, for the ADS client (:mod:`pyproxy.xds`).

The client decodes each resource of a DiscoveryResponse (:func:`decode_resource`), skips the ones whose
serialized bytes did not change, translates the others (:func:`translate_resource`) and checks the whole
update for dangling references with :func:`referenced_routes`, :func:`referenced_clusters`,
:func:`referenced_secrets` and :func:`eds_name` before swapping a new snapshot in.

Translation is the bootstrap's (same functions, same supported fields, same ``protoc-gen-validate`` rules)
with ADS config sources allowed: an HCM's ``rds`` becomes ``rds_route_config_name``, an EDS cluster has
``load_assignment=None`` until its ``ClusterLoadAssignment`` arrives, an SDS reference becomes a
``CertificateSource``/``ValidationContext`` with ``sds_name`` and no files until its ``Secret`` arrives. Every
problem is reported with the resource in front of its field path::

    cluster "outbound|8080|v1|payment.default.svc.cluster.local": lb_policy: MAGLEV is not supported (...)

The same proto always gives an equal model object (inline PEM is written to a file named by its content
hash, so a secret pushed twice maps to the same file). A route configuration from RDS has
``validate_clusters`` False unless it says otherwise (Envoy's default for RDS).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.protobuf.message import DecodeError, Message

from pyproxy.config import model as m
from pyproxy.config.errors import ConfigError, Problem, Problems
from pyproxy.config.material import MaterialStore, default_store
from pyproxy.config.pgv import validate_message
from pyproxy.config.translate.clusters import cluster, cluster_load_assignment
from pyproxy.config.translate.common import Ctx
from pyproxy.config.translate.listeners import listener
from pyproxy.config.translate.routes import route_configuration
from pyproxy.config.translate.tls import sds_secret

log = logging.getLogger("pyproxy.config")

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

_MESSAGES: dict[str, type[Message]] = {
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    SECRET: secret_pb2.Secret,
}
# How a resource is named in problem paths (Envoy's message names, snake_case).
_KINDS = {
    LISTENER: "listener",
    ROUTE: "route_configuration",
    CLUSTER: "cluster",
    ENDPOINT: "cluster_load_assignment",
    SECRET: "secret",
}
_Translator = Callable[[Ctx, Any, str], object]
_TRANSLATORS: dict[str, _Translator] = {
    LISTENER: listener,
    ROUTE: lambda ctx, proto, path: route_configuration(ctx, proto, path, validate_clusters_default=False),
    CLUSTER: cluster,
    ENDPOINT: cluster_load_assignment,
    SECRET: sds_secret,
}


def _unsupported(type_url: str) -> ConfigError:
    return ConfigError([("", f"unsupported resource type {type_url!r} (supported: {', '.join(_MESSAGES)})")])


def decode_resource(type_url: str, any_msg: AnyProto) -> Message:
    """The resource in ``any_msg`` as a ``type_url`` proto; ConfigError if its ``@type`` differs or it does not
    parse."""
    cls = _MESSAGES.get(type_url)
    if cls is None:
        raise _unsupported(type_url)
    if any_msg.type_url != type_url:
        raise ConfigError([("", f"resource of type {any_msg.type_url!r} where {type_url!r} was expected")])
    try:
        return cls.FromString(any_msg.value)
    except DecodeError as err:
        raise ConfigError([("", f"{_KINDS[type_url]} resource cannot be decoded: {err}")]) from None


def resource_name(type_url: str, proto: Message) -> str:
    """The name a resource is known by (a ClusterLoadAssignment's ``cluster_name``)."""
    return str(getattr(proto, "cluster_name" if type_url == ENDPOINT else "name"))


def translate_resource(
    type_url: str,
    proto: Message,
    *,
    material: MaterialStore | None = None,
    warnings: list[str] | None = None,
    runtime: Mapping[str, object] | None = None,
) -> tuple[str, object]:
    """``proto`` (an LDS/RDS/CDS/EDS/SDS resource) -> (resource name, model object).

    The model object is an :class:`~.model.Listener`, :class:`~.model.RouteConfiguration`,
    :class:`~.model.Cluster`, :class:`~.model.ClusterLoadAssignment`, :class:`~.model.TlsSecret` or
    :class:`~.model.ValidationSecret`. Raises :class:`ConfigError` with every problem, each path prefixed with
    the resource (``cluster "name": field.path``). Inline TLS material goes to ``material`` (default: the
    process's private store). Warnings (things accepted but worth telling) are appended to ``warnings``, or
    logged when it is None. ``runtime``: the bootstrap's static runtime layer (the fault filter's overrides).
    """
    translator = _TRANSLATORS.get(type_url)
    if translator is None:
        raise _unsupported(type_url)
    expected = _MESSAGES[type_url]
    if not isinstance(proto, expected):
        raise ConfigError([("", f"a {type(proto).__name__} is not a {expected.DESCRIPTOR.full_name}")])
    name = resource_name(type_url, proto)
    prefix = f'{_KINDS[type_url]} "{name}"'
    problems = Problems()
    validate_message(proto, "", problems)
    ctx = Ctx(problems=problems, material=material or default_store(), ads=True, runtime=runtime or {})
    if not name and type_url != ENDPOINT:  # cluster_name has a protoc-gen-validate rule
        ctx.add("name", "is required: xDS resources are known by their name")
    model = translator(ctx, proto, "")
    if model is None and not problems:
        ctx.add("", "cannot be translated")  # not expected: every translator reports why it gives up
    if problems or model is None:
        raise ConfigError(Problem(f"{prefix}: {p.path}" if p.path else prefix, p.reason) for p in problems)
    if _has_unknown_fields(proto):
        # Envoy accepts unknown fields in dynamic resources with a warning (server.dynamic_unknown_fields).
        ctx.warnings.append("has fields this pyproxy does not know (a newer xDS API?): they are ignored")
    for warning in ctx.warnings:
        text = f"{prefix}{warning}" if warning.startswith(":") else f"{prefix}: {warning}"
        if warnings is None:
            log.warning("xDS %s", text)
        else:
            warnings.append(text)
    return name, model


def _has_unknown_fields(proto: Message) -> bool:
    """Whether the wire data held fields this proto version does not define (not looking into ``Any``s)."""
    known = type(proto)()
    known.CopyFrom(proto)
    known.DiscardUnknownFields()
    return known.ByteSize() != proto.ByteSize()


# ------------------------------------------------------------------------------------------- references


def _chains(lst: m.Listener) -> Iterable[m.FilterChain]:
    yield from lst.filter_chains
    if lst.default_filter_chain is not None:
        yield lst.default_filter_chain


def referenced_clusters(model: m.RouteConfiguration | m.Listener) -> set[str]:
    """Clusters a route table names (route, weighted and mirror clusters); for a listener, those of its inline
    route tables. Whether a missing one is an error is ``RouteConfiguration.validate_clusters``."""
    if isinstance(model, m.Listener):
        out: set[str] = set()
        for chain in _chains(model):
            if chain.hcm.route_config is not None:
                out |= referenced_clusters(chain.hcm.route_config)
        return out
    names: set[str] = set()
    for vh in model.virtual_hosts:
        for route in vh.routes:
            action = route.action
            if not isinstance(action, m.RouteAction):
                continue
            if action.cluster:
                names.add(action.cluster)
            names.update(wc.name for wc in action.weighted_clusters)
            names.update(mp.cluster for mp in action.mirrors)
    return names


def referenced_routes(model: m.Listener) -> set[str]:
    """The RDS route configuration names of a listener's connection managers."""
    return {
        chain.hcm.rds_route_config_name for chain in _chains(model) if chain.hcm.rds_route_config_name is not None
    }


def _tls_secrets(tls: m.TlsContext | None) -> set[str]:
    if tls is None:
        return set()
    names = {c.sds_name for c in tls.certificates if c.sds_name is not None and c.cert_chain_file is None}
    v = tls.validation
    if v is not None and v.sds_name is not None and v.trusted_ca_file is None:
        names.add(v.sds_name)
    return names


def referenced_secrets(model: m.Listener | m.Cluster) -> set[str]:
    """Names of the secrets a listener's or cluster's TLS contexts take from SDS (not yet resolved)."""
    if isinstance(model, m.Cluster):
        return _tls_secrets(model.tls)
    out: set[str] = set()
    for chain in _chains(model):
        out |= _tls_secrets(chain.tls)
    return out


def eds_name(model: m.Cluster) -> str | None:
    """The EDS service name to subscribe to for an EDS cluster (None for other discovery types)."""
    if model.discovery_type != "EDS":
        return None
    return model.eds_service_name or model.name


__all__ = [
    "CLUSTER",
    "ENDPOINT",
    "LISTENER",
    "ROUTE",
    "SECRET",
    "decode_resource",
    "eds_name",
    "referenced_clusters",
    "referenced_routes",
    "referenced_secrets",
    "resource_name",
    "translate_resource",
]

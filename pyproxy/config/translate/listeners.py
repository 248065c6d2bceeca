"""``envoy.config.listener.v3.Listener`` -> :class:`Listener`.

Each filter chain must hold exactly one network filter, the HTTP connection manager. ``filter_chain_match``
supports what sidecars use to tell mTLS from plaintext (``transport_protocol``, ``application_protocols``,
``server_names``, ``destination_port``); two chains that could match the same connection are rejected,
as Envoy rejects them.
"""

from __future__ import annotations

import itertools
from typing import Any

from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.translate.common import Ctx, opt_seconds, socket_address, typed_name, unpack, wrapped
from pyproxy.config.translate.hcm import HCM_TYPE, http_connection_manager
from pyproxy.config.translate.tls import transport_socket

HCM = "envoy.filters.network.http_connection_manager"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
TLS_INSPECTOR_TYPE = "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
_TLS_INSPECTOR_NAMES = {TLS_INSPECTOR, "envoy.listener.tls_inspector"}
_DIRECTIONS = {
    0: m.TrafficDirection.UNSPECIFIED,
    1: m.TrafficDirection.INBOUND,
    2: m.TrafficDirection.OUTBOUND,
}


def listener(ctx: Ctx, proto: Any, path: str) -> m.Listener | None:
    before = len(ctx.problems)
    ctx.check(
        proto,
        path,
        {
            "name",
            "address",
            "stat_prefix",
            "filter_chains",
            "default_filter_chain",
            "per_connection_buffer_limit_bytes",
            "traffic_direction",
            "listener_filters",
            "listener_filters_timeout",
            "continue_on_listener_filters_timeout",
            "ignore_global_conn_limit",
            "metadata",
            "enable_reuse_port",
        },
        reasons={
            "use_original_dst": "original-destination listeners (iptables REDIRECT) are not supported yet",
            "bind_to_port": "bind_to_port is not supported (every pyproxy listener binds its address)",
            "additional_addresses": "additional_addresses is not supported (one address per listener)",
            "filter_chain_matcher": "filter_chain_matcher is not supported (use filter_chain_match)",
            "api_listener": "API listeners are not supported",
            "internal_listener": "internal listeners are not supported",
            "udp_listener_config": "UDP listeners are not supported",
        },
    )
    address, ipv4_compat = socket_address(
        ctx, proto.address, join(path, "address"), require_ip=True, allow_port_zero=True, what="listener"
    )
    tls_inspector = _listener_filters(ctx, proto.listener_filters, join(path, "listener_filters"))
    chains: list[m.FilterChain] = []
    for i, fc in enumerate(proto.filter_chains):
        chain = filter_chain(ctx, fc, f"{join(path, 'filter_chains')}[{i}]")
        if chain is not None:
            chains.append(chain)
    default_chain = None
    if proto.HasField("default_filter_chain"):
        # Envoy ignores the default chain's filter_chain_match; so does pyproxy.
        default_chain = filter_chain(
            ctx, proto.default_filter_chain, join(path, "default_filter_chain"), is_default=True
        )
    if not len(proto.filter_chains) and not proto.HasField("default_filter_chain"):
        ctx.add(join(path, "filter_chains"), "a listener needs at least one filter chain")
    _check_overlaps(ctx, proto.filter_chains, chains, path)
    if not tls_inspector and any(_needs_inspector(c.match) for c in chains):
        ctx.warnings.append(
            f"{path}: filter chains match on TLS properties but there is no {TLS_INSPECTOR} "
            "listener filter, so those chains can never match (as in Envoy)"
        )
    if address is None or len(ctx.problems) != before:
        return None
    return m.Listener(
        name=proto.name or f"{address.host}_{address.port}",
        address=address,
        filter_chains=tuple(chains),
        default_filter_chain=default_chain,
        traffic_direction=_DIRECTIONS.get(proto.traffic_direction, m.TrafficDirection.UNSPECIFIED),
        tls_inspector=tls_inspector,
        per_connection_buffer_limit_bytes=wrapped(
            proto, "per_connection_buffer_limit_bytes", m.DEFAULT_PER_CONNECTION_BUFFER_LIMIT
        ),
        ipv4_compat=ipv4_compat,
        listener_filters_timeout=opt_seconds(proto, "listener_filters_timeout", 15.0),
        continue_on_listener_filters_timeout=proto.continue_on_listener_filters_timeout,
        ignore_global_conn_limit=proto.ignore_global_conn_limit,
    )


def _listener_filters(ctx: Ctx, filters: Any, path: str) -> bool:
    found = False
    for i, lf in enumerate(filters):
        fpath = f"{path}[{i}]"
        ctx.check(
            lf,
            fpath,
            {"name", "typed_config"},
            reasons={
                "config_discovery": "filter config discovery (ECDS) is not supported",
                "filter_disabled": "filter_disabled is not supported",
            },
        )
        if lf.HasField("typed_config"):
            type_name = typed_name(lf.typed_config)
            if type_name != TLS_INSPECTOR_TYPE:
                ctx.add(
                    fpath,
                    f"listener filter {lf.name!r} ({type_name}) is not supported "
                    f"(supported: {TLS_INSPECTOR})",
                )
                continue
            ctx.check(
                unpack(lf.typed_config, tls_inspector_pb2.TlsInspector), join(fpath, "typed_config"), set()
            )
        elif lf.name not in _TLS_INSPECTOR_NAMES:
            ctx.add(fpath, f"listener filter {lf.name!r} is not supported (supported: {TLS_INSPECTOR})")
            continue
        found = True
    return found


def filter_chain(ctx: Ctx, fc: Any, path: str, *, is_default: bool = False) -> m.FilterChain | None:
    before = len(ctx.problems)
    ctx.check(fc, path, {"filter_chain_match", "filters", "transport_socket", "name", "metadata",
                         "transport_socket_connect_timeout"})
    match = m.FilterChainMatch()
    if fc.HasField("filter_chain_match") and not is_default:
        match = filter_chain_match(ctx, fc.filter_chain_match, join(path, "filter_chain_match"))
    tls: m.TlsContext | None = None
    if fc.HasField("transport_socket"):
        tls = transport_socket(ctx, fc.transport_socket, join(path, "transport_socket"), server_side=True)
    hcm: m.HttpConnectionManager | None = None
    fpath = join(path, "filters")
    if not len(fc.filters):
        ctx.add(fpath, f"a filter chain needs exactly one network filter: {HCM}")
    for i, f in enumerate(fc.filters):
        ipath = f"{fpath}[{i}]"
        ctx.check(
            f,
            ipath,
            {"name", "typed_config"},
            reasons={"config_discovery": "filter config discovery (ECDS) is not supported"},
        )
        type_name = typed_name(f.typed_config) if f.HasField("typed_config") else ""
        if type_name != HCM_TYPE:
            what = f"network filter {f.name!r}" + (f" ({type_name})" if type_name else "")
            if not type_name and f.name == HCM:
                ctx.add(ipath, f"{HCM} needs a typed_config (HttpConnectionManager)")
            else:
                ctx.add(ipath, f"{what} is not supported by pyproxy (supported: {HCM})")
            continue
        if i > 0:
            ctx.add(ipath, f"{HCM} is a terminal filter: a filter chain holds exactly one network filter")
            continue
        hcm = http_connection_manager(
            ctx, unpack(f.typed_config, hcm_pb2.HttpConnectionManager), join(ipath, "typed_config")
        )
    if hcm is None or len(ctx.problems) != before:
        return None
    return m.FilterChain(name=fc.name, match=match, tls=tls, hcm=hcm,
                         transport_socket_connect_timeout=opt_seconds(fc, "transport_socket_connect_timeout", None))


def filter_chain_match(ctx: Ctx, fcm: Any, path: str) -> m.FilterChainMatch:
    ctx.check(
        fcm,
        path,
        {"destination_port", "server_names", "transport_protocol", "application_protocols"},
        reasons={
            name: f"matching on {name} is not supported"
            for name in (
                "prefix_ranges",
                "address_suffix",
                "suffix_len",
                "direct_source_prefix_ranges",
                "source_type",
                "source_prefix_ranges",
                "source_ports",
            )
        },
    )
    if fcm.transport_protocol not in ("", "tls", "raw_buffer"):
        ctx.add(
            join(path, "transport_protocol"),
            f"{fcm.transport_protocol!r} is not supported (supported: tls, raw_buffer)",
        )
    return m.FilterChainMatch(
        transport_protocol=fcm.transport_protocol or None,
        application_protocols=tuple(fcm.application_protocols),
        destination_port=wrapped(fcm, "destination_port", None),
        server_names=tuple(s.lower() for s in fcm.server_names),
    )


def _needs_inspector(match: m.FilterChainMatch) -> bool:
    return bool(match.server_names or match.application_protocols or match.transport_protocol == "tls")


def _check_overlaps(ctx: Ctx, protos: Any, chains: list[m.FilterChain], path: str) -> None:
    """Envoy refuses two filter chains with the same matching rules: compare their expanded criteria."""
    if len(chains) != len(protos):
        return  # some chains failed; their problems are reported already
    seen: dict[tuple[object, ...], int] = {}
    for i, chain in enumerate(chains):
        mt = chain.match
        for combo in itertools.product(
            [mt.destination_port],
            mt.server_names or [None],
            [mt.transport_protocol],
            mt.application_protocols or [None],
        ):
            if combo in seen and seen[combo] != i:
                ctx.add(
                    f"{join(path, 'filter_chains')}[{i}].filter_chain_match",
                    f"matches the same connections as filter_chains[{seen[combo]}] "
                    "(multiple filter chains with the same matching rules)",
                )
                break
            seen[combo] = i

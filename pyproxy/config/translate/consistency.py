"""Cross-resource checks, like go-control-plane's ``Snapshot.Consistent()``: names are unique, addresses do
not collide, and every cluster a route refers to exists."""

from __future__ import annotations

import ipaddress

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.translate.common import Ctx


def _address_key(address: m.SocketAddress) -> tuple[str, int]:
    try:
        host = str(ipaddress.ip_address(address.host))
    except ValueError:
        host = address.host
    return host, address.port


def check_consistency(
    ctx: Ctx,
    listeners: list[tuple[str, m.Listener]],
    cluster_names: list[tuple[str, str]],
    admin: m.AdminConfig,
) -> None:
    """``cluster_names`` are (path, name) of every declared cluster, translated or not, so a route to a
    cluster that has its own problems is not also reported as unknown."""
    names: dict[str, str] = {}
    bound: dict[tuple[str, int], str] = {}
    if admin.address is not None and admin.address.port != 0:
        bound[_address_key(admin.address)] = "admin.address"
    for path, listener in listeners:
        if listener.name in names:
            ctx.add(
                join(path, "name"), f"duplicate listener name {listener.name!r} (also {names[listener.name]})"
            )
        else:
            names[listener.name] = path
        if listener.address.port == 0:
            continue  # an ephemeral port never collides
        key = _address_key(listener.address)
        if key in bound:
            ctx.add(join(path, "address"), f"{listener.address} is already used by {bound[key]}")
        else:
            bound[key] = path
    declared: dict[str, str] = {}
    for path, name in cluster_names:
        if name in declared:
            ctx.add(join(path, "name"), f"duplicate cluster name {name!r} (also {declared[name]})")
        else:
            declared[name] = path
    for name, path in ctx.cluster_refs:
        if name and name not in declared:
            ctx.add(path, f"unknown cluster {name!r}")

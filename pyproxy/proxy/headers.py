"""Small header-list helpers shared by the connection manager and the router (lists of (name, value) bytes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyproxy.http2.hpack import Header

if TYPE_CHECKING:
    from pyproxy.routing.table import CompiledMutation


def header_int(value: bytes) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def set_header(headers: list[Header], name: bytes, value: bytes) -> None:
    """Overwrite the first ``name`` header, or append it."""
    for i, (n, _) in enumerate(headers):
        if n == name:
            headers[i] = (name, value)
            return
    headers.append((name, value))


def append_xff(headers: list[Header], address: bytes) -> None:
    """``use_remote_address``: append the downstream address to x-forwarded-for."""
    for i, (n, v) in enumerate(headers):
        if n == b"x-forwarded-for":
            headers[i] = (n, v + b"," + address)
            return
    headers.append((b"x-forwarded-for", address))


def apply_mutation(headers: list[Header], mutation: CompiledMutation) -> None:
    """Apply one header mutation in place (remove, then add/overwrite)."""
    if mutation.remove:
        remove = mutation.remove
        headers[:] = [h for h in headers if h[0] not in remove]
    for key, value, append in mutation.add:
        if not append:
            headers[:] = [h for h in headers if h[0] != key]
        headers.append((key, value))

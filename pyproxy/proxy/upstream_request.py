"""The upstream request the router sends, computed from the route: pure functions, no state.

Envoy's ``Router::FilterUtility::finalTimeout`` (the route timeout, or the caller's ``grpc-timeout`` when the
route honours it) and the header work of ``Router::Filter::decodeHeaders`` (the peer-metadata exchange headers
stripped, the route's and weighted cluster's header mutations, prefix/host rewrites, ``grpc-timeout`` and
``x-envoy-expected-rq-timeout-ms``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyproxy.config.model import RouteAction
from pyproxy.http2.hpack import Header
from pyproxy.proxy.grpc_timeout import format_grpc_timeout, parse_grpc_timeout
from pyproxy.proxy.headers import apply_mutation, set_header

if TYPE_CHECKING:
    from pyproxy.routing.table import CompiledMutation, CompiledRoute

PEER_METADATA_HEADERS = frozenset({b"x-envoy-peer-metadata", b"x-envoy-peer-metadata-id"})


def final_timeout(action: RouteAction, grpc_timeout: bytes | None) -> tuple[float | None, bool]:
    """(the request's timeout, whether it is the caller's stream deadline).

    The route's timeout, unless the route honours the caller's grpc-timeout (``max_grpc_timeout`` set): then the
    caller's, capped by ``max_grpc_timeout`` (0 = no cap), minus ``grpc_timeout_offset``, when it is shorter (or
    always, for ``max_stream_duration.grpc_timeout_header_max``, which makes it a stream deadline)."""
    timeout = action.timeout
    if grpc_timeout is not None and action.max_grpc_timeout is not None:
        caller = parse_grpc_timeout(grpc_timeout)
        if caller is not None:
            cap = action.max_grpc_timeout
            if cap and caller > cap:
                caller = cap
            caller -= action.grpc_timeout_offset
            if caller > 0 and (not timeout or caller < timeout or action.grpc_timeout_is_stream_duration):
                return caller, action.grpc_timeout_is_stream_duration
    return timeout, False


def upstream_headers(headers: Sequence[Header], mutations: Sequence[CompiledMutation], croute: CompiledRoute,
                     action: RouteAction, timeout: float | None, is_grpc: bool, *, strip_peer_metadata: bool,
                     suppress_envoy_headers: bool, extra: Sequence[Header]) -> list[Header]:
    """The upstream request's header list (a new list; ``headers`` is left as it is)."""
    out = [h for h in headers if h[0] not in PEER_METADATA_HEADERS] if strip_peer_metadata else list(headers)
    for m in mutations:
        apply_mutation(out, m)
    if action.prefix_rewrite is not None or action.host_rewrite_literal is not None:
        _rewrite(out, croute, action, suppress_envoy_headers)
    if timeout and is_grpc:
        set_header(out, b"grpc-timeout", format_grpc_timeout(timeout))
    if extra:
        out.extend(extra)
    if timeout and not suppress_envoy_headers:
        out.append((b"x-envoy-expected-rq-timeout-ms", b"%d" % int(timeout * 1000)))
    return out


def _rewrite(headers: list[Header], croute: CompiledRoute, action: RouteAction, suppress_envoy_headers: bool) -> None:
    """``prefix_rewrite`` (keeping the original in ``x-envoy-original-path``) and ``host_rewrite_literal``."""
    for i, (name, value) in enumerate(headers):
        if name == b":path" and action.prefix_rewrite is not None:
            prefix = croute.route.match.prefix
            if prefix is not None and value.lower().startswith(prefix.lower().encode()):
                headers[i] = (b":path", action.prefix_rewrite.encode() + value[len(prefix):])
                if not suppress_envoy_headers:
                    headers.append((b"x-envoy-original-path", value))
        elif name == b":authority" and action.host_rewrite_literal is not None:
            headers[i] = (b":authority", action.host_rewrite_literal.encode())

"""The HTTP filter interface: what a filter implements and what a request offers it (Envoy's model).

A listener's ``http_filters`` become a tuple of :class:`HttpFilter` objects once per snapshot (see
:func:`pyproxy.filters.build_filters`); the router is the terminal filter and is not one of them. Filter
objects are shared by every request on the chain, so per-request state lives on the request
(:attr:`FilterCallbacks.filter_state`), not on the filter.

Order, as in Envoy: request headers, data and trailers go through the filters first to last, then to the
router; response headers, data and trailers come back last to first. Each hook answers a :class:`Status`:

- ``CONTINUE``: the next filter gets the event.
- ``STOP``: iteration stops at this filter; what arrives meanwhile for this direction is held (and not
  acknowledged, so the peer's flow-control window bounds it) until the filter calls
  :meth:`FilterCallbacks.resume_request` / :meth:`FilterCallbacks.resume_response`, which runs the held
  events through the filters after it. Envoy's ``StopIteration`` and ``StopIterationAndBuffer``.
- A filter that answers the request itself calls :meth:`FilterCallbacks.send_local_reply` and returns
  ``STOP``: nothing reaches the filters after it or the router.

Hooks are called only where a filter says it wants them (``wants_request_body``, ``wants_response``,
``wants_end``), so a filter that only looks at request headers costs one call per request. Filters get time
and randomness from :class:`FilterEnv` (the proxy's runtime; a fake clock and a seeded ``random.Random`` in
unit tests), never from the ``time``/``random`` modules, so every decision can be replayed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

from pyproxy.http2.hpack import Header
from pyproxy.tls import PeerIdentity

if TYPE_CHECKING:
    from pyproxy.proxy.errors import ProxyError
    from pyproxy.routing.table import CompiledRoute


class Status(IntEnum):
    CONTINUE = 0
    STOP = 1


CONTINUE = Status.CONTINUE
STOP = Status.STOP


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class FilterEnv(Protocol):
    """Time and randomness, from the runtime (or a test's fake)."""

    @property
    def rng(self) -> random.Random: ...

    def now(self) -> float:
        """Monotonic seconds (trio's clock in the proxy)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        """Run ``callback`` after ``delay`` seconds on the proxy's timer heap; output it produces is flushed."""
        ...


class PeerFacts(Protocol):
    """The downstream connection as filters see it."""

    peer_address: tuple[str, int]
    local_port: int
    peer: PeerIdentity  # from the client certificate (empty without TLS)


class FilterCallbacks(Protocol):
    """What a request offers its filters (Envoy's ``StreamDecoderFilterCallbacks``/``...EncoderFilterCallbacks``)."""

    @property
    def env(self) -> FilterEnv: ...

    request_headers: list[Header]  # may be changed in place until the router sends them
    method: bytes
    path: bytes
    authority: bytes
    is_grpc: bool
    route: CompiledRoute | None  # the route selected for the request (None: no route matched)
    cluster_name: str  # the upstream cluster the route picked ("" without a route)
    # Per-request filter state, keyed by filter name; None until a filter stores something.
    filter_state: dict[str, object] | None

    def per_route_config(self, filter_name: str) -> object | None:
        """The most specific ``typed_per_filter_config`` for ``filter_name`` (route, then virtual host)."""
        ...

    def send_local_reply(self, error: ProxyError) -> None:
        """Answer the request from the proxy (a gRPC caller gets the trailers-only form)."""
        ...

    def resume_request(self) -> None:
        """Continue a request that this filter stopped: run the filters after it, then the router."""
        ...

    def resume_response(self) -> None:
        """Continue a response that this filter stopped."""
        ...

    def add_flag(self, flag: str) -> None:
        """Record an Envoy response flag (``DI``, ``FI`` …) for the access log and metrics."""
        ...

    def peer_facts(self) -> PeerFacts:
        ...


class HttpFilter:
    """Base class: every hook continues. Subclasses override what they need and set the ``wants_*`` flags."""

    __slots__ = ("name",)

    wants_request_body = False  # on_request_data / on_request_trailers
    wants_response = False  # on_response_headers / on_response_data / on_response_trailers
    wants_end = False  # on_stream_end (release per-request resources: timers, counters)

    def __init__(self, name: str) -> None:
        self.name = name

    def on_request_headers(self, cb: FilterCallbacks, end_stream: bool) -> Status:
        return CONTINUE

    def on_request_data(self, cb: FilterCallbacks, data: bytes, end_stream: bool) -> Status:
        return CONTINUE

    def on_request_trailers(self, cb: FilterCallbacks, trailers: list[Header]) -> Status:
        return CONTINUE

    def on_response_headers(self, cb: FilterCallbacks, headers: list[Header], end_stream: bool) -> Status:
        return CONTINUE

    def on_response_data(self, cb: FilterCallbacks, data: bytes, end_stream: bool) -> Status:
        return CONTINUE

    def on_response_trailers(self, cb: FilterCallbacks, trailers: list[Header]) -> Status:
        return CONTINUE

    def on_stream_end(self, cb: FilterCallbacks) -> None:
        """The request is over (answered, reset or lost): called once, for filters with ``wants_end``."""

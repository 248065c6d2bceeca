"""Connection timeouts and limits of the sidecars minimesh generates (issue 9.7), with why each differs from
Istio's defaults.

What Istio + Envoy do by default, for a TCP connection that never sends a byte:

- inbound (``virtualInbound``, tls_inspector): Istio sets ``listener_filters_timeout`` to the mesh's
  ``protocolDetectionTimeout``, 0s by default (disabled) with ``continue_on_listener_filters_timeout: true``, so
  the inspector waits forever; no HCM exists yet, so no idle timer runs: the connection is kept until the
  client goes.
- outbound HTTP listeners: the HCM exists from accept; Istio sets no ``common_http_protocol_options`` on
  sidecar HCMs (only with the ``ISTIO_META_IDLE_TIMEOUT`` proxy metadata), so Envoy's default
  ``idle_timeout`` of 1 h applies.
- no filter chain sets ``transport_socket_connect_timeout`` (no bound on a TLS handshake but the above).
- Istio's bootstrap sets the runtime key ``overload.global_downstream_max_connections`` to 2147483647
  (effectively no limit) and no per-listener limit.

A Python sidecar on a laptop cannot hold connections like that (issue 9.7: 3,000 silent connections, +33 MB
that stayed), so minimesh's sidecars get explicit values, on both listeners:

- :data:`IDLE_TIMEOUT`: the HCM's ``common_http_protocol_options.idle_timeout`` (a connection with no active
  stream for that long is closed: at once if it never sent a byte, else with a GOAWAY). 5 min: a gRPC
  channel that has been idle that long reconnects on its next call (a few ms on loopback); a connection that
  never sends anything is not kept an hour.
- :data:`TLS_HANDSHAKE_TIMEOUT`: the inbound mTLS chains' ``transport_socket_connect_timeout``: a peer that
  does not finish its handshake in 10 s (pyproxy's former fixed bound) is closed.
- :data:`LISTENER_CONNECTION_LIMIT` per listener (runtime key
  ``envoy.resource_limits.listener.<name>.connection_limit``) and :data:`GLOBAL_CONNECTION_LIMIT` for the
  process (the overload manager's ``envoy.resource_monitors.global_downstream_max_connections``). A sidecar's
  legitimate connections are few: its app's channels on the outbound listener, one pooled connection per
  calling sidecar on the inbound one. 1,024 each is far above that and what a pyproxy holds comfortably
  (about 0.2 KB per connection that has not sent a byte, tens of KB per active mTLS connection with its
  TLS and HTTP/2 state), and it stays within the 1,024 descriptors of a default soft RLIMIT_NOFILE per listener (pyproxy
  raises its soft limit to the hard one at start). Over the limit a new connection is accepted and closed at
  once (``downstream_cx_overflow``), as in Envoy.
"""

from __future__ import annotations

from mesh_ctl.translate.values import Json

IDLE_TIMEOUT = "300s"
TLS_HANDSHAKE_TIMEOUT = "10s"
LISTENER_CONNECTION_LIMIT = 1024
GLOBAL_CONNECTION_LIMIT = 2048  # both listeners full
GLOBAL_CX_MONITOR = "envoy.resource_monitors.global_downstream_max_connections"
DOWNSTREAM_CONNECTIONS_TYPE = ("type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                               "DownstreamConnectionsConfig")


def hcm_connection_options() -> Json:
    """The HCM's ``common_http_protocol_options``."""
    return {"idle_timeout": IDLE_TIMEOUT}


def runtime_layer(listener_names: list[str]) -> Json:
    """``layered_runtime`` with the per-listener connection limits."""
    return {"layers": [{"name": "minimesh connection limits", "static_layer": {
        f"envoy.resource_limits.listener.{name}.connection_limit": LISTENER_CONNECTION_LIMIT
        for name in listener_names}}]}


def overload_manager() -> Json:
    """The bootstrap's ``overload_manager``: the global downstream connection limit."""
    return {"resource_monitors": [{"name": GLOBAL_CX_MONITOR, "typed_config": {
        "@type": DOWNSTREAM_CONNECTIONS_TYPE, "max_active_downstream_connections": GLOBAL_CONNECTION_LIMIT}}]}

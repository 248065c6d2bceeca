"""pyproxy: minimesh's data plane, an HTTP/2 (gRPC) sidecar configured with Envoy's v3 API.

Architecture (one process, one trio event loop)::

    config/      Envoy bootstrap / xDS protos -> frozen model (model.py); validation with field paths
    http2/       sans-IO HTTP/2 engine (frames, HPACK, connection state machine) - no I/O, no clock
    io/          byte transports on non-blocking sockets (plain, TLS via MemoryBIO), TLS sniffing
    proxy/       runtime (snapshot swap, listeners, output coalescing), downstream connections,
                 ProxyStream (one request, both directions, flow control), errors -> local replies
    routing/     route tables compiled per snapshot (virtual hosts, matchers, weighted clusters)
    upstream/    clusters, hosts, load balancers, per-host pools of multiplexed HTTP/2 connections
    */interfaces.py  what upstream/ and proxy/'s connections and requests need of the runtime (Protocols, so
                 that they do not import it: no import cycle, tests/unit/test_import_cycles.py)
    tls/         SSL contexts from TLS configs, SPIFFE identities
    admin/       Envoy-style admin API (/ready, /config_dump, /clusters, /stats/prometheus)
    stats.py     Istio standard metrics, declared once
    timers.py    one heap of timers for the whole proxy

A request: downstream read loop -> engine events -> ProxyStream.start (route, cluster, host, pool) ->
upstream engine -> Runtime.flush writes every touched connection once. Responses flow back the same way,
driven by the upstream connection's read loop. Only ``io/``, ``proxy/``, ``upstream/`` and ``admin/`` touch
trio; ``http2/``, ``routing/`` and ``config/`` are pure.

Randomness comes from the runtime, in two streams (``--seed`` seeds both): ``Runtime.rng`` for the decisions
a request makes, in request order, and ``Runtime.background_rng`` for what timers and connections draw
(see :class:`pyproxy.proxy.runtime.Runtime`).
"""

__version__ = "0.1.0"

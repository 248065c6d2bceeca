"""HTTP/2 conformance and hostile-peer suite for pyproxy's listeners (runs against any h2c endpoint).

What is here
- ``test_h2spec_*``: a port of h2spec (summerwind/h2spec) - its ``http2`` section (RFC 7540/9113 3.5 to
  8.2), ``hpack`` section (RFC 7541) and ``generic`` section - one test per h2spec case, named after the
  h2spec id (``test_6_5_1_...`` is ``http2/6.5/1``; parametrized ids carry the case number), with the RFC
  sentence in the docstring. Verdicts are h2spec's verifiers (:mod:`.h2peer`), with one deliberate
  difference: a GOAWAY / RST_STREAM with the wrong error code fails at once (``H2SPEC_LENIENT=1`` restores
  h2spec's behaviour of accepting it when the connection then closes).
- ``test_hostile_*``: what a proxy must survive - malformed frames and header blocks, requests it must not
  forward, oversized headers, the concurrency limit, PING / SETTINGS / rapid-reset / empty-DATA floods,
  a peer that never reads. After every test the target must still be alive and serve a fresh connection.
- ``test_suite_selfcheck``: the suite's own tools (configs, backend, verdicts that must fail).

Pieces: :mod:`.h2peer` (raw synchronous HTTP/2 client: hyperframe + hpack), :mod:`.grpc_shapes` (gRPC
requests and responses), :mod:`.backend` (grpcio backend process), :mod:`.h2_reference_server` (h2 + trio
reference server), :mod:`.targets` (bootstrap / nginx config, starting targets, RSS), :mod:`.flood`,
:mod:`.deviations` (expected failures of nginx and h2, never of pyproxy).

How to run (each target is started as a real process on free loopback ports, with the backend behind it)::

    pytest tests/protocol                       # H2_TARGET=pyproxy: python -m pyproxy -c <Envoy bootstrap>
    H2_TARGET=nginx pytest tests/protocol       # Debian nginx: listen ... http2 + grpc_pass
    H2_TARGET=h2server pytest tests/protocol    # the h2-library reference server
    H2_PYPROXY_CMD='envoy -c {config}' pytest tests/protocol   # same bootstrap, another binary
    H2_TARGET=external H2_TARGET_ADDR=127.0.0.1:10000 H2_BACKEND_ADDR=127.0.0.1:50051 \\
        H2_TARGET_PID=1234 pytest tests/protocol  # already running; it must route / to the backend address

Other knobs: ``H2_TIMEOUT`` (seconds per verdict, default 2 like h2spec), ``H2SPEC_LENIENT=1``.
Every generated config advertises SETTINGS_MAX_CONCURRENT_STREAMS=10 and keeps Envoy's 60 KiB request
header limit. About 20 s against pyproxy or h2server; about 95 s against nginx, whose expected failures
each wait for the verdict timeout.
"""

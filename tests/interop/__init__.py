"""The official gRPC interop tests, run through two pyproxy sidecars started from Envoy bootstrap files.

Topology (what outside testers run)::

    interop client --h2c--> sidecar A ==mTLS h2==> sidecar B --h2c--> interop server
    (client.py)             bootstraps/sidecar_a*   bootstraps/sidecar_b*   (server.py)

Pieces:

- ``protos/``: ``empty.proto``, ``messages.proto``, ``test.proto`` exactly as in grpc/grpc
  ``src/proto/grpc/testing/``; ``proto/`` is the generated Python (``regenerate_protos.py`` rebuilds it).
- ``server.py`` / ``client.py`` (+ ``cases.py``, ``soak.py``, ``rawh2.py``, ``calls.py``, ``wire.py``): the
  interop server and client with the official command lines and test cases (no official Python interop
  package is published on PyPI, so they are written here from the spec).
- ``certs.py``: a CA and SPIFFE workload certificates, made per test session.
- ``bootstraps/``: ordinary Envoy v3 bootstrap templates (``${NAME}`` placeholders, envsubst style);
  ``render.py`` fills them in. ``nginx/``: the same pair of sidecars as nginx configs (opt-in comparison).
- ``harness.py``: starts the server and a pair of sidecars as real processes and runs the client.
- ``test_interop.py``: every case through the sidecars, and directly as the control group.
  ``INTEROP_TARGET=nginx`` runs the cases through nginx instead of pyproxy; ``INTEROP_PROXY_CMD``
  replaces ``python -m pyproxy`` (e.g. ``envoy --use-dynamic-base-id``).
"""

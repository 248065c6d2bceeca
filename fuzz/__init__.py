"""Coverage-guided fuzz targets (atheris + libFuzzer), one module per target as Envoy's ``*_fuzz_test``.

Each ``*_fuzz`` module exposes ``run(data: bytes) -> None``: it raises only when the code under test broke
its contract (an exception other than the documented error type, or a violated invariant). Targets:
``h2_connection_fuzz`` (the HTTP/2 engine as a server or a client, from raw peer bytes or from a sequence of
operations: peer frames, send headers/data, reset, acknowledge, ping, GOAWAY), ``hpack_fuzz`` (HPACK decoding,
Huffman, encoder round trips, checked against the ``hpack`` reference), ``bootstrap_fuzz`` (Envoy bootstraps as
YAML, JSON, text and binary proto), ``xds_resource_fuzz`` (Any-wrapped LDS/RDS/CDS/EDS/SDS resources),
``istio_yaml_fuzz`` (Istio YAML through the loader, the validator and the store's batch checks) and
``ca_csr_fuzz`` (CSRs, PEM or DER, through the CA's certificate service: no certificate for an identity other
than the caller's). ``python -m fuzz TARGET [libFuzzer flags] [corpus dirs]`` runs one under libFuzzer with our
packages instrumented; ``fuzz/corpus/TARGET/`` holds its minimized seed corpus, which
``tests/fuzz/test_fuzz_targets.py`` replays through ``run`` and fuzzes briefly in CI.
"""

TARGETS = ("h2_connection", "hpack", "bootstrap", "xds_resource", "istio_yaml", "ca_csr")

"""Configuration: an Envoy v3 bootstrap and xDS resources -> one immutable :class:`~.model.Snapshot`.

Architecture, in the order data flows:

- ``bootstrap``: ``load_bootstrap(path, config_yaml)`` / ``parse_bootstrap_dict(d)`` /
  ``validate_bootstrap(path)``; file formats and ``--config-yaml`` merging as Envoy does them.
- ``protojson``: JSON-like data -> protobuf, reporting every unknown field, bad value and unknown
  ``@type`` with its field path (enum names case-insensitive, as in Envoy).
- ``pgv``: the ``protoc-gen-validate`` rules annotated on Envoy's protos (what Envoy checks on load).
- ``translate/``: pure proto -> model functions per resource family, with an explicit set of supported
  fields per message (anything else that is set is rejected: nothing is silently ignored), the
  ``dynamic_resources``/ADS config sources, and the cross-resource consistency check.
- ``xds_resources``: the ADS client's per-resource API (LDS/RDS/CDS/EDS/SDS resource -> model object, the
  names each one depends on), reusing ``translate/``.
- ``material``: inline TLS material written to private files; PEM checks.
- ``model``: the frozen snapshot the proxy runs on (per-snapshot work such as regex compilation and the
  virtual-host domain index is done here, once).
- ``errors``: :class:`ConfigError` with ``(path, reason)`` problems.

This package imports no protobuf code until ``bootstrap``/``translate`` is imported, so the request path
can import ``pyproxy.config.model`` cheaply.
"""

from pyproxy.config.errors import ConfigError, Problem

__all__ = ["ConfigError", "Problem"]

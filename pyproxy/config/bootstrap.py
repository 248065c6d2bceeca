"""``pyproxy -c BOOTSTRAP`` (and ``--config-yaml``): an Envoy v3 bootstrap file -> :class:`Snapshot`.

As Envoy does, the format follows the file name: ``.yaml``/``.yml`` YAML, ``.pb`` binary proto,
``.pb_text`` text proto, anything else JSON. ``--config-yaml`` is parsed on its own and merged over the file
with proto ``MergeFrom`` (scalars replaced, messages merged, lists appended), exactly like Envoy. Then:
parse (every unknown field / bad value at once, :mod:`~pyproxy.config.protojson`), the
``protoc-gen-validate`` rules (:mod:`~pyproxy.config.pgv`), translation and consistency checks
(:mod:`~pyproxy.config.translate`). Any problem raises :class:`ConfigError` listing all of them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import json_format, text_format
from google.protobuf.message import DecodeError

from pyproxy.config import model as m
from pyproxy.config.errors import ConfigError, Problem, Problems
from pyproxy.config.material import MaterialStore
from pyproxy.config.pgv import validate_message
from pyproxy.config.protojson import check_any_types, parse_message
from pyproxy.config.translate import translate_bootstrap

_YAML_SUFFIXES = (".yaml", ".yml")
_REDACTED = "[redacted]"
_SENSITIVE_KEYS = {"private_key", "password"}


class _EnvoyYamlLoader(yaml.SafeLoader):
    """Safe YAML as Envoy reads it: keys tagged ``!ignore`` are dropped (handy for anchors), duplicate keys
    are reported, and no YAML 1.1 timestamps or sexagesimal numbers (yaml-cpp has neither)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, object]] = []


def _construct_mapping(loader: _EnvoyYamlLoader, node: yaml.MappingNode) -> dict[object, object]:
    loader.flatten_mapping(node)
    mapping: dict[object, object] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "!ignore":
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, dict | list):  # PyYAML's own construct_mapping refuses these too
            raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                    "found an unhashable key (a mapping or a list)",
                                                    key_node.start_mark)
        if key in mapping:
            loader.duplicates.append((key_node.start_mark.line + 1, key))
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_EnvoyYamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_EnvoyYamlLoader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp)
        for tag, regexp in resolvers
        if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:int")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_EnvoyYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)


def _load_yaml(text: str, origin: str) -> object:
    try:
        # The reader refuses non-printable characters already here (a ReaderError, a YAMLError too).
        loader = _EnvoyYamlLoader(text)
    except yaml.YAMLError as err:
        raise ConfigError([("", f"{origin}: invalid YAML: {err}")]) from None
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as err:
        raise ConfigError([("", f"{origin}: invalid YAML: {err}")]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(
            [("", f"{origin}: line {line}: duplicate key {key!r}") for line, key in loader.duplicates]
        )
    return data


def _parse_data(data: object, origin: str, ignored_unknown: list[str] | None = None) -> Any:
    if not isinstance(data, dict):
        raise ConfigError([("", f"{origin}: the bootstrap must be a mapping at the top level")])
    return parse_message(data, bootstrap_pb2.Bootstrap(), ignored_unknown=ignored_unknown)


def _read_file(path: str, ignored_unknown: list[str] | None = None) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise ConfigError([("", f"cannot read {path}: {err.strerror}")]) from None
    if path.endswith(".pb"):
        try:
            return bootstrap_pb2.Bootstrap.FromString(raw)
        except DecodeError as err:
            raise ConfigError([("", f"{path}: not a binary Bootstrap proto: {err}")]) from None
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise ConfigError([("", f"{path}: not UTF-8 text")]) from None
    if path.endswith(".pb_text"):
        try:
            return text_format.Parse(text, bootstrap_pb2.Bootstrap())
        except text_format.ParseError as err:
            raise ConfigError([("", f"{path}: {err}")]) from None
    if path.endswith(_YAML_SUFFIXES):
        return _parse_data(_load_yaml(text, path), path, ignored_unknown)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError([("", f"{path}: invalid JSON: {err}")]) from None
    return _parse_data(data, path, ignored_unknown)


def _redact(value: object, key: str = "") -> object:
    """Envoy's config_dump hides inline secrets (``udpa.annotations.sensitive``); file names stay."""
    if isinstance(value, dict):
        if key in _SENSITIVE_KEYS:
            return {k: (_REDACTED if k.startswith("inline_") else v) for k, v in value.items()}
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, key) for v in value]
    return value


def _finish(bootstrap: Any, material: MaterialStore | None) -> m.Snapshot:
    problems = Problems()
    check_any_types(bootstrap, "", problems)  # .pb/.pb_text: JSON and YAML had these checks when parsed
    problems.raise_if_any()  # an Any that cannot be opened can be neither validated, dumped nor translated
    validate_message(bootstrap, "", problems)
    source = _redact(json_format.MessageToDict(bootstrap, preserving_proto_field_name=True))
    assert isinstance(source, dict)
    return translate_bootstrap(bootstrap, source=source, material=material, problems=problems)


def parse_bootstrap_dict(d: dict[str, Any], *, material: MaterialStore | None = None) -> m.Snapshot:
    """A bootstrap already loaded as JSON-like data (``d`` is not modified) -> Snapshot."""
    return _finish(_parse_data(d, "bootstrap"), material)


def load_bootstrap(
    path: str | None,
    config_yaml: str | None = None,
    *,
    service_node: str | None = None,
    service_cluster: str | None = None,
    service_zone: str | None = None,
    allow_unknown_fields: bool = False,
    material: MaterialStore | None = None,
) -> m.Snapshot:
    """Envoy's ``-c PATH``, ``--config-yaml YAML``, ``--service-node``, ``--service-cluster``,
    ``--service-zone`` and ``--allow-unknown-static-fields``: read, merge, override ``node.id``/``node.cluster``/
    ``node.locality.zone``, validate, translate. Unknown fields dropped by ``allow_unknown_fields`` become
    warnings of the snapshot.

    Raises :class:`ConfigError` listing every problem (field path and reason) found.
    """
    ignored: list[str] | None = [] if allow_unknown_fields else None
    if path is None and not config_yaml:
        raise ConfigError([("", "no configuration: give a bootstrap file (-c) or --config-yaml")])
    bootstrap = _read_file(path, ignored) if path is not None else bootstrap_pb2.Bootstrap()
    if config_yaml:
        try:
            overlay = _parse_data(_load_yaml(config_yaml, "--config-yaml"), "--config-yaml", ignored)
        except ConfigError as err:
            raise ConfigError(
                Problem(f"--config-yaml {p.path}" if p.path else "", p.reason) for p in err.problems
            ) from None
        bootstrap.MergeFrom(overlay)
    if service_node:
        bootstrap.node.id = service_node
    if service_cluster:
        bootstrap.node.cluster = service_cluster
    if service_zone:
        bootstrap.node.locality.zone = service_zone
    snapshot = _finish(bootstrap, material)
    if ignored:
        snapshot = dataclasses.replace(snapshot, warnings=(
            *snapshot.warnings, *(f"{p}: unknown field ignored (--allow-unknown-static-fields)" for p in ignored)))
    return snapshot


def validate_bootstrap(path: str | None, config_yaml: str | None = None) -> list[str]:
    """Every problem with a bootstrap, one line each (empty: it is valid). For ``pyproxy --mode validate``.

    Inline TLS material is written to a temporary directory that is removed before returning.
    """
    with tempfile.TemporaryDirectory(prefix="pyproxy-validate-") as tmp:
        os.chmod(tmp, 0o700)
        try:
            load_bootstrap(path, config_yaml, material=MaterialStore(tmp))
        except ConfigError as err:
            return [str(p) for p in err.problems]
    return []

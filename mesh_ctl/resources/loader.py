"""Read Istio documents from text, files, directories or stdin.

- YAML (multi-document, ``---``) or JSON; empty documents are skipped; ``kind: List`` (and ``<Kind>List``)
  documents are expanded into their ``items``.
- Parsing follows Kubernetes' YAML handling (``sigs.k8s.io/yaml``): mapping keys become strings
  (``8080:`` -> ``"8080"``, as PeerAuthentication ``portLevelMtls`` needs), timestamps stay strings, and
  a key repeated in one mapping is an error (like ``kubectl apply --validate=strict``).
- Syntax errors carry the line and column: ``vs.yaml: document #2: line 7, column 5: mapping values are not
  allowed here``.
- Directories: the ``*.yaml``, ``*.yml`` and ``*.json`` files directly inside, in sorted order; with
  ``recursive=True`` (kubectl's ``-R``) the whole tree, depth first, sorted. Hidden files and directories
  (``.name``) are skipped. ``-`` reads standard input.

Nothing here validates fields: :mod:`mesh_ctl.resources.validate` does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from mesh_ctl.resources.model import DEFAULT_NAMESPACE, LoadError, Resource, ValidationProblem

SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "-"

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _key_string(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


class _KubeLoader(_Base):  # type: ignore[misc]
    """SafeLoader with Kubernetes' conversions: string keys, string timestamps, no duplicate keys."""


def _construct_mapping(loader: Any, node: yaml.MappingNode) -> dict[str, Any]:
    loader.flatten_mapping(node)
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = _key_string(loader.construct_object(key_node, deep=True))
        if key in out:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_KubeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_KubeLoader.add_constructor("tag:yaml.org,2002:timestamp", _Base.construct_yaml_str)


def _problem(origin: str, document: int, reason: str) -> ValidationProblem:
    return ValidationProblem(origin, "", "", "", reason, document)


def _yaml_error(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return problem


def _parse(text: str, origin: str) -> list[tuple[int, Any]]:
    """Documents of ``text`` as (1-based index, value); raise LoadError on a syntax error."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise LoadError([_problem(origin, 1, f"line {err.lineno}, column {err.colno}: {err.msg}")]) from None
        return [(1, value)]
    docs: list[tuple[int, Any]] = []
    loader = _KubeLoader(text)
    index = 0
    try:
        while loader.check_data():
            index += 1
            docs.append((index, loader.get_data()))
    except yaml.YAMLError as err:
        raise LoadError([_problem(origin, index or 1, _yaml_error(err))]) from None
    finally:
        loader.dispose()
    return docs


def _resource(doc: dict[str, Any], origin: str, index: int) -> Resource:
    metadata = doc.get("metadata")
    meta = dict(metadata) if isinstance(metadata, dict) else {}
    if isinstance(metadata, dict) and not meta.get("namespace"):
        meta["namespace"] = DEFAULT_NAMESPACE
    spec = doc.get("spec")
    return Resource(
        api_version=str(doc.get("apiVersion", "")),
        kind=str(doc.get("kind", "")),
        metadata=meta,
        spec=spec if isinstance(spec, dict) else {},
        origin=origin,
        document=index,
        raw=doc,
    )


def _expand(value: Any, origin: str, index: int) -> Iterator[Resource]:
    if value is None:
        return
    if not isinstance(value, dict):
        raise LoadError([_problem(origin, index, f"a document must be a mapping, got {type(value).__name__}")])
    kind = value.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(value.get("items"), list):
        for item in value["items"]:
            yield from _expand(item, origin, index)
        return
    yield _resource(value, origin, index)


def load_documents(text: str, origin: str = "<memory>") -> list[Resource]:
    """Every resource in ``text`` (YAML or JSON), in order. Raises :class:`LoadError` on bad syntax."""
    out: list[Resource] = []
    problems: list[ValidationProblem] = []
    for index, value in _parse(text, origin):
        try:
            out.extend(_expand(value, origin, index))
        except LoadError as err:
            problems.extend(err.problems)
    if problems:
        raise LoadError(problems)
    return out


def files_in(directory: Path, recursive: bool = False) -> list[Path]:
    """The manifest files of a directory, sorted; subdirectories only when ``recursive``."""
    found: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if recursive:
                found.extend(files_in(entry, recursive=True))
        elif entry.suffix in SUFFIXES:
            found.append(entry)
    return found


def load_path(path: str | Path, recursive: bool = False) -> list[Resource]:
    """Resources from a file, a directory (see the module docstring) or ``-`` (standard input)."""
    return load_paths([path], recursive)


def load_paths(paths: Iterable[str | Path], recursive: bool = False) -> list[Resource]:
    """Resources from several ``-f`` arguments; every unreadable or unparsable file is reported at once."""
    out: list[Resource] = []
    problems: list[ValidationProblem] = []
    for arg in paths:
        if str(arg) == STDIN:
            sources: list[tuple[str, str | None]] = [("<stdin>", sys.stdin.read())]
        else:
            p = Path(arg)
            if p.is_dir():
                files = files_in(p, recursive)
                if not files:
                    problems.append(_problem(str(p), 0, f"no {', '.join(SUFFIXES)} files in this directory"))
                sources = [(str(f), None) for f in files]
            else:
                sources = [(str(p), None)]
        for origin, text in sources:
            try:
                content = text if text is not None else Path(origin).read_text(encoding="utf-8")
                out.extend(load_documents(content, origin))
            except OSError as err:
                problems.append(_problem(origin, 0, f"cannot read: {err.strerror or err}"))
            except UnicodeDecodeError as err:
                problems.append(_problem(origin, 0, f"not UTF-8 text: {err.reason}"))
            except LoadError as err:
                problems.extend(err.problems)
    if problems:
        raise LoadError(problems)
    return out

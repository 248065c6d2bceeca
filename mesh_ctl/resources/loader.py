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
- Whole files: :func:`read_paths` reads every ``-f`` argument and :func:`load_files` parses every file, so one
  bad file never hides the problems of the others. A problem with a file as a whole (unreadable, not UTF-8,
  empty, a directory without manifests) names no document: ``nope.yaml: cannot read: No such file or
  directory``.

Nothing here validates fields: :mod:`mesh_ctl.resources.validate` does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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


# Kubernetes' limits, so that what minimesh accepts a real API server accepts too, and a hostile file cannot
# take the control plane's memory: the API server refuses a request body over 3 MiB; YAML aliases may not
# expand a document beyond a bounded number of values (sigs.k8s.io/yaml's "excessive aliasing" check does the
# same job; a 581-byte "billion laughs" file expands to 10^9 values).
MAX_MANIFEST_BYTES = 3 * 1024 * 1024
MAX_EXPANDED_VALUES = 1_000_000
# etcd's default request limit (--max-request-bytes, 1.5 MiB) bounds every object the API server stores: a
# bigger one is refused ("etcdserver: request is too large"). Measured on the object as stored here, compact
# JSON. Istio bounds neither the routes of a VirtualService nor their matches; the cost of a big one is kept
# off the control plane's event loop and out of the sidecar's per-request path instead.
MAX_OBJECT_BYTES = 3 * 1024 * 1024 // 2


def _size_problem(text: str) -> str | None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= MAX_MANIFEST_BYTES:
        return None
    return (f"the file is {size / 1024 / 1024:.1f} MiB: at most {MAX_MANIFEST_BYTES // 1024 // 1024} MiB is accepted "
            "(the Kubernetes API server's limit for a request); split it into several files")


def object_size(doc: Any) -> int:
    """The size of ``doc`` as stored: compact JSON, UTF-8."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=str)  # default: !!binary, !!set
    return len(text.encode("utf-8", "surrogatepass"))


def _object_problem(resource: Resource) -> ValidationProblem | None:
    """The problem of a resource over :data:`MAX_OBJECT_BYTES` (None: within it)."""
    size = object_size(resource.raw or resource.to_dict())
    if size <= MAX_OBJECT_BYTES:
        return None
    reason = (f"the object is {size / 1024 / 1024:.2f} MiB as stored (JSON): at most 1.5 MiB per object is "
              "accepted (etcd's limit for a Kubernetes object); split it into several objects")
    return ValidationProblem(resource.origin, resource.kind, f"{resource.namespace}/{resource.name}", "", reason,
                             resource.document)


def _within_limits(resources: Iterable[Resource], problems: list[ValidationProblem]) -> Iterator[Resource]:
    """``resources`` but those over the per-object limit, whose problem goes to ``problems``."""
    for resource in resources:
        problem = _object_problem(resource)
        if problem is None:
            yield resource
        else:
            problems.append(problem)


def _expansion_problem(root: yaml.Node) -> str | None:
    """Why the composed document ``root`` may not be constructed: its aliases would expand it beyond
    :data:`MAX_EXPANDED_VALUES` values, or an alias refers to a node that contains it. Counted on the node
    graph (each distinct node once, with memory), so the check itself costs what the text costs."""
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: a deep document cannot exhaust Python's recursion limit
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            children = _children(node)
            total = 1 + sum(sizes[id(c)] for c in children)
            in_progress.discard(key)
            if total > MAX_EXPANDED_VALUES:
                return (f"its YAML aliases expand it to more than {MAX_EXPANDED_VALUES:,} values (an alias bomb?); "
                        "write the values out, or use fewer aliases")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in in_progress:
            return "a YAML alias refers to a node that contains it (a recursive structure)"
        in_progress.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in in_progress:
                return "a YAML alias refers to a node that contains it (a recursive structure)"
            if id(child) not in sizes:
                stack.append((child, False))
    return None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _parse(text: str, origin: str) -> tuple[list[tuple[int, Any]], ValidationProblem | None]:
    """Documents of ``text`` as (1-based index, value), and the syntax error that stopped the parsing, if
    any (the documents before it are kept). Over the size limit nothing is parsed; a document whose aliases
    expand too far stops the parsing before it is constructed."""
    too_big = _size_problem(text)
    if too_big is not None:
        return [], _problem(origin, 0, too_big)
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            return [], _problem(origin, 1, f"line {err.lineno}, column {err.colno}: {err.msg}")
        return [(1, value)], None
    docs: list[tuple[int, Any]] = []
    try:
        loader = _KubeLoader(text)
    except yaml.YAMLError as err:  # PyYAML's pure-Python reader (no libyaml) refuses control characters here
        return docs, _problem(origin, 1, _yaml_error(err))
    index = 0
    try:
        while True:
            index += 1  # the document being read: an error while looking for its start is in it too
            if not loader.check_node():
                break
            node = loader.get_node()
            problem = _expansion_problem(node) if node is not None else None
            if problem is not None:
                return docs, _problem(origin, index, problem)
            docs.append((index, loader.construct_document(node)))
    except yaml.YAMLError as err:
        return docs, _problem(origin, index, _yaml_error(err))
    finally:
        loader.dispose()
    return docs, None


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


@dataclass
class Loaded:
    """What a set of files holds: the resources that could be read, the problems of the rest, and counts.

    ``documents`` counts the non-empty documents read (a ``kind: List`` counts once; a document with a
    syntax error counts, the ones after it in its file cannot be seen); ``files`` the files given."""

    resources: list[Resource] = field(default_factory=list)
    problems: list[ValidationProblem] = field(default_factory=list)
    documents: int = 0
    files: int = 0

    def counts(self, errors: Sequence[ValidationProblem]) -> dict[str, int]:
        """For a summary of ``errors`` (these problems and the validator's): ``files``, ``documents``,
        ``invalid_documents`` (documents with at least one error) and ``file_errors`` (errors about a file as a
        whole: unreadable, empty)."""
        return {
            "files": self.files,
            "documents": self.documents,
            "invalid_documents": len({(p.origin, p.document) for p in errors if p.document}),
            "file_errors": sum(1 for p in errors if not p.document),
        }


def _empty_reason(origin: str, text: str) -> str | None:
    """Why ``text`` holds nothing to load (None: it holds something)."""
    if text.strip():
        return None
    return "standard input is empty" if origin == "<stdin>" else "the file is empty"


def load_files(files: Iterable[tuple[str, str]]) -> Loaded:
    """Every resource of every ``(origin, text)``, and every problem: each file is parsed to its end (or to
    its syntax error) whatever the others hold. An empty file, or one with only comments, is a problem."""
    out = Loaded()
    for origin, text in files:
        out.files += 1
        empty = _empty_reason(origin, text)
        if empty is not None:
            out.problems.append(_problem(origin, 0, empty))
            continue
        docs, error = _parse(text, origin)
        found = [(index, value) for index, value in docs if value is not None]
        out.documents += len(found) + (error is not None)
        if not found and error is None:
            out.problems.append(_problem(origin, 0, "no documents in this file (only comments or '---')"))
        for index, value in found:
            try:
                out.resources.extend(_within_limits(_expand(value, origin, index), out.problems))
            except LoadError as err:
                out.problems.extend(err.problems)
        if error is not None:
            out.problems.append(error)
    return out


def load_documents(text: str, origin: str = "<memory>") -> list[Resource]:
    """Every resource in ``text`` (YAML or JSON), in order. Raises :class:`LoadError` on bad syntax.
    Empty text (or only comments) gives no resources."""
    out: list[Resource] = []
    docs, error = _parse(text, origin)
    problems: list[ValidationProblem] = []
    for index, value in docs:
        try:
            out.extend(_within_limits(_expand(value, origin, index), problems))
        except LoadError as err:
            problems.extend(err.problems)
    if error is not None:
        problems.append(error)
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


@dataclass
class Inputs:
    """The ``-f`` arguments read: ``texts`` as ``(origin, text)``, the ``problems`` of the paths that cannot
    be read (one per file or directory), ``order`` every file and directory met, in the order given."""

    texts: list[tuple[str, str]] = field(default_factory=list)
    problems: list[ValidationProblem] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    files: int = 0  # files read or tried (directories not counted)
    directories: int = 0  # directories with a problem (no manifests, unreadable): in ``order`` and ``problems``

    def in_order(self, problems: Iterable[ValidationProblem]) -> list[ValidationProblem]:
        return in_order(problems, self.order)


def in_order(problems: Iterable[ValidationProblem], origins: Sequence[str]) -> list[ValidationProblem]:
    """``problems`` sorted by file, in the order of ``origins``, then by document (stable: a document's
    problems keep their order); problems of an origin not in ``origins`` come last."""
    rank: dict[str, int] = {}
    for i, origin in enumerate(origins):
        rank.setdefault(origin, i)
    return sorted(problems, key=lambda p: (rank.get(p.origin, len(origins)), p.document))


def _no_files(directory: Path, recursive: bool) -> str:
    reason = "no .yaml, .yml or .json files in this directory"
    if not recursive and any(e.is_dir() and not e.name.startswith(".") for e in directory.iterdir()):
        reason += " (its subdirectories are read only with -R)"
    return reason


def read_paths(paths: Iterable[str | Path], recursive: bool = False) -> Inputs:
    """Read the ``-f`` arguments: files, directories (their manifests, like kubectl; ``recursive``: the whole
    tree) and ``-`` (standard input). Never raises: what cannot be read is in ``problems``."""
    out = Inputs()
    for arg in paths:
        if str(arg) == STDIN:
            out.files += 1
            out.order.append("<stdin>")
            out.texts.append(("<stdin>", sys.stdin.read()))
            continue
        p = Path(arg)
        if p.is_dir():
            try:
                files = files_in(p, recursive)
                if not files:
                    out.directories += 1
                    out.order.append(str(p))
                    out.problems.append(_problem(str(p), 0, _no_files(p, recursive)))
            except OSError as err:
                out.directories += 1
                out.order.append(str(p))
                out.problems.append(_problem(str(p), 0, f"cannot read this directory: {err.strerror or err}"))
                continue
        else:
            files = [p]
        for f in files:
            out.files += 1
            out.order.append(str(f))
            try:
                out.texts.append((str(f), f.read_text(encoding="utf-8")))
            except OSError as err:
                out.problems.append(_problem(str(f), 0, f"cannot read: {err.strerror or err}"))
            except UnicodeDecodeError as err:
                out.problems.append(_problem(str(f), 0, f"not UTF-8 text (byte {err.start}: {err.reason})"))
    return out


def load_paths(paths: Iterable[str | Path], recursive: bool = False) -> list[Resource]:
    """Resources from several ``-f`` arguments; every unreadable or unparsable file is reported at once."""
    inputs = read_paths(paths, recursive)
    loaded = load_files(inputs.texts)
    problems = inputs.in_order([*inputs.problems, *loaded.problems])
    if problems:
        raise LoadError(problems)
    return loaded.resources

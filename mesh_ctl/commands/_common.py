"""Options, argument types and wording shared by several commands."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from mesh_ctl.runtime.state import ENV_HOME

if TYPE_CHECKING:
    from mesh_ctl.resources.loader import Inputs


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir", metavar="DIR",
        help=f"where the mesh keeps state, logs, certificates and bootstraps (default: ${ENV_HOME}, "
             "else ./.minimesh)")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 error``, ``2 errors``, ``0 errors``."""
    return f"{n} {word if n == 1 else words or word + 's'}"


def _share(part: int, whole: int, word: str) -> str:
    """``1 of 3 documents``, ``1 document`` (the only one), ``both documents``, ``all 3 documents``."""
    if part != whole:
        return f"{part} of {plural(whole, word)}"
    return plural(whole, word) if whole == 1 else f"both {word}s" if whole == 2 else f"all {plural(whole, word)}"


def problems_summary(errors: int, counts: Mapping[str, int]) -> str | None:
    """One line on ``errors`` problems in files holding ``counts`` (``files``, ``documents``,
    ``invalid_documents``, ``file_errors``: see :meth:`mesh_ctl.resources.loader.Loaded.counts`; and
    ``directories``: how many of the ``files`` are directories without manifests), e.g.
    ``1 error in 1 of 2 documents (2 files)``, ``2 errors: 1 of 3 files could not be loaded, and 1 of
    2 documents is invalid``. None when the one error line says it all: a single file that could not be
    loaded."""
    files, documents = counts.get("files", 0), counts.get("documents", 0)
    invalid, file_errors = counts.get("invalid_documents", 0), counts.get("file_errors", 0)
    if errors == 1 and file_errors == 1 and files <= 1 and not documents:
        return None
    if not file_errors and not documents:
        return f"{plural(errors, 'error')} ({plural(files, 'file')})"
    if not file_errors:
        return f"{plural(errors, 'error')} in {_share(invalid, documents, 'document')} ({plural(files, 'file')})"
    noun = "files and directories" if counts.get("directories") else "files"
    if file_errors == files == 1:
        unusable = "the file could not be loaded"
    elif file_errors == files:
        unusable = f"none of the {files} {noun} could be loaded"
    else:
        unusable = f"{file_errors} of {files} {noun} could not be loaded"
    if not invalid:
        return f"{plural(errors, 'error')}: {unusable}"
    return (f"{plural(errors, 'error')}: {unusable}, and {_share(invalid, documents, 'document')} "
            f"{'is' if invalid == 1 else 'are'} invalid")


def in_file_order(inputs: Inputs, lines: Sequence[str]) -> list[str]:
    """The problems of the files that could not be read and the control plane's ``lines`` about the others,
    in the order the files were given (each line starts with its file's name)."""
    rank: dict[str, int] = {}
    for i, origin in enumerate(inputs.order):
        rank.setdefault(origin, i)

    def file_of(line: str) -> int:
        found = [o for o in rank if line.startswith(f"{o}: ")]
        return rank[max(found, key=len)] if found else len(rank)

    every = [*map(str, inputs.problems), *lines]
    return [line for _, line in sorted(((file_of(line), line) for line in every), key=lambda pair: pair[0])]


def combined_counts(inputs: Inputs, counts: Mapping[str, int]) -> dict[str, int]:
    """The control plane's ``counts`` of the files it was sent, plus the files that could not be read."""
    out = dict(counts)
    out["files"] = out.get("files", 0) + len(inputs.order) - len(inputs.texts)
    out["file_errors"] = out.get("file_errors", 0) + len(inputs.problems)
    out["directories"] = inputs.directories
    return out

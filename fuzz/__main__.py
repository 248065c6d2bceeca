"""``python -m fuzz TARGET [libFuzzer flags] [corpus dirs]``: run one target under libFuzzer.

The code under test is imported inside :func:`atheris.instrument_imports`, so coverage guidance sees our
packages (and a few third-party parsers, :data:`_EXTRA_INSTRUMENTED`). Examples::

    python -m fuzz h2_connection -max_total_time=600 /tmp/h2-corpus fuzz/corpus/h2_connection
    python -m fuzz hpack -runs=0 fuzz/corpus/hpack        # replay the corpus only
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shlex
import sys
import tempfile
from pathlib import Path

import atheris

from fuzz import TARGETS

# Third-party pure-Python parsers whose branches help the fuzzer build structured input (the Envoy loader
# uses PyYAML's pure-Python SafeLoader; the Istio loader the C one, which cannot be instrumented).
_EXTRA_INSTRUMENTED: dict[str, tuple[str, ...]] = {"bootstrap": ("yaml",)}


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m fuzz {{{','.join(TARGETS)}}} [libFuzzer flags] [corpus dirs]")
    name = argv[1]
    module_name = f"fuzz.{name}_fuzz"
    include = ["pyproxy", "mesh_ctl", "fuzz", *_EXTRA_INSTRUMENTED.get(name, ())]
    with atheris.instrument_imports(include=include):
        target = importlib.import_module(module_name)
    atheris.Setup([_launcher(name), *argv[2:]], target.run)
    atheris.Fuzz()


def _launcher(name: str) -> str:
    """An executable that runs this target again: libFuzzer re-executes its ``argv[0]`` for ``-merge=1`` and
    ``-fork``, and would otherwise get this module's path (not executable, and without the target name)."""
    python = hashlib.sha1(sys.executable.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"fuzz-{name}-{os.getuid()}-{python}.sh"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}")
        tmp.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m fuzz {name} "$@"\n')
        tmp.chmod(0o755)
        tmp.replace(path)
    return str(path)


if __name__ == "__main__":
    main(sys.argv)

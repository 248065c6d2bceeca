"""``python -m fuzz TARGET [libFuzzer flags] [corpus dirs]``: run one target under libFuzzer.

The code under test is imported inside :func:`atheris.instrument_imports`, so coverage guidance sees our
packages (and a few third-party parsers, :data:`_EXTRA_INSTRUMENTED`). Examples::

    python -m fuzz h2_connection -max_total_time=600 /tmp/h2-corpus fuzz/corpus/h2_connection
    python -m fuzz hpack -runs=0 fuzz/corpus/hpack        # replay the corpus only
"""

from __future__ import annotations

import importlib
import sys

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
    atheris.Setup([argv[0], *argv[2:]], target.run)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)

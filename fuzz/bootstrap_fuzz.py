"""The Envoy bootstrap loader (:mod:`pyproxy.config.bootstrap`): every way a bootstrap comes in.

Mode byte (low 3 bits): 0 YAML text (``--config-yaml``), 1 a ``.json`` file, 2 a ``.pb`` file (binary proto),
3 a ``.pb_text`` file, 4 a ``.yaml`` file plus a ``--config-yaml`` overlay (proto ``MergeFrom``), 5-7 a JSON
document (the rest of the input up to a NUL byte, usually a real bootstrap) with structure-aware edits
(:mod:`fuzz._mutate`), loaded as a dict (``parse_bootstrap_dict``).

Contract: a bootstrap either loads or raises :class:`~pyproxy.config.errors.ConfigError`, never another
exception; and a bootstrap that loads loads again to the same snapshot (translation is deterministic).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile

from fuzz._input import Input
from fuzz._mutate import mutate
from pyproxy.config.bootstrap import load_bootstrap, parse_bootstrap_dict
from pyproxy.config.errors import ConfigError
from pyproxy.config.material import MaterialStore

_DIR = tempfile.mkdtemp(prefix="fuzz-bootstrap-")
atexit.register(shutil.rmtree, _DIR, True)
_MATERIAL = MaterialStore(os.path.join(_DIR, "material"))
os.makedirs(_MATERIAL.directory, mode=0o700)
_SUFFIXES = (".yaml", ".json", ".pb", ".pb_text", ".yaml")


def _write(data: bytes, suffix: str) -> str:
    path = os.path.join(_DIR, "bootstrap" + suffix)
    with open(path, "wb") as f:
        f.write(data)
    return path


def run(data: bytes) -> None:
    inp = Input(data)
    mode = inp.byte() & 7
    try:
        if mode == 0:
            load_bootstrap(None, inp.rest().decode("utf-8", "replace"), material=_MATERIAL)
        elif mode in (1, 2, 3):
            load_bootstrap(_write(inp.rest(), _SUFFIXES[mode]), material=_MATERIAL)
        elif mode == 4:
            base = inp.blob(2)
            overlay = inp.rest().decode("utf-8", "replace")
            load_bootstrap(_write(base, ".yaml"), overlay, material=_MATERIAL)
        else:
            text, _, edits = inp.rest().partition(b"\0")
            try:
                doc = json.loads(text)
            except ValueError:
                return  # not a seed document: nothing of ours to test
            doc = mutate(doc, Input(edits))
            if not isinstance(doc, dict):
                return
            frozen = json.dumps(doc, sort_keys=True)
            first = parse_bootstrap_dict(doc, material=_MATERIAL)
            assert json.dumps(doc, sort_keys=True) == frozen, "parse_bootstrap_dict modified its input"
            again = parse_bootstrap_dict(doc, material=_MATERIAL)
            assert first == again, "the same bootstrap translated twice gave different snapshots"
    except ConfigError:
        pass

"""Structure-aware edits of JSON-like documents (configs), driven by the fuzz input.

Random bytes rarely get past a YAML or protobuf parser into the translation code; editing a real document
(replace, delete or add a value somewhere in its tree, with values chosen to break types and ranges) does.
"""

from __future__ import annotations

import copy
from typing import Any

from fuzz._input import Input

MAX_EDITS = 8
MAX_DEPTH = 24

# Values that break types, ranges and formats; index 0.. chosen by one byte.
_VALUES: tuple[Any, ...] = (
    None, True, False, 0, 1, -1, 2**31 - 1, 2**31, 2**32, -(2**31) - 1, 2**63, 2**64, -(2**63) - 1, 10**30,
    0.5, -0.0, 1e308, float("inf"), float("nan"), "", " ", "0", "-1", "1s", "-1s", "0.000000001s",
    "315576000001s", "1.5", "1e3", "18446744073709551616", "NaN", "true", "a" * 300, "\x00", "\ud800",
    "é", "*", ".*", "(", "[", "0.0.0.0", "::", "::1", "127.0.0.1:80", "unix:///x", "/", "//", "..",
    "cluster.local", "spiffe://cluster.local/ns/default/sa/x", "type.googleapis.com/google.protobuf.Empty",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "@type", "${X}", "%s", [], [None], {},
    {"": None}, {"@type": ""}, [[[]]],
)


def _node(doc: Any, inp: Input) -> tuple[Any, Any]:
    """Walk from the root, one byte per step: (container, key) of the value to edit."""
    parent: Any = None
    key: Any = None
    node = doc
    for _ in range(MAX_DEPTH):
        if not isinstance(node, dict | list) or not node:
            break
        b = inp.byte()
        if b & 7 == 0 and parent is not None:  # stop here
            break
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, keys[(b >> 3) % len(keys)]
        node = node[key]
    return parent, key


def _value(doc: Any, inp: Input) -> Any:
    b = inp.byte()
    kind = b & 3
    if kind == 0:
        return copy.deepcopy(_VALUES[(b >> 2) % len(_VALUES)])
    if kind == 1:  # a string from the input
        return inp.blob().decode("utf-8", "replace")
    if kind == 2:  # a number from the input
        n = inp.uint(8)
        return -n if b & 4 else n
    # another part of the document (type confusion: a cluster where a route is expected...)
    parent, key = _node(doc, inp)
    return copy.deepcopy(doc if parent is None else parent[key])


def mutate(doc: Any, inp: Input) -> Any:
    """A copy of ``doc`` with up to :data:`MAX_EDITS` edits read from ``inp``."""
    doc = copy.deepcopy(doc)
    for _ in range(inp.choice(MAX_EDITS + 1)):
        if not inp.remaining:
            break
        op = inp.choice(4)
        parent, key = _node(doc, inp)
        if parent is None:
            if op == 0:
                doc = _value(doc, inp)
            continue
        if op in (0, 1):  # replace
            parent[key] = _value(doc, inp)
        elif op == 2:  # delete
            del parent[key]
        elif isinstance(parent, dict):  # add a key (new, or a neighbour's name in another place)
            name = inp.blob().decode("utf-8", "replace") if inp.bool() else str(key)
            parent[name + ("" if inp.bool() else "_")] = _value(doc, inp)
        else:
            parent.insert(key, _value(doc, inp))
    return doc

"""Limits before anything is expanded (issue 9.5): a 3 MiB manifest limit (the Kubernetes API server's request
limit) and a bound on what YAML aliases may expand a document to; one clear error each; and
1.5 MiB per stored object (etcd's limit, issue 9.6)."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from mesh_ctl.resources import LoadError, load_documents
from mesh_ctl.resources.loader import MAX_EXPANDED_VALUES, MAX_MANIFEST_BYTES, MAX_OBJECT_BYTES, load_files, object_size

# "Billion laughs": 9 levels of 9 aliases = 9^9 (387 million) strings from a few hundred bytes.
LEVELS = "abcdefghi"
BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in itertools.pairwise(LEVELS))


def test_an_alias_bomb_is_refused_before_it_is_expanded() -> None:
    assert len(BOMB) < 600
    started = time.monotonic()
    with pytest.raises(LoadError) as err:
        load_documents(BOMB, "bomb.yaml")
    assert time.monotonic() - started < 0.5
    assert [str(p) for p in err.value.problems] == [
        f"bomb.yaml: document #1: its YAML aliases expand it to more than {MAX_EXPANDED_VALUES:,} values (an alias "
        "bomb?); write the values out, or use fewer aliases"]


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(LoadError) as err:
        load_documents("apiVersion: v1\nkind: X\nmetadata: &m {name: x, self: *m}\n", "r.yaml")
    assert "a YAML alias refers to a node that contains it" in str(err.value.problems[0])


def test_ordinary_aliases_still_work() -> None:
    text = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment, labels: &labels {team: payments}}
spec:
  host: payment
  subsets:
  - {name: v1, labels: *labels}
  - {name: v2, labels: *labels}
"""
    [rule] = load_documents(text, "ok.yaml")
    assert [s["labels"] for s in rule.spec["subsets"]] == [{"team": "payments"}] * 2


def test_a_manifest_over_3_mib_is_refused_unparsed() -> None:
    big = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n# " + "x" * MAX_MANIFEST_BYTES + "\n"
    with pytest.raises(LoadError) as err:
        load_documents(big, "big.yaml")
    [problem] = err.value.problems
    assert str(problem) == ("big.yaml: the file is 3.0 MiB: at most 3 MiB is accepted (the Kubernetes API "
                            "server's limit for a request); split it into several files")


def _vs(name: str, routes: int) -> dict[str, object]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": name},
            "spec": {"hosts": ["payment"], "http": [
                {"match": [{"uri": {"exact": f"/payment.PaymentService/M{i}"}}],
                 "route": [{"destination": {"host": "payment"}}]} for i in range(routes)]}}


def test_an_object_over_1_5_mib_is_refused_by_name_and_the_others_are_kept() -> None:
    small = _vs("small", 1)
    big = _vs("big", 1)
    per_route = object_size(_vs("big", 2)) - object_size(big)
    big = _vs("big", (MAX_OBJECT_BYTES - object_size(big)) // per_route + 2)
    assert MAX_OBJECT_BYTES < object_size(big) < 2 * 1024 * 1024  # well within the 3 MiB manifest limit
    text = json.dumps({"kind": "List", "items": [small, big]})
    loaded = load_files([("big.json", text)])
    assert [r.name for r in loaded.resources] == ["small"]
    assert [str(p) for p in loaded.problems] == [
        f"big.json: VirtualService default/big: the object is {object_size(big) / 1024 / 1024:.2f} MiB as stored "
        "(JSON): at most 1.5 MiB per object is accepted (etcd's limit for a Kubernetes object); split it into "
        "several objects"]
    with pytest.raises(LoadError):
        load_documents(text)
    # Just under the limit: accepted.
    routes = len(big["spec"]["http"])  # type: ignore[index]
    while object_size(fits := _vs("fits", routes)) > MAX_OBJECT_BYTES:
        routes -= 100
    assert object_size(fits) > MAX_OBJECT_BYTES - 100 * per_route
    assert not load_files([("fits.json", json.dumps(fits))]).problems

"""The config store: transactional applies, revisions, durability across restarts and crashes, notification."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mesh_ctl.resources import InvalidConfig, Resource, load_documents
from mesh_ctl.resources.crds import load_crds
from mesh_ctl.store import ConfigStore, NotFound, StoreCorrupt, StoreEvent, StoreSnapshot

REPO = Path(__file__).resolve().parents[2]

DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payment}
spec:
  host: payment
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"""


def vs(w1: int = 50, w2: int = 50, name: str = "payment", host: str = "payment") -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec:
  hosts: [{host}]
  http:
  - route:
    - destination: {{host: payment, subset: v1}}
      weight: {w1}
    - destination: {{host: payment, subset: v2}}
      weight: {w2}
"""


def docs(*texts: str) -> list[Resource]:
    return [r for t in texts for r in load_documents(textwrap.dedent(t), "test.yaml")]


def test_apply_stamps_metadata_and_survives_a_restart(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    assert store.revision == 0
    result = store.apply(docs(DR, vs()))
    assert result.revision == 1
    assert [str(c) for c in result.changes] == [
        "destinationrule.networking.istio.io/payment created",
        "virtualservice.networking.istio.io/payment created",
    ]
    stored = store.get("vs", "default", "payment")
    assert stored is not None
    meta = stored.metadata
    assert (meta["resourceVersion"], meta["generation"], meta["namespace"]) == ("1", 1, "default")
    assert meta["creationTimestamp"].endswith("Z") and len(meta["uid"]) == 36

    reopened = ConfigStore(tmp_path)
    assert reopened.revision == 1
    assert [r.to_dict() for r in reopened.list()] == [r.to_dict() for r in store.list()]
    assert [r.kind for r in reopened.list(kind="dr")] == ["DestinationRule"]
    assert json.loads((tmp_path / "store.json").read_text())["format"] == "minimesh-config-store/1"


def test_unchanged_reapply_writes_nothing(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.apply(docs(DR, vs()))
    before = (tmp_path / "store.json").stat().st_mtime_ns
    # Same content, another apiVersion spelling: still unchanged (like kubectl with the storage version).
    again = store.apply(docs(DR, vs().replace("networking.istio.io/v1", "networking.istio.io/v1beta1")))
    assert [c.action for c in again.changes] == ["unchanged", "unchanged"]
    assert again.revision == 1 and store.revision == 1
    assert (tmp_path / "store.json").stat().st_mtime_ns == before


def test_generation_counts_spec_changes_resource_version_every_change(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.apply(docs(DR, vs()))
    first = store.get("VirtualService", "default", "payment")
    assert first is not None
    store.apply(docs(vs(90, 10)))
    second = store.get("VirtualService", "default", "payment")
    assert second is not None
    assert (second.metadata["resourceVersion"], second.metadata["generation"]) == ("2", 2)
    assert second.metadata["uid"] == first.metadata["uid"]
    assert second.metadata["creationTimestamp"] == first.metadata["creationTimestamp"]
    labelled = vs(90, 10).replace("{name: payment}", "{name: payment, labels: {team: pay}}")
    result = store.apply(docs(labelled))
    third = store.get("VirtualService", "default", "payment")
    assert third is not None
    assert [c.action for c in result.changes] == ["configured"]
    assert (third.metadata["resourceVersion"], third.metadata["generation"]) == ("3", 2)


def test_a_batch_is_all_or_nothing(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    with pytest.raises(InvalidConfig) as err:
        store.apply(docs(DR, vs(-1, 10)))
    assert [str(p) for p in err.value.problems] == [
        "test.yaml: VirtualService default/payment: spec.http[0].route[0].weight: must be >= 0"
    ]
    assert store.revision == 0 and store.list() == []
    assert not (tmp_path / "store.json").exists()
    assert ConfigStore(tmp_path).list() == []


def test_validation_sees_the_state_after_the_apply(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    with pytest.raises(InvalidConfig, match="subset v1 not found: no DestinationRule for host payment"):
        store.apply(docs(vs()))
    store.apply(docs(vs(), DR))  # the DestinationRule later in the same batch is enough
    with pytest.raises(InvalidConfig, match="already claimed by VirtualService default/payment"):
        store.apply(docs(vs(name="payment-2", host="payment.default.svc.cluster.local")))
    removed = DR.replace("  - {name: v2, labels: {version: v2}}\n", "")
    with pytest.raises(InvalidConfig) as err:
        store.apply(docs(removed))
    assert [p.path + ": " + p.reason for p in err.value.problems] == [
        "spec.subsets: subset v2 is still used by VirtualService default/payment at "
        "spec.http[0].route[1].destination.subset"
    ]
    store.apply(
        docs(
            vs(100, 0)
            .replace("weight: 0", "weight: 0")
            .replace("    - destination: {host: payment, subset: v2}\n      weight: 0\n", ""),
            removed,
        )
    )
    assert store.revision == 2


def test_delete_is_refused_while_a_subset_is_used(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.apply(docs(DR, vs()))
    with pytest.raises(InvalidConfig) as err:
        store.delete("DestinationRule", "default", "payment")
    assert [str(p) for p in err.value.problems] == [
        "<delete>: DestinationRule default/payment: cannot delete: subset v1 is still used by VirtualService "
        "default/payment at spec.http[0].route[0].destination.subset",
        "<delete>: DestinationRule default/payment: cannot delete: subset v2 is still used by VirtualService "
        "default/payment at spec.http[0].route[1].destination.subset",
    ]
    assert store.delete("vs", "default", "payment").revision == 2
    assert [c.action for c in store.delete("dr", "default", "payment").changes] == ["deleted"]
    assert store.revision == 3 and store.list() == []
    with pytest.raises(NotFound):
        store.delete("dr", "default", "payment")
    assert ConfigStore(tmp_path).revision == 3


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    result = store.apply(docs(DR), dry_run=True)
    assert result.dry_run and result.lines() == ["destinationrule.networking.istio.io/payment created (dry run)"]
    assert store.revision == 0 and not (tmp_path / "store.json").exists()


def test_stale_resource_version_is_a_conflict(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.apply(docs(DR, vs()))
    store.apply(docs(vs(80, 20)))
    stale = vs(70, 30).replace("{name: payment}", "{name: payment, resourceVersion: '1'}")
    with pytest.raises(InvalidConfig, match=r"metadata\.resourceVersion: the object has been modified"):
        store.apply(docs(stale))
    current = vs(70, 30).replace("{name: payment}", "{name: payment, resourceVersion: '2'}")
    assert store.apply(docs(current)).revision == 3


def test_a_torn_temporary_file_is_ignored(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    store.apply(docs(DR))
    committed = (tmp_path / "store.json").read_bytes()
    torn = tmp_path / ".store.json.tmp.4242.deadbeef"
    torn.write_bytes(committed[: len(committed) // 2])  # a crash in the middle of the next write
    reopened = ConfigStore(tmp_path)
    assert reopened.revision == 1 and [r.name for r in reopened.list()] == ["payment"]
    assert not torn.exists()
    assert (tmp_path / "store.json").read_bytes() == committed


def test_a_corrupt_store_is_reported_not_reset(tmp_path: Path) -> None:
    ConfigStore(tmp_path).apply(docs(DR))
    path = tmp_path / "store.json"
    path.write_bytes(path.read_bytes()[:-40])
    damaged = path.read_bytes()
    with pytest.raises(StoreCorrupt, match=f"{path}: cannot read the config store"):
        ConfigStore(tmp_path)
    assert path.read_bytes() == damaged
    path.write_text(json.dumps({"format": "something-else", "revision": 1, "resources": []}))
    with pytest.raises(StoreCorrupt, match="not a minimesh config store"):
        ConfigStore(tmp_path)


def test_revisions_only_grow_across_restarts(tmp_path: Path) -> None:
    seen = []
    for w in range(5):
        store = ConfigStore(tmp_path)
        store.apply(docs(DR, vs(w, 100 - w)))
        seen.append(store.revision)
    store = ConfigStore(tmp_path)
    store.delete("vs", "default", "payment")
    seen.append(store.revision)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert [h["revision"] for h in store.history()] == seen


def test_subscribers_and_waiters_hear_about_commits(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    events: list[StoreEvent] = []
    unsubscribe = store.subscribe(events.append)
    woke: list[int] = []
    waiter = threading.Thread(target=lambda: woke.append(store.wait_for_revision(0, timeout=5)))
    waiter.start()
    store.apply(docs(DR))
    waiter.join(5)
    assert woke == [1]
    assert [(e.revision, [c.action for c in e.changes]) for e in events] == [(1, ["created"])]
    store.apply(docs(DR))  # unchanged: no event
    unsubscribe()
    store.apply(docs(DR.replace("{version: v2}", "{version: v2b}")))
    assert len(events) == 1
    assert store.wait_for_revision(2, timeout=0.01) == 2


def test_a_failing_subscriber_does_not_undo_a_commit(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)

    def boom(_event: StoreEvent) -> None:
        raise RuntimeError("subscriber bug")

    store.subscribe(boom)
    assert store.apply(docs(DR)).revision == 1
    assert ConfigStore(tmp_path).revision == 1


def test_two_stores_on_one_directory_do_not_lose_writes(tmp_path: Path) -> None:
    a, b = ConfigStore(tmp_path), ConfigStore(tmp_path)
    a.apply(docs(DR))
    b.apply(docs(vs()))  # b re-reads a's write under the lock before validating (the subset exists)
    assert b.revision == 2
    assert a.refresh() is True
    assert [r.kind for r in a.list()] == ["DestinationRule", "VirtualService"]
    a.apply(docs(vs(10, 90)))
    assert a.revision == 3


def test_update_reads_the_latest_state_under_the_writer_lock(tmp_path: Path) -> None:
    """A read-modify-write sees what another store (another process) wrote since this one last looked, and
    what it returns is validated and stored like an apply; nothing changes when it raises or is refused."""
    a, b = ConfigStore(tmp_path), ConfigStore(tmp_path)
    a.apply(docs(DR))
    b.apply(docs(vs(90, 10)))  # a has not seen it

    def shift(snapshot: StoreSnapshot) -> list[Resource]:
        [old] = [r for r in snapshot.resources if r.kind == "VirtualService"]
        weights = [d["weight"] for d in old.spec["http"][0]["route"]]
        assert weights == [90, 10]  # b's write, re-read under the lock
        return docs(vs(weights[0] - 10, weights[1] + 10))

    assert a.update(shift).revision == 3
    stored = a.get("vs", "default", "payment")
    assert stored is not None and [d["weight"] for d in stored.spec["http"][0]["route"]] == [80, 20]

    def boom(_: StoreSnapshot) -> list[Resource]:
        raise LookupError("no")

    with pytest.raises(LookupError):
        a.update(boom)
    with pytest.raises(InvalidConfig):
        a.update(lambda _: docs(vs().replace("subset: v2", "subset: v9")))
    assert a.update(lambda _: docs(vs(70, 30)), dry_run=True).dry_run
    assert a.update(lambda _: []).changes == ()
    b.refresh()
    assert a.revision == b.revision == 3


def test_extra_checks_refuse_what_the_translator_cannot_do(tmp_path: Path) -> None:
    class TranslationError(ValueError):
        def __init__(self, path: str, reason: str) -> None:
            super().__init__(reason)
            self.path, self.reason = path, reason

    def no_mirrors(doc: Any) -> None:
        assert doc["apiVersion"].endswith("/v1") and doc["metadata"]["namespace"] == "default"
        for i, h in enumerate(doc["spec"].get("http", [])):
            if "mirror" in h:
                raise TranslationError(f"spec.http[{i}].mirror", "mirroring is not supported yet")

    store = ConfigStore(tmp_path, checks=[no_mirrors])
    store.apply(docs(DR))
    with pytest.raises(InvalidConfig) as err:
        store.apply(docs(vs() + "    mirror: {host: payment, subset: v2}\n"))
    assert [str(p) for p in err.value.problems] == [
        "test.yaml: VirtualService default/payment: spec.http[0].mirror: mirroring is not supported yet"
    ]
    assert store.revision == 1


def test_set_weights_rewrites_only_the_default_route(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path)
    canary = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payment}
spec:
  hosts: [payment]
  http:
  - match: [{headers: {x-canary: {exact: "true"}}}]
    route: [{destination: {host: payment, subset: v2}}]
  - route: [{destination: {host: payment, subset: v1}}]
"""
    store.apply(docs(DR, canary))
    result = store.set_weights("payment", "default", {"v1": 90, "v2": 10})
    assert [c.action for c in result.changes] == ["configured"]
    stored = store.get("vs", "default", "payment")
    assert stored is not None
    assert stored.spec["http"][0]["match"] == [{"headers": {"x-canary": {"exact": "true"}}}]
    assert [(d["destination"]["subset"], d["weight"]) for d in stored.spec["http"][1]["route"]] == [
        ("v1", 90),
        ("v2", 10),
    ]
    with pytest.raises(InvalidConfig, match="subset v3 not found in the DestinationRule of host payment"):
        store.set_weights("payment", "default", {"v3": 100})


def test_implicit_subsets_stand_in_for_a_missing_destination_rule(tmp_path: Path) -> None:
    topology = {"payment.default.svc.cluster.local": ["v1", "v2"]}
    store = ConfigStore(tmp_path, implicit_subsets=topology.get)
    assert store.apply(docs(vs())).revision == 1  # no DestinationRule: the topology's subsets count
    assert store.set_weights("payment", "default", {"v2": 100}).revision == 2
    with pytest.raises(InvalidConfig, match="subset v3 not found: no DestinationRule for host payment"):
        store.apply(docs(vs().replace("subset: v2", "subset: v3")))
    with pytest.raises(InvalidConfig, match="subset canary not found in the DestinationRule of host payment"):
        store.set_weights("payment", "default", {"canary": 100})


def test_apply_of_100_resources_is_fast(tmp_path: Path) -> None:
    load_crds()  # schemas are parsed once per process; the budget is for validation and the write
    batch = []
    for i in range(50):
        batch.append(DR.replace("name: payment}", f"name: svc{i}}}").replace("host: payment", f"host: svc{i}"))
        batch.append(vs(name=f"svc{i}", host=f"svc{i}").replace("host: payment,", f"host: svc{i},"))
    resources = docs(*batch)
    store = ConfigStore(tmp_path)
    start = time.perf_counter()
    result = store.apply(resources)
    elapsed = time.perf_counter() - start
    assert len(result.changes) == 100 and result.revision == 1
    assert elapsed < 1.0, f"apply of 100 resources took {elapsed:.3f}s"


CRASHER = """
import sys, textwrap
from mesh_ctl.resources import load_documents
from mesh_ctl.store import ConfigStore
store = ConfigStore(sys.argv[1])
DR = {dr!r}
VS = {vs!r}
store.apply(load_documents(DR, "dr.yaml"))
for w in range(1, 400):
    store.apply(load_documents(VS.replace("weight: 50", "weight: %d" % w, 1), "vs.yaml"))
    print(store.revision, w, flush=True)
"""


def test_a_killed_writer_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    """A real process applying in a loop is SIGKILLed mid-stream; every acknowledged apply is on disk."""
    script = CRASHER.format(dr=textwrap.dedent(DR), vs=textwrap.dedent(vs()))
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    acked: tuple[int, int] | None = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            revision, weight = map(int, line.split())
            acked = (revision, weight)
            if weight >= 25:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert acked is not None, "the writer never acknowledged an apply"
    store = ConfigStore(tmp_path)  # loads whatever the kill left: the last committed snapshot
    assert store.revision >= acked[0]
    stored = store.get("vs", "default", "payment")
    assert stored is not None
    weight = stored.spec["http"][0]["route"][0]["weight"]
    assert weight >= acked[1] and store.revision == weight + 1
    assert not list(tmp_path.glob(".store.json.tmp*"))

"""The agent's private directory: modes, names per issuance, removal of unused files (pyproxy.agent.store)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2

from pyproxy.agent.store import SecretDirectory, default_parent, files_in_use
from pyproxy.config import model as m
from pyproxy.xds.state import XdsState
from tests.unit.agent import sds


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    old = os.umask(0)  # the modes must not depend on the umask
    try:
        yield
    finally:
        os.umask(old)


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_directory_0700_files_0600_new_names_each_time(tmp_path: Path, permissive_umask: None) -> None:
    store = SecretDirectory(str(tmp_path))
    try:
        assert mode(store.path) == 0o700 and Path(store.path).parent == tmp_path
        first = store.write(b"key1", b"chain1", b"root1")
        second = store.write(b"key2", b"chain2", b"root2")
        assert set(first.paths).isdisjoint(second.paths)  # a snapshot's files are never rewritten
        for path in (*first.paths, *second.paths):
            assert mode(path) == 0o600 and os.path.dirname(path) == store.path
        assert [Path(p).read_bytes() for p in second.paths] == [b"key2", b"chain2", b"root2"]
    finally:
        store.close()
    assert not os.path.exists(store.path)


def test_prune_keeps_the_current_files_and_those_in_use(tmp_path: Path) -> None:
    store = SecretDirectory(str(tmp_path))
    try:
        a = store.write(b"a", b"a", b"a")
        store.commit(a)
        b = store.write(b"b", b"b", b"b")
        store.commit(b)
        # A listener still warming keeps the old chain and root (not the old key: made-up but possible).
        removed = store.prune({a.cert_chain, a.root_cert, "/elsewhere/ca.pem"})
        assert removed == [a.key]
        assert all(os.path.exists(p) for p in (*b.paths, a.cert_chain, a.root_cert))
        assert sorted(store.prune(set())) == sorted([a.cert_chain, a.root_cert])
        assert sorted(os.listdir(store.path)) == sorted(os.path.basename(p) for p in b.paths)
    finally:
        store.close()


def test_discard_removes_an_issuance_that_was_never_installed(tmp_path: Path) -> None:
    store = SecretDirectory(str(tmp_path))
    files = store.write(b"k", b"c", b"r")
    store.discard(files)
    assert os.listdir(store.path) == []
    store.close()
    store.close()  # idempotent
    with pytest.raises(RuntimeError):
        store.write(b"k", b"c", b"r")


def test_default_parent_is_tmpfs_when_there_is_one() -> None:
    parent = default_parent()
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        assert parent == "/dev/shm"
    store = SecretDirectory()
    try:
        assert mode(store.path) == 0o700
        if parent:
            assert store.path.startswith(parent + "/pyproxy-agent-")
    finally:
        store.close()


def test_files_in_use_walks_listeners_and_clusters() -> None:
    state = XdsState(sds.static(), base_pb2.Node(id="n"))
    state.handle(sds.response(sds.CLUSTER, "c1", "1", sds.mtls_cluster()))
    state.handle(sds.response(sds.LISTENER, "l1", "2", sds.inbound_listener()))
    snap = state.install_local_secrets([m.TlsSecret("default", "/s/chain", "/s/key"),
                                        m.ValidationSecret("ROOTCA", "/s/root")], lambda s: None)
    assert files_in_use(snap) == {"/s/chain", "/s/key", "/s/root"}
    assert files_in_use(sds.static()) == set()

"""Fixtures of the protocol suite: the backend and the target as real processes, a raw peer per test.

The backend and the target are session-scoped (starting a proxy per case would cost minutes); every test
that touches the target is followed by a check that the target process is alive and that a fresh,
well-behaved connection still gets a correct gRPC response. If not, the test errors and the target is
restarted so that the next test starts clean.

``@pytest.mark.deviation("nginx", reason=...)`` marks an expected failure for one target only (where that
implementation legitimately differs from h2spec's expectation). It is refused for ``pyproxy``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.protocol.grpc_shapes import check_serving
from tests.protocol.h2peer import H2Peer
from tests.protocol.targets import TARGETS, Backend, Target, start_target
from tests.support.procs import ProcessGroup

TARGET = os.environ.get("H2_TARGET", "pyproxy")
HERE = Path(__file__).parent
DEFAULT_TEST_TIMEOUT = 60


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "deviation(target, reason, strict=True): expected failure on that target only (never pyproxy)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE not in item.path.parents:
            continue
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT))
        for mark in item.iter_markers("deviation"):
            target = mark.args[0]
            if target not in TARGETS or target == "pyproxy":
                raise pytest.UsageError(
                    f"{item.nodeid}: deviation() is for nginx/h2server/external only, not {target!r}"
                )
            if target == TARGET:
                reason = f"{target} deviates: {mark.kwargs['reason']}"
                item.add_marker(pytest.mark.xfail(reason=reason, strict=mark.kwargs.get("strict", True)))


class TargetHandle:
    """The current target process; restarted when a test leaves it dead or not serving."""

    def __init__(self, name: str, group: ProcessGroup, backend: Backend) -> None:
        self.name = name
        self.group = group
        self.backend = backend
        self.current = start_target(name, group, backend.port)
        self.restarts = 0

    def restart(self) -> None:
        if self.current.process is None:
            return  # external: not ours to restart
        self.current.process.stop(grace=2)
        self.current = start_target(self.name, self.group, self.backend.port)
        self.restarts += 1

    def logs(self) -> str:
        process = self.current.process
        return process.output()[-4000:] if process is not None else ""


@pytest.fixture(scope="session")
def process_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessGroup]:
    group = ProcessGroup(tmp_path_factory.mktemp("h2-protocol"))
    try:
        yield group
    finally:
        group.close()


@pytest.fixture(scope="session")
def backend(process_group: ProcessGroup) -> Iterator[Backend]:
    address = os.environ.get("H2_BACKEND_ADDR") if TARGET == "external" else None
    host, _, port = (address or "").rpartition(":")
    backend = Backend(process_group, host or "127.0.0.1", int(port) if port else None)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(scope="session")
def target_handle(process_group: ProcessGroup, backend: Backend) -> TargetHandle:
    return TargetHandle(TARGET, process_group, backend)


@pytest.fixture
def target(target_handle: TargetHandle) -> Target:
    if not target_handle.current.alive():
        target_handle.restart()
    return target_handle.current


@pytest.fixture(autouse=True)
def target_still_serves(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that used the target: the process is alive and a fresh connection is served."""
    if "target" not in request.fixturenames:
        yield
        return
    handle: TargetHandle = request.getfixturevalue("target_handle")
    yield
    target = handle.current
    if not target.alive():
        logs = handle.logs()
        handle.restart()
        pytest.fail(f"the {target.name} process died during this test\n{logs}")
    problem = check_serving(target.host, target.port)
    if problem is not None:
        logs = handle.logs()
        handle.restart()
        pytest.fail(f"after this test, {problem}\n{logs}")


@pytest.fixture
def peer(target: Target) -> Iterator[H2Peer]:
    """A fresh TCP connection to the target; nothing sent yet (tests call ``peer.handshake()``)."""
    with H2Peer(target.host, target.port) as p:
        yield p

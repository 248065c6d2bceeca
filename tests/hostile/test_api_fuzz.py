"""The management API fuzzed from its published OpenAPI document (issue 9.1/9.8): schemathesis generates
requests for every operation (valid and invalid bodies and queries), sends them with the owner's credential
to a real `mesh_ctl serve`, and no answer may be a server error. Bounded: a few dozen examples per operation,
no shrinking of passing runs, a deadline per example."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from mesh_ctl.xds.openapi import document
from tests.integration.test_control_plane import ControlPlane, free_block
from tests.support.procs import ProcessGroup, free_port

pytestmark = pytest.mark.timeout(300)

schema = schemathesis.openapi.from_dict(document())


@pytest.fixture(scope="module")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    work = tmp_path_factory.mktemp("fuzz")
    group = ProcessGroup(work)
    try:
        cp = ControlPlane(group, work / "run", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", free_block())
        cp.start()
        yield cp
    finally:
        group.close()


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_request_makes_a_server_error(case: schemathesis.Case[Any], control_plane: ControlPlane) -> None:
    token = (Path(control_plane.run_dir) / "api-token").read_text().strip()
    response = case.call(base_url=f"http://{control_plane.api}", headers={"Authorization": f"Bearer {token}"},
                         timeout=10)
    assert response.status_code < 500, (case.method, case.path, case.body, response.status_code, response.text[:500])
    assert control_plane.proc is not None and control_plane.proc.alive()

"""The management API's answers to bad files: every problem of every file (unparsable ones do not hide the
others' validation errors), in file order, with the counts the CLI's summary line needs; nothing stored."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh_ctl.client import ControlPlaneError
from mesh_ctl.registry import Registry
from tests.unit.xds_server.conftest import run
from tests.unit.xds_server.test_control_plane import DR_YAML, VS_YAML, call, control_plane

BROKEN = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x\n"
BAD_VS = VS_YAML.replace("weight: 50}\n", "weigth: 50}\n", 1)
FILES = [{"origin": "dr.yaml", "text": DR_YAML}, {"origin": "broken.yaml", "text": BROKEN},
         {"origin": "vs.yaml", "text": BAD_VS}, {"origin": "empty.yaml", "text": ""}]
PROBLEMS = [
    "broken.yaml: document #1: line 4, column 1: did not find expected ',' or '}'",
    "vs.yaml: VirtualService default/payment: spec.http[0].route[0].weigth: unknown field",
    "empty.yaml: the file is empty",
]
COUNTS = {"files": 4, "documents": 3, "invalid_documents": 2, "file_errors": 1}


def test_apply_and_analyze_name_every_problem_of_every_file(registry: Registry, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with control_plane(registry, tmp_path) as (cp, api, _):
            with pytest.raises(ControlPlaneError) as info:
                await call(api.apply, FILES)
            assert info.value.status == 422
            assert info.value.problems == PROBLEMS
            assert info.value.counts == COUNTS
            assert cp.store.revision == 0 and not cp.store.list()

            analyzed = await call(api.analyze, FILES)
            assert analyzed["errors"] == PROBLEMS
            assert analyzed["counts"] == COUNTS

            good = await call(api.analyze, FILES[:1])
            assert (good["errors"], good["counts"]) == ([], {"files": 1, "documents": 1, "invalid_documents": 0,
                                                             "file_errors": 0})
            applied = await call(api.apply, FILES[:1])
            assert applied["lines"] == ["destinationrule.networking.istio.io/payment created"]

    run(scenario)

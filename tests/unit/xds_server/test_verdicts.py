"""``apply``'s validation verdicts as istiod's webhook counts them: one per resource, Istio's labels and
reasons, with the real loader and the real store's validator deciding."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.metrics_core import Metric

from mesh_ctl.monitoring import ControlPlaneMetrics, render
from mesh_ctl.resources import InvalidConfig, ValidationProblem
from mesh_ctl.resources.loader import load_files
from mesh_ctl.store import ConfigStore
from mesh_ctl.xds.verdicts import record_validation
from tests.support.metrics import families, value

GOOD = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: good}
spec: {hosts: [payment], http: [{route: [{destination: {host: payment}}]}]}
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: good}
spec: {host: payment}
"""
BAD = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad}
spec: {hosts: [payment], http: [{route: [{destination: {host: payment}, weigth: 1}]}]}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec: {}
"""
BROKEN = "apiVersion: [unclosed\n"


def verdicts(tmp_path: Path, *files: tuple[str, str]) -> dict[str, Metric]:
    loaded = load_files(files)
    problems: list[ValidationProblem] = []
    try:
        ConfigStore(tmp_path).apply(loaded.resources, True)
    except InvalidConfig as e:
        problems = list(e.problems)
    m = ControlPlaneMetrics(process=False)
    record_validation(m, loaded.resources, [*loaded.problems, *problems])
    return families(render(m.registry, m.bare_counters))


def test_valid_resources_pass_with_their_group_version_and_plural(tmp_path: Path) -> None:
    f = verdicts(tmp_path, ("good.yaml", GOOD))
    assert value(f, "galley_validation_passed", group="networking.istio.io", version="v1",
                 resource="virtualservices") == 1
    assert value(f, "galley_validation_passed", group="networking.istio.io", version="v1beta1",
                 resource="destinationrules") == 1
    assert value(f, "galley_validation_failed") is None


def test_each_failed_resource_counts_once_with_istios_reason(tmp_path: Path) -> None:
    f = verdicts(tmp_path, ("bad.yaml", BAD), ("good.yaml", GOOD), ("broken.yaml", BROKEN))
    assert value(f, "galley_validation_failed", group="networking.istio.io", version="v1",
                 resource="virtualservices", reason="invalid_resource") == 1  # however many problems
    assert value(f, "galley_validation_failed", resource="gateway", reason="unknown_type") == 1
    assert value(f, "galley_validation_failed", group="", reason="yaml_decode_error") == 1
    assert value(f, "galley_validation_passed") == 2  # the good file's resources

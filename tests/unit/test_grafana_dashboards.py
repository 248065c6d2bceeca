"""The Grafana dashboards' JSON and provisioning files (compose/grafana/), checked without a Grafana: the JSON is
what generate.py writes, its structure is sound (tests.support.grafana.structure_problems, itself shown to catch
each kind of mistake) and the provisioning files point at the datasource and the directory the dashboards use.
Their queries are run against a real Prometheus by tests/integration/test_dashboards.py."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.support import grafana
from tests.support.procs import REPO_ROOT

GRAFANA = REPO_ROOT / "compose" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def datasource() -> dict[str, Any]:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert doc["apiVersion"] == 1 and len(doc["datasources"]) == 1, doc
    source: dict[str, Any] = doc["datasources"][0]
    return source


def test_the_json_files_are_what_generate_py_writes() -> None:
    rendered = generator().render()
    assert sorted(rendered) == [p.name for p in DASHBOARDS] == sorted(
        ["mesh.json", "service.json", "workload.json", "control-plane.json"])
    for path in DASHBOARDS:
        assert path.read_text() == rendered[path.name], f"{path} is stale: run python compose/grafana/generate.py"


def test_the_datasource_provisioning_names_the_uid_every_panel_uses() -> None:
    source = datasource()
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090", source
    assert source["access"] == "proxy" and source["isDefault"] is True, source
    assert source["uid"] == generator().DATASOURCE_UID == "minimesh-prometheus"


def test_the_dashboard_provisioning_loads_the_mounted_directory() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "minimesh.yaml").read_text())
    assert doc["apiVersion"] == 1, doc
    [provider] = doc["providers"]
    assert provider["type"] == "file" and provider["folder"] == "minimesh", provider
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/minimesh", provider


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_structure(path: Path) -> None:
    dashboard = grafana.load(path)
    assert grafana.structure_problems(dashboard, datasource()["uid"]) == []
    assert grafana.queries(dashboard), "a dashboard with no query"


def test_dashboard_uids_and_titles_are_unique() -> None:
    docs = [grafana.load(p) for p in DASHBOARDS]
    assert len({d["uid"] for d in docs}) == len({d["title"] for d in docs}) == len(docs)


def test_panels_of_collapsed_rows_are_walked() -> None:
    service = grafana.load(GRAFANA / "dashboards" / "service.json")
    [row] = [p for p in service["panels"] if p.get("collapsed")]
    assert row["panels"] and all(p in grafana.data_panels(service) for p in row["panels"])


def broken(change: str) -> list[str]:
    """The problems found in the service dashboard after one mistake."""
    d = copy.deepcopy(grafana.load(GRAFANA / "dashboards" / "service.json"))
    data = grafana.data_panels(d)
    if change == "duplicate id":
        data[1]["id"] = data[0]["id"]
    elif change == "datasource":
        data[0]["targets"][0]["datasource"] = {"type": "prometheus", "uid": "other"}
    elif change == "undefined variable":
        data[0]["targets"][0]["expr"] += ' + on() sum(up{job="$job"})'
    elif change == "overlap":
        data[1]["gridPos"] = dict(data[0]["gridPos"])
    elif change == "outside the grid":
        data[0]["gridPos"]["x"] = 20
    elif change == "no gridPos":
        del data[0]["gridPos"]
    elif change == "variable order":
        d["templating"]["list"][0]["query"] = "label_values(istio_requests_total{x=\"$later\"}, y)"
    return grafana.structure_problems(d, "minimesh-prometheus")


@pytest.mark.parametrize("change", ["duplicate id", "datasource", "undefined variable", "overlap",
                                    "outside the grid", "no gridPos", "variable order"])
def test_the_structure_check_catches(change: str) -> None:
    assert broken(change), change


def test_grafana_interval_variables() -> None:
    # $__rate_interval = max($__interval + scrape interval, 4 x scrape interval)
    assert grafana.Intervals(1, 1, 300).values()["__rate_interval"] == "4s"
    assert grafana.Intervals(15, 15, 3600).values()["__rate_interval"] == "60s"
    assert grafana.Intervals(60, 15, 3600).values()["__rate_interval"] == "75s"
    text = 'rate(x{a="$service",b="${workload}",c="[[ns]]"}[$__rate_interval])'
    assert grafana.variables_used(text) == {"service", "workload", "ns", "__rate_interval"}
    out = grafana.interpolate(text, {"service": "s", "workload": "w", "ns": "n"}, grafana.Intervals(1, 1, 60))
    assert out == 'rate(x{a="s",b="w",c="n"}[4s])'
    with pytest.raises(KeyError, match="service"):
        grafana.interpolate(text, {}, grafana.Intervals(1, 1, 60))

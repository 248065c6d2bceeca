"""Loading as Envoy does: file format by extension, YAML and JSON equivalence, ``--config-yaml`` merged with
proto MergeFrom semantics, ``--service-node``/``--service-cluster``, YAML details, ``validate_bootstrap``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from google.protobuf import text_format

import pyproxy.config.translate  # noqa: F401 - registers the typed_config types for text_format
from pyproxy.config import model as m
from pyproxy.config.bootstrap import load_bootstrap, validate_bootstrap
from pyproxy.config.errors import ConfigError, Problem
from pyproxy.config.material import MaterialStore
from pyproxy.config.protojson import parse_message
from tests.support.procs import REPO_ROOT
from tests.unit.config.conftest import BOOTSTRAPS, CLUSTER

Render = Callable[[str], Path]


def test_yaml_and_json_give_the_same_snapshot(material: MaterialStore) -> None:
    from_yaml = load_bootstrap(str(BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml"), material=material)
    # The JSON twin spells fields in lowerCamelCase (protobuf's JSON names): both spellings are accepted.
    json_text = (BOOTSTRAPS / "envoy_docs_grpc_proxy.json").read_text()
    assert '"connectTimeout"' in json_text and '"connect_timeout"' not in json_text
    from_json = load_bootstrap(str(BOOTSTRAPS / "envoy_docs_grpc_proxy.json"), material=material)
    assert from_json.listeners == from_yaml.listeners
    assert from_json.clusters == from_yaml.clusters
    assert from_json.admin == from_yaml.admin
    assert from_json.runtime == from_yaml.runtime
    assert from_json.source == from_yaml.source
    assert from_json.version == from_yaml.version


def test_binary_and_text_proto_files(tmp_path: Path, material: MaterialStore) -> None:
    data = yaml.safe_load((BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml").read_text())
    proto = parse_message(data, bootstrap_pb2.Bootstrap())
    reference = load_bootstrap(str(BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml"), material=material)
    pb = tmp_path / "bootstrap.pb"
    pb.write_bytes(proto.SerializeToString())
    pb_text = tmp_path / "bootstrap.pb_text"
    pb_text.write_text(text_format.MessageToString(proto))
    for path in (pb, pb_text):
        snap = load_bootstrap(str(path), material=material)
        assert snap.clusters == reference.clusters
        assert snap.listeners == reference.listeners


def test_unknown_extension_is_read_as_json_like_envoy(tmp_path: Path, material: MaterialStore) -> None:
    path = tmp_path / "bootstrap.conf"
    path.write_text((BOOTSTRAPS / "envoy_docs_grpc_proxy.json").read_text())
    assert "backend_grpc_service" in load_bootstrap(str(path), material=material).clusters
    path.write_text((BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml").read_text())
    with pytest.raises(ConfigError) as info:
        load_bootstrap(str(path), material=material)
    assert info.value.problems[0].reason.startswith(f"{path}: invalid JSON: ")


def test_config_yaml_is_merged_over_the_file(material: MaterialStore) -> None:
    overlay = """
node: {id: overlay-node}
admin:
  address: {socket_address: {port_value: 9999}}
static_resources:
  clusters:
  - name: extra
    type: STATIC
    http2_protocol_options: {}
    load_assignment:
      cluster_name: extra
      endpoints:
      - lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]
"""
    snap = load_bootstrap(str(BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml"), overlay, material=material)
    assert snap.node.id == "overlay-node"
    # Scalars are replaced, sub-messages merged (the address keeps 0.0.0.0), lists appended.
    assert snap.admin.address == m.SocketAddress("0.0.0.0", 9999)
    assert snap.admin.access_log_path == "/tmp/admin_access.log"
    assert list(snap.clusters) == ["backend_grpc_service", "extra"]


def test_config_yaml_alone(material: MaterialStore) -> None:
    text = (BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml").read_text()
    snap = load_bootstrap(None, text, material=material)
    assert list(snap.listeners) == ["0.0.0.0_8811"]


def test_config_yaml_problems_name_their_origin(material: MaterialStore) -> None:
    with pytest.raises(ConfigError) as info:
        load_bootstrap(
            str(BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml"), "admin: {adress: {}}", material=material
        )
    assert info.value.problems == [
        Problem(
            "--config-yaml admin.adress",
            "unknown field: envoy.config.bootstrap.v3.Admin has no field 'adress' (did you mean 'address'?)",
        )
    ]


def test_config_yaml_merge_can_create_a_problem(material: MaterialStore) -> None:
    # Appending a second cluster with the same name is valid YAML but an invalid bootstrap.
    overlay = "static_resources: {clusters: [{name: backend_grpc_service, http2_protocol_options: {}}]}"
    with pytest.raises(ConfigError) as info:
        load_bootstrap(str(BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml"), overlay, material=material)
    assert (
        Problem(
            "static_resources.clusters[1].name",
            f"duplicate cluster name 'backend_grpc_service' (also {CLUSTER})",
        )
        in info.value.problems
    )


def test_service_node_and_cluster_override_the_bootstrap(render: Render, material: MaterialStore) -> None:
    snap = load_bootstrap(
        str(render("sidecar_server_mtls.yaml")), service_node="n1", service_cluster="c1", material=material
    )
    assert (snap.node.id, snap.node.cluster) == ("n1", "c1")
    assert snap.node.meta("WORKLOAD_NAME") == "payment-v1"


def test_no_configuration_at_all() -> None:
    with pytest.raises(ConfigError) as info:
        load_bootstrap(None)
    assert info.value.problems == [
        Problem("", "no configuration: give a bootstrap file (-c) or --config-yaml")
    ]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_bootstrap(str(tmp_path / "nope.yaml"))
    assert str(info.value) == f"cannot read {tmp_path / 'nope.yaml'}: No such file or directory"


def _write(tmp_path: Path, text: str, name: str = "b.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, "static_resources: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_bootstrap(path)
    assert str(info.value).startswith(f"{path}: invalid YAML: ")


def test_duplicate_yaml_keys_are_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, "node:\n  id: a\n  id: b\n")
    with pytest.raises(ConfigError) as info:
        load_bootstrap(path)
    assert info.value.problems == [Problem("", f"{path}: line 3: duplicate key 'id'")]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError) as info:
        load_bootstrap(path)
    assert info.value.problems == [Problem("", f"{path}: the bootstrap must be a mapping at the top level")]


def test_yaml_ignore_tag_and_anchors(tmp_path: Path, material: MaterialStore) -> None:
    # Envoy drops keys tagged !ignore: a common place to park YAML anchors.
    text = """
!ignore defs:
  h2: &h2
    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
      "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
      explicit_http_config: {http2_protocol_options: {}}
node: {id: "2001-12-14", cluster: "1:30"}
static_resources:
  clusters:
  - name: a
    type: STATIC
    typed_extension_protocol_options: *h2
"""
    snap = load_bootstrap(_write(tmp_path, text), material=material)
    assert snap.clusters["a"].http2 == m.Http2Options()
    # No YAML 1.1 timestamps or sexagesimal numbers (yaml-cpp has neither): these stay strings.
    assert (snap.node.id, snap.node.cluster) == ("2001-12-14", "1:30")


def test_unquoted_yaml_values_that_look_like_other_types(tmp_path: Path, material: MaterialStore) -> None:
    text = "node: {id: 2001-12-14, cluster: 1:30}\n"
    snap = load_bootstrap(_write(tmp_path, text), material=material)
    assert (snap.node.id, snap.node.cluster) == ("2001-12-14", "1:30")


def test_validate_bootstrap(tmp_path: Path, render: Render) -> None:
    assert validate_bootstrap(str(render("grpc_interop_envoy.yaml"))) == []
    bad = tmp_path / "bad.json"
    data = json.loads((BOOTSTRAPS / "envoy_docs_grpc_proxy.json").read_text())
    data["staticResources"]["clusters"][0]["lbPolicy"] = "MAGLEV"
    data["dynamicResources"] = {"cdsConfig": {"ads": {}}}
    bad.write_text(json.dumps(data))
    assert validate_bootstrap(str(bad)) == [
        "dynamic_resources.ads_config: is required: pyproxy takes xDS over one ADS stream "
        "(api_type: GRPC, grpc_services: [{envoy_grpc: {cluster_name: ...}}])",
        f"{CLUSTER}.lb_policy: MAGLEV is not supported (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM)",
    ]


def test_validate_bootstrap_leaves_no_material_behind(tmp_path: Path, pki: object) -> None:
    before = set(os.listdir(tempfile.gettempdir()))
    text = (BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml").read_text()
    assert validate_bootstrap(_write(tmp_path, text)) == []
    leftovers = {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("pyproxy-")}
    assert leftovers == set()


def test_pyproxy_mode_validate_reports_paths(tmp_path: Path) -> None:
    """The real CLI: ``pyproxy --mode validate -c`` exits 1 and prints the field path (a short process)."""
    good = _write(tmp_path, (BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml").read_text(), "good.yaml")
    bad = _write(
        tmp_path,
        (BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml")
        .read_text()
        .replace("lb_policy: round_robin", "lb_policy: maglev"),
        "bad.yaml",
    )
    ok = subprocess.run(
        [sys.executable, "-m", "pyproxy", "--mode", "validate", "-c", good],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run(
        [sys.executable, "-m", "pyproxy", "--mode", "validate", "-c", bad],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 1
    assert f"{CLUSTER}.lb_policy: MAGLEV is not supported" in failed.stderr


def test_allow_unknown_static_fields_drops_them_with_a_warning(tmp_path: Path, material: MaterialStore) -> None:
    text = (BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml").read_text() + "\nnot_a_bootstrap_field: 1\n"
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_bootstrap(path, material=material)
    assert [p.path for p in info.value.problems] == ["not_a_bootstrap_field"]
    snap = load_bootstrap(path, allow_unknown_fields=True, material=material)
    assert "not_a_bootstrap_field: unknown field ignored (--allow-unknown-static-fields)" in snap.warnings
    assert snap.listeners  # everything else was read


def test_service_zone_overrides_the_locality(render: Render, material: MaterialStore) -> None:
    snap = load_bootstrap(str(render("sidecar_server_mtls.yaml")), service_zone="zone-a", material=material)
    assert snap.source["node"]["locality"]["zone"] == "zone-a"  # type: ignore[index]


def test_envoy_launch_flags_are_accepted_and_admin_address_path_is_written(tmp_path: Path) -> None:
    """An Envoy launch line works unchanged: admin on port 0, its real address written where Envoy writes it;
    ``--mode init_only`` binds and exits 0; ``--hot-restart-version`` answers."""
    text = (BOOTSTRAPS / "envoy_docs_grpc_proxy.yaml").read_text()
    doc = yaml.safe_load(text)
    doc["admin"] = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}
    for listener in doc["static_resources"]["listeners"]:
        listener["address"]["socket_address"].update(address="127.0.0.1", port_value=0)
    path = _write(tmp_path, yaml.safe_dump(doc))
    envoy_flags = ["--concurrency", "2", "--base-id", "7", "--disable-hot-restart", "--drain-strategy", "immediate",
                   "--service-zone", "z", "--local-address-ip-version", "v4", "--file-flush-interval-msec", "100",
                   "--log-format", "[%Y] %v", "--component-log-level", "upstream:debug", "--enable-core-dump",
                   "--ignore-unknown-dynamic-fields", "-l", "warning"]
    run = [sys.executable, "-m", "pyproxy", "-c", path, *envoy_flags]
    init = subprocess.run([*run, "--mode", "init_only"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          check=False)
    assert init.returncode == 0, init.stderr
    version = subprocess.run([sys.executable, "-m", "pyproxy", "--hot-restart-version"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0 and "disabled" in version.stdout
    address_file = tmp_path / "admin.address"
    proc = subprocess.Popen([*run, "--admin-address-path", str(address_file)], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not address_file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert address_file.exists(), proc.stderr.read() if proc.poll() is not None and proc.stderr else "no file"
        host, port = address_file.read_text().rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        with urllib.request.urlopen(f"http://{host}:{port}/ready", timeout=5) as reply:
            assert reply.read() == b"LIVE\n"
    finally:
        proc.terminate()
        proc.wait(timeout=10)

"""What every sidecar gets besides routing: access logs (Istio's meshConfig.accessLogFile/accessLogFormat) and
upstream connections made from its workload's own address (its "pod IP")."""

from __future__ import annotations

import dataclasses

from mesh_ctl.registry import Registry
from mesh_ctl.translate import LISTENER_TYPE
from mesh_ctl.translate.telemetry import DEFAULT_ACCESS_LOG_FORMAT, FILE_ACCESS_LOG_TYPE
from pyproxy.config.material import MaterialStore
from tests.unit.translate.conftest import destination_rule
from tests.unit.translate.helpers import Json, as_dict, clusters, proxyless, pyproxy_problems, sidecar


def _hcm_configs(pr: object, listener: str) -> list[Json]:
    doc = as_dict(pr.of(LISTENER_TYPE)[listener])  # type: ignore[attr-defined]
    return [f["typed_config"] for chain in doc["filter_chains"] for f in chain["filters"]]


def test_every_connection_manager_logs_to_stdout_in_istios_format(default_registry: Registry,
                                                                   material: MaterialStore) -> None:
    client, server = sidecar(default_registry, []), sidecar(default_registry, [], workload="payment-v1")
    configs = _hcm_configs(client, "virtualOutbound") + _hcm_configs(server, "virtualInbound")
    assert len(configs) >= 2
    for hcm in configs:
        [log] = hcm["access_log"]
        assert log["name"] == "envoy.access_loggers.file"
        assert log["typed_config"] == {"@type": FILE_ACCESS_LOG_TYPE, "path": "/dev/stdout", "log_format": {
            "text_format_source": {"inline_string": DEFAULT_ACCESS_LOG_FORMAT}}}
    assert pyproxy_problems(client, material) == ([], []) and pyproxy_problems(server, material) == ([], [])


def test_access_logs_off_or_in_a_custom_format(default_registry: Registry) -> None:
    off = dataclasses.replace(default_registry, access_log_file="")
    assert all("access_log" not in hcm for hcm in _hcm_configs(sidecar(off, []), "virtualOutbound"))
    custom = dataclasses.replace(default_registry, access_log_format="%REQ(:PATH)% %GRPC_STATUS%")
    [hcm] = _hcm_configs(sidecar(custom, []), "virtualOutbound")
    assert hcm["access_log"][0]["typed_config"]["log_format"] == {
        "text_format_source": {"inline_string": "%REQ(:PATH)% %GRPC_STATUS%\n"}}


def test_sidecar_upstream_connections_come_from_the_workload_address(default_registry: Registry) -> None:
    client = default_registry.workload("client", "default")
    assert client is not None
    dr = destination_rule({"host": "payment", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                          {"name": "v2", "labels": {"version": "v2"}}]})
    found = clusters(sidecar(default_registry, [dr]))
    outbound = {n: c for n, c in found.items() if n.startswith("outbound|")}
    assert len(outbound) == 3  # the service and its subsets v1, v2
    for c in outbound.values():
        assert c["upstream_bind_config"] == {"source_address": {"address": client.address, "port_value": 0}}
    # A proxyless client is not a sidecar: its connections are grpcio's own.
    assert all("upstream_bind_config" not in c for c in clusters(proxyless(default_registry, [])).values())

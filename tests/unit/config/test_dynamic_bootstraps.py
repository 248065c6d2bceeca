"""Bootstraps with ``dynamic_resources`` (ADS): the Istio-style sidecar bootstrap and the go-control-plane
style one load into the model we expect; every variant pyproxy cannot honour is rejected with its exact field
path and reason; ``pyproxy --mode validate`` says the same from the command line."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pyproxy.config import model as m
from pyproxy.config import xds_resources as xr
from pyproxy.config.bootstrap import load_bootstrap, parse_bootstrap_dict
from pyproxy.config.errors import ConfigError, Problem
from pyproxy.config.material import MaterialStore
from pyproxy.config.translate.cluster_options import NEEDS_HTTP2
from tests.support.procs import ProcessGroup
from tests.unit.config.conftest import BOOTSTRAPS, load_fixture_dict

Bootstrap = dict[str, Any]
DR = "dynamic_resources"
ADS = f"{DR}.ads_config"
GS = f"{ADS}.grpc_services[0]"
ADS_CLUSTER = f"{GS}.envoy_grpc.cluster_name"
GRPC_STYLE_HCM = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
GRPC_STYLE_CTC = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.common_tls_context"
EDS_CLUSTER = "static_resources.clusters[1]"
ADS_SOURCE = "{ads: {}, resource_api_version: V3}"
DELTA = "incremental (delta) xDS is not supported (supported: GRPC, state of the world)"
V2 = "the v2 xDS API is not supported (use V3)"
FILE_SOURCE = f"file-based config sources are not supported: pyproxy takes xDS over ADS only (use {ADS_SOURCE})"
H2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}
SDS_ADS = {"ads": {}, "resource_api_version": "V3"}
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


@pytest.fixture
def istio() -> Bootstrap:
    return copy.deepcopy(load_fixture_dict("istio_sidecar_ads.yaml"))


@pytest.fixture
def grpc_style() -> Bootstrap:
    return copy.deepcopy(load_fixture_dict("grpc_style_ads.yaml"))


def _ads(d: Bootstrap) -> dict[str, Any]:
    ads: dict[str, Any] = d["dynamic_resources"]["ads_config"]
    return ads


def _xds_cluster(d: Bootstrap) -> dict[str, Any]:
    cluster: dict[str, Any] = d["static_resources"]["clusters"][0]
    return cluster


def _add_cluster(d: Bootstrap, cluster: dict[str, Any]) -> dict[str, Any]:
    d["static_resources"]["clusters"].append(cluster)
    return cluster


def _eds_cluster(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "EDS",
        "eds_cluster_config": {"eds_config": SDS_ADS},
        "typed_extension_protocol_options": H2_OPTIONS,
    }


def _sds_tls_on_xds_cluster(d: Bootstrap) -> None:
    _xds_cluster(d)["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": UPSTREAM_TLS,
            "common_tls_context": {
                "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": SDS_ADS}],
                "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": SDS_ADS},
            },
        },
    }


def test_istio_style_sidecar_bootstrap(material: MaterialStore) -> None:
    snap = load_bootstrap(str(BOOTSTRAPS / "istio_sidecar_ads.yaml"), material=material)
    assert snap.dynamic == m.DynamicResources(
        ads_cluster="xds-grpc",
        lds=True,
        cds=True,
        initial_fetch_timeout=None,  # Istio's 0s: wait for the first LDS/CDS as long as it takes
        set_node_on_first_message_only=True,
        grpc_timeout=None,
    )
    assert snap.node.id == "sidecar~127.0.0.2~client-7d4b9.default~default.svc.cluster.local"
    assert snap.node.meta("LABELS") == {"app": "client", "version": "v1"}
    assert snap.node.meta("PROXY_CONFIG") == {"binaryPath": "/usr/local/bin/envoy", "concurrency": 2}
    assert snap.admin.address == m.SocketAddress("127.0.0.2", 15000)
    assert snap.runtime["re2.max_program_size.error_level"] == 32768
    assert snap.listeners == {}
    xds = snap.clusters["xds-grpc"]
    assert xds.discovery_type == "STATIC" and xds.load_assignment is not None
    assert xds.load_assignment.localities[0].endpoints[0].address == m.SocketAddress("127.0.0.1", 15010)
    assert xds.max_requests_per_connection == 1
    assert xds.circuit_breakers.max_requests == 100000
    assert xds.high_priority_circuit_breakers.max_requests == 100000
    assert snap.warnings == ()
    assert snap.source["dynamic_resources"] == load_fixture_dict("istio_sidecar_ads.yaml")["dynamic_resources"]


def test_grpc_style_bootstrap_with_static_resources_over_ads(material: MaterialStore) -> None:
    snap = load_bootstrap(str(BOOTSTRAPS / "grpc_style_ads.yaml"), material=material)
    assert snap.dynamic == m.DynamicResources(
        ads_cluster="xds_cluster",
        lds=True,
        cds=True,
        initial_fetch_timeout=3.0,  # the longer of lds_config's 1s and cds_config's 3s
        set_node_on_first_message_only=True,
        grpc_timeout=10.0,
    )
    assert snap.clusters["xds_cluster"].discovery_type == "STRICT_DNS"
    (chain,) = snap.listeners["inbound"].filter_chains
    assert chain.hcm.route_config is None
    assert chain.hcm.rds_route_config_name == "inbound|8080||"
    assert chain.tls is not None and chain.tls.require_client_certificate
    assert chain.tls.certificates == (m.CertificateSource(sds_name="default"),)
    assert chain.tls.validation == m.ValidationContext(
        sds_name="ROOTCA",
        match_subject_alt_names=(("URI", m.StringMatcher("prefix", "spiffe://cluster.local/")),),
    )
    eds = snap.clusters["outbound|8080|v1|payment.default.svc.cluster.local"]
    assert eds.discovery_type == "EDS"
    assert eds.load_assignment is None
    assert eds.eds_service_name == eds.name  # no service_name: the cluster's name
    assert eds.tls is not None and eds.tls.sni == "outbound_.8080_.v1_.payment.default.svc.cluster.local"
    # What the ADS client subscribes to for the static resources:
    assert xr.referenced_routes(snap.listeners["inbound"]) == {"inbound|8080||"}
    assert xr.referenced_secrets(snap.listeners["inbound"]) == {"default", "ROOTCA"}
    assert xr.referenced_secrets(eds) == {"default", "ROOTCA"}
    assert xr.eds_name(eds) == eds.name
    assert xr.eds_name(snap.clusters["xds_cluster"]) is None


def test_eds_service_name(grpc_style: Bootstrap, material: MaterialStore) -> None:
    grpc_style["static_resources"]["clusters"][1]["eds_cluster_config"]["service_name"] = "payment-v1"
    snap = parse_bootstrap_dict(grpc_style, material=material)
    assert xr.eds_name(snap.clusters["outbound|8080|v1|payment.default.svc.cluster.local"]) == "payment-v1"


@pytest.mark.parametrize(
    ("lds", "cds", "expected"),
    [
        (None, None, 15.0),  # Envoy's default when unset
        ({}, None, 15.0),
        ({"initial_fetch_timeout": "2.5s"}, {}, 15.0),
        ({"initial_fetch_timeout": "2.5s"}, {"initial_fetch_timeout": "1s"}, 2.5),
        ({"initial_fetch_timeout": "0s"}, {"initial_fetch_timeout": "1s"}, None),
    ],
)
def test_initial_fetch_timeout(
    istio: Bootstrap,
    material: MaterialStore,
    lds: dict[str, Any] | None,
    cds: dict[str, Any] | None,
    expected: float | None,
) -> None:
    dr = istio["dynamic_resources"]
    for key, extra in (("lds_config", lds), ("cds_config", cds)):
        if extra is None:
            del dr[key]
        else:
            dr[key] = {"ads": {}, **extra}
    dynamic = parse_bootstrap_dict(istio, material=material).dynamic
    assert dynamic is not None
    assert dynamic.initial_fetch_timeout == expected
    assert (dynamic.lds, dynamic.cds) == (lds is not None, cds is not None)


def test_empty_dynamic_resources_asks_for_nothing(istio: Bootstrap, material: MaterialStore) -> None:
    istio["dynamic_resources"] = {}
    assert parse_bootstrap_dict(istio, material=material).dynamic is None


def test_set_node_on_every_message_by_default(istio: Bootstrap, material: MaterialStore) -> None:
    del _ads(istio)["set_node_on_first_message_only"]
    del _ads(istio)["transport_api_version"]  # AUTO: v3, the only version there is
    dynamic = parse_bootstrap_dict(istio, material=material).dynamic
    assert dynamic is not None and dynamic.set_node_on_first_message_only is False


CASES: list[tuple[str, Callable[[Bootstrap], object], list[tuple[str, str]]]] = [
    ("delta xDS", lambda d: _ads(d).update(api_type="DELTA_GRPC"), [(f"{ADS}.api_type", DELTA)]),
    (
        "REST xDS",
        lambda d: _ads(d).update(api_type="REST"),
        [(f"{ADS}.api_type", "REST xDS is not supported (supported: GRPC)")],
    ),
    ("no api_type", lambda d: _ads(d).pop("api_type"), [(f"{ADS}.api_type", "is required (supported: GRPC)")]),
    (
        "aggregated gRPC (xDS-TP collections)",
        lambda d: _ads(d).update(api_type="AGGREGATED_GRPC"),
        [(f"{ADS}.api_type", "AGGREGATED_GRPC is not supported (supported: GRPC)")],
    ),
    ("v2 transport", lambda d: _ads(d).update(transport_api_version="V2"), [(f"{ADS}.transport_api_version", V2)]),
    (
        "google_grpc",
        lambda d: _ads(d).update(
            grpc_services=[{"google_grpc": {"target_uri": "127.0.0.1:15010", "stat_prefix": "xds"}}]
        ),
        [(f"{GS}.google_grpc", "google_grpc is not supported: use envoy_grpc with a static cluster")],
    ),
    (
        "two grpc services",
        lambda d: _ads(d)["grpc_services"].append({"envoy_grpc": {"cluster_name": "xds-grpc"}}),
        [
            (
                f"{ADS}.grpc_services[1]",
                "only one grpc service is supported (pyproxy does not fail over between ADS servers)",
            )
        ],
    ),
    (
        "no grpc service",
        lambda d: _ads(d).pop("grpc_services"),
        [(f"{ADS}.grpc_services", "exactly one grpc service is required: [{envoy_grpc: {cluster_name: ...}}]")],
    ),
    (
        "empty ADS cluster name",
        lambda d: _ads(d).update(grpc_services=[{"envoy_grpc": {"cluster_name": ""}}]),
        [(ADS_CLUSTER, "must not be empty")],
    ),
    (
        "grpc service metadata",
        lambda d: _ads(d)["grpc_services"][0].update(initial_metadata=[{"key": "a", "value": "b"}]),
        [(f"{GS}.initial_metadata", "initial_metadata is not supported")],
    ),
    (
        "REST-only field on the ADS config",
        lambda d: _ads(d).update(cluster_names=["xds-grpc"]),
        [(f"{ADS}.cluster_names", "cluster_names applies to REST config sources only (use grpc_services)")],
    ),
    (
        "file-based LDS",
        lambda d: d[DR].update(lds_config={"path": "/etc/envoy/lds.yaml"}),
        [(f"{DR}.lds_config.path", FILE_SOURCE)],
    ),
    (
        "file-based CDS (path_config_source)",
        lambda d: d[DR].update(cds_config={"path_config_source": {"path": "/etc/envoy/cds.yaml"}}),
        [(f"{DR}.cds_config.path_config_source", FILE_SOURCE)],
    ),
    (
        "non-aggregated gRPC CDS",
        lambda d: d[DR].update(
            cds_config={
                "api_config_source": {
                    "api_type": "GRPC",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                }
            }
        ),
        [
            (
                f"{DR}.cds_config.api_config_source",
                f"only ADS config sources are supported (use {ADS_SOURCE} with dynamic_resources.ads_config)",
            )
        ],
    ),
    (
        "v2 resources",
        lambda d: d[DR]["lds_config"].update(resource_api_version="V2"),
        [(f"{DR}.lds_config.resource_api_version", V2)],
    ),
    (
        "config source without a kind",
        lambda d: d[DR]["lds_config"].pop("ads"),
        [(f"{DR}.lds_config", "one of path, path_config_source, api_config_source, ads, self is required")],
    ),
    (
        "xDS-TP locator",
        lambda d: d[DR].update(lds_resources_locator="xdstp://example/envoy.config.listener.v3.Listener/*"),
        [
            (
                f"{DR}.lds_resources_locator",
                f"xDS-TP resource locators are not supported (use lds_config: {ADS_SOURCE} with "
                "dynamic_resources.ads_config)",
            )
        ],
    ),
    (
        "missing ADS cluster",
        lambda d: _ads(d)["grpc_services"][0]["envoy_grpc"].update(cluster_name="istiod"),
        [(ADS_CLUSTER, "unknown cluster 'istiod': the ADS cluster must be one of static_resources.clusters")],
    ),
    (
        "ADS cluster from EDS",
        lambda d: (
            _add_cluster(d, _eds_cluster("xds-eds")),
            _ads(d)["grpc_services"][0]["envoy_grpc"].update(cluster_name="xds-eds"),
        ),
        [
            (
                ADS_CLUSTER,
                "cluster 'xds-eds' is EDS: the ADS cluster needs its endpoints in the bootstrap "
                "(STATIC, STRICT_DNS, LOGICAL_DNS)",
            )
        ],
    ),
    (
        "ADS cluster with certificates from SDS",
        _sds_tls_on_xds_cluster,
        [
            (
                ADS_CLUSTER,
                "cluster 'xds-grpc' takes TLS secrets 'default', 'ROOTCA' from SDS over ADS, but they are needed "
                "to open the ADS stream (use files or static_resources.secrets)",
            )
        ],
    ),
    (
        "ADS cluster without HTTP/2",
        lambda d: _xds_cluster(d).pop("typed_extension_protocol_options"),
        [("static_resources.clusters[0]", f"cluster 'xds-grpc': {NEEDS_HTTP2}")],
    ),
    (
        "EDS cluster without eds_cluster_config",
        lambda d: _add_cluster(d, {**_eds_cluster("eds"), "eds_cluster_config": None}),
        [
            (
                f"{EDS_CLUSTER}.eds_cluster_config",
                f"an EDS cluster needs eds_cluster_config: {{eds_config: {ADS_SOURCE}}}",
            )
        ],
    ),
    (
        "EDS cluster without eds_config",
        lambda d: _add_cluster(d, {**_eds_cluster("eds"), "eds_cluster_config": {"service_name": "s"}}),
        [(f"{EDS_CLUSTER}.eds_cluster_config.eds_config", f"is required: {ADS_SOURCE}")],
    ),
    (
        "EDS cluster with a file config source",
        lambda d: _add_cluster(d, {**_eds_cluster("eds"), "eds_cluster_config": {"eds_config": {"path": "/x"}}}),
        [(f"{EDS_CLUSTER}.eds_cluster_config.eds_config.path", FILE_SOURCE)],
    ),
    (
        "EDS cluster with endpoints",
        lambda d: _add_cluster(
            d, {**_eds_cluster("eds"), "load_assignment": {"cluster_name": "eds", "endpoints": []}}
        ),
        [
            (
                f"{EDS_CLUSTER}.load_assignment",
                "an EDS cluster takes its endpoints from EDS: remove load_assignment (Envoy ignores it)",
            )
        ],
    ),
    (
        "eds_cluster_config on a STATIC cluster",
        lambda d: _xds_cluster(d).update(eds_cluster_config={"eds_config": SDS_ADS}),
        [("static_resources.clusters[0].eds_cluster_config", "only applies to type: EDS (this cluster is STATIC)")],
    ),
]


def _none_removed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _none_removed(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_none_removed(v) for v in value]
    return value


@pytest.mark.parametrize(("mutate", "expected"), [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_rejected_with_path_and_reason(
    istio: Bootstrap,
    material: MaterialStore,
    mutate: Callable[[Bootstrap], object],
    expected: list[tuple[str, str]],
) -> None:
    mutate(istio)
    with pytest.raises(ConfigError) as info:
        parse_bootstrap_dict(_none_removed(istio), material=material)
    assert info.value.problems == [Problem(path, reason) for path, reason in expected]


GRPC_STYLE_CASES: list[tuple[str, Callable[[Bootstrap], object], list[tuple[str, str]]]] = [
    (
        "rds from a non-ADS source",
        lambda d: d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
            "rds"
        ].update(config_source={"path": "/etc/rds.yaml"}),
        [(f"{GRPC_STYLE_HCM}.rds.config_source.path", FILE_SOURCE)],
    ),
    (
        "rds without a config source",
        lambda d: d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
            "rds"
        ].pop("config_source"),
        [(f"{GRPC_STYLE_HCM}.rds.config_source", f"is required: {ADS_SOURCE}")],
    ),
    (
        "rds without a name",
        lambda d: d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
            "rds"
        ].pop("route_config_name"),
        [(f"{GRPC_STYLE_HCM}.rds.route_config_name", "is required")],
    ),
    (
        "SDS from a non-ADS source",
        lambda d: d["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"][
            "common_tls_context"
        ]["tls_certificate_sds_secret_configs"][0].update(
            sds_config={
                "api_config_source": {
                    "api_type": "GRPC",
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "sds-grpc"}}],
                }
            }
        ),
        [
            (
                f"{GRPC_STYLE_CTC}.tls_certificate_sds_secret_configs[0].sds_config.api_config_source",
                f"only ADS config sources are supported (use {ADS_SOURCE} with dynamic_resources.ads_config)",
            )
        ],
    ),
    (
        "trusted CA both from SDS and inline",
        lambda d: d["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"][
            "common_tls_context"
        ]["combined_validation_context"]["default_validation_context"].update(
            trusted_ca={"filename": "/etc/ca.pem"}
        ),
        [
            (
                f"{GRPC_STYLE_CTC}.combined_validation_context.default_validation_context.trusted_ca",
                "the trusted CA comes from the SDS secret 'ROOTCA' here: remove trusted_ca from "
                "default_validation_context",
            )
        ],
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), [pytest.param(c[1], c[2], id=c[0]) for c in GRPC_STYLE_CASES])
def test_static_resources_over_ads_rejected_with_path_and_reason(
    grpc_style: Bootstrap,
    material: MaterialStore,
    mutate: Callable[[Bootstrap], object],
    expected: list[tuple[str, str]],
) -> None:
    mutate(grpc_style)
    with pytest.raises(ConfigError) as info:
        parse_bootstrap_dict(grpc_style, material=material)
    assert info.value.problems == [Problem(path, reason) for path, reason in expected]


def test_without_ads_config_every_ads_user_is_reported_once(grpc_style: Bootstrap, material: MaterialStore) -> None:
    """A bootstrap whose static resources use ADS sources but has no ADS stream: one problem per use."""
    del grpc_style["dynamic_resources"]
    with pytest.raises(ConfigError) as info:
        parse_bootstrap_dict(grpc_style, material=material)
    sds = "SDS (sds_config) needs dynamic_resources.ads_config; or define the secret in static_resources.secrets "
    sds += "and refer to it by name"
    cluster_ctc = f"{EDS_CLUSTER}.transport_socket.typed_config.common_tls_context"
    assert info.value.problems == [
        Problem(
            f"{EDS_CLUSTER}.type",
            "EDS needs dynamic_resources.ads_config; use STATIC, STRICT_DNS or LOGICAL_DNS with a load_assignment",
        ),
        Problem(f"{cluster_ctc}.tls_certificate_sds_secret_configs[0].sds_config", sds),
        Problem(f"{cluster_ctc}.validation_context_sds_secret_config.sds_config", sds),
        Problem(f"{GRPC_STYLE_CTC}.tls_certificate_sds_secret_configs[0].sds_config", sds),
        Problem(f"{GRPC_STYLE_CTC}.combined_validation_context.validation_context_sds_secret_config.sds_config", sds),
        Problem(
            f"{GRPC_STYLE_HCM}.rds",
            "rds needs dynamic_resources.ads_config (routes come over ADS); or use an inline route_config",
        ),
    ]


def test_table_is_large_enough() -> None:
    assert len(CASES) + len(GRPC_STYLE_CASES) >= 30


# --------------------------------------------------------------------------------------------- the CLI


def _validate(procs: ProcessGroup, path: Path) -> tuple[int, str]:
    proc = procs.python(f"validate-{path.stem}", "pyproxy", "--mode", "validate", "-c", str(path))
    code = proc.popen.wait(timeout=60)
    return code, proc.output()


def test_pyproxy_validate_accepts_ads_bootstraps(procs: ProcessGroup) -> None:
    for name in ("istio_sidecar_ads.yaml", "grpc_style_ads.yaml"):
        code, output = _validate(procs, BOOTSTRAPS / name)
        assert code == 0, output
        assert "OK" in output


def test_pyproxy_validate_reports_an_ads_problem(procs: ProcessGroup, tmp_path: Path, istio: Bootstrap) -> None:
    _ads(istio).update(api_type="DELTA_GRPC")
    _ads(istio)["grpc_services"][0] = {"google_grpc": {"target_uri": "istiod:15012", "stat_prefix": "xds"}}
    path = tmp_path / "delta.yaml"
    path.write_text(yaml.safe_dump(istio))
    code, output = _validate(procs, path)
    assert code == 1, output
    assert f"{ADS}.api_type: {DELTA}" in output
    assert f"{GS}.google_grpc: google_grpc is not supported: use envoy_grpc with a static cluster" in output


def test_static_secrets_are_not_subscribed(
    render: Callable[[str], Path], istio: Bootstrap, material: MaterialStore
) -> None:
    """A static SDS reference (no sds_config) is resolved at load; only SDS-fetched names are subscribed."""
    d = yaml.safe_load(render("sidecar_client_mtls.yaml").read_text())
    d["dynamic_resources"] = istio["dynamic_resources"]
    d["static_resources"]["clusters"].append(_xds_cluster(istio))
    snap = parse_bootstrap_dict(d, material=material)
    cluster = snap.clusters["outbound|50051|v1|payment.default.svc.cluster.local"]
    assert cluster.tls is not None and cluster.tls.certificates[0].sds_name == "default"
    assert cluster.tls.certificates[0].cert_chain_file is not None
    assert xr.referenced_secrets(cluster) == set()
    assert xr.eds_name(cluster) is None
    assert xr.referenced_routes(snap.listeners["virtualOutbound"]) == set()
    assert xr.referenced_clusters(snap.listeners["virtualOutbound"]) == {
        "outbound|50051|v1|payment.default.svc.cluster.local",
        "outbound|50051|v2|payment.default.svc.cluster.local",
    }

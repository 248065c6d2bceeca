"""The sidecar configuration files are ordinary, correct Envoy (and nginx) configuration.

Each bootstrap template is rendered and loaded the way ``envoy -c`` loads it (proto JSON mapping into
``envoy.config.bootstrap.v3.Bootstrap``, unknown fields rejected, ``typed_config`` resolved by type URL),
then checked for the mTLS plumbing the interop topology needs. The JSON and legacy variants are shown to
mean exactly what the plain YAML files mean. The certificates are checked by a real mutual TLS handshake,
and the nginx configs by ``nginx -t``.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format

from tests.interop import render
from tests.interop.certs import CLIENT_SA, SERVER_DNS, SERVER_SA, CertPaths, spiffe_id
from tests.support.procs import ProcessGroup

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
A_TEMPLATES = ["sidecar_a.yaml", "sidecar_a_legacy.yaml"]
B_TEMPLATES = ["sidecar_b.yaml", "sidecar_b.json"]
PORTS = {"A_ADMIN_PORT": 15000, "A_LISTENER_PORT": 15001, "B_ADMIN_PORT": 15100, "B_LISTENER_PORT": 15006}


@pytest.fixture
def values(interop_certs: CertPaths, tmp_path: Path) -> dict[str, object]:
    return {**PORTS, "SERVER_PORT": 50051, "CERT_DIR": interop_certs.directory, "RUN_DIR": tmp_path / "run"}


def load(template: str, values: dict[str, object], out: Path) -> bootstrap_pb2.Bootstrap:
    return render.parse_bootstrap(render.render(render.BOOTSTRAPS / template, values, out))


def hcm_of(bootstrap: bootstrap_pb2.Bootstrap) -> hcm_pb2.HttpConnectionManager:
    (listener,) = bootstrap.static_resources.listeners
    (chain,) = listener.filter_chains
    (network_filter,) = chain.filters
    assert network_filter.name == "envoy.filters.network.http_connection_manager"
    hcm = hcm_pb2.HttpConnectionManager()
    assert network_filter.typed_config.Unpack(hcm)
    return hcm


def check_h2_upstream(cluster: cluster_pb2.Cluster) -> None:
    """HTTP/2 towards the cluster, either the typed way or the deprecated ``http2_protocol_options``."""
    if cluster.HasField("http2_protocol_options"):
        return
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert cluster.typed_extension_protocol_options[HTTP_OPTIONS].Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")


def test_every_template_is_a_valid_envoy_bootstrap(values: dict[str, object], tmp_path: Path) -> None:
    templates = sorted(p.name for p in render.BOOTSTRAPS.iterdir())
    assert templates == sorted(A_TEMPLATES + B_TEMPLATES)
    for template in templates:
        bootstrap = load(template, values, tmp_path)
        side = template.split("_")[1][0].upper()
        assert bootstrap.admin.address.socket_address.port_value == PORTS[f"{side}_ADMIN_PORT"]
        (listener,) = bootstrap.static_resources.listeners
        assert listener.address.socket_address.address == "127.0.0.1"
        assert listener.address.socket_address.port_value == PORTS[f"{side}_LISTENER_PORT"]
        (route,) = hcm_of(bootstrap).route_config.virtual_hosts[0].routes
        (cluster,) = bootstrap.static_resources.clusters
        assert route.route.cluster == cluster.name
        assert (
            route.route.timeout.ToTimedelta().total_seconds() == 0
        )  # streams are not cut by a route timeout


@pytest.mark.parametrize("template", A_TEMPLATES)
def test_sidecar_a_speaks_mtls_to_sidecar_b(
    template: str, values: dict[str, object], interop_certs: CertPaths, tmp_path: Path
) -> None:
    bootstrap = load(template, values, tmp_path)
    assert hcm_of(bootstrap).codec_type in {
        hcm_pb2.HttpConnectionManager.HTTP2,
        hcm_pb2.HttpConnectionManager.AUTO,
    }
    (cluster,) = bootstrap.static_resources.clusters
    endpoint = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint
    assert endpoint.address.socket_address.port_value == PORTS["B_LISTENER_PORT"]
    check_h2_upstream(cluster)
    assert cluster.transport_socket.name == "envoy.transport_sockets.tls"
    tls = tls_pb2.UpstreamTlsContext()
    assert cluster.transport_socket.typed_config.Unpack(tls)
    assert tls.sni == SERVER_DNS
    common = tls.common_tls_context
    assert list(common.alpn_protocols) == ["h2"]
    (identity,) = common.tls_certificates
    assert Path(identity.certificate_chain.filename) == interop_certs.client_cert
    assert Path(identity.private_key.filename) == interop_certs.client_key
    assert Path(common.validation_context.trusted_ca.filename) == interop_certs.ca
    (san,) = common.validation_context.match_typed_subject_alt_names
    assert san.san_type == san.URI
    assert san.matcher.exact == spiffe_id(SERVER_SA)


@pytest.mark.parametrize("template", B_TEMPLATES)
def test_sidecar_b_requires_the_client_certificate(
    template: str, values: dict[str, object], interop_certs: CertPaths, tmp_path: Path
) -> None:
    bootstrap = load(template, values, tmp_path)
    (chain,) = bootstrap.static_resources.listeners[0].filter_chains
    tls = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(tls)
    assert tls.require_client_certificate.value is True
    common = tls.common_tls_context
    assert list(common.alpn_protocols) == ["h2"]
    assert Path(common.tls_certificates[0].certificate_chain.filename) == interop_certs.server_cert
    assert Path(common.validation_context.trusted_ca.filename) == interop_certs.ca
    (san,) = common.validation_context.match_typed_subject_alt_names
    assert (san.san_type, san.matcher.exact) == (san.URI, spiffe_id(CLIENT_SA))
    (cluster,) = bootstrap.static_resources.clusters
    assert cluster.name == "interop_server"
    assert not cluster.HasField("transport_socket")  # h2c to the local app
    endpoint = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint
    assert endpoint.address.socket_address.port_value == 50051
    check_h2_upstream(cluster)


def test_json_sidecar_b_is_the_yaml_one(values: dict[str, object], tmp_path: Path) -> None:
    assert load("sidecar_b.json", values, tmp_path) == load("sidecar_b.yaml", values, tmp_path)


def test_legacy_sidecar_a_differs_only_in_the_documented_ways(
    values: dict[str, object], tmp_path: Path
) -> None:
    """Undo the legacy spellings (AUTO, cluster http2_protocol_options, grpc match, access log): same file."""
    legacy = load("sidecar_a_legacy.yaml", values, tmp_path)
    hcm = hcm_of(legacy)
    assert hcm.codec_type == hcm.AUTO
    assert [log.name for log in hcm.access_log] == ["envoy.access_loggers.stdout"]
    route = hcm.route_config.virtual_hosts[0].routes[0]
    assert route.match.HasField("grpc")
    hcm.codec_type = hcm.HTTP2
    del hcm.access_log[:]
    route.match.ClearField("grpc")
    legacy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.Pack(hcm)
    cluster = legacy.static_resources.clusters[0]
    assert cluster.HasField("http2_protocol_options")
    cluster.ClearField("http2_protocol_options")
    options = http_protocol_options_pb2.HttpProtocolOptions()
    options.explicit_http_config.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
    cluster.typed_extension_protocol_options[HTTP_OPTIONS].Pack(options)
    assert legacy == load("sidecar_a.yaml", values, tmp_path)


def test_render_refuses_a_placeholder_without_value(values: dict[str, object], tmp_path: Path) -> None:
    incomplete = {k: v for k, v in values.items() if k != "B_LISTENER_PORT"}
    with pytest.raises(KeyError, match="B_LISTENER_PORT"):
        render.render(render.BOOTSTRAPS / "sidecar_a.yaml", incomplete, tmp_path)
    assert render.render_text("set $upstream ${X};", {"X": 1}) == "set $upstream 1;"  # nginx $vars untouched


def test_parse_rejects_what_envoy_rejects(values: dict[str, object], tmp_path: Path) -> None:
    text = (
        (render.BOOTSTRAPS / "sidecar_b.yaml")
        .read_text()
        .replace("require_client_certificate", "require_cert")
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text(render.render_text(text, values))
    with pytest.raises(json_format.ParseError, match="require_cert"):
        render.parse_bootstrap(bad)


def _sans(sock: ssl.SSLSocket) -> set[tuple[str, str]]:
    cert = sock.getpeercert() or {}
    entries: tuple[tuple[str, str], ...] = cert.get("subjectAltName", ())  # type: ignore[assignment]
    return set(entries)


def _handshake(certs: CertPaths) -> tuple[set[tuple[str, str]], set[tuple[str, str]], str | None]:
    """Mutual TLS over a socket pair: (SANs the server saw, SANs the client saw, ALPN)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs.server_cert, certs.server_key)
    server_ctx.load_verify_locations(certs.ca)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.set_alpn_protocols(["h2"])
    client_ctx = ssl.create_default_context(cafile=certs.ca)
    client_ctx.load_cert_chain(certs.client_cert, certs.client_key)
    client_ctx.set_alpn_protocols(["h2"])
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    seen: dict[str, set[tuple[str, str]]] = {}

    def serve() -> None:
        with server_ctx.wrap_socket(a, server_side=True) as tls:
            seen["server"] = _sans(tls)

    thread = threading.Thread(target=serve)
    thread.start()
    with client_ctx.wrap_socket(b, server_hostname=SERVER_DNS) as tls:
        seen["client"] = _sans(tls)
        alpn = tls.selected_alpn_protocol()
    thread.join(10)
    return seen["server"], seen["client"], alpn


def test_certificates_authenticate_both_sides_by_spiffe_id(interop_certs: CertPaths) -> None:
    client_seen_by_server, server_seen_by_client, alpn = _handshake(interop_certs)
    assert alpn == "h2"
    assert client_seen_by_server == {("URI", spiffe_id(CLIENT_SA))}
    assert server_seen_by_client == {("URI", spiffe_id(SERVER_SA)), ("DNS", SERVER_DNS)}


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
@pytest.mark.parametrize("conf", ["sidecar_a.conf", "sidecar_b.conf"])
def test_nginx_configs_pass_nginx_t(conf: str, values: dict[str, object], procs: ProcessGroup) -> None:
    run_dir = Path(str(values["RUN_DIR"]))
    path = render.render(render.NGINX / conf, values, run_dir)
    proc = procs.start(
        f"nginx-t-{conf}", ["nginx", "-e", "stderr", "-t", "-p", str(run_dir), "-c", str(path)]
    )
    assert proc.popen.wait(timeout=15) == 0, proc.output()
    assert "test is successful" in proc.output()

"""What the fuzz targets found, as plain regression tests (each failed before its fix)."""

from __future__ import annotations

import base64
from pathlib import Path

import hpack
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.listener.v3 import listener_pb2

from mesh_ctl.ca.csr import CsrError, parse_csr
from mesh_ctl.resources import loader, validate_batch
from pyproxy.config.bootstrap import load_bootstrap, parse_bootstrap_dict
from pyproxy.config.errors import ConfigError
from pyproxy.config.xds_resources import LISTENER, translate_resource
from pyproxy.http2 import frames as fr
from pyproxy.http2.connection import H2Connection, H2Settings
from pyproxy.http2.events import ConnectionTerminated, HeadersReceived
from pyproxy.http2.frames import ErrorCode
from pyproxy.http2.hpack import Decoder, HpackError

REQUEST = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/s/m"), (b":authority", b"a")]


def test_bootstrap_yaml_with_a_control_character_is_a_config_error() -> None:
    # PyYAML's reader refuses it when the loader is built, which was outside the try: yaml.ReaderError.
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_bootstrap(None, "node: {id: \x01}")


def test_istio_yaml_with_a_control_character_without_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    class PurePythonLoader(yaml.SafeLoader):  # what loader.py falls back to when PyYAML has no libyaml
        pass

    PurePythonLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, loader._construct_mapping)
    monkeypatch.setattr(loader, "_KubeLoader", PurePythonLoader)
    loaded = loader.load_files([("vs.yaml", "kind: VirtualService\x01\n")])
    assert [p.reason for p in loaded.problems] == [
        'unacceptable character #x0001: special characters are not allowed\n  in "<unicode string>", position 20']


def test_csr_with_a_version_other_than_v1_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName(
               [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/payment")]), critical=True)
           .sign(key, hashes.SHA256()))
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    version = der.index(b"\x02\x01\x00")  # CertificationRequestInfo.version INTEGER 0 (v1)
    der[version + 2] = 13
    body = base64.encodebytes(bytes(der)).decode()
    text = f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"
    with pytest.raises(CsrError, match="not a PEM certificate request: 13 is not a valid CSR version"):
        parse_csr(text, "cluster.local")


def test_hpack_decoder_requires_the_size_update_after_our_setting_shrank() -> None:
    d = Decoder()
    d.max_allowed_table_size = 100  # the peer has acknowledged our SETTINGS_HEADER_TABLE_SIZE = 100
    with pytest.raises(HpackError, match="missing the table size update"):
        d.decode(b"\x82")  # RFC 7541 4.2: the first block after the change must start with the update
    with pytest.raises(HpackError, match="missing the table size update"):
        d.decode(b"")  # an empty block does not carry it either
    assert d.decode(b"\x3f\x45\x82") == [(b":method", b"GET")]  # size update to 100, then a field
    assert d.decode(b"\x82") == [(b":method", b"GET")]  # owed once only
    d.max_allowed_table_size = 4096  # growing the limit asks nothing of the peer
    assert d.decode(b"\x82") == [(b":method", b"GET")]


def _acked_server(header_table_size: int) -> H2Connection:
    conn = H2Connection(client_side=False, settings=H2Settings(header_table_size=header_table_size))
    conn.initiate_connection()
    conn.receive_data(fr.PREFACE + fr.settings_frame({}) + fr.settings_frame(ack=True))
    conn.data_to_send()
    return conn


def test_connection_requires_the_size_update_once_our_smaller_table_is_acknowledged() -> None:
    conn = _acked_server(0)
    block = hpack.Encoder().encode(REQUEST)  # an encoder that ignores our SETTINGS_HEADER_TABLE_SIZE = 0
    events = conn.receive_data(fr.headers_frames(1, block, True, 16384))
    assert [(type(e), getattr(e, "error_code", None)) for e in events] == [
        (ConnectionTerminated, ErrorCode.COMPRESSION_ERROR)]
    conn = _acked_server(0)
    events = conn.receive_data(fr.headers_frames(1, b"\x20" + block, True, 16384))
    assert [type(e) for e in events] == [HeadersReceived]


def _pb_bootstrap_with_tls_any(tmp_path: Path, type_url: str, value: bytes) -> str:
    bootstrap = bootstrap_pb2.Bootstrap()
    listener = bootstrap.static_resources.listeners.add(name="in")
    listener.address.socket_address.address = "127.0.0.1"
    listener.address.socket_address.port_value = 15006
    socket = listener.filter_chains.add().transport_socket
    socket.name = "envoy.transport_sockets.tls"
    socket.typed_config.type_url = type_url
    socket.typed_config.value = value
    path = tmp_path / "bootstrap.pb"
    path.write_bytes(bootstrap.SerializeToString())
    return str(path)


def test_binary_bootstrap_with_an_unknown_any_type_is_a_config_error(tmp_path: Path) -> None:
    # MessageToDict (the config dump's source) raised TypeError: JSON and YAML reported the same as a problem.
    path = _pb_bootstrap_with_tls_any(
        tmp_path, "type.googleapis.com/envoy.extensions.transport_sockets.tls.v4.DownstreamTlsContext", b"")
    with pytest.raises(ConfigError) as err:
        load_bootstrap(path)
    assert [str(p) for p in err.value.problems] == [
        "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config.@type: unknown type "
        "'envoy.extensions.transport_sockets.tls.v4.DownstreamTlsContext'"]


def test_binary_bootstrap_with_an_any_that_does_not_decode_is_a_config_error(tmp_path: Path) -> None:
    path = _pb_bootstrap_with_tls_any(
        tmp_path, "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", b"\xff")
    with pytest.raises(ConfigError, match=r"typed_config: the value cannot be decoded as envoy\.extensions\."):
        load_bootstrap(path)


def test_xds_listener_with_an_any_that_does_not_decode_is_a_config_error() -> None:
    listener = listener_pb2.Listener(name="in")
    listener.address.socket_address.address = "127.0.0.1"
    listener.address.socket_address.port_value = 15006
    f = listener.filter_chains.add().filters.add(name="envoy.filters.network.http_connection_manager")
    f.typed_config.type_url = ("type.googleapis.com/"
                               "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager")
    f.typed_config.value = b"\x0a\xff"  # field 1, length 255, and nothing after
    with pytest.raises(ConfigError, match="typed_config: the value cannot be decoded as"):
        translate_resource(LISTENER, listener, warnings=[])


def test_bootstrap_yaml_with_a_mapping_as_a_key_is_a_config_error() -> None:
    # The loader's own construct_mapping dropped PyYAML's check: TypeError (unhashable type: 'dict').
    with pytest.raises(ConfigError, match="found an unhashable key"):
        load_bootstrap(None, "node: {? {a: 1} : x}")


def test_nul_in_a_cipher_suite_or_a_file_name_is_a_config_error() -> None:
    tls = {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
           "common_tls_context": {"tls_params": {"cipher_suites": ["ECDHE-RSA-AES128-GCM-SHA256\x00"]},
                                  "validation_context": {"trusted_ca": {"filename": "/etc/ca\x00.pem"}}}}
    bootstrap = {"static_resources": {"clusters": [
        {"name": "c", "type": "STATIC", "transport_socket": {"name": "tls", "typed_config": tls}}]}}
    with pytest.raises(ConfigError) as err:  # ssl's set_ciphers and open() raised ValueError
        parse_bootstrap_dict(bootstrap)
    reasons = [p.reason for p in err.value.problems]
    assert "'ECDHE-RSA-AES128-GCM-SHA256\\x00' is not a cipher suite this OpenSSL knows (TLS 1.3 suites cannot be " \
           "set)" in reasons
    assert "cannot read trusted CA '/etc/ca\\x00.pem': not a valid file name" in reasons


@pytest.mark.parametrize("doc", [{"\ud800": 1}, {"node": {"\ud800x": 1}}])
def test_bootstrap_key_with_a_lone_surrogate_is_a_config_error(doc: dict[str, object]) -> None:
    # upb's fields_by_name.get raised SystemError for such a key (JSON "\ud800", YAML "\ud800": both decode to one).
    with pytest.raises(ConfigError, match="unknown field"):
        parse_bootstrap_dict(doc)


@pytest.mark.parametrize("field", ["weight", "attempts"])
def test_istio_null_field_is_absent_for_the_semantic_rules(field: str) -> None:
    # The schema prunes a null in a non-nullable field, but the semantic rules saw it: TypeError (None < 0).
    weight, attempts = ("null", "1") if field == "weight" else ("1", "null")
    text = ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: p}\nspec:\n"
            "  hosts: [payment]\n  http:\n  - route:\n    - destination: {host: payment}\n"
            f"      weight: {weight}\n    retries: {{attempts: {attempts}}}\n")
    loaded = loader.load_files([("vs.yaml", text)])
    assert not loaded.problems
    assert validate_batch(loaded.resources).errors == []

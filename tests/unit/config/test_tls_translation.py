"""TLS contexts: certificate material from files, inline PEM (written to 0600 files), static SDS secrets,
and the checks that make a bad certificate fail at start with its field path."""

from __future__ import annotations

import base64
import stat
from pathlib import Path
from typing import Any

import pytest

from pyproxy.config import model as m
from pyproxy.config.bootstrap import parse_bootstrap_dict
from pyproxy.config.errors import ConfigError, Problem
from pyproxy.config.material import MaterialStore, default_store
from tests.unit.config.pki import TestCA

Bootstrap = dict[str, Any]
DOWNSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
CHAIN = "static_resources.listeners[0].filter_chains[0]"
TLS = f"{CHAIN}.transport_socket.typed_config"
CTC = f"{TLS}.common_tls_context"
CLUSTER_TLS = "static_resources.clusters[0].transport_socket.typed_config"


def _listener_tls(d: Bootstrap, context: dict[str, Any]) -> None:
    chain = d["static_resources"]["listeners"][0]["filter_chains"][0]
    chain["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": DOWNSTREAM, **context},
    }


def _files(issued_cert: Path, issued_key: Path) -> dict[str, Any]:
    return {"certificate_chain": {"filename": str(issued_cert)}, "private_key": {"filename": str(issued_key)}}


def _reject(d: Bootstrap, material: MaterialStore) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse_bootstrap_dict(d, material=material)
    return info.value.problems


def test_inline_material_is_written_to_private_files(
    grpc_proxy: Bootstrap, pki: TestCA, material: MaterialStore
) -> None:
    server = pki.issue("inline", dns=("inline.test",))
    _listener_tls(
        grpc_proxy,
        {
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"inline_string": server.cert_pem.decode()},
                        "private_key": {"inline_bytes": _b64(server.key_pem)},
                    }
                ],
                "validation_context": {"trusted_ca": {"inline_string": pki.cert_pem.decode()}},
            }
        },
    )
    snap = parse_bootstrap_dict(grpc_proxy, material=material)
    tls = snap.listeners["0.0.0.0_8811"].filter_chains[0].tls
    assert tls is not None
    cert = tls.certificates[0]
    assert (
        cert.cert_chain_file and cert.private_key_file and tls.validation and tls.validation.trusted_ca_file
    )
    assert Path(cert.cert_chain_file).read_bytes() == server.cert_pem
    assert Path(cert.private_key_file).read_bytes() == server.key_pem
    assert Path(tls.validation.trusted_ca_file).read_bytes() == pki.cert_pem
    for path in (cert.cert_chain_file, cert.private_key_file, tls.validation.trusted_ca_file):
        assert Path(path).parent == Path(material.directory)
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    # The same material translated again reuses the same files.
    again = parse_bootstrap_dict(grpc_proxy, material=material)
    tls_again = again.listeners["0.0.0.0_8811"].filter_chains[0].tls
    assert tls_again is not None and tls_again.certificates == tls.certificates
    assert len(list(Path(material.directory).iterdir())) == 3
    # /config_dump must not show the key, as Envoy redacts it.
    key_source = snap.source["static_resources"]["listeners"][0]["filter_chains"][0][  # type: ignore[index]
        "transport_socket"
    ]["typed_config"]["common_tls_context"]["tls_certificates"][0]["private_key"]
    assert key_source == {"inline_bytes": "[redacted]"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_default_material_store_is_private(grpc_proxy: Bootstrap, pki: TestCA) -> None:
    server = pki.issue("inline2")
    _listener_tls(
        grpc_proxy,
        {
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"inline_string": server.cert_pem.decode()},
                        "private_key": {"inline_string": server.key_pem.decode()},
                    }
                ]
            }
        },
    )
    snap = parse_bootstrap_dict(grpc_proxy)
    tls = snap.listeners["0.0.0.0_8811"].filter_chains[0].tls
    assert tls is not None and tls.certificates[0].private_key_file is not None
    directory = Path(default_store().directory)
    assert Path(tls.certificates[0].private_key_file).parent == directory
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_key_that_does_not_match_the_certificate(
    grpc_proxy: Bootstrap, pki: TestCA, material: MaterialStore
) -> None:
    a, b = pki.issue("a"), pki.issue("b")
    _listener_tls(grpc_proxy, {"common_tls_context": {"tls_certificates": [_files(a.cert_file, b.key_file)]}})
    assert _reject(grpc_proxy, material) == [
        Problem(
            f"{CTC}.tls_certificates[0].private_key",
            f"{b.key_file}: does not match the public key of the certificate ({a.cert_file})",
        )
    ]


def test_missing_and_garbage_files(
    grpc_proxy: Bootstrap, pki: TestCA, tmp_path: Path, material: MaterialStore
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    _listener_tls(
        grpc_proxy,
        {
            "common_tls_context": {
                "tls_certificates": [_files(garbage, tmp_path / "missing-key.pem")],
                "validation_context": {"trusted_ca": {"filename": str(tmp_path / "no-ca.pem")}},
            }
        },
    )
    problems = _reject(grpc_proxy, material)
    assert problems[0].path == f"{CTC}.tls_certificates[0].private_key.filename"
    assert (
        problems[0].reason
        == f"cannot read private key '{tmp_path / 'missing-key.pem'}': No such file or directory"
    )
    assert problems[1].path == f"{CTC}.tls_certificates[0].certificate_chain"
    assert problems[1].reason.startswith(f"{garbage}: not a valid PEM certificate")
    assert problems[2] == Problem(
        f"{CTC}.validation_context.trusted_ca.filename",
        f"cannot read trusted CA '{tmp_path / 'no-ca.pem'}': No such file or directory",
    )
    assert len(problems) == 3


def test_a_key_where_a_certificate_belongs(
    grpc_proxy: Bootstrap, pki: TestCA, material: MaterialStore
) -> None:
    a = pki.issue("a")
    _listener_tls(grpc_proxy, {"common_tls_context": {"tls_certificates": [_files(a.key_file, a.key_file)]}})
    (problem,) = _reject(grpc_proxy, material)
    assert problem.path == f"{CTC}.tls_certificates[0].certificate_chain"
    assert problem.reason.startswith(f"{a.key_file}: not a valid PEM certificate")


def test_server_tls_needs_a_certificate(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _listener_tls(grpc_proxy, {"common_tls_context": {"alpn_protocols": ["h2"]}})
    assert _reject(grpc_proxy, material) == [
        Problem(
            CTC,
            "a DownstreamTlsContext needs a certificate (tls_certificates or "
            "tls_certificate_sds_secret_configs)",
        )
    ]


def test_client_certificates_need_a_ca(grpc_proxy: Bootstrap, pki: TestCA, material: MaterialStore) -> None:
    a = pki.issue("a")
    _listener_tls(
        grpc_proxy,
        {
            "require_client_certificate": True,
            "common_tls_context": {"tls_certificates": [_files(a.cert_file, a.key_file)]},
        },
    )
    assert _reject(grpc_proxy, material) == [
        Problem(
            f"{TLS}.require_client_certificate",
            "requiring a client certificate needs a validation context with trusted_ca",
        )
    ]


def test_san_matching_without_ca_is_refused(
    grpc_proxy: Bootstrap, pki: TestCA, material: MaterialStore
) -> None:
    a = pki.issue("a")
    _listener_tls(
        grpc_proxy,
        {
            "common_tls_context": {
                "tls_certificates": [_files(a.cert_file, a.key_file)],
                "validation_context": {
                    "match_typed_subject_alt_names": [
                        {"san_type": "URI", "matcher": {"exact": "spiffe://cluster.local/ns/default/sa/x"}}
                    ]
                },
            }
        },
    )
    assert _reject(grpc_proxy, material) == [
        Problem(
            f"{CTC}.validation_context",
            "matching subject alt names without trusted_ca is insecure and not allowed (as in Envoy)",
        )
    ]


def test_san_type_must_be_given(grpc_proxy: Bootstrap, pki: TestCA, material: MaterialStore) -> None:
    a = pki.issue("a")
    _listener_tls(
        grpc_proxy,
        {
            "common_tls_context": {
                "tls_certificates": [_files(a.cert_file, a.key_file)],
                "validation_context": {
                    "trusted_ca": {"filename": str(pki.cert_file)},
                    "match_typed_subject_alt_names": [{"matcher": {"exact": "x"}}],
                },
            }
        },
    )
    assert _reject(grpc_proxy, material) == [
        Problem(
            f"{CTC}.validation_context.match_typed_subject_alt_names[0].san_type",
            "SAN_TYPE_UNSPECIFIED is not allowed here",
        )
    ]


def test_sds_from_a_server_needs_an_ads_stream(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _listener_tls(
        grpc_proxy,
        {
            "common_tls_context": {
                "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": {"ads": {}}}]
            }
        },
    )
    problems = _reject(grpc_proxy, material)
    assert problems[0] == Problem(
        f"{CTC}.tls_certificate_sds_secret_configs[0].sds_config",
        "SDS (sds_config) needs dynamic_resources.ads_config; or define the secret in "
        "static_resources.secrets and refer to it by name",
    )


def test_unknown_static_secret(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    _listener_tls(
        grpc_proxy, {"common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "nope"}]}}
    )
    assert _reject(grpc_proxy, material)[0] == Problem(
        f"{CTC}.tls_certificate_sds_secret_configs[0].name",
        "unknown static secret 'nope' (define it in static_resources.secrets)",
    )


def test_a_broken_secret_is_reported_where_it_is_defined(
    grpc_proxy: Bootstrap, pki: TestCA, tmp_path: Path, material: MaterialStore
) -> None:
    grpc_proxy["static_resources"]["secrets"] = [
        {"name": "default", "tls_certificate": _files(pki.cert_file, tmp_path / "gone.pem")}
    ]
    _listener_tls(
        grpc_proxy, {"common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "default"}]}}
    )
    assert _reject(grpc_proxy, material) == [
        Problem(
            "static_resources.secrets[0].tls_certificate.private_key.filename",
            f"cannot read private key '{tmp_path / 'gone.pem'}': No such file or directory",
        ),
        Problem(
            f"{CTC}.tls_certificate_sds_secret_configs[0].name",
            "secret 'default' is invalid (see static_resources.secrets[0])",
        ),
    ]


def test_secret_of_the_wrong_kind(grpc_proxy: Bootstrap, pki: TestCA, material: MaterialStore) -> None:
    grpc_proxy["static_resources"]["secrets"] = [
        {"name": "ROOTCA", "validation_context": {"trusted_ca": {"filename": str(pki.cert_file)}}}
    ]
    _listener_tls(
        grpc_proxy, {"common_tls_context": {"tls_certificate_sds_secret_configs": [{"name": "ROOTCA"}]}}
    )
    assert _reject(grpc_proxy, material)[0] == Problem(
        f"{CTC}.tls_certificate_sds_secret_configs[0].name",
        "secret 'ROOTCA' (static_resources.secrets[0]) is not a tls_certificate secret",
    )


def test_tls_parameters(grpc_proxy: Bootstrap, pki: TestCA, material: MaterialStore) -> None:
    a = pki.issue("a")
    _listener_tls(
        grpc_proxy,
        {
            "common_tls_context": {
                "tls_certificates": [_files(a.cert_file, a.key_file)],
                "tls_params": {
                    "tls_minimum_protocol_version": "TLSv1_3",
                    "tls_maximum_protocol_version": "TLSv1_2",
                    "cipher_suites": [
                        "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]",
                        "NOT-A-CIPHER",
                        "ECDHE-ECDSA-AES256-GCM-SHA384",
                    ],
                    "ecdh_curves": ["X25519"],
                },
            }
        },
    )
    assert _reject(grpc_proxy, material) == [
        Problem(f"{CTC}.tls_params.ecdh_curves", "field not supported by pyproxy"),
        Problem(
            f"{CTC}.tls_params.tls_minimum_protocol_version",
            "TLSv1_3 is above tls_maximum_protocol_version TLSv1_2",
        ),
        Problem(
            f"{CTC}.tls_params.cipher_suites[0]",
            "'[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]'"
            ": equal-preference cipher groups are BoringSSL-only; list the ciphers singly",
        ),
        Problem(
            f"{CTC}.tls_params.cipher_suites[1]",
            "'NOT-A-CIPHER' is not a cipher suite this OpenSSL knows (TLS 1.3 suites cannot be set)",
        ),
    ]


def test_upstream_context_on_a_listener(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    chain = grpc_proxy["static_resources"]["listeners"][0]["filter_chains"][0]
    chain["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {"@type": UPSTREAM}}
    assert _reject(grpc_proxy, material) == [
        Problem(
            f"{CHAIN}.transport_socket.typed_config",
            "UpstreamTlsContext cannot be used here (a listener needs DownstreamTlsContext)",
        )
    ]


def test_upstream_tls_without_verification_and_raw_buffer(
    grpc_proxy: Bootstrap, material: MaterialStore
) -> None:
    cluster = grpc_proxy["static_resources"]["clusters"][0]
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": UPSTREAM, "sni": "backend.local"},
    }
    chain = grpc_proxy["static_resources"]["listeners"][0]["filter_chains"][0]
    chain["transport_socket"] = {
        "name": "envoy.transport_sockets.raw_buffer",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
        },
    }
    snap = parse_bootstrap_dict(grpc_proxy, material=material)
    assert snap.clusters["backend_grpc_service"].tls == m.TlsContext(server_side=False, sni="backend.local")
    assert snap.listeners["0.0.0.0_8811"].filter_chains[0].tls is None


def test_unsupported_transport_socket(grpc_proxy: Bootstrap, material: MaterialStore) -> None:
    cluster = grpc_proxy["static_resources"]["clusters"][0]
    cluster["transport_socket"] = {
        "name": "envoy.transport_sockets.alts",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts",
            "handshaker_service": "127.0.0.1:1",
        },
    }
    assert _reject(grpc_proxy, material) == [
        Problem(
            CLUSTER_TLS,
            "transport socket type 'envoy.extensions.transport_sockets.alts.v3.Alts' is not supported "
            "(supported: envoy.transport_sockets.tls, envoy.transport_sockets.raw_buffer)",
        )
    ]

"""``transport_socket`` (``envoy.transport_sockets.tls`` / ``raw_buffer``) -> :class:`TlsContext`.

Certificates, keys and CAs are loaded with ``cryptography`` at translation time so a bad or mismatched
file is reported with its field path at start, not at the first handshake. Inline material goes to private
files (:mod:`pyproxy.config.material`). An SDS reference without ``sds_config`` resolves against
``static_resources.secrets`` at once; one with an ADS ``sds_config`` (istio-agent's ``default`` and ``ROOTCA``)
becomes a name the xDS client resolves when the ``Secret`` arrives (:func:`sds_secret` translates it).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from typing import Any

from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

from pyproxy.config import model as m
from pyproxy.config.errors import join
from pyproxy.config.material import check_certificates, check_key_pair, load_private_key
from pyproxy.config.translate.common import (
    Ctx,
    data_source,
    enum_name,
    string_matcher,
    typed_name,
    unpack,
    wrapped,
)
from pyproxy.config.translate.dynamic import config_source

TLS = "envoy.transport_sockets.tls"
RAW_BUFFER = "envoy.transport_sockets.raw_buffer"
DOWNSTREAM = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
RAW = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"

_SDS_NEEDS_ADS = (
    "SDS (sds_config) needs dynamic_resources.ads_config; or define the secret in static_resources.secrets "
    "and refer to it by name"
)
_SAN_TYPES = {1: "EMAIL", 2: "DNS", 3: "URI", 4: "IP_ADDRESS"}
_TLS_VERSIONS = {1: "TLSv1_0", 2: "TLSv1_1", 3: "TLSv1_2", 4: "TLSv1_3"}


def transport_socket(ctx: Ctx, ts: Any, path: str, *, server_side: bool) -> m.TlsContext | None:
    """``envoy.config.core.v3.TransportSocket`` -> TlsContext, or None for plaintext (or a reported error)."""
    ctx.check(ts, path, {"name", "typed_config"})
    if not ts.HasField("typed_config"):
        if ts.name == RAW_BUFFER:
            return None
        if ts.name == TLS:  # name-only: an empty context, as Envoy builds from the factory's empty proto
            proto = tls_pb2.DownstreamTlsContext() if server_side else tls_pb2.UpstreamTlsContext()
            return downstream_tls(ctx, proto, path) if server_side else upstream_tls(ctx, proto, path)
        ctx.add(
            join(path, "name"),
            f"transport socket {ts.name!r} is not supported (supported: {TLS}, {RAW_BUFFER})",
        )
        return None
    tpath = join(path, "typed_config")
    kind = typed_name(ts.typed_config)
    if kind == RAW:
        ctx.check(unpack(ts.typed_config, raw_buffer_pb2.RawBuffer), tpath, set())
        return None
    if kind == DOWNSTREAM and server_side:
        return downstream_tls(ctx, unpack(ts.typed_config, tls_pb2.DownstreamTlsContext), tpath)
    if kind == UPSTREAM and not server_side:
        return upstream_tls(ctx, unpack(ts.typed_config, tls_pb2.UpstreamTlsContext), tpath)
    if kind in (DOWNSTREAM, UPSTREAM):
        want = DOWNSTREAM if server_side else UPSTREAM
        ctx.add(
            tpath,
            f"{kind.rsplit('.', 1)[-1]} cannot be used here (a "
            f"{'listener' if server_side else 'cluster'} needs {want.rsplit('.', 1)[-1]})",
        )
        return None
    ctx.add(tpath, f"transport socket type {kind!r} is not supported (supported: {TLS}, {RAW_BUFFER})")
    return None


def downstream_tls(ctx: Ctx, proto: Any, path: str) -> m.TlsContext | None:
    before = len(ctx.problems)
    ctx.check(proto, path, {"common_tls_context", "require_client_certificate"})
    parts = _common(ctx, proto.common_tls_context, join(path, "common_tls_context"))
    require_client = bool(wrapped(proto, "require_client_certificate", False))
    if parts is None:
        return None
    certificates, validation, alpn, versions, ciphers = parts
    if not certificates:
        ctx.add(
            join(path, "common_tls_context"),
            "a DownstreamTlsContext needs a certificate "
            "(tls_certificates or tls_certificate_sds_secret_configs)",
        )
    if require_client and (validation is None or (validation.trusted_ca_file is None and not validation.sds_name)):
        ctx.add(
            join(path, "require_client_certificate"),
            "requiring a client certificate needs a validation context with trusted_ca",
        )
    if len(ctx.problems) != before:
        return None
    return m.TlsContext(
        server_side=True,
        certificates=certificates,
        validation=validation,
        alpn_protocols=alpn,
        require_client_certificate=require_client,
        min_version=versions[0],
        max_version=versions[1],
        cipher_suites=ciphers,
    )


def upstream_tls(ctx: Ctx, proto: Any, path: str) -> m.TlsContext | None:
    before = len(ctx.problems)
    ctx.check(proto, path, {"common_tls_context", "sni"})
    parts = _common(ctx, proto.common_tls_context, join(path, "common_tls_context"))
    if parts is None or len(ctx.problems) != before:
        return None
    certificates, validation, alpn, versions, ciphers = parts
    return m.TlsContext(
        server_side=False,
        certificates=certificates,
        validation=validation,
        alpn_protocols=alpn,
        sni=proto.sni or None,
        min_version=versions[0],
        max_version=versions[1],
        cipher_suites=ciphers,
    )


_Common = tuple[
    tuple[m.CertificateSource, ...],
    m.ValidationContext | None,
    tuple[str, ...],
    tuple[str | None, str | None],
    tuple[str, ...],
]


def _common(ctx: Ctx, ctc: Any, path: str) -> _Common | None:
    before = len(ctx.problems)
    ctx.check(
        ctc,
        path,
        {
            "tls_params",
            "tls_certificates",
            "tls_certificate_sds_secret_configs",
            "validation_context",
            "validation_context_sds_secret_config",
            "combined_validation_context",
            "alpn_protocols",
        },
    )
    versions: tuple[str | None, str | None] = (None, None)
    ciphers: tuple[str, ...] = ()
    if ctc.HasField("tls_params"):
        versions, ciphers = _tls_params(ctx, ctc.tls_params, join(path, "tls_params"))
    certificates: list[m.CertificateSource] = []
    for i, tc in enumerate(ctc.tls_certificates):
        cert = tls_certificate(ctx, tc, f"{join(path, 'tls_certificates')}[{i}]")
        if cert is not None:
            certificates.append(cert)
    for i, sds in enumerate(ctc.tls_certificate_sds_secret_configs):
        cert = _sds_certificate(ctx, sds, f"{join(path, 'tls_certificate_sds_secret_configs')}[{i}]")
        if cert is not None:
            certificates.append(cert)
    validation: m.ValidationContext | None = None
    kind = ctc.WhichOneof("validation_context_type")
    if kind == "validation_context":
        validation = validation_context(ctx, ctc.validation_context, join(path, "validation_context"))
    elif kind == "validation_context_sds_secret_config":
        validation = _sds_validation(
            ctx,
            None,
            ctc.validation_context_sds_secret_config,
            join(path, "validation_context_sds_secret_config"),
        )
    elif kind == "combined_validation_context":
        cp = join(path, "combined_validation_context")
        combined = ctc.combined_validation_context
        ctx.check(combined, cp, {"default_validation_context", "validation_context_sds_secret_config"})
        validation = _sds_validation(
            ctx,
            combined.default_validation_context,
            combined.validation_context_sds_secret_config,
            join(cp, "validation_context_sds_secret_config"),
            default_path=join(cp, "default_validation_context"),
        )
    if len(ctx.problems) != before:
        return None
    return tuple(certificates), validation, tuple(ctc.alpn_protocols), versions, ciphers


def _tls_params(ctx: Ctx, params: Any, path: str) -> tuple[tuple[str | None, str | None], tuple[str, ...]]:
    ctx.check(params, path, {"tls_minimum_protocol_version", "tls_maximum_protocol_version", "cipher_suites"})
    lo = _TLS_VERSIONS.get(params.tls_minimum_protocol_version)
    hi = _TLS_VERSIONS.get(params.tls_maximum_protocol_version)
    if lo and hi and params.tls_minimum_protocol_version > params.tls_maximum_protocol_version:
        ctx.add(
            join(path, "tls_minimum_protocol_version"), f"{lo} is above tls_maximum_protocol_version {hi}"
        )
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for i, suite in enumerate(params.cipher_suites):
        ipath = f"{join(path, 'cipher_suites')}[{i}]"
        if suite.startswith("["):
            ctx.add(
                ipath,
                f"{suite!r}: equal-preference cipher groups are BoringSSL-only; list the ciphers singly",
            )
            continue
        try:
            probe.set_ciphers(suite)
        except (ssl.SSLError, ValueError):  # ValueError: a NUL character
            ctx.add(
                ipath, f"{suite!r} is not a cipher suite this OpenSSL knows (TLS 1.3 suites cannot be set)"
            )
    return (lo, hi), tuple(params.cipher_suites)


def tls_certificate(ctx: Ctx, tc: Any, path: str) -> m.CertificateSource | None:
    """``TlsCertificate`` -> files (inline material written out); checks the PEM and that key matches cert."""
    ctx.check(tc, path, {"certificate_chain", "private_key"})
    chain_path, key_path = join(path, "certificate_chain"), join(path, "private_key")
    if not tc.HasField("certificate_chain"):
        ctx.add(chain_path, "is required")
    if not tc.HasField("private_key"):
        ctx.add(key_path, "is required")
    if not (tc.HasField("certificate_chain") and tc.HasField("private_key")):
        return None
    chain, chain_file = data_source(ctx, tc.certificate_chain, chain_path, "certificate chain")
    key_data, key_file = data_source(ctx, tc.private_key, key_path, "private key")
    if chain is None or key_data is None:  # report what is wrong with the other one too
        if chain is not None and (problem := check_certificates(chain)) is not None:
            ctx.add(chain_path, f"{_origin(chain_file)}{problem}")
        if key_data is not None:
            try:
                load_private_key(key_data)
            except ValueError as err:
                ctx.add(key_path, f"{_origin(key_file)}{err}")
        return None
    chain_problem, key_problem, matches = check_key_pair(chain, key_data)
    if chain_problem is not None:
        ctx.add(chain_path, f"{_origin(chain_file)}{chain_problem}")
    if key_problem is not None:
        ctx.add(key_path, f"{_origin(key_file)}{key_problem}")
    if chain_problem is not None or key_problem is not None:
        return None
    if not matches:
        ctx.add(
            key_path,
            f"{_origin(key_file)}does not match the public key of the certificate "
            f"({_origin(chain_file).rstrip(': ') or 'certificate_chain'})",
        )
        return None
    return m.CertificateSource(
        cert_chain_file=chain_file or ctx.material.write(chain, "cert"),
        private_key_file=key_file or ctx.material.write(key_data, "key"),
    )


def _origin(filename: str | None) -> str:
    return f"{filename}: " if filename else ""


def validation_context(
    ctx: Ctx, cvc: Any, path: str, sds_name: str | None = None, *, ca_from_sds: bool = False
) -> m.ValidationContext | None:
    """``CertificateValidationContext`` -> model. SAN matchers without a trusted CA are refused (as Envoy).

    ``ca_from_sds``: this is the ``default_validation_context`` of a combined context whose CA comes over SDS
    (secret ``sds_name``), so it carries SAN matchers only.
    """
    before = len(ctx.problems)
    ctx.check(cvc, path, {"trusted_ca", "match_typed_subject_alt_names", "match_subject_alt_names"})
    ca_file: str | None = None
    if cvc.HasField("trusted_ca") and ca_from_sds:
        ctx.add(
            join(path, "trusted_ca"),
            f"the trusted CA comes from the SDS secret {sds_name!r} here: remove trusted_ca from "
            "default_validation_context",
        )
    elif cvc.HasField("trusted_ca"):
        ca_path = join(path, "trusted_ca")
        data, filename = data_source(ctx, cvc.trusted_ca, ca_path, "trusted CA")
        if data is not None:
            problem = check_certificates(data)
            if problem is not None:
                ctx.add(ca_path, f"{_origin(filename)}{problem}")
            else:
                ca_file = filename or ctx.material.write(data, "ca")
    sans: list[tuple[Any, m.StringMatcher]] = []
    if len(cvc.match_typed_subject_alt_names) and len(cvc.match_subject_alt_names):
        ctx.add(
            join(path, "match_subject_alt_names"),
            "set either match_typed_subject_alt_names or the deprecated match_subject_alt_names, not both",
        )
    for i, san in enumerate(cvc.match_typed_subject_alt_names):
        spath = f"{join(path, 'match_typed_subject_alt_names')}[{i}]"
        ctx.check(san, spath, {"san_type", "matcher"})
        san_type = _SAN_TYPES.get(san.san_type)
        if san_type is None:
            if san.san_type != 0:  # 0 (unspecified) is reported by the protoc-gen-validate pass
                ctx.add(
                    join(spath, "san_type"),
                    f"{enum_name(san, 'san_type')} is not supported "
                    f"(supported: {', '.join(_SAN_TYPES.values())})",
                )
            continue
        matcher = string_matcher(ctx, san.matcher, join(spath, "matcher"))
        if matcher is not None:
            sans.append((san_type, matcher))
    for i, sm in enumerate(cvc.match_subject_alt_names):
        # Envoy matches a legacy matcher against DNS, URI, email and IP SANs alike.
        matcher = string_matcher(ctx, sm, f"{join(path, 'match_subject_alt_names')}[{i}]")
        if matcher is not None:
            sans.extend((t, matcher) for t in ("DNS", "URI", "EMAIL", "IP_ADDRESS"))
    if sans and not cvc.HasField("trusted_ca") and not ca_from_sds:
        ctx.add(
            path, "matching subject alt names without trusted_ca is insecure and not allowed (as in Envoy)"
        )
    if len(ctx.problems) != before:
        return None
    return m.ValidationContext(
        trusted_ca_file=ca_file, sds_name=sds_name, match_subject_alt_names=tuple(sans)
    )


@dataclass(frozen=True)
class StaticSecret:
    """One ``static_resources.secrets`` entry, checked once; ``ok`` False if it had problems."""

    path: str
    proto: Any
    ok: bool
    certificate: m.CertificateSource | None = None


def _fetched_over_sds(ctx: Ctx, sds: Any, path: str) -> bool:
    """An ``SdsSecretConfig`` with an ``sds_config``: check it is ADS (True if it can be used)."""
    if not ctx.ads:
        ctx.check(sds, path, {"name"}, reasons={"sds_config": _SDS_NEEDS_ADS})
        return False
    before = len(ctx.problems)
    ctx.check(sds, path, {"name", "sds_config"})
    config_source(ctx, sds.sds_config, join(path, "sds_config"))
    return len(ctx.problems) == before and bool(sds.name)  # an empty name is reported by protoc-gen-validate


def _static_secret(ctx: Ctx, sds: Any, path: str, kind: str) -> StaticSecret | None:
    ctx.check(sds, path, {"name"})
    secret: StaticSecret | None = ctx.secrets.get(sds.name)
    if secret is None:
        ctx.add(
            join(path, "name"), f"unknown static secret {sds.name!r} (define it in static_resources.secrets)"
        )
        return None
    if secret.proto.WhichOneof("type") != kind:
        ctx.add(join(path, "name"), f"secret {sds.name!r} ({secret.path}) is not a {kind} secret")
        return None
    if not secret.ok:
        ctx.add(join(path, "name"), f"secret {sds.name!r} is invalid (see {secret.path})")
        return None
    return secret


def _sds_certificate(ctx: Ctx, sds: Any, path: str) -> m.CertificateSource | None:
    if sds.HasField("sds_config"):
        return m.CertificateSource(sds_name=sds.name) if _fetched_over_sds(ctx, sds, path) else None
    secret = _static_secret(ctx, sds, path, "tls_certificate")
    if secret is None or secret.certificate is None:
        return None
    return replace(secret.certificate, sds_name=sds.name)


def _sds_validation(
    ctx: Ctx, default: Any | None, sds: Any, path: str, default_path: str = ""
) -> m.ValidationContext | None:
    """A validation context from a static secret, merged over ``default`` as Envoy's combined context does
    (singular fields from the secret win, repeated ones such as SAN matchers are concatenated).

    A secret fetched over SDS gives a context with ``sds_name`` and the SAN matchers of ``default`` only; the
    xDS client adds the secret's CA (and any matchers of its own) when it arrives.
    """
    if sds.HasField("sds_config"):
        if not _fetched_over_sds(ctx, sds, path):
            return None
        if default is None:
            return m.ValidationContext(sds_name=sds.name)
        return validation_context(ctx, default, default_path, sds_name=sds.name, ca_from_sds=True)
    secret = _static_secret(ctx, sds, path, "validation_context")
    if secret is None:
        return None
    merged = type(secret.proto.validation_context)()
    if default is not None:
        merged.CopyFrom(default)
    merged.MergeFrom(secret.proto.validation_context)
    return validation_context(
        ctx, merged, default_path or join(secret.path, "validation_context"), sds_name=sds.name
    )


_SECRET_REASONS = {
    "session_ticket_keys": "session ticket keys are not supported",
    "generic_secret": "generic secrets are not supported (only tls_certificate and validation_context)",
}


def sds_secret(ctx: Ctx, secret: Any, path: str) -> m.TlsSecret | m.ValidationSecret | None:
    """An SDS ``Secret`` resource -> TlsSecret (checked PEM files; inline PEM written to private files named by
    content hash) or ValidationSecret (a trusted CA is required); None if it has problems."""
    before = len(ctx.problems)
    ctx.check(secret, path, {"name", "tls_certificate", "validation_context"}, reasons=_SECRET_REASONS)
    kind = secret.WhichOneof("type")
    if kind == "tls_certificate":
        cert = tls_certificate(ctx, secret.tls_certificate, join(path, "tls_certificate"))
        if cert is None or cert.cert_chain_file is None or cert.private_key_file is None:
            return None
        return m.TlsSecret(secret.name, cert.cert_chain_file, cert.private_key_file)
    if kind == "validation_context":
        vpath = join(path, "validation_context")
        if not secret.validation_context.HasField("trusted_ca"):
            ctx.add(join(vpath, "trusted_ca"), "is required in a validation_context secret")
        validation = validation_context(ctx, secret.validation_context, vpath, sds_name=secret.name)
        if validation is None or validation.trusted_ca_file is None or len(ctx.problems) != before:
            return None
        return m.ValidationSecret(secret.name, validation.trusted_ca_file, validation.match_subject_alt_names)
    if kind is None:
        ctx.add(path, "a secret needs tls_certificate or validation_context")
    return None


def translate_secrets(ctx: Ctx, secrets: Any, path: str) -> dict[str, StaticSecret]:
    """Check ``static_resources.secrets`` once and index them by name for SDS references."""
    by_name: dict[str, StaticSecret] = {}
    for i, secret in enumerate(secrets):
        spath = f"{path}[{i}]"
        before = len(ctx.problems)
        ctx.check(secret, spath, {"name", "tls_certificate", "validation_context"}, reasons=_SECRET_REASONS)
        if secret.name in by_name:
            ctx.add(join(spath, "name"), f"duplicate secret name {secret.name!r}")
            continue
        kind = secret.WhichOneof("type")
        certificate = None
        if kind == "tls_certificate":
            certificate = tls_certificate(ctx, secret.tls_certificate, join(spath, "tls_certificate"))
        elif kind == "validation_context":
            validation_context(ctx, secret.validation_context, join(spath, "validation_context"))
        elif kind is None:
            ctx.add(spath, "a secret needs tls_certificate or validation_context")
        by_name[secret.name] = StaticSecret(spath, secret, len(ctx.problems) == before, certificate)
    return by_name

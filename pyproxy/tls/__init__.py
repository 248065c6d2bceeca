"""TLS for both sides of the proxy: ``ssl.SSLContext`` built once per TLS config, peer identity checks.

Envoy semantics kept here:
- Downstream (server) side: a ``validation_context`` makes the proxy request a client certificate and verify
  it when presented; ``require_client_certificate`` makes it mandatory.
- Upstream (client) side: without a ``validation_context`` the server certificate is not verified (Envoy's
  behaviour); with one it is verified against the trusted CA, and ``match_typed_subject_alt_names`` must
  match one of the peer's SANs. Hostname checking is off: SPIFFE identities are URI SANs.
- ALPN as configured (``h2`` for the proxy's HTTP/2 listeners and clusters).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from pyproxy.config.model import TlsContext, ValidationContext

_TLS_VERSIONS = {
    "TLS_AUTO": None,
    "TLSv1_0": ssl.TLSVersion.TLSv1,
    "TLSv1_1": ssl.TLSVersion.TLSv1_1,
    "TLSv1_2": ssl.TLSVersion.TLSv1_2,
    "TLSv1_3": ssl.TLSVersion.TLSv1_3,
}


class TlsConfigError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What we learned about the peer from its certificate."""

    uri_sans: tuple[str, ...] = ()
    dns_sans: tuple[str, ...] = ()
    subject: str = ""
    presented: bool = False  # the peer presented a (verified) certificate

    @property
    def principal(self) -> str:
        """The SPIFFE ID (first URI SAN starting with spiffe://), or "" when none."""
        for uri in self.uri_sans:
            if uri.startswith("spiffe://"):
                return uri
        return ""


def identity_from_cert(cert: dict[str, object] | None) -> PeerIdentity:
    if not cert:
        return PeerIdentity()
    uris: list[str] = []
    dns: list[str] = []
    for kind, value in cert.get("subjectAltName", ()):  # type: ignore[attr-defined]
        if kind == "URI":
            uris.append(value)
        elif kind == "DNS":
            dns.append(value)
    subject = ",".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)  # type: ignore[attr-defined]
    return PeerIdentity(tuple(uris), tuple(dns), subject, presented=True)


def san_matches(validation: ValidationContext | None, identity: PeerIdentity) -> bool:
    """``match_typed_subject_alt_names``: any matcher matching any SAN of its type (none configured = ok)."""
    if validation is None or not validation.match_subject_alt_names:
        return True
    for san_type, matcher in validation.match_subject_alt_names:
        values: Iterable[str]
        if san_type == "URI":
            values = identity.uri_sans
        elif san_type == "DNS":
            values = identity.dns_sans
        else:
            values = ()
        if any(matcher.matches(v) for v in values):
            return True
    return False


def build_context(tls: TlsContext, default_alpn: tuple[str, ...] = ("h2",)) -> ssl.SSLContext:
    """An SSLContext for ``tls`` (raises TlsConfigError with a readable reason)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if tls.server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.minimum_version = _TLS_VERSIONS.get(tls.min_version or "TLSv1_2") or ssl.TLSVersion.TLSv1_2
    if tls.max_version and _TLS_VERSIONS.get(tls.max_version):
        ctx.maximum_version = _TLS_VERSIONS[tls.max_version]  # type: ignore[assignment]
    ctx.options |= ssl.OP_NO_COMPRESSION
    if tls.cipher_suites:
        try:
            ctx.set_ciphers(":".join(tls.cipher_suites))
        except ssl.SSLError as e:
            raise TlsConfigError(f"cipher_suites {list(tls.cipher_suites)}: {e}") from e
    for cert in tls.certificates:
        if cert.cert_chain_file is None:
            continue  # SDS-provided certificates are loaded by the secret manager
        try:
            ctx.load_cert_chain(cert.cert_chain_file, cert.private_key_file)
        except (OSError, ssl.SSLError) as e:
            raise TlsConfigError(f"cannot load certificate {cert.cert_chain_file}: {e}") from e
    validation = tls.validation
    if validation is not None and validation.trusted_ca_file:
        try:
            ctx.load_verify_locations(cafile=validation.trusted_ca_file)
        except (OSError, ssl.SSLError) as e:
            raise TlsConfigError(f"cannot load trusted CA {validation.trusted_ca_file}: {e}") from e
        if tls.server_side:
            ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
        else:
            ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        if tls.server_side and tls.require_client_certificate:
            raise TlsConfigError("require_client_certificate needs a validation_context with trusted_ca")
        ctx.verify_mode = ssl.CERT_NONE
    alpn = tls.alpn_protocols or default_alpn
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def principal_of_cert_file(path: str | None) -> str:
    """The SPIFFE ID in the first certificate of a PEM file ("" when none or unreadable)."""
    if not path:
        return ""
    from cryptography import x509

    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return ""
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith("spiffe://"):
            return str(uri)
    return ""


def local_principal(tls: TlsContext | None) -> str:
    if tls is None:
        return ""
    for cert in tls.certificates:
        principal = principal_of_cert_file(cert.cert_chain_file)
        if principal:
            return principal
    return ""

"""SDS resources the control plane serves: ``ROOTCA`` only.

``ROOTCA`` is a ``envoy.extensions.transport_sockets.tls.v3.Secret`` whose ``validation_context.trusted_ca``
holds the CA's current trust bundle inline (PEM, several roots during a rotation: ``[old, new]``), so a
rotation reaches every sidecar as one SDS push. ``default`` (the workload's key and certificate chain) is
never served here: the key is made in the sidecar and never leaves it; its agent serves ``default`` locally.

The bundle is not part of the Istio resources, so it is added to a proxy's translated resources afterwards
(:func:`with_root_ca`) and versioned like every other resource (a new bundle = a new version = a push).
"""

from __future__ import annotations

from cryptography import x509
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from mesh_ctl.translate.names import SDS_ROOT, SECRET_TYPE
from mesh_ctl.translate.proxy import ProxyResources


def check_trust_bundle(pem: bytes) -> int:
    """The number of certificates in ``pem``; ValueError if it holds none or does not parse."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise ValueError(f"the trust bundle is not PEM certificates: {e}") from None
    if not certs:
        raise ValueError("the trust bundle holds no certificate")
    return len(certs)


def root_ca_secret(trust_bundle: bytes) -> secret_pb2.Secret:
    """The ``ROOTCA`` secret for ``trust_bundle`` (PEM, one or more CA certificates)."""
    secret = secret_pb2.Secret(name=SDS_ROOT)
    secret.validation_context.trusted_ca.inline_bytes = trust_bundle
    return secret


def with_root_ca(resources: ProxyResources, trust_bundle: bytes | None) -> ProxyResources:
    """``resources`` plus the ``ROOTCA`` secret for a sidecar (none without a bundle, none for proxyless
    clients: grpcio takes its certificates from its own bootstrap)."""
    secrets = {}
    if trust_bundle and resources.kind == "sidecar":
        secrets[SDS_ROOT] = root_ca_secret(trust_bundle)
    return resources.with_type(SECRET_TYPE, secrets)

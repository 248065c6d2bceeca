"""Sidecar TLS: the contexts (certificates by SDS, or from files), the inbound filter chains of each
PeerAuthentication mode, and the client's choice between mTLS and plaintext (auto-mTLS).

Where the certificates come from (:class:`TlsSource`):

- ``sds`` (default, as Istio): ``tls_certificate_sds_secret_configs: [{name: default, sds_config: {ads: {},
  resource_api_version: V3}}]`` and ``combined_validation_context {default_validation_context:
  {match_typed_subject_alt_names: [...]}, validation_context_sds_secret_config: {name: ROOTCA, ...}}``.
  ``default`` (key + chain) is made and kept by the sidecar's agent, never sent by the control plane;
  ``ROOTCA`` (the trust bundle) is pushed by the control plane over ADS (:mod:`.secrets`).
- ``files``: the workload's ``cert-chain.pem`` / ``key.pem`` / ``root-cert.pem`` as ``mesh_ctl up`` writes
  them, for static bootstraps (:mod:`.static`) and sidecars without an agent.

Client side (a cluster's ``UpstreamTlsContext``): Istio's ALPN for in-mesh HTTP/2 (``istio-peer-exchange``,
``istio``, ``h2``), SNI ``outbound_.<port>_.<subset>_.<fqdn>``, SAN exact matches on the destination's SPIFFE
IDs. Server side (``DownstreamTlsContext``): client certificate required, SAN prefix ``spiffe://<trust
domain>/`` (any workload of the mesh; *which* one may call is authorization), ALPN ``h2``, ``http/1.1``, TLS
1.2-1.3 with Istio's cipher suites.

Inbound filter chains (Istio's ``filterchain_options.go`` for an HTTP port):

- STRICT: one chain matching ``transport_protocol: tls``, with the TLS context;
- PERMISSIVE: one chain for ``transport_protocol: tls`` + ALPN in Istio's mesh ALPNs (``istio``,
  ``istio-peer-exchange``, ``istio-http/1.0``, ``istio-http/1.1``, ``istio-h2``), with the TLS context, and
  one for ``raw_buffer`` (plaintext h2c); the ``envoy.filters.listener.tls_inspector`` listener filter tells
  them apart by peeking at the first bytes (a ClientHello and its ALPN, or the h2c preface);
- DISABLE: one plaintext chain (``raw_buffer``).

Client decision (Istio's auto-mTLS): a DestinationRule ``tls.mode`` of ``DISABLE`` or ``ISTIO_MUTUAL`` is
obeyed; otherwise mTLS unless the destination workloads' effective mode for the service port is DISABLE
(Istio marks such endpoints ``tlsMode: disabled``). Without endpoints, the mesh- and namespace-wide policies
decide (Istio's ``BestEffortInferServiceMTLSMode``). A cluster has one transport socket in pyproxy (no
``transport_socket_matches``), so a cluster mixing DISABLE endpoints with others uses mTLS and warns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mesh_ctl.ca.files import CertFiles
from mesh_ctl.translate.limits import TLS_HANDSHAKE_TIMEOUT
from mesh_ctl.translate.names import (
    DOWNSTREAM_TLS_TYPE,
    SDS_DEFAULT,
    SDS_ROOT,
    TLS,
    TLS_INSPECTOR,
    TLS_INSPECTOR_TYPE,
    UPSTREAM_TLS_TYPE,
)
from mesh_ctl.translate.peer_authn import MtlsMode
from mesh_ctl.translate.values import Json

TlsMaterial = Literal["sds", "files"]
MATERIALS: tuple[TlsMaterial, ...] = ("sds", "files")
CLIENT_ALPN = ("istio-peer-exchange", "istio", "h2")  # Istio's ALPNInMeshH2WithMxc
SERVER_ALPN = ("h2", "http/1.1")  # Istio's ALPNHttp
MESH_ALPNS = ("istio", "istio-peer-exchange", "istio-http/1.0", "istio-http/1.1", "istio-h2")  # allIstioMtlsALPNs
# Istio's SupportedCiphers for sidecar servers (TLS 1.3 suites are not configurable).
CIPHER_SUITES = ("ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
                 "ECDHE-RSA-AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-GCM-SHA256")
TLS_TRANSPORT = "tls"
RAW_TRANSPORT = "raw_buffer"


@dataclass(frozen=True, slots=True)
class TlsSource:
    """Where a sidecar's TLS material comes from: SDS (``certs`` unused) or the files ``certs``."""

    material: TlsMaterial = "sds"
    certs: CertFiles | None = None


def sds_secret_config(name: str) -> Json:
    return {"name": name, "sds_config": {"ads": {}, "resource_api_version": "V3"}}


def uri_san(matcher: Json) -> Json:
    return {"san_type": "URI", "matcher": matcher}


def common_tls(source: TlsSource, sans: Sequence[Json], alpn: Sequence[str]) -> Json:
    """A ``CommonTlsContext``: this workload's certificate and the trust bundle, peers checked against
    ``sans`` (``SubjectAltNameMatcher`` dicts)."""
    if source.material == "files":
        assert source.certs is not None, "files mode needs the workload's certificate files"
        validation: Json = {"trusted_ca": {"filename": str(source.certs.root_cert)}}
        if sans:
            validation["match_typed_subject_alt_names"] = list(sans)
        out: Json = {
            "tls_certificates": [{"certificate_chain": {"filename": str(source.certs.cert_chain)},
                                  "private_key": {"filename": str(source.certs.private_key)}}],
            "validation_context": validation,
        }
    else:
        default: Json = {"match_typed_subject_alt_names": list(sans)} if sans else {}
        out = {
            "tls_certificate_sds_secret_configs": [sds_secret_config(SDS_DEFAULT)],
            "combined_validation_context": {
                "default_validation_context": default,
                "validation_context_sds_secret_config": sds_secret_config(SDS_ROOT),
            },
        }
    out["alpn_protocols"] = list(alpn)
    return out


def upstream_tls(source: TlsSource, peer_spiffe_ids: Sequence[str], sni: str) -> Json:
    """A cluster's ``transport_socket`` for Istio mTLS to the given peers."""
    sans = [uri_san({"exact": s}) for s in peer_spiffe_ids]
    return {"name": TLS, "typed_config": {
        "@type": UPSTREAM_TLS_TYPE,
        "common_tls_context": common_tls(source, sans, CLIENT_ALPN),
        "sni": sni,
    }}


def downstream_tls(source: TlsSource, trust_domain: str) -> Json:
    """The inbound ``transport_socket``: mTLS, any SPIFFE identity of ``trust_domain``."""
    common = common_tls(source, [uri_san({"prefix": f"spiffe://{trust_domain}/"})], SERVER_ALPN)
    common["tls_params"] = {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3",
                            "cipher_suites": list(CIPHER_SUITES)}
    return {"name": TLS, "typed_config": {
        "@type": DOWNSTREAM_TLS_TYPE,
        "common_tls_context": common,
        "require_client_certificate": True,
    }}


def tls_inspector() -> Json:
    return {"name": TLS_INSPECTOR, "typed_config": {"@type": TLS_INSPECTOR_TYPE}}


def inbound_chains(mode: MtlsMode, name: str, filters: list[Json], source: TlsSource, trust_domain: str,
                   ) -> tuple[list[Json], list[Json]]:
    """(filter chains, listener filters) of an inbound listener in ``mode`` (see the module docstring). The
    mTLS chain is named ``name``, the plaintext one ``<name>-plaintext`` (chain names must be unique: pyproxy
    keeps per-chain state by name)."""
    def chain(match: Json, tls: bool) -> Json:
        fc: Json = {"name": name if tls else f"{name}-plaintext", "filter_chain_match": match, "filters": filters}
        if tls:
            fc["transport_socket"] = downstream_tls(source, trust_domain)
            # A handshake must finish in this time (mesh_ctl.translate.limits; Istio sets none).
            fc["transport_socket_connect_timeout"] = TLS_HANDSHAKE_TIMEOUT
        return fc

    if mode == "STRICT":
        return [chain({"transport_protocol": TLS_TRANSPORT}, True)], [tls_inspector()]
    if mode == "DISABLE":
        return [chain({"transport_protocol": RAW_TRANSPORT}, False)], []
    return ([chain({"transport_protocol": TLS_TRANSPORT, "application_protocols": list(MESH_ALPNS)}, True),
             chain({"transport_protocol": RAW_TRANSPORT}, False)], [tls_inspector()])


ClientTls = Literal["ISTIO_MUTUAL", "DISABLE"]


def client_tls_mode(rule_mode: str | None, endpoint_modes: Sequence[MtlsMode], service_mode: MtlsMode,
                    ) -> tuple[ClientTls, bool]:
    """(what the client originates, whether the endpoints are mixed). ``rule_mode`` is the DestinationRule's
    ``tls.mode`` (None: unset, auto-mTLS); ``endpoint_modes`` the destination workloads' effective modes for
    the service port; ``service_mode`` the mesh/namespace-wide mode (used when there is no endpoint)."""
    if rule_mode == "DISABLE":
        return "DISABLE", False
    if rule_mode == "ISTIO_MUTUAL":
        return "ISTIO_MUTUAL", False
    if not endpoint_modes:
        return ("DISABLE" if service_mode == "DISABLE" else "ISTIO_MUTUAL"), False
    disabled = sum(1 for m in endpoint_modes if m == "DISABLE")
    if disabled == len(endpoint_modes):
        return "DISABLE", False
    return "ISTIO_MUTUAL", disabled > 0

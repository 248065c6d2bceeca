"""The mesh's certificate authority: SPIFFE workload certificates for workloads that prove who they are.

Istio's defaults and shapes (``REFERENCE.md`` section 4): RSA 2048 roots valid 10 years (subject
``O=<trust domain>``), workload certificates valid 24 h (at most 90 d) whose only identity is the critical URI
SAN ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>`` (empty subject), usable as TLS server and
client, backdated 2 minutes for clock skew. The flow::

    mesh_ctl ca mint-token / ControlPlaneCA.mint_token   -> a bootstrap JWT naming ns/sa (tokens.py)
    sidecar: key + CSR, CreateCertificate(csr, ttl) with `authorization: Bearer <jwt>` on the xDS port
      service.py   token valid? -> TTL allowed? -> CSR well-formed (csr.py)? -> SAN == token identity?
      signer.py    sign with the current signing CA (roots.py) -> [leaf, intermediates..., root]
    trust bundle (ControlPlaneCA.trust_bundle + subscribe) -> every proxy's SDS ROOTCA (pushed by the ADS side)

Modules, pure unless marked I/O::

    authority.py   certificate builders: roots, intermediates, workload leaves (no files, no clock)
    tokens.py      bootstrap tokens: ES256 JWT mint/verify; the key file (I/O: load_or_create_key)
    csr.py         what a CSR asks for, and the refusals (one SPIFFE URI SAN, our trust domain, no CA bits)
    signer.py      TtlPolicy, SigningAuthority (who signs + chain), issue() -> the chain
    rotation.py    root rotation with overlap as a state machine (stable -> publishing -> switched -> stable)
    roots.py       I/O: self-signed roots on disk + rotation.json; or plug-in cacerts (material.py, I/O)
    service.py     CertificateService (token-authenticated signing, logs, refusals) + the grpc.aio servicer
    control.py     ControlPlaneCA: everything above as the control plane runs it (bundle listeners, clock)
    api.py         /v1/ca/* routes of the management API;  options.py  the `serve` settings
    files.py       PEM files: keys 0600, atomic replace; the per-workload files `mesh_ctl up` writes today
    proto/         istio.v1.auth.IstioCertificateService, generated from protos/istio_ca.proto
"""

from mesh_ctl.ca.authority import (
    CertificateAuthority,
    create_intermediate_ca,
    create_root_ca,
    fingerprint,
    issue_workload_cert,
    sign_workload_cert,
    spiffe_id,
)

__all__ = ["CertificateAuthority", "create_intermediate_ca", "create_root_ca", "fingerprint", "issue_workload_cert",
           "sign_workload_cert", "spiffe_id"]

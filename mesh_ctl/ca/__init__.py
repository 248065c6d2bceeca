"""The mesh's certificate authority: a self-signed root and SPIFFE workload certificates.

Istio's defaults (``REFERENCE.md`` section 4): RSA 2048 keys, a self-signed root valid 10 years (subject
``O=<trust domain>``), workload certificates valid 24 h whose only identity is the URI SAN
``spiffe://<trust domain>/ns/<namespace>/sa/<service account>`` (empty subject, so the SAN is critical),
usable as both TLS server and client, backdated 2 minutes for clock skew.

    authority.py   pure crypto: create_root_ca(), sign_workload_cert(ca, csr_or_public_key, spiffe_id, ttl),
                   issue_workload_cert() (new key + sign). No files, no clock unless none is passed.
    files.py       PEM on disk: keys 0600, certificates 0644; load-or-create the root in a directory;
                   write a workload's cert-chain.pem / key.pem / root-cert.pem (Istio's file names).

Signing stays a pure function so the later CA service (CSR signing over gRPC, tokens, rotation) only adds
authentication and transport around it.
"""

from mesh_ctl.ca.authority import (
    CertificateAuthority,
    create_root_ca,
    issue_workload_cert,
    sign_workload_cert,
    spiffe_id,
)

__all__ = ["CertificateAuthority", "create_root_ca", "issue_workload_cert", "sign_workload_cert", "spiffe_id"]

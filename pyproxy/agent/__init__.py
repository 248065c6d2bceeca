"""The sidecar's identity: istio-agent's job, inside pyproxy.

The private key is made here and never leaves the process (only its CSR does). A certificate for the
workload's SPIFFE ID ``spiffe://<trust domain>/ns/<namespace>/sa/<service account>`` comes from the mesh's CA
(``istio.v1.auth.IstioCertificateService/CreateCertificate``, authenticated with the workload's bootstrap
token), is checked, written to a private directory and published to the xDS state as the SDS secrets Envoy
gets from istio-agent: ``default`` (key + chain) and ``ROOTCA`` (the trust bundle). TLS contexts that name
them are resolved like any SDS secret; the runtime swaps the snapshot in (new connections use the new
certificate, connections already open keep theirs). Renewal at half the lifetime, Istio's schedule.

    options.py    AgentOptions: flags + the bootstrap's node metadata; durations ("24h", "5s")
    pki.py        pure crypto: key, CSR, validation of the CA's answer, certificate facts for /certs
    schedule.py   pure timing: when to renew (grace ratio 0.5 +- 0.01 jitter), retry back-off
    store.py      the private directory (0700; files 0600, new names per issuance, removed when unused)
    ca_client.py  CreateCertificate over pyproxy's own gRPC client (plain, or TLS verified by --ca-root)
    manager.py    SecretManager (trio): issue, validate, store, publish, renew, retry, log

Trust bundle: the root of the CA's answer is published as ``ROOTCA`` only as a fallback; a ``ROOTCA``
pushed by the control plane over SDS (the bundle with old and new roots during a root rotation) wins.
"""

from pyproxy.agent.options import AgentOptions, parse_duration
from pyproxy.agent.pki import ROOT_SECRET, WORKLOAD_SECRET

__all__ = ["ROOT_SECRET", "WORKLOAD_SECRET", "AgentOptions", "parse_duration"]

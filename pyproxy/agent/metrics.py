"""The identity agent's metrics under istio-agent's names (Prometheus text), pure: read from the manager's state.

Only the ones whose meaning pyproxy really has (``security/pkg/nodeagent/cache/monitoring.go``):

    istio_agent_cert_expiry_seconds{resource_name}          gauge    seconds until the certificate of the SDS
                                                                     resource ``default`` (and ``ROOTCA``) expires;
                                                                     negative once expired
    istio_agent_num_outgoing_requests{request_type="csr"}   counter  CreateCertificate calls to the CA
    istio_agent_num_failed_outgoing_requests{request_type}  counter  the ones that failed
    istio_agent_outgoing_latency{request_type="csr"}        counter  total milliseconds of the successful ones

Istio's monitoring library declares its sums as counters without a ``_total`` suffix; so are these. Before the
first certificate there is no expiry series (Istio's derived gauge has none either).
"""

from __future__ import annotations

from pyproxy.agent.manager import SecretManager
from pyproxy.agent.pki import ROOT_SECRET, WORKLOAD_SECRET

CSR = "csr"


def lines(manager: SecretManager, now: float) -> list[str]:
    out = [
        "# HELP istio_agent_cert_expiry_seconds The left time, in seconds, when cert chain will expire. "
        "A negative value indicates the cert is expired.",
        "# TYPE istio_agent_cert_expiry_seconds gauge",
    ]
    current = manager.current
    if current is not None:
        root_not_after = current.issued.root.not_valid_after_utc.timestamp()
        out.append(f'istio_agent_cert_expiry_seconds{{resource_name="{WORKLOAD_SECRET}"}} '
                   f"{current.not_after - now:.3f}")
        out.append(f'istio_agent_cert_expiry_seconds{{resource_name="{ROOT_SECRET}"}} {root_not_after - now:.3f}')
    for name, help_text, value in (
        ("num_outgoing_requests", "Number of total outgoing requests (e.g. to a token exchange server, CA, etc.)",
         f"{manager.csr_requests}"),
        ("num_failed_outgoing_requests", "Number of failed outgoing requests (e.g. to a token exchange server, CA, "
         "etc.)", f"{manager.csr_failures}"),
        ("outgoing_latency", "The latency of outgoing requests (e.g. to a token exchange server, CA, etc.) in "
         "milliseconds.", f"{manager.csr_latency_ms:.3f}"),
    ):
        out.append(f"# HELP istio_agent_{name} {help_text}")
        out.append(f"# TYPE istio_agent_{name} counter")
        out.append(f'istio_agent_{name}{{request_type="{CSR}"}} {value}')
    return out

"""The identity agent's metrics under istio-agent's names, read from a SecretManager that talked to a fake CA."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from pyproxy.agent.ca_client import CaError
from pyproxy.agent.metrics import lines
from tests.unit.agent.signer import Signer
from tests.unit.agent.test_manager import FakeCA, Proxy, make, run_for, signer, token, wall

__all__ = ["signer", "token"]  # fixtures


def _samples(text: str) -> dict[tuple[str, str], float]:
    """(family, resource_name or request_type) -> value; counters by the family name, without the ``_total``
    prometheus_client's parser adds to their samples (Istio's own names have none)."""
    return {(f.name, s.labels.get("resource_name") or s.labels.get("request_type", "")): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


async def test_csr_counts_failures_and_expiry(autojump_clock: trio.testing.MockClock, tmp_path: Path,
                                              token: Path, signer: Signer) -> None:
    ca = FakeCA(signer)
    manager = make(tmp_path, token, ca, Proxy(), ttl=100.0)
    before = _samples("\n".join(lines(manager, wall())))
    assert ("istio_agent_cert_expiry_seconds", "default") not in before  # no certificate, no series
    assert before[("istio_agent_num_outgoing_requests", "csr")] == 0
    ca.failures.append(CaError("PERMISSION_DENIED: no", 7))
    await run_for(manager, 10)  # one refusal, then a certificate after the back-off
    got = _samples("\n".join(lines(manager, wall())))
    assert got[("istio_agent_num_outgoing_requests", "csr")] == len(ca.calls) == 2
    assert got[("istio_agent_num_failed_outgoing_requests", "csr")] == 1
    assert got[("istio_agent_outgoing_latency", "csr")] >= 0
    assert manager.current is not None
    assert got[("istio_agent_cert_expiry_seconds", "default")] == round(manager.current.not_after - wall(), 3)
    assert 0 < got[("istio_agent_cert_expiry_seconds", "default")] <= 100
    assert got[("istio_agent_cert_expiry_seconds", "ROOTCA")] > 100  # the CA's root outlives the leaf

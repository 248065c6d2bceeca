"""Authorization in the server sidecar: Envoy RBAC filters shaped like Istio's AuthorizationPolicy output.

The server sidecar's bootstrap (tests/integration/bootstraps/server_sidecar.yaml) has a DENY filter (the client
identity sending ``x-rbac-test: deny``) before an ALLOW filter (any peer of the trust domain). A denied gRPC call
must get Envoy's answer: trailers-only, grpc-status 7 PERMISSION_DENIED, "RBAC: access denied", and never reach
the server; the sidecar counts it and keeps serving.
"""

from __future__ import annotations

import grpc
import pytest

from payment_service import api
from payment_service.proto import payment_pb2 as pb
from tests.support.mesh import Mesh

pytestmark = pytest.mark.timeout(60)


def _served(mesh: Mesh) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.app_port}") as direct:
        stats = api.Stub(direct).GetServerStats(pb.ServerStatsRequest(), timeout=5)
    return int(stats.calls_by_method.get("/payment.PaymentService/Charge", 0))


def _rbac_counter(mesh: Mesh, name: str) -> int:
    """Envoy's ``http.<HCM stat_prefix>.rbac.<rules_stat_prefix><name>`` as Prometheus shows it; /stats agrees."""
    _, body = mesh.server_sidecar.admin("/stats/prometheus")
    found = [int(float(line.rsplit(" ", 1)[1])) for line in body.decode().splitlines()
             if line.startswith(f'envoy_http_rbac_{name}{{envoy_http_conn_manager_prefix="inbound_0.0.0.0_50051"}} ')]
    assert len(found) == 1, body.decode()
    _, stats = mesh.server_sidecar.admin("/stats")
    assert f"http.inbound_0.0.0.0_50051.rbac.{name}: {found[0]}\n" in stats.decode()
    return found[0]


def test_denied_call_gets_permission_denied_and_never_reaches_the_server(mesh: Mesh) -> None:
    before = _served(mesh)
    denied_before = _rbac_counter(mesh, "denied")
    with mesh.channel() as channel, pytest.raises(grpc.RpcError) as err:
        api.Stub(channel).Charge(pb.ChargeRequest(amount=1), metadata=(("x-rbac-test", "deny"),), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details() == "RBAC: access denied"
    assert _served(mesh) == before
    assert _rbac_counter(mesh, "denied") == denied_before + 1


def test_allowed_calls_pass_both_filters(mesh: Mesh) -> None:
    before = _served(mesh)
    allowed_before = _rbac_counter(mesh, "allow_allowed")  # the ALLOW filter's rules_stat_prefix is "allow_"
    with mesh.channel() as channel:
        reply = api.Stub(channel).Charge(pb.ChargeRequest(amount=1), metadata=(("x-rbac-test", "allow"),),
                                         timeout=5)
    assert reply.version
    assert _served(mesh) == before + 1
    assert _rbac_counter(mesh, "allow_allowed") == allowed_before + 1

"""SDS over the ADS stream: the control plane serves ``ROOTCA`` (the CA's trust bundle, pushed again on every
rotation) and never ``default``; clusters and listeners refer to both by name. Real grpc.aio server and client
on loopback, hand-written DiscoveryRequests."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from envoy.service.discovery.v3 import discovery_pb2

from mesh_ctl.ca import create_root_ca
from mesh_ctl.ca.files import cert_pem
from mesh_ctl.registry import Registry
from mesh_ctl.translate import translate_for_proxy, with_root_ca
from mesh_ctl.translate.names import CLUSTER_TYPE, LISTENER_TYPE, SECRET_TYPE
from mesh_ctl.xds.ads import AdsServer
from tests.unit.xds_server.conftest import CLIENT_NODE, V1, V1_NODE, Stream, dr, generation, node, run, serving

OLD = cert_pem(create_root_ca("cluster.local").cert)
NEW = cert_pem(create_root_ca("cluster.local").cert)


def secrets_of(response: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    out = {}
    for a in response.resources:
        s = secret_pb2.Secret()
        assert a.Unpack(s)
        out[s.name] = s
    return out


def roots(secret: secret_pb2.Secret) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(secret.validation_context.trusted_ca.inline_bytes)


async def subscribe(s: Stream) -> discovery_pb2.DiscoveryResponse:
    await s.send(SECRET_TYPE, ["default", "ROOTCA"])
    r = await s.recv()
    assert r.type_url == SECRET_TYPE
    await s.ack(r, ("default", "ROOTCA"))
    return r


def test_rootca_is_served_and_default_never(registry: Registry) -> None:
    async def scenario() -> None:
        async with serving(generation(registry), trust_bundle=OLD) as h:
            s = h.stream(node(V1_NODE))
            r = await subscribe(s)
            secrets = secrets_of(r)
            assert list(secrets) == ["ROOTCA"]  # `default` (the key) never leaves the sidecar
            assert secrets["ROOTCA"].validation_context.trusted_ca.inline_bytes == OLD
            await s.silence()
            assert h.ads.status()[0]["types"][-1]["type"] == "SDS"  # proxy-status knows it, by its short name

    run(scenario)


def test_root_rotation_pushes_the_new_bundle(registry: Registry) -> None:
    async def scenario() -> None:
        async with serving(generation(registry), trust_bundle=OLD) as h:
            server, client = h.stream(node(V1_NODE)), h.stream(node(CLIENT_NODE))
            first = await subscribe(server)
            await subscribe(client)
            assert h.ads.set_trust_bundle(OLD + NEW, "root rotation") == 2  # [old, new] during the rotation
            for s in (server, client):
                second = await s.recv()
                assert second.version_info != first.version_info
                assert [c.fingerprint(hashes.SHA256()) for c in roots(secrets_of(second)["ROOTCA"])] == [
                    c.fingerprint(hashes.SHA256()) for c in x509.load_pem_x509_certificates(OLD + NEW)]
                await s.ack(second, ("default", "ROOTCA"))
            assert h.ads.set_trust_bundle(OLD + NEW) == 0  # the same bundle again: nothing to push
            await server.silence()
            assert h.ads.set_trust_bundle(NEW, "old root retired") == 2
            third = await server.recv()
            assert len(roots(secrets_of(third)["ROOTCA"])) == 1

    run(scenario)


def test_without_a_bundle_nothing_is_served_until_one_arrives(registry: Registry) -> None:
    async def scenario() -> None:
        async with serving(generation(registry)) as h:
            s = h.stream(node(V1_NODE))
            r = await subscribe(s)
            assert secrets_of(r) == {}  # the agent's own ROOTCA serves meanwhile
            h.ads.set_trust_bundle(OLD)
            r = await s.recv()
            assert list(secrets_of(r)) == ["ROOTCA"]

    run(scenario)


def test_a_bundle_that_is_not_pem_is_refused_and_changes_nothing(registry: Registry) -> None:
    ads = AdsServer(generation(registry), trust_bundle=OLD)
    for bad in (b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        with pytest.raises(ValueError, match="trust bundle"):
            ads.set_trust_bundle(bad)
    assert ads.trust_bundle == OLD
    with pytest.raises(ValueError, match="trust bundle"):
        AdsServer(generation(registry), trust_bundle=b"junk")


def test_proxyless_clients_get_no_secrets(registry: Registry) -> None:
    async def scenario() -> None:
        async with serving(generation(registry), trust_bundle=OLD) as h:
            p = h.stream(node("grpc-client-1", proxyless=True))
            await p.send(SECRET_TYPE, ["ROOTCA"])
            assert secrets_of(await p.recv()) == {}

    run(scenario)


def _upstream(response: discovery_pb2.DiscoveryResponse, name: str) -> Any:
    for a in response.resources:
        c = cluster_pb2.Cluster()
        a.Unpack(c)
        if c.name == name:
            ctx = tls_pb2.UpstreamTlsContext()
            assert c.transport_socket.typed_config.Unpack(ctx)
            return ctx.common_tls_context
    raise AssertionError(name)


@pytest.mark.parametrize("tls", ["sds", "files"])
def test_clusters_refer_to_the_secrets_or_to_files(registry: Registry, tls: str) -> None:
    async def scenario() -> None:
        async with serving(generation(registry, [dr()]), tls=tls, trust_bundle=OLD) as h:
            s = h.stream(node(CLIENT_NODE))
            await s.send(CLUSTER_TYPE)
            common = _upstream(await s.recv(), V1)
            if tls == "sds":
                assert [c.name for c in common.tls_certificate_sds_secret_configs] == ["default"]
                assert common.combined_validation_context.validation_context_sds_secret_config.name == "ROOTCA"
                assert common.tls_certificate_sds_secret_configs[0].sds_config.HasField("ads")
            else:
                w = registry.workload("client", "default")
                assert w is not None and w.certs is not None
                assert common.tls_certificates[0].private_key.filename == str(w.certs.private_key)

    run(scenario)


def test_a_config_push_keeps_the_secret_and_a_rotation_keeps_the_config(registry: Registry) -> None:
    async def scenario() -> None:
        async with serving(generation(registry), trust_bundle=OLD) as h:
            s = h.stream(node(V1_NODE))
            await s.send(LISTENER_TYPE)
            lds = await s.recv()
            await s.ack(lds)
            sds = await subscribe(s)
            strict = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                      "metadata": {"name": "default", "namespace": "istio-system"},
                      "spec": {"mtls": {"mode": "STRICT"}}}
            report = await h.ads.update(generation(registry, [strict], "2"), "test")
            assert report.woken == 1
            new_lds = await s.recv()
            assert new_lds.type_url == LISTENER_TYPE and new_lds.version_info != lds.version_info
            await s.ack(new_lds)
            await s.silence()  # SDS did not change
            h.ads.set_trust_bundle(NEW)
            r = await s.recv()
            assert r.type_url == SECRET_TYPE and r.version_info != sds.version_info
            await s.ack(r, ("default", "ROOTCA"))
            await s.silence()  # LDS did not change

    run(scenario)


def test_generations_take_a_root_namespace(registry: Registry) -> None:
    strict = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
              "metadata": {"name": "default", "namespace": "mesh-root"}, "spec": {"mtls": {"mode": "STRICT"}}}
    from mesh_ctl.xds.ads import Generation

    gen = Generation.build(registry, [strict], "1", root_namespace="mesh-root")
    assert gen.istio.mtls("default", {}).mode == "STRICT"
    assert Generation.build(registry, [strict], "1").istio.mtls("default", {}).mode == "PERMISSIVE"


def test_with_root_ca_versions_the_secret(registry: Registry) -> None:
    base = translate_for_proxy(registry, [], V1_NODE)
    a, b = with_root_ca(base, OLD), with_root_ca(base, NEW)
    assert a.changed(base) == {SECRET_TYPE: {"ROOTCA"}}
    assert b.changed(a) == {SECRET_TYPE: {"ROOTCA"}}
    assert with_root_ca(b, None).changed(b) == {SECRET_TYPE: {"ROOTCA"}}  # removed
    assert with_root_ca(base, OLD).changed(a) == {}

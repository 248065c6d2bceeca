"""The agent's flags against the bootstrap's node (pyproxy.agent.options) and pyproxy's command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyproxy.agent.options import AgentConfigError, AgentOptions, parse_duration
from pyproxy.config.model import NodeInfo
from pyproxy.main import main

NODE = NodeInfo(id="sidecar~127.0.0.10~payment-v1.default~default.svc.cluster.local",
                metadata=(("NAMESPACE", "default"), ("SERVICE_ACCOUNT", "payment"), ("CLUSTER_ID", "Kubernetes")))


@pytest.mark.parametrize("text, seconds", [
    ("24h", 86400), ("5s", 5), ("90m", 5400), ("1h30m", 5400), ("1.5h", 5400), ("500ms", 0.5), ("2h0m10s", 7210),
    ("30", 30), ("0.25", 0.25),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "h", "5x", "5 s", "s5", "1h-5m", "24h!"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(AgentConfigError, match="invalid duration"):
        parse_duration(text)


def test_identity_from_the_node_metadata() -> None:
    o = AgentOptions.build(ca_address="127.0.0.1:15010", token_path="/t", node=NODE)
    assert o.spiffe_id == "spiffe://cluster.local/ns/default/sa/payment"
    assert (o.ca_host, o.ca_port, o.ttl, o.key_algorithm, o.cluster_id) == ("127.0.0.1", 15010, 86400, "rsa",
                                                                            "Kubernetes")


def test_flags_override_the_node() -> None:
    o = AgentOptions.build(ca_address="[::1]:15012", token_path="/t", node=NODE, namespace="shop",
                           service_account="cart", trust_domain="example.org", ttl="5s", key_algorithm="ecdsa")
    assert o.spiffe_id == "spiffe://example.org/ns/shop/sa/cart"
    assert (o.ca_host, o.ca_port, o.ca_address, o.ttl, o.key_algorithm) == ("::1", 15012, "[::1]:15012", 5, "ecdsa")


@pytest.mark.parametrize("kwargs, match", [
    ({"ca_address": "nowhere"}, "expected HOST:PORT"),
    ({"ca_address": "127.0.0.1:0"}, "expected HOST:PORT"),
    ({"token_path": None}, "needs --token-path"),
    ({"node": NodeInfo()}, "identity is unknown"),
    ({"namespace": "Bad_NS"}, "not a valid name"),
    ({"trust_domain": "a/b"}, "not a valid trust domain"),
    ({"ttl": "0.5s"}, "between 1s and 90 days"),
    ({"ttl": "2161h"}, "between 1s and 90 days"),
    ({"key_algorithm": "dsa"}, "rsa or ecdsa"),
    ({"ca_root": "/nonexistent/root.pem"}, "not a readable PEM"),
])
def test_bad_options(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"ca_address": "127.0.0.1:15010", "token_path": "/t", "node": NODE, **kwargs}
    with pytest.raises(AgentConfigError, match=match):
        AgentOptions.build(**args)  # type: ignore[arg-type]


STATIC = """
node: {id: n, metadata: {NAMESPACE: default, SERVICE_ACCOUNT: payment}}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
"""
ADS = STATIC + """
dynamic_resources:
  ads_config: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: xds}}]}
  cds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    load_assignment: {cluster_name: xds, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address:
      {address: 127.0.0.1, port_value: 15010}}}}]}]}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
"""


def test_the_command_line_checks_the_agent_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    static, ads = tmp_path / "static.yaml", tmp_path / "ads.yaml"
    static.write_text(STATIC)
    ads.write_text(ADS)
    agent = ["--ca-address", "127.0.0.1:15010", "--token-path", str(tmp_path / "token")]
    assert main(["-c", str(ads), "--mode", "validate", *agent]) == 0
    assert main(["-c", str(static), "--mode", "validate", *agent]) == 1
    assert "needs a bootstrap with dynamic_resources.ads_config" in capsys.readouterr().err
    assert main(["-c", str(ads), "--mode", "validate", "--token-path", "/t"]) == 1
    assert "need --ca-address" in capsys.readouterr().err
    assert main(["-c", str(ads), "--mode", "validate", *agent, "--cert-ttl", "forever"]) == 1
    assert "invalid duration 'forever'" in capsys.readouterr().err

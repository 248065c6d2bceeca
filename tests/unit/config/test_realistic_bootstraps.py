"""Realistic bootstraps (two-sidecar mTLS mesh, Envoy-docs gRPC proxy, gRPC interop through Envoy, the
deprecated cluster http2_protocol_options style) translate into the model we expect, field by field."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from pyproxy.config import model as m
from pyproxy.config.bootstrap import load_bootstrap
from pyproxy.config.material import MaterialStore
from tests.unit.config.pki import TestCA

Render = Callable[[str], Path]


def test_client_sidecar_with_mtls(render: Render, pki: TestCA, material: MaterialStore) -> None:
    snap = load_bootstrap(str(render("sidecar_client_mtls.yaml")), material=material)
    certs = pki.directory

    assert snap.node.id == "sidecar~127.0.0.2~client-7d4b9.default~default.svc.cluster.local"
    assert snap.node.cluster == "client.default"
    assert (snap.node.region, snap.node.zone) == ("local", "laptop")
    assert snap.node.meta("NAMESPACE") == "default"
    assert snap.node.meta("WORKLOAD_NAME") == "client"
    assert snap.node.meta("SERVICE_ACCOUNT") == "client"
    assert snap.node.meta("LABELS") == {"app": "client", "version": "v1"}
    assert snap.node.meta("MESH_ID") == "cluster.local"
    assert snap.admin.address == m.SocketAddress("127.0.0.2", 15000)
    assert snap.warnings == ()

    lst = snap.listeners["virtualOutbound"]
    assert lst.address == m.SocketAddress("127.0.0.2", 15001)
    assert lst.traffic_direction is m.TrafficDirection.OUTBOUND
    assert lst.tls_inspector is False
    (chain,) = lst.filter_chains
    assert chain.name == "payment.default.svc.cluster.local_50051"
    assert chain.tls is None
    hcm = chain.hcm
    assert hcm.codec_type == "HTTP2"
    assert hcm.stream_idle_timeout is None  # 0s disables
    assert hcm.http2.max_concurrent_streams == 1073741824
    assert hcm.http_filters[-1].config == m.RouterConfig(suppress_envoy_headers=False)
    (log,) = hcm.access_logs
    assert log.sink == "file" and log.path == "/dev/stdout"
    assert log.json_format is not None and dict(log.json_format)["response_flags"] == "%RESPONSE_FLAGS%"

    rc = hcm.route_config
    assert rc is not None and rc.name == "50051"
    (vh,) = rc.virtual_hosts
    assert vh.include_request_attempt_count is True
    assert rc.domain_index.exact["payment:50051"] is vh
    canary, weighted = vh.routes
    assert canary.match.prefix == "/payment.Payment/"
    (hm,) = canary.match.headers
    assert hm.name == "x-canary" and hm.string_match == m.StringMatcher("exact", "true")
    assert isinstance(canary.action, m.RouteAction)
    assert canary.action.cluster == "outbound|50051|v2|payment.default.svc.cluster.local"
    assert canary.action.timeout is None
    # max_stream_duration.grpc_timeout_header_max: 0 = honour grpc-timeout without a cap.
    assert canary.action.max_grpc_timeout == 0.0
    assert canary.action.max_stream_duration == 0.0

    action = weighted.action
    assert isinstance(action, m.RouteAction)
    assert [(c.name.split("|")[2], c.weight) for c in action.weighted_clusters] == [("v1", 80), ("v2", 20)]
    assert action.total_weight == 100
    v2 = action.weighted_clusters[1]
    assert v2.request_headers.add == (m.HeaderValueOption("x-subset", "v2", append=False),)
    retry = action.retry_policy
    assert retry is not None
    assert retry.retry_on == {
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "retriable-status-codes",
    }
    assert retry.num_retries == 2
    assert retry.retry_previous_hosts is True
    assert retry.host_selection_retry_max_attempts == 5
    assert (retry.base_interval, retry.max_interval) == (0.025, 0.25)

    v1 = snap.clusters["outbound|50051|v1|payment.default.svc.cluster.local"]
    assert v1.discovery_type == "STATIC"
    assert v1.connect_timeout == 10.0
    assert v1.lb_policy is m.LbPolicy.LEAST_REQUEST
    assert v1.circuit_breakers == m.CircuitBreakers(
        m.UNLIMITED, m.UNLIMITED, m.UNLIMITED, m.UNLIMITED, track_remaining=True
    )
    assert v1.idle_timeout == 3600.0
    assert dict(v1.metadata)["istio.subset"] == "v1"
    assert dict(v1.metadata)["istio.services"] == (
        '[{"host":"payment.default.svc.cluster.local","name":"payment","namespace":"default"}]'
    )
    (locality,) = v1.load_assignment.localities if v1.load_assignment else ()
    assert (locality.region, locality.zone) == ("local", "laptop")
    (ep,) = locality.endpoints
    assert ep.address == m.SocketAddress("127.0.0.3", 15006)
    assert ep.metadata == (("istio.workload", "payment-v1;default;payment;v1;Kubernetes"),)

    tls = v1.tls
    assert tls is not None and tls.server_side is False
    assert tls.sni == "outbound_.50051_.v1_.payment.default.svc.cluster.local"
    assert tls.alpn_protocols == ("h2",)
    assert (tls.min_version, tls.max_version) == ("TLSv1_2", "TLSv1_3")
    assert tls.certificates == (
        m.CertificateSource(
            str(certs / "client-cert.pem"), str(certs / "client-key.pem"), sds_name="default"
        ),
    )
    assert tls.validation is not None
    assert tls.validation.sds_name == "ROOTCA"
    assert tls.validation.trusted_ca_file == str(certs / "minimesh-test-root.pem")
    # The deprecated match_subject_alt_names applies to every SAN type, as in Envoy.
    spiffe = m.StringMatcher("exact", "spiffe://cluster.local/ns/default/sa/payment")
    assert set(tls.validation.match_subject_alt_names) == {
        (t, spiffe) for t in ("DNS", "URI", "EMAIL", "IP_ADDRESS")
    }


def test_server_sidecar_with_mtls(render: Render, pki: TestCA, material: MaterialStore) -> None:
    snap = load_bootstrap(str(render("sidecar_server_mtls.yaml")), material=material)
    lst = snap.listeners["virtualInbound"]
    assert lst.traffic_direction is m.TrafficDirection.INBOUND
    assert lst.tls_inspector is True
    assert lst.listener_filters_timeout is None and lst.continue_on_listener_filters_timeout is True
    mtls, plain = lst.filter_chains
    assert mtls.match == m.FilterChainMatch(transport_protocol="tls", application_protocols=("h2",))
    assert plain.match == m.FilterChainMatch(transport_protocol="raw_buffer")
    assert plain.tls is None
    tls = mtls.tls
    assert tls is not None and tls.server_side and tls.require_client_certificate
    assert tls.certificates[0].cert_chain_file == str(pki.directory / "payment-cert.pem")
    assert tls.validation == m.ValidationContext(
        trusted_ca_file=str(pki.directory / "minimesh-test-root.pem"),
        sds_name="ROOTCA",
        match_subject_alt_names=(("URI", m.StringMatcher("prefix", "spiffe://cluster.local/")),),
    )
    # Both chains share one HCM definition (a YAML anchor).
    assert mtls.hcm == plain.hcm
    assert mtls.hcm.server_name == "istio-envoy"
    (log,) = mtls.hcm.access_logs
    assert log.sink == "stdout" and log.format is not None and log.format.startswith("[%START_TIME%]")
    inbound = snap.clusters["inbound|50051||"]
    assert inbound.http2 == m.Http2Options()  # use_downstream_protocol_config: HTTP/2 with defaults
    assert inbound.load_assignment is not None
    assert inbound.load_assignment.localities[0].endpoints[0].address == m.SocketAddress("127.0.0.1", 50051)
    assert snap.admin.access_log_path == "/dev/null"
    assert snap.node.meta("LABELS") == {"app": "payment", "version": "v1"}


def test_envoy_docs_grpc_proxy(render: Render, material: MaterialStore) -> None:
    snap = load_bootstrap(str(render("envoy_docs_grpc_proxy.yaml")), material=material)
    # An unnamed listener is named after its address.
    lst = snap.listeners["0.0.0.0_8811"]
    hcm = lst.filter_chains[0].hcm
    assert hcm.codec_type == "AUTO"
    assert hcm.stream_idle_timeout == 300.0 and hcm.request_timeout is None and hcm.drain_timeout == 5.0
    assert hcm.server_name == "envoy" and hcm.generate_request_id is True
    route = hcm.route_config.virtual_hosts[0].routes[0] if hcm.route_config else None
    assert route is not None and route.match.grpc is True and route.match.prefix == "/"
    assert isinstance(route.action, m.RouteAction)
    assert route.action.timeout == m.DEFAULT_ROUTE_TIMEOUT == 15.0  # unset: Envoy's 15 s
    assert route.action.max_grpc_timeout is None  # unset: grpc-timeout not honoured
    cluster = snap.clusters["backend_grpc_service"]
    assert cluster.discovery_type == "STRICT_DNS"  # "strict_dns": enum names are case-insensitive
    assert cluster.lb_policy is m.LbPolicy.ROUND_ROBIN
    assert cluster.connect_timeout == 0.25
    assert cluster.http2 == m.Http2Options()
    assert cluster.dns_lookup_family == "AUTO" and cluster.dns_refresh_rate == 5.0
    assert snap.runtime == {"envoy.resource_limits.listener.example_listener_name.connection_limit": 10000}
    assert snap.admin == m.AdminConfig(
        m.SocketAddress("0.0.0.0", 8881), access_log_path="/tmp/admin_access.log"
    )
    assert snap.version.startswith("bootstrap-")


def test_grpc_interop_through_envoy(render: Render, pki: TestCA, material: MaterialStore) -> None:
    snap = load_bootstrap(str(render("grpc_interop_envoy.yaml")), material=material)
    assert snap.admin.address == m.SocketAddress("::1", 9901)
    assert snap.admin.access_logs == (m.AccessLog(sink="stderr"),)
    assert snap.runtime == {
        "upstream.base_retry_backoff_ms": 10,
        "overload.global_downstream_max_connections": 1000,
    }
    lst = snap.listeners["interop_tls"]
    assert lst.address == m.SocketAddress("::", 8443) and lst.ipv4_compat is True
    assert lst.per_connection_buffer_limit_bytes == 65536
    chain = lst.filter_chains[0]
    assert chain.tls is not None and chain.tls.alpn_protocols == ("h2",)
    assert chain.tls.cipher_suites == ("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256")
    assert chain.tls.validation is None and not chain.tls.require_client_certificate
    hcm = chain.hcm
    assert (hcm.generate_request_id, hcm.server_header_transformation) == (False, "PASS_THROUGH")
    assert (hcm.max_request_headers_kb, hcm.request_timeout, hcm.drain_timeout) == (96, 60.0, 2.0)
    assert (hcm.idle_timeout, hcm.headers_with_underscores_action) == (300.0, "REJECT_REQUEST")
    assert hcm.http2.initial_stream_window_size == 65536
    assert hcm.http2.initial_connection_window_size == 1048576
    assert hcm.http2.max_concurrent_streams == 100
    assert (hcm.http2.connection_keepalive_interval, hcm.http2.connection_keepalive_timeout) == (30.0, 5.0)
    assert hcm.http_filters[0].config == m.RouterConfig(suppress_envoy_headers=True)

    rc = hcm.route_config
    assert rc is not None
    assert rc.request_headers.remove == {"x-internal-debug"}
    vh = rc.virtual_hosts[0]
    assert vh.response_headers.add == (m.HeaderValueOption("x-proxied-by", "pyproxy", append=True),)
    index = rc.domain_index
    assert set(index.exact) == {"foo.test.google.fr"}
    assert index.suffixes == ((".test.google.fr", vh),)
    assert index.prefixes == (("foo.test.google.fr:", vh), ("localhost", vh))  # longest first
    regex_route, prefix_route, fallback = vh.routes
    assert regex_route.match.safe_regex is not None
    assert regex_route.match.safe_regex.fullmatch("/grpc.testing.TestService/UnaryCall")
    assert not regex_route.match.safe_regex.fullmatch("/grpc.testing.TestService/UnaryCallX")
    action = regex_route.action
    assert isinstance(action, m.RouteAction) and action.timeout == 5.0
    assert action.retry_policy == m.RetryPolicy(
        retry_on=frozenset({"unavailable", "resource-exhausted", "retriable-status-codes"}),
        num_retries=3,
        per_try_timeout=1.0,
        retriable_status_codes=frozenset({503}),
        base_interval=0.01,
        max_interval=0.1,
    )
    assert action.mirrors == (m.MirrorPolicy("interop_shadow", 0.5),)
    action = prefix_route.action
    assert isinstance(action, m.RouteAction)
    assert (action.timeout, action.idle_timeout) == (None, 60.0)
    assert (action.max_grpc_timeout, action.grpc_timeout_offset) == (30.0, 0.05)
    assert prefix_route.match.headers[0].string_match == m.StringMatcher("prefix", "application/grpc")
    assert fallback.action == m.DirectResponse(status=404, body="unknown service")

    server = snap.clusters["interop_server"]
    assert (server.discovery_type, server.dns_lookup_family, server.dns_refresh_rate) == (
        "STRICT_DNS",
        "V4_ONLY",
        10.0,
    )
    assert server.respect_dns_ttl is True
    assert (server.lb_policy, server.least_request_choice_count) == (m.LbPolicy.LEAST_REQUEST, 3)
    assert server.active_request_bias == 1.5
    assert server.healthy_panic_threshold == 0.0
    assert server.circuit_breakers == m.CircuitBreakers(100, 200, 1000, 10)
    assert server.high_priority_circuit_breakers == m.CircuitBreakers(max_requests=2000)
    assert server.outlier_detection == m.OutlierDetection(
        consecutive_5xx=3, interval=5.0, base_ejection_time=15.0, max_ejection_percent=50
    )
    assert (server.idle_timeout, server.max_requests_per_connection) == (None, 10000)
    assert server.http2.max_concurrent_streams == 1000  # auto_config over TLS
    assert server.tls is not None and server.tls.sni == "foo.test.google.fr"
    assert server.tls.validation is not None
    assert server.tls.validation.match_subject_alt_names == (
        ("DNS", m.StringMatcher("suffix", ".test.google.fr")),
    )
    assert server.tls.certificates == ()
    endpoint = server.load_assignment.localities[0].endpoints[0] if server.load_assignment else None
    assert endpoint is not None and endpoint.address == m.SocketAddress("localhost", 8080)
    assert snap.clusters["interop_shadow"].http2 == m.Http2Options()


def test_deprecated_cluster_http2_protocol_options(render: Render, material: MaterialStore) -> None:
    snap = load_bootstrap(str(render("deprecated_http2_cluster.yaml")), material=material)
    greeter = snap.clusters["greeter"]
    assert greeter.discovery_type == "LOGICAL_DNS"
    assert greeter.http2.max_concurrent_streams == 100 and greeter.http2.hpack_table_size == 65536
    assert greeter.http2.initial_stream_window_size == m.DEFAULT_INITIAL_STREAM_WINDOW
    assert (greeter.idle_timeout, greeter.max_requests_per_connection) == (60.0, 1000)
    blue = snap.clusters["greeter_blue"]
    assert blue.lb_policy is m.LbPolicy.RANDOM
    assert blue.load_assignment is not None
    first, second = blue.load_assignment.localities
    assert (first.priority, first.load_balancing_weight, second.priority) == (0, 3, 1)
    assert first.endpoints[0].hostname == "blue-0" and first.endpoints[0].load_balancing_weight == 2
    assert first.endpoints[0].health_status is m.HealthStatus.HEALTHY
    assert second.endpoints[0].health_status is m.HealthStatus.DRAINING

    vh = snap.listeners["grpc_ingress"].filter_chains[0].hcm.route_config.virtual_hosts[0]  # type: ignore[union-attr]
    assert vh.retry_policy is not None and vh.retry_policy.retry_on == {"5xx", "reset"}
    blue_route, default_route = vh.routes
    tenant, debug, version = blue_route.match.headers
    assert tenant == m.HeaderMatcher("x-tenant", m.StringMatcher("exact", "blue"))
    assert debug == m.HeaderMatcher("x-debug", present_match=True, invert_match=True)
    assert version == m.HeaderMatcher("x-version", m.StringMatcher("prefix", "v2"))  # names lower-cased
    assert isinstance(blue_route.action, m.RouteAction)
    assert (blue_route.action.max_grpc_timeout, blue_route.action.grpc_timeout_offset) == (10.0, 0.1)
    assert default_route.match.case_sensitive is False
    assert isinstance(default_route.action, m.RouteAction)
    assert default_route.action.max_grpc_timeout == 0.0  # 0s: honour grpc-timeout uncapped


def test_snapshot_source_is_the_bootstrap_for_config_dump(render: Render, material: MaterialStore) -> None:
    snap = load_bootstrap(str(render("envoy_docs_grpc_proxy.yaml")), material=material)
    clusters = snap.source["static_resources"]["clusters"]  # type: ignore[index]
    assert clusters[0]["name"] == "backend_grpc_service"
    assert clusters[0]["type"] == "STRICT_DNS"
    assert re.fullmatch(r"bootstrap-[0-9a-f]{16}", snap.version)
    again = load_bootstrap(str(render("envoy_docs_grpc_proxy.yaml")), material=material)
    assert again.version == snap.version  # same bootstrap, same version

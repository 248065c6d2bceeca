"""pyproxy as a gRPC sidecar: ``python -m pyproxy -c bootstrap.yaml`` with an ordinary Envoy v3 bootstrap.

The bootstrap is what one would hand Envoy for the same hop (and Envoy would run it): an admin address
(pyproxy is ready when ``GET /ready`` answers 200), one listener with an ``http_connection_manager`` holding
an inline ``route_config`` (every path to one cluster, route timeout disabled as Istio sets it) and the
``router`` filter, and one STATIC cluster speaking HTTP/2 upstream through ``HttpProtocolOptions``. mTLS
uses ``envoy.transport_sockets.tls``: the listener's DownstreamTlsContext requires a client certificate
signed by the run's CA; the cluster's UpstreamTlsContext presents the client certificate and accepts only
the server's SPIFFE ID, like an Istio outbound cluster.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from importlib.util import find_spec
from typing import Any

import yaml

from bench.procs import Proc, ProcessSet, wait_ready
from bench.proxies.base import HOST, START_TIMEOUT, Hop

Json = dict[str, Any]
TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _address(port: int) -> Json:
    return {"socket_address": {"address": HOST, "port_value": port}}


def _tls_certificate(cert: str, key: str) -> Json:
    return {"certificate_chain": {"filename": cert}, "private_key": {"filename": key}}


def bootstrap(hop: Hop) -> Json:
    """The Envoy v3 bootstrap (as a dict) for one hop."""
    assert hop.admin_port is not None
    certs = hop.certs
    hcm = {
        "@type": HCM,
        "stat_prefix": f"sidecar_{hop.name}",
        "codec_type": "AUTO",
        "route_config": {
            "name": "local",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "0s"}}],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": ROUTER},
            }
        ],
    }
    filter_chain: Json = {
        "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]
    }
    if hop.downstream_tls:
        filter_chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": TLS + "DownstreamTlsContext",
                "require_client_certificate": True,
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificates": [_tls_certificate(str(certs.server.cert), str(certs.server.key))],
                    "validation_context": {"trusted_ca": {"filename": str(certs.ca)}},
                },
            },
        }
    cluster: Json = {
        "name": "upstream",
        "type": "STATIC",
        "connect_timeout": "5s",
        "load_assignment": {
            "cluster_name": "upstream",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(hop.upstream_port)}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }
    if hop.upstream_tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": TLS + "UpstreamTlsContext",
                "sni": "localhost",
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificates": [_tls_certificate(str(certs.client.cert), str(certs.client.key))],
                    "validation_context": {
                        "trusted_ca": {"filename": str(certs.ca)},
                        "match_typed_subject_alt_names": [
                            {"san_type": "URI", "matcher": {"exact": certs.server.spiffe_id}}
                        ],
                    },
                },
            },
        }
    return {
        "node": {"id": f"bench-sidecar-{hop.name}", "cluster": "bench"},
        "admin": {"address": _address(hop.admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": f"sidecar_{hop.name}",
                    "address": _address(hop.listen_port),
                    "filter_chains": [filter_chain],
                }
            ],
            "clusters": [cluster],
        },
    }


def validate_bootstrap(doc: Json) -> None:
    """Parse ``doc`` as ``envoy.config.bootstrap.v3.Bootstrap`` (strict: unknown fields raise ParseError).

    Envoy's protos come from ``xds-protos``; they are imported here only, so the benchmark runs without them.
    Importing the extension modules registers their ``typed_config`` @types with the descriptor pool.
    """
    from envoy.config.bootstrap.v3 import bootstrap_pb2
    from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2,  # noqa: F401
    )
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2  # noqa: F401
    from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
    from google.protobuf import json_format

    json_format.ParseDict(doc, bootstrap_pb2.Bootstrap())


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/ready", timeout=1.0) as r:
            return int(r.status) == 200
    except (urllib.error.URLError, OSError):
        return False


class PyProxy:
    name = "pyproxy"

    def unavailable(self) -> str | None:
        # Not a reason to skip: the shape is attempted and reports "failed: <reason>" (see run.py).
        return None

    def version(self) -> str:
        return "in-tree" if find_spec("pyproxy") is not None else "missing"

    def start(self, hop: Hop, procs: ProcessSet) -> Proc:
        hop.workdir.mkdir(parents=True, exist_ok=True)
        path = hop.workdir / "bootstrap.yaml"
        doc = bootstrap(hop)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        args = [sys.executable, "-m", "pyproxy", "-c", str(path)]
        proc = procs.start(f"pyproxy-{hop.name}-{hop.listen_port}", args)
        deadline = time.monotonic() + START_TIMEOUT
        assert hop.admin_port is not None
        while not _ready(hop.admin_port):
            if not proc.alive():
                raise RuntimeError(f"exited with {proc.popen.returncode}: {proc.last_line()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"admin /ready not 200 after {START_TIMEOUT:.0f}s")
            time.sleep(0.1)
        wait_ready(proc, HOST, hop.listen_port, max(1.0, deadline - time.monotonic()))
        return proc

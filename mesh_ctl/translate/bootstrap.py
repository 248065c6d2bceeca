"""What a proxyless gRPC client needs to find the control plane: grpcio's xDS bootstrap (gRFC A27)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GENERATOR = "grpc"  # Istio's grpc-agent node metadata: selects the proxyless generator


def grpc_xds_bootstrap(server_uri: str, node_id: str, namespace: str,
                       metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``GRPC_XDS_BOOTSTRAP`` JSON document (as a dict) for a plain grpcio client.

    ``server_uri`` is the control plane's plain (insecure) xDS address, e.g. ``127.0.0.1:15010``; the node
    says ``GENERATOR: grpc`` so the control plane answers with what grpcio accepts. Write it to a file named
    by ``GRPC_XDS_BOOTSTRAP`` (or put the JSON text in ``GRPC_XDS_BOOTSTRAP_CONFIG``) before the process
    creates its first ``xds:///`` channel.
    """
    meta: dict[str, Any] = {"GENERATOR": GENERATOR, "NAMESPACE": namespace}
    meta.update(metadata or {})
    return {
        "xds_servers": [{
            "server_uri": server_uri,
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {"id": node_id, "metadata": meta},
    }

"""Cumulative per-edge counters from Istio's ``istio_requests_total`` and ``istio_request_duration_milliseconds``.

An edge is (source workload, source version, destination service, destination workload, destination
version). Istio's convention: an edge's numbers come from the ``reporter="source"`` series (the client's
sidecar), else from ``reporter="destination"`` where no source side reported it. Success: gRPC status 0 for
gRPC, else a response code < 500. mTLS: the destination reported the edge with
``connection_security_policy="mutual_tls"`` (only the server side knows how its peer connected).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

EdgeKey = tuple[str, str, str, str, str]  # src workload, src version, dst service, dst workload, dst version
KEY_FIELDS = ("source_workload", "source_version", "destination_service", "destination_workload",
              "destination_version")


@dataclass
class EdgeSample:
    """Cumulative counters of one edge at one instant."""

    requests: float = 0.0
    ok: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    mtls: bool = False  # the destination reported it with connection_security_policy="mutual_tls"


Sample = dict[EdgeKey, EdgeSample]


def is_ok(labels: Mapping[str, str]) -> bool:
    if labels.get("request_protocol") == "grpc":
        return labels.get("grpc_response_status") == "0"
    try:
        return int(labels.get("response_code", "0")) < 500 and labels.get("response_code", "0") != "0"
    except ValueError:
        return False


def edge_key(labels: Mapping[str, str]) -> EdgeKey:
    return (labels.get("source_workload", "unknown"), labels.get("source_version", "unknown"),
            labels.get("destination_service_name", "unknown"), labels.get("destination_workload", "unknown"),
            labels.get("destination_version", "unknown"))


def parse(texts: Iterable[str]) -> Sample:
    """Edges from the exposition texts of all sidecars: source-reported series, destination where no source."""
    by_reporter: dict[str, Sample] = {"source": {}, "destination": {}}
    mutual: set[EdgeKey] = set()
    for text in texts:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                rep = s.labels.get("reporter")
                if rep not in by_reporter:
                    continue
                key = edge_key(s.labels)
                e = by_reporter[rep].setdefault(key, EdgeSample())
                if s.name == "istio_requests_total":
                    e.requests += s.value
                    if is_ok(s.labels):
                        e.ok += s.value
                    if rep == "destination" and s.labels.get("connection_security_policy") == "mutual_tls":
                        mutual.add(key)
                elif s.name == "istio_request_duration_milliseconds_bucket":
                    le = float(s.labels["le"])
                    e.buckets[le] = e.buckets.get(le, 0.0) + s.value
    out = dict(by_reporter["source"])
    for k, v in by_reporter["destination"].items():
        out.setdefault(k, v)
    for k in mutual:
        if k in out:
            out[k].mtls = True
    return out

"""The Prometheus text format (0.0.4) as istiod serves it, from a prometheus_client registry.

prometheus_client's ``generate_latest`` always renames a counter ``x`` to ``x_total`` and adds ``x_created``
series. istiod's exporter (OpenTelemetry's, ``WithoutCounterSuffixes``: "backwards compatible w/ opencensus")
does neither: it serves ``# TYPE pilot_xds_pushes counter`` / ``pilot_xds_pushes{type="cds"} 12``, and that is
what Istio's dashboards query. So this renders the registry's families the way ``generate_latest`` does (same
HELP/TYPE lines, same float formatting, same label escaping), except that the counters named in
``bare_counters`` keep their bare names and no ``_created`` series is written. Other counters (the process
collector's ``process_cpu_seconds_total``) keep ``_total``, as Go's process collector has it.

OpenMetrics is not offered: Prometheus asks for it first when it is, and it requires ``_total`` on every
counter, which would rename istiod's families; istiod serves only this format too.
"""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def render(registry: CollectorRegistry, bare_counters: Collection[str] = ()) -> bytes:
    out: list[str] = []
    for family in registry.collect():
        name, kind = family.name, family.type
        bare = kind == "counter" and name in bare_counters
        shown = name if bare or kind != "counter" else f"{name}_total"
        shown_type = {"unknown": "untyped", "info": "gauge", "stateset": "gauge"}.get(kind, kind)
        doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {shown} {doc}\n# TYPE {shown} {shown_type}\n")
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            sample_name = name if bare and sample.name == f"{name}_total" else sample.name
            out.append(_line(sample_name, sample))
    return "".join(out).encode()


def _line(name: str, sample: Sample) -> str:
    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
    value = str(floatToGoString(sample.value))  # type: ignore[no-untyped-call]
    return f"{name}{{{labels}}} {value}\n" if labels else f"{name} {value}\n"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")

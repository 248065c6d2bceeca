"""Reading a Prometheus exposition the way tests need it: parsed by prometheus_client's parser (which fails
on what it cannot read), then one value looked up by family, sample suffix and labels."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


def families(text: str | bytes) -> dict[str, Metric]:
    body = text.decode() if isinstance(text, bytes) else text
    return {f.name: f for f in text_string_to_metric_families(body)}


def value(fams: dict[str, Metric], name: str, suffix: str = "", **labels: str) -> float | None:
    """The sample ``name + suffix`` of family ``name`` whose labels include ``labels``; the sum over every
    matching series (None: no series matches). Counters' samples are read under their family name (the
    parser names them ``_total``; istiod's have no such suffix on the wire)."""
    family = fams.get(name)
    if family is None:
        return None
    wanted = {f"{name}{suffix}", f"{name}_total"} if family.type == "counter" and not suffix else {f"{name}{suffix}"}
    found = [s.value for s in family.samples
             if s.name in wanted and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found) if found else None

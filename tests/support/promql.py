"""A small client of Prometheus's HTTP API (``/api/v1/query``, ``/api/v1/label/<name>/values``,
``/api/v1/targets``) for tests that read a real Prometheus; results as plain :class:`Sample` lists."""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class PromQLError(AssertionError):
    """Prometheus refused a query (bad syntax, unknown function): the message names the query."""


@dataclass(frozen=True, slots=True)
class Sample:
    labels: dict[str, str]  # without __name__ unless the query keeps it
    value: float
    name: str = ""  # __name__, when the result carries one


class PrometheusAPI:
    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.base = f"http://{address}"
        self.timeout = timeout

    def _get(self, path: str, params: list[tuple[str, str]]) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as e:
            try:
                doc = json.loads(e.read() or b"{}")
            except ValueError:  # not the API's answer: a plain "Service Unavailable" until Prometheus is ready
                raise e from None  # an OSError, which the callers' waits take for "not up yet"
            raise PromQLError(f"{path} {dict(params)}: HTTP {e.code}: {doc.get('error', doc)}") from None
        if doc.get("status") != "success":
            raise PromQLError(f"{path} {dict(params)}: {doc}")
        return doc["data"]

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """An instant query (at unix time ``at``, default now); a scalar result is one sample with no labels."""
        params = [("query", expr)] + ([("time", f"{at:.3f}")] if at is not None else [])
        data = self._get("/api/v1/query", params)
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        if data["resultType"] != "vector":
            raise PromQLError(f"{expr}: a {data['resultType']}, not an instant vector")
        out = []
        for r in data["result"]:
            labels = dict(r["metric"])
            name = labels.pop("__name__", "")
            out.append(Sample(labels, float(r["value"][1]), name))
        return out

    def label_values(self, label: str, match: str | None = None, start: float | None = None,
                     end: float | None = None) -> list[str]:
        params = [("match[]", match)] if match else []
        params += [("start", f"{start:.3f}")] if start is not None else []
        params += [("end", f"{end:.3f}")] if end is not None else []
        return list(self._get(f"/api/v1/label/{urllib.parse.quote(label)}/values", params))

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets", [("state", "active")])["activeTargets"])

    def value(self, expr: str, at: float | None = None) -> float:
        """The one sample of ``expr`` (NaN when there is none)."""
        samples = self.query(expr, at)
        if not samples:
            return math.nan
        assert len(samples) == 1, f"{expr}: {len(samples)} series, wanted one"
        return samples[0].value

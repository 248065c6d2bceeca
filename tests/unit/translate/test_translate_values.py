"""Reading Istio values: Go durations, percents, field checks with paths."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2, json_format

from mesh_ctl.translate import TranslationError
from mesh_ctl.translate.istio import host_matches, resolve_host
from mesh_ctl.translate.values import duration, obj, percent, proto_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1.0), ("1.5s", 1.5), ("100ms", 0.1), ("1m30s", 90.0), ("1h", 3600.0), ("250us", 0.00025),
    ("10ns", 1e-8), ("0", 0.0), ("0s", 0.0), (".5s", 0.5), (2, 2.0)])
def test_go_durations(text: object, seconds: float) -> None:
    assert duration(text, "x") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "1x", "s", "-1s", "1s2", True])
def test_bad_durations_name_the_field(text: object) -> None:
    with pytest.raises(TranslationError) as info:
        duration(text, "spec.http[0].timeout")
    assert info.value.path == "spec.http[0].timeout"


@pytest.mark.parametrize("seconds", [0.0, 1.0, 1.5, 0.25, 90.0, 0.000001, 12.000000001])
def test_proto_durations_round_trip(seconds: float) -> None:
    d = duration_pb2.Duration()
    json_format.Parse(f'"{proto_duration(seconds)}"', d)
    assert d.seconds + d.nanos / 1e9 == pytest.approx(seconds, abs=1e-9)


def test_percent_and_fields() -> None:
    assert percent({"value": 12.5}, "p") == 12.5
    with pytest.raises(TranslationError, match=r"p\.value: must be in \[0, 100\]"):
        percent({"value": 101}, "p")
    assert obj({"a": 1, "b": None}, "x", {"a"}) == {"a": 1}  # null means absent, as in Kubernetes
    with pytest.raises(TranslationError, match=r"x\.c: nope"):
        obj({"a": 1, "c": 2}, "x", {"a"}, {"c": "nope"})


def test_host_names() -> None:
    assert resolve_host("payment", "default", "cluster.local") == "payment.default.svc.cluster.local"
    assert resolve_host("payment.default", "other", "cluster.local") == "payment.default"  # as Istio: not expanded
    assert resolve_host("*", "default", "cluster.local") == "*"
    assert host_matches("*.default.svc.cluster.local", "payment.default.svc.cluster.local")
    assert not host_matches("*.default.svc.cluster.local", "payment.billing.svc.cluster.local")
    assert host_matches("*", "anything")

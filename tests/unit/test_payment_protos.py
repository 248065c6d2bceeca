"""The committed generated code matches protos/payment.proto (scripts/gen_protos.sh regenerates it)."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import grpc

from payment_service import api
from payment_service.proto import payment_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
GENERATED = ("payment_pb2.py", "payment_pb2.pyi", "payment_pb2_grpc.py", "__init__.py")
# Lines naming the generator's version; they differ between grpcio-tools releases, not between protos.
_VERSION_LINES = re.compile(
    r"^(# Protobuf Python Version: .*|GRPC_GENERATED_VERSION = .*|    \d+,)$", re.MULTILINE
)


def _normalise(text: str) -> str:
    return _VERSION_LINES.sub("<version>", text)


def test_committed_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(REPO / "scripts" / "gen_protos.sh"), str(tmp_path)],
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
        timeout=60,
    )
    for name in GENERATED:
        fresh = _normalise((tmp_path / name).read_text())
        committed = _normalise((REPO / "payment_service" / "proto" / name).read_text())
        assert fresh == committed, f"payment_service/proto/{name} is stale: run scripts/gen_protos.sh"


def test_generated_service_module_is_importable_as_a_package() -> None:
    payment_pb2_grpc = importlib.import_module(
        "payment_service.proto.payment_pb2_grpc"
    )  # untyped: not for mypy
    assert payment_pb2_grpc.payment__pb2 is pb  # the relative import, not a top-level "payment_pb2"
    assert hasattr(payment_pb2_grpc, "PaymentServiceStub")


def test_method_table_matches_the_proto() -> None:
    service = pb.DESCRIPTOR.services_by_name["PaymentService"]
    assert api.SERVICE == service.full_name == "payment.PaymentService"
    assert {m.name for m in service.methods} == {m.name for m in api.METHODS}
    for m in service.methods:
        ours = api.METHODS_BY_NAME[m.name]
        kind = (
            ("stream" if m.client_streaming else "unary")
            + "_"
            + ("stream" if m.server_streaming else "unary")
        )
        assert ours.kind == kind, m.name
        assert ours.request.DESCRIPTOR is m.input_type and ours.response.DESCRIPTOR is m.output_type
        assert ours.path == f"/payment.PaymentService/{m.name}"


def test_stub_builds_on_a_channel() -> None:
    with grpc.insecure_channel("127.0.0.1:1") as channel:
        stub = api.Stub(channel)
        assert callable(stub.Charge) and callable(stub.ChargeStream)

"""The committed istio_ca code matches protos/istio_ca.proto, and the wire shape is Istio's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from mesh_ctl.ca.proto import istio_ca_pb2, istio_ca_pb2_grpc
from mesh_ctl.ca.proto.regenerate import GENERATED, PACKAGE_DIR

REPO = Path(__file__).resolve().parents[3]
# Lines naming the generator's version; they differ between grpcio-tools releases, not between protos.
_VERSION_LINES = re.compile(r"^(# Protobuf Python Version: .*|GRPC_GENERATED_VERSION = .*|    \d+,)$", re.MULTILINE)


def test_committed_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "mesh_ctl.ca.proto.regenerate", str(tmp_path)], check=True, cwd=REPO,
                   timeout=60, capture_output=True)
    for name in GENERATED:
        fresh = _VERSION_LINES.sub("<version>", (tmp_path / name).read_text())
        committed = _VERSION_LINES.sub("<version>", (PACKAGE_DIR / name).read_text())
        assert fresh == committed, f"mesh_ctl/ca/proto/{name} is stale: run python -m mesh_ctl.ca.proto.regenerate"


def test_istio_names_and_field_numbers() -> None:
    """istio/api security/v1alpha1/ca.proto: csr = 1, validity_duration = 3, metadata = 4; cert_chain = 1."""
    file = istio_ca_pb2.DESCRIPTOR
    assert file.package == "istio.v1.auth"
    service = file.services_by_name["IstioCertificateService"]
    assert service.full_name == "istio.v1.auth.IstioCertificateService"
    method = service.methods_by_name["CreateCertificate"]
    assert method.input_type.full_name == "istio.v1.auth.IstioCertificateRequest"
    assert method.output_type.full_name == "istio.v1.auth.IstioCertificateResponse"
    assert not method.client_streaming and not method.server_streaming
    request = {f.name: (f.number, f.type) for f in istio_ca_pb2.IstioCertificateRequest.DESCRIPTOR.fields}
    assert request == {"csr": (1, 9), "validity_duration": (3, 3), "metadata": (4, 11)}  # string, int64, message
    struct = istio_ca_pb2.IstioCertificateRequest.DESCRIPTOR.fields_by_name["metadata"].message_type
    assert struct is not None and struct.full_name == "google.protobuf.Struct"
    response = istio_ca_pb2.IstioCertificateResponse.DESCRIPTOR.fields_by_name["cert_chain"]
    assert (response.number, response.type, response.is_repeated) == (1, 9, True)


def test_bytes_on_the_wire_decode_as_istio_would_send_them() -> None:
    # csr="A" (field 1, len 1), validity_duration=86400 (field 3 varint), metadata {ClusterID: "Kubernetes"}
    wire = (b"\x0a\x01A" + b"\x18\x80\xa3\x05"
            + b"\x22\x1b\x0a\x19\x0a\x09ClusterID\x12\x0c\x1a\x0aKubernetes")
    request = istio_ca_pb2.IstioCertificateRequest.FromString(wire)
    assert request.csr == "A" and request.validity_duration == 86400
    assert request.metadata.fields["ClusterID"].string_value == "Kubernetes"
    assert request.SerializeToString() == wire


def test_generated_service_module_imports_relatively() -> None:
    assert istio_ca_pb2_grpc.istio__ca__pb2 is istio_ca_pb2  # type: ignore[attr-defined]
    assert hasattr(istio_ca_pb2_grpc, "IstioCertificateServiceStub")

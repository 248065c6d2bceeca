"""Istio's CA messages (``istio/api`` ``security/v1alpha1/ca.proto``, package ``istio.v1.auth``), built at import.

    message IstioCertificateRequest  { string csr = 1; int64 validity_duration = 3;
                                       google.protobuf.Struct metadata = 4; }
    message IstioCertificateResponse { repeated string cert_chain = 1; }   // leaf first, root last
    service IstioCertificateService  { rpc CreateCertificate(IstioCertificateRequest)
                                           returns (IstioCertificateResponse); }

Why built here instead of a generated ``_pb2``: the control plane registers its own generated copy of the
same package in protobuf's default descriptor pool, and two copies of one symbol in that pool are an error
when both modules are imported into one process (the tests do). A private pool keeps the wire format
identical without the clash.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

CREATE_CERTIFICATE = "/istio.v1.auth.IstioCertificateService/CreateCertificate"

_F = descriptor_pb2.FieldDescriptorProto


def _build() -> tuple[Any, Any]:
    pool = descriptor_pool.DescriptorPool()
    struct_file = descriptor_pb2.FileDescriptorProto()
    struct_pb2.DESCRIPTOR.CopyToProto(struct_file)
    pool.Add(struct_file)
    ca = descriptor_pb2.FileDescriptorProto(name="istio/v1/auth/ca.proto", package="istio.v1.auth", syntax="proto3",
                                            dependency=[struct_file.name])
    request = ca.message_type.add(name="IstioCertificateRequest")
    request.field.add(name="csr", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL, json_name="csr")
    request.field.add(name="validity_duration", number=3, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL,
                      json_name="validityDuration")
    request.field.add(name="metadata", number=4, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                      type_name=".google.protobuf.Struct", json_name="metadata")
    response = ca.message_type.add(name="IstioCertificateResponse")
    response.field.add(name="cert_chain", number=1, type=_F.TYPE_STRING, label=_F.LABEL_REPEATED,
                       json_name="certChain")
    pool.Add(ca)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateRequest")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateResponse")))


IstioCertificateRequest, IstioCertificateResponse = _build()

"""Istio's ``istio.v1.auth.IstioCertificateService`` messages and stubs, generated from
``protos/istio_ca.proto`` by ``python -m mesh_ctl.ca.proto.regenerate``: do not edit the generated files.

    from mesh_ctl.ca.proto import istio_ca_pb2, istio_ca_pb2_grpc
"""

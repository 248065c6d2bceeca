"""Access log formats: Envoy's command operators over a finished stream's record, "-" for what is missing."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mesh_ctl.translate.telemetry import DEFAULT_ACCESS_LOG_FORMAT, ISTIO_TEXT_FORMAT
from pyproxy.accesslog import compile_format, compile_json


def _stream(**over: Any) -> Any:
    down = SimpleNamespace(peer_address=("127.0.0.12", 41327), transport=SimpleNamespace(
        local_address=("127.0.0.10", 15006)), peer=SimpleNamespace(uri_sans=["spiffe://cluster.local/ns/default/sa/client"]),
        requested_server_name="outbound_.8080_.v1_.payment.default.svc.cluster.local")
    fields: dict[str, Any] = {
        "request_headers": [(b":method", b"POST"), (b":path", b"/payment.PaymentService/Charge"),
                         (b":authority", b"payment:8080"), (b"user-agent", b"grpc-python"),
                         (b"x-request-id", b"rid-1")],
        "response_headers": [(b":status", b"200"), (b"x-envoy-upstream-service-time", b"3")],
        "response_trailers_seen": [(b"grpc-status", b"7")], "start_wallclock": 1_764_115_200.25, "start_time": 10.0,
        "end_time": 10.0045, "response_headers_time": 10.003, "response_code": 200, "flags": "-",
        "details": "rbac_access_denied_matched_policy[none]", "grpc_status": 7, "bytes_received": 37, "bytes_sent": 0,
        "host": SimpleNamespace(address="127.0.0.10:8080"), "cluster": SimpleNamespace(name="inbound|8080||"),
        "failure_reason": "", "route": SimpleNamespace(route=SimpleNamespace(name="default")), "down": down,
        "ctx": SimpleNamespace(local_principal="spiffe://cluster.local/ns/default/sa/payment"),
        "upstream_principal": "", "upstream_local": ("127.0.0.1", 46700), "attempts": 1}
    fields.update(over)
    return SimpleNamespace(**fields)


def test_istios_default_format_with_the_peer_identities() -> None:
    line = compile_format(DEFAULT_ACCESS_LOG_FORMAT)(_stream())
    assert line == (
        '[2025-11-26T00:00:00.250Z] "POST /payment.PaymentService/Charge HTTP/2" 200 - '
        'rbac_access_denied_matched_policy[none] - "-" 37 0 4 3 "-" "grpc-python" "rid-1" "payment:8080" '
        '"127.0.0.10:8080" inbound|8080|| 127.0.0.1:46700 127.0.0.10:15006 127.0.0.12:41327 '
        'outbound_.8080_.v1_.payment.default.svc.cluster.local default PermissionDenied '
        '"spiffe://cluster.local/ns/default/sa/client" "-"\n')
    assert DEFAULT_ACCESS_LOG_FORMAT.startswith(ISTIO_TEXT_FORMAT[:-1])


def test_missing_values_are_a_dash() -> None:
    s = _stream(host=None, cluster=None, route=None, upstream_local=None, response_headers=None, grpc_status=None,
                down=SimpleNamespace(peer_address=("", 0), transport=SimpleNamespace(local_address=("", 0)),
                                     peer=SimpleNamespace(uri_sans=[]), requested_server_name=None))
    fmt = "%UPSTREAM_HOST% %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %ROUTE_NAME% %GRPC_STATUS% " \
          "%DOWNSTREAM_PEER_URI_SAN% %REQUESTED_SERVER_NAME% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% " \
          "%CONNECTION_TERMINATION_DETAILS% %UPSTREAM_REQUEST_ATTEMPT_COUNT%"
    assert compile_format(fmt)(s) == "- - - - - - - - - 1"


def test_json_format_keeps_types_of_single_operators() -> None:
    render = compile_json((("code", "%RESPONSE_CODE%"), ("peer", "%DOWNSTREAM_PEER_URI_SAN%"),
                           ("sni", "%REQUESTED_SERVER_NAME%"), ("pair", "%BYTES_RECEIVED%/%BYTES_SENT%")))
    assert render(_stream(down=SimpleNamespace(peer=SimpleNamespace(uri_sans=[]), requested_server_name=None))) == \
        '{"code":"200","peer":null,"sni":null,"pair":"37/0"}\n'


@pytest.mark.parametrize(("fmt", "error"), [
    ("%NOT_AN_OPERATOR%", "unsupported access log command operator %NOT_AN_OPERATOR%"),
    ("%REQ()%", "%REQ(...)% needs a header name"),
    ("%HOSTNAME(x)%", "%HOSTNAME% takes no argument"),
])
def test_unknown_or_malformed_operators_are_refused(fmt: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        compile_format(fmt)

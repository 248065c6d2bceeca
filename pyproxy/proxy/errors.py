"""Errors the proxy makes, and the one place they become responses (:func:`local_reply`).

Each error carries Envoy's HTTP status, response flag and body text; for gRPC callers the reply is Envoy's
trailers-only form (``:status 200``, ``content-type: application/grpc``, ``grpc-status``, ``grpc-message``)
with the status mapped as Envoy's ``Grpc::Utility::httpToGrpcStatus`` does (REFERENCE.md section 1), unless
the error names a gRPC status itself (fault aborts, RBAC, deadlines).
"""

from __future__ import annotations

from urllib.parse import quote

from pyproxy.http2.hpack import Header

# grpc status codes used by the proxy
OK = 0
CANCELLED = 1
UNKNOWN = 2
DEADLINE_EXCEEDED = 4
PERMISSION_DENIED = 7
INTERNAL = 13
UNIMPLEMENTED = 12
UNAVAILABLE = 14
UNAUTHENTICATED = 16

_CONNECT_PREFIX = "upstream connect error or disconnect/reset before headers. reset reason: "


def http_to_grpc_status(http_status: int) -> int:
    """Envoy's ``Grpc::Utility::httpToGrpcStatus``."""
    if http_status == 400:
        return INTERNAL
    if http_status == 401:
        return UNAUTHENTICATED
    if http_status == 403:
        return PERMISSION_DENIED
    if http_status == 404:
        return UNIMPLEMENTED
    if http_status in (429, 502, 503, 504):
        return UNAVAILABLE
    return UNKNOWN


_GRPC_TO_HTTP = {0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409,
                 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401}


def grpc_to_http_status(grpc_status: int) -> int:
    """Envoy's ``Grpc::Utility::grpcToHttpStatus`` (used for outlier detection and stats)."""
    return _GRPC_TO_HTTP.get(grpc_status, 500)


def encode_grpc_message(message: str) -> bytes:
    """Percent-encode a grpc-message value as the gRPC HTTP/2 spec requires."""
    return quote(message, safe=" !\"#$&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`"
                              "abcdefghijklmnopqrstuvwxyz{|}~").encode("ascii")


class ProxyError(Exception):
    """An error the proxy answers itself. Subclasses fix the status, flag and message."""

    http_status = 503
    grpc_status: int | None = None  # None: mapped from http_status
    flag = "-"
    details = "proxy_error"
    envoy_headers: tuple[Header, ...] = ()  # x-envoy-* headers of the reply (left out with suppress_envoy_headers)

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def grpc_code(self) -> int:
        return self.grpc_status if self.grpc_status is not None else http_to_grpc_status(self.http_status)


class NoRoute(ProxyError):
    """No virtual host or route matched. Envoy sends no body; we say why (grpc-message / text)."""

    http_status = 404
    flag = "NR"
    details = "route_not_found"

    def __init__(self) -> None:
        super().__init__("route not found")


class ClusterNotFound(ProxyError):
    http_status = 503
    flag = "NC"
    details = "cluster_not_found"

    def __init__(self, message: str, http_status: int = 503) -> None:
        super().__init__(message)
        self.http_status = http_status


class NoHealthyUpstream(ProxyError):
    http_status = 503
    flag = "UH"
    details = "no_healthy_upstream"

    def __init__(self) -> None:
        super().__init__("no healthy upstream")


class UpstreamConnectFailure(ProxyError):
    http_status = 503
    flag = "UF"
    details = "upstream_reset_before_response_started{remote_connection_failure}"

    def __init__(self, reason: str) -> None:
        super().__init__(f"{_CONNECT_PREFIX}remote connection failure, transport failure reason: {reason}")
        self.reason = reason


class UpstreamReset(ProxyError):
    """The upstream stream was reset (or its connection lost) before response headers."""

    http_status = 503
    flag = "UR"
    details = "upstream_reset_before_response_started"

    def __init__(self, reason: str, flag: str = "UR") -> None:
        super().__init__(f"{_CONNECT_PREFIX}{reason}")
        self.flag = flag


class Overflow(ProxyError):
    """A circuit breaker tripped (max requests, pending requests, connections): Envoy's 503 with
    ``x-envoy-overloaded: true`` and flag UO (gRPC: 14 UNAVAILABLE)."""

    http_status = 503
    flag = "UO"
    details = "upstream_reset_before_response_started{overflow}"
    envoy_headers = ((b"x-envoy-overloaded", b"true"),)

    def __init__(self) -> None:
        super().__init__(f"{_CONNECT_PREFIX}overflow")


class UpstreamTimeout(ProxyError):
    http_status = 504
    flag = "UT"
    details = "upstream_response_timeout"

    def __init__(self) -> None:
        super().__init__("upstream request timeout")


class DurationTimeout(ProxyError):
    """The stream's maximum duration, here from the caller's grpc-timeout (route
    ``max_stream_duration.grpc_timeout_header_max``): Envoy's ``onStreamMaxDurationReached``."""

    http_status = 408
    grpc_status = DEADLINE_EXCEEDED
    flag = "DT"
    details = "max_duration_timeout"

    def __init__(self, request_complete: bool) -> None:
        super().__init__("downstream duration timeout")
        if request_complete:
            self.http_status = 504  # Envoy's maybeRequestTimeoutCode


class StreamIdleTimeout(ProxyError):
    http_status = 408
    flag = "SI"
    details = "stream_idle_timeout"

    def __init__(self) -> None:
        super().__init__("stream timeout")


class MaxStreamDuration(ProxyError):
    """max_stream_duration reached (route or connection manager); Envoy answers 408 before headers."""

    http_status = 408
    flag = "UMSDR"
    details = "max_duration_timeout"

    def __init__(self) -> None:
        super().__init__("downstream duration timeout")


class RequestTimeout(ProxyError):
    """The connection manager's request_timeout: the whole request was not received in time."""

    http_status = 408
    flag = "-"
    details = "request_overall_timeout"

    def __init__(self) -> None:
        super().__init__("request timeout")


class RequestHeadersTooLarge(ProxyError):
    http_status = 431
    flag = "-"
    details = "request_headers_too_large"

    def __init__(self) -> None:
        super().__init__("request headers too large")


class RbacDenied(ProxyError):
    """The RBAC filter denied the request: Envoy's 403 "RBAC: access denied" (gRPC: 7 PERMISSION_DENIED)."""

    http_status = 403
    flag = "-"

    def __init__(self, policy: str) -> None:
        super().__init__("RBAC: access denied")
        self.details = f"rbac_access_denied_matched_policy[{policy or 'none'}]"


class FaultAbort(ProxyError):
    """The fault filter's abort (Envoy's ``FaultFilter::abortWithStatus``): body/grpc-message "fault filter
    abort", flag FI. An ``http_status`` abort answers that status (a gRPC caller gets it mapped as any local
    reply: 503 -> 14 UNAVAILABLE); a ``grpc_status`` abort answers HTTP 200, which a gRPC caller sees as a
    trailers-only reply with that grpc-status, and any other caller as a 200 with the text body, as in Envoy."""

    flag = "FI"
    details = "fault_filter_abort"

    def __init__(self, http_status: int, grpc_status: int | None = None) -> None:
        super().__init__("fault filter abort")
        self.http_status = http_status
        self.grpc_status = grpc_status


class DirectResponseReply(ProxyError):
    flag = "-"
    details = "direct_response"

    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.http_status = status


class ShuttingDown(ProxyError):
    http_status = 503
    flag = "-"
    details = "shutting_down"

    def __init__(self) -> None:
        super().__init__("proxy is shutting down")


_GRPC_CT = (b"content-type", b"application/grpc")


def local_reply(err: ProxyError, is_grpc: bool, server_header: bytes | None = None) -> tuple[list[Header], bytes]:
    """Headers (and body for non-gRPC callers) for a reply the proxy makes itself.

    gRPC: a trailers-only response (HEADERS with END_STREAM, empty body).
    """
    if is_grpc:
        headers = [(b":status", b"200"), _GRPC_CT, (b"grpc-status", str(err.grpc_code()).encode())]
        if err.message:
            headers.append((b"grpc-message", encode_grpc_message(err.message)))
        if server_header:
            headers.append((b"server", server_header))
        return headers, b""
    body = err.message.encode()
    headers = [(b":status", str(err.http_status).encode())]
    if body:
        headers.append((b"content-type", b"text/plain"))
    headers.append((b"content-length", str(len(body)).encode()))
    if server_header:
        headers.append((b"server", server_header))
    return headers, body

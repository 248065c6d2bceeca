"""Access logs: Istio's ``meshConfig.accessLogFile`` / ``accessLogFormat`` as Envoy's file access logger.

Istio's demo profile sets ``accessLogFile: /dev/stdout`` and every sidecar's HTTP connection managers get an
``envoy.access_loggers.file`` logger with Istio's default text format (``EnvoyTextLogFormat`` in
``pilot/pkg/model/telemetry_logging.go``). minimesh does the same by default and appends the two peer identities
(``%DOWNSTREAM_PEER_URI_SAN%`` on inbound: who called; ``%UPSTREAM_PEER_URI_SAN%`` on outbound: who answered), so
a log line says which SPIFFE identity was on the other end. ``accessLogFile: ""`` turns access logs off.
"""

from __future__ import annotations

from envoy.extensions.access_loggers.file.v3 import file_pb2  # noqa: F401 - registers the @type for packing

from mesh_ctl.translate.values import Json

FILE_ACCESS_LOG = "envoy.access_loggers.file"
FILE_ACCESS_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

ISTIO_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    '%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% '
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" '
    '"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% '
    '%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n'
)
DEFAULT_ACCESS_LOG_FILE = "/dev/stdout"
DEFAULT_ACCESS_LOG_FORMAT = ISTIO_TEXT_FORMAT[:-1] + ' %GRPC_STATUS% "%DOWNSTREAM_PEER_URI_SAN%" ' \
    '"%UPSTREAM_PEER_URI_SAN%"\n'


def access_logs(path: str, fmt: str | None) -> list[Json]:
    """The ``access_log`` list of an HTTP connection manager: one file logger, or none when ``path`` is empty."""
    if not path:
        return []
    text = fmt if fmt is not None else DEFAULT_ACCESS_LOG_FORMAT
    if not text.endswith("\n"):
        text += "\n"  # Istio adds the newline a custom accessLogFormat lacks
    return [{"name": FILE_ACCESS_LOG, "typed_config": {
        "@type": FILE_ACCESS_LOG_TYPE, "path": path,
        "log_format": {"text_format_source": {"inline_string": text}}}}]

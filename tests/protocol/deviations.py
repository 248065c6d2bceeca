"""Where the reference targets legitimately deviate from the suite's expectations, in one place.

These are expected failures for ``H2_TARGET=nginx`` (Debian's nginx 1.22.1) or ``H2_TARGET=h2server`` (the
``h2`` 4.4 library) only; the conftest refuses a deviation for pyproxy. Each reason says what the target
does instead, and notes when h2spec itself would still pass it (h2spec accepts a connection that closes
after a GOAWAY with the wrong error code; this suite does not, unless ``H2SPEC_LENIENT=1``).
"""

from __future__ import annotations

import pytest

from tests.protocol.h2peer import LENIENT


def nginx(reason: str, *, strict: bool = True) -> pytest.MarkDecorator:
    return pytest.mark.deviation("nginx", reason=reason, strict=strict)


def h2server(reason: str, *, strict: bool = True) -> pytest.MarkDecorator:
    return pytest.mark.deviation("h2server", reason=reason, strict=strict)


# Deviations h2spec itself tolerates (a wrong GOAWAY code followed by the connection closing) pass under
# H2SPEC_LENIENT=1, so they are only strict expected failures in the default, strict mode.
H2SPEC_PASSES = not LENIENT


# ------------------------------------------------------------------------------------------- nginx 1.22

NGINX_IDLE_STREAM_FRAMES = nginx("ignores DATA / RST_STREAM / WINDOW_UPDATE on idle streams")
NGINX_CLOSED_STREAM_DATA = nginx(
    "ignores DATA on a half-closed or closed stream; whether the stream is still known depends on timing",
    strict=False,
)
NGINX_GOAWAY_NOT_STREAM_CLOSED = nginx(
    "answers HEADERS on a half-closed/closed stream with GOAWAY(PROTOCOL_ERROR), not STREAM_CLOSED "
    "(h2spec passes it: the connection closes)",
    strict=H2SPEC_PASSES,
)
NGINX_400 = nginx("refuses the malformed request with an HTTP 400 response instead of RST_STREAM(PROTOCOL_ERROR)")
NGINX_FORWARDS = nginx("drops or ignores the offending field and forwards the request instead of refusing it")
NGINX_TE_GZIP = nginx("forwards 'te: gzip' and answers 502 when the gRPC backend refuses it")
NGINX_HPACK_LAX = nginx("accepts this invalid HPACK representation")
NGINX_HPACK_FRAME_SIZE = nginx(
    "answers an HPACK decoding error with GOAWAY(FRAME_SIZE_ERROR) (h2spec passes it)", strict=H2SPEC_PASSES
)
NGINX_REQUEST_TRAILERS = nginx(
    "usually refuses a trailer section in a request (closes the connection); timing-dependent", strict=False
)
NGINX_HEADER_LIMIT = nginx("http2_max_header_size defaults to 16 KiB: it closes the connection")
NGINX_EMPTY_DATA = nginx("accepts an unbounded run of empty DATA frames (neither the stream nor the connection ends)")

# ------------------------------------------------------------------------------------------- h2 4.4

H2_HPACK_PROTOCOL_ERROR = h2server(
    "h2 reports HPACK decoding errors as PROTOCOL_ERROR, not COMPRESSION_ERROR (h2spec passes it)",
    strict=H2SPEC_PASSES,
)
H2_SETTINGS_ACK_PROTOCOL_ERROR = h2server(
    "h2 reports a SETTINGS ACK with a payload as PROTOCOL_ERROR, not FRAME_SIZE_ERROR (h2spec passes it)",
    strict=H2SPEC_PASSES,
)
H2_WAITS_FOR_FRAME_BODY = h2server(
    "h2 checks a frame's length against SETTINGS_MAX_FRAME_SIZE only once the whole frame has arrived"
)
H2_IDLE_RST_STREAM = h2server("h2 ignores RST_STREAM on an idle stream once another stream is open")
H2_TOO_MANY_STREAMS = h2server(
    "h2 treats a stream over SETTINGS_MAX_CONCURRENT_STREAMS as a connection error (GOAWAY PROTOCOL_ERROR)"
)

"""Events the HTTP/2 engine reports (past tense, like h2's). Plain slotted classes: created per frame."""

from __future__ import annotations

from pyproxy.http2.hpack import Header

# HeadersReceived.kind
REQUEST = 0  # initial headers of a peer-initiated stream (server side)
RESPONSE = 1  # final response headers (client side)
INFORMATIONAL = 2  # 1xx response headers (client side)
TRAILERS = 3  # trailing headers, always with end_stream


class Event:
    __slots__: tuple[str, ...] = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"{type(self).__name__}({fields})"


class HeadersReceived(Event):
    """A complete header block. For requests the pseudo-headers are also split out (validated)."""

    __slots__ = ("authority", "end_stream", "headers", "kind", "method", "path", "scheme", "status", "stream_id")

    def __init__(self, stream_id: int, headers: list[Header], end_stream: bool, kind: int) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.end_stream = end_stream
        self.kind = kind
        self.method = b""
        self.scheme = b""
        self.path = b""
        self.authority = b""
        self.status = 0


class DataReceived(Event):
    """DATA payload. ``flow_controlled_length`` must be acknowledged once consumed (it is the payload's
    length: the engine returns the padding to both windows itself)."""

    __slots__ = ("data", "end_stream", "flow_controlled_length", "stream_id")

    def __init__(self, stream_id: int, data: bytes, flow_controlled_length: int, end_stream: bool) -> None:
        self.stream_id = stream_id
        self.data = data
        self.flow_controlled_length = flow_controlled_length
        self.end_stream = end_stream


class StreamReset(Event):
    """The stream is gone: reset by the peer (``remote``) or by us because of a stream error."""

    __slots__ = ("error_code", "remote", "stream_id")

    def __init__(self, stream_id: int, error_code: int, remote: bool) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote = remote


class WindowUpdated(Event):
    """Send window grew on ``stream_id`` (0 = the connection or every stream)."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class HeaderListTooLarge(Event):
    """A request header list exceeded our limit (the block was decoded; the stream is still open).

    The server side should answer 431 (RFC 9113 section 10.5.1) or reset the stream.
    """

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class RemoteSettingsChanged(Event):
    __slots__ = ("max_concurrent_streams",)

    def __init__(self, max_concurrent_streams: int) -> None:
        self.max_concurrent_streams = max_concurrent_streams


class PingAcknowledged(Event):
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class ConnectionTerminated(Event):
    """GOAWAY received (``local`` False) or a connection error we raised (``local`` True, GOAWAY sent)."""

    __slots__ = ("additional_data", "error_code", "last_stream_id", "local")

    def __init__(self, error_code: int, last_stream_id: int, additional_data: bytes, local: bool) -> None:
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.additional_data = additional_data
        self.local = local

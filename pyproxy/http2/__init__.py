"""pyproxy's own HTTP/2 engine (RFC 9113 + RFC 7541), sans-IO: bytes in -> events, method calls -> bytes out.

- ``frames.py``: constants and serialisers, no state.
- ``hpack.py``: header compression; a fully validating decoder and an encoder tuned for proxying.
- ``events.py``: what the engine reports (``HeadersReceived``, ``DataReceived``, ``StreamReset``...).
- ``connection.py``: ``H2Connection``, one per connection, for both ends of the proxy (server side towards
  callers, client side towards upstreams): stream states, flow control, header rules, flood limits.

Untrusted input never raises out of ``H2Connection.receive_data``: a connection error queues GOAWAY and reports
``ConnectionTerminated(local=True)``, a stream error queues RST_STREAM and reports ``StreamReset(remote=False)``.
The caller drives I/O (``pyproxy/proxy``, ``pyproxy/upstream``) and returns flow-control credit: the
proxy returns the connection's share of each DATA frame on receipt (``acknowledge_connection``) and the
stream's once the bytes have been forwarded (``acknowledge_stream``), as Envoy's codecs do, so a stream whose
reader stalls holds only its own window (``acknowledge_received_data`` does both). ``h2`` is the reference peer
in the tests (``tests/unit/http2``); it was replaced here on the hot path for speed (~26 us vs ~220 us per
request, both ends).
"""

"""Tests of pyproxy's sans-IO HTTP/2 engine (``pyproxy/http2``).

- ``test_hpack.py``: RFC 7541 Appendix C, round trips against the ``hpack`` reference, malformed blocks.
- ``test_connection.py``: our engine against ``h2`` as the peer (both sides), and raw frames (hyperframe /
  hand-built bytes) for every error rule of RFC 9113.
- ``test_state_machine.py``: hypothesis: random frame sequences never make ``receive_data`` raise, flow-control
  invariants, and client engine <-> server engine exchanges that reproduce exactly what was sent.

``helpers.py`` holds the frame factory, the handshakes and the assertions they share.
"""

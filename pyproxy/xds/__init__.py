"""pyproxy as an xDS client (Envoy's API, v3, state of the world over ADS).

- ``grpc.py``: a small gRPC client on pyproxy's own HTTP/2 engine (no grpcio in the proxy).
- ``state.py``: pure decisions: ACK/NACK per response (every resource translated and cross-checked),
  subscriptions (RDS/EDS/SDS names follow the listeners and clusters), consistent snapshots (warming,
  clusters kept while routes still use them).
- ``client.py``: the ADS stream's lifecycle: connect through the static ADS cluster, resync, back-off,
  readiness after the initial fetch.

The runtime swaps each accepted snapshot in atomically (``Runtime.install``); streams in flight finish on the
configuration they started with.
"""

"""CPU cost of the engine: our client engine <-> our server engine, one unary gRPC exchange per iteration.

Not a test (pytest does not collect it). ``python -m tests.unit.http2.bench_engine [repetitions]`` prints the
minimum and median CPU time (``time.process_time``, so other load on the machine matters less than with wall
time) per request for both ends, in microseconds. Same loop as the project's first ``eng.py`` measurement.
"""

from __future__ import annotations

import statistics
import sys
import time

from pyproxy.http2.connection import H2Connection
from pyproxy.http2.events import DataReceived

HEADERS = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/payment.PaymentService/Charge"),
           (b":authority", b"payment:8080"), (b"content-type", b"application/grpc"), (b"te", b"trailers"),
           (b"grpc-timeout", b"5S"), (b"user-agent", b"grpc-python/1.85")]
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]
TRAILERS = [(b"grpc-status", b"0")]
BODY = b"\x00\x00\x00\x00\x20" + b"x" * 32


def run(n: int) -> float:
    """Microseconds of CPU per request (both ends) over ``n`` requests on one connection."""
    c = H2Connection(client_side=True)
    s = H2Connection(client_side=False)
    c.initiate_connection()
    s.initiate_connection()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    s.receive_data(c.data_to_send())
    start = time.process_time()
    for _ in range(n):
        sid = c.get_next_stream_id()
        c.send_headers(sid, HEADERS)
        c.send_data(sid, BODY, end_stream=True)
        for e in s.receive_data(c.data_to_send()):
            if type(e) is DataReceived:
                s.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        s.send_headers(sid, RESPONSE)
        s.send_data(sid, BODY)
        s.send_headers(sid, TRAILERS, end_stream=True)
        for e in c.receive_data(s.data_to_send()):
            if type(e) is DataReceived:
                c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        s.receive_data(c.data_to_send())
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    run(2000)  # warm-up (HPACK tables, Huffman cache)
    results = [run(10000) for _ in range(repetitions)]
    print(f"min {min(results):.2f} us, median {statistics.median(results):.2f} us per request (both ends)")


if __name__ == "__main__":
    main()

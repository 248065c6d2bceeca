"""A plain grpcio client on ``xds:///`` targets (run as a process: grpcio reads its xDS bootstrap from the
environment once per process). Prints one JSON line: per call plan, how many replies each version served.

    python -m tests.unit.translate.grpc_xds_client TARGET:CALLS[:HEADER=VALUE] ...
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

import grpc

from payment_service.proto import payment_pb2

DEADLINE = 20.0  # seconds for the first call on a target (the xDS resources arrive then)
INJECTED = "Fault injected"  # grpcio's message for a call its fault filter aborted (gRFC A33)


def run(target: str, calls: int, metadata: tuple[tuple[str, str], ...]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    with grpc.insecure_channel(target) as channel:
        charge = channel.unary_unary("/payment.PaymentService/Charge",
                                     request_serializer=payment_pb2.ChargeRequest.SerializeToString,
                                     response_deserializer=payment_pb2.ChargeReply.FromString)
        for i in range(calls):
            try:
                reply = charge(payment_pb2.ChargeRequest(payment_id=f"p{i}", amount=1, currency="EUR"),
                                    metadata=metadata, timeout=DEADLINE if i == 0 else 5.0)
                counts[reply.version] += 1
            except grpc.RpcError as e:
                counts[f"error:{e.code().name}:{e.details()}"] += 1
                if i == 0 and e.details() != INJECTED:  # the configuration did not arrive: stop
                    break
    return dict(counts)


def main(argv: list[str]) -> int:
    out = []
    started = time.monotonic()
    for spec in argv:
        parts = spec.split(":")
        header = parts.pop() if "=" in parts[-1] else ""
        calls = int(parts.pop())
        target = ":".join(parts)
        metadata = (tuple(header.split("=", 1)),) if header else ()
        out.append({"target": target, "header": header, "counts": run(target, calls, metadata)})  # type: ignore[arg-type]
    print(json.dumps({"runs": out, "seconds": round(time.monotonic() - started, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

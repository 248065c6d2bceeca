"""The gRPC interop test client, with the official clients' command line.

Usage: ``python -m tests.interop.client --server_host=127.0.0.1 --server_port=PORT --test_case=large_unary``
(``--test_case=all`` runs every case in order). Exit status 0 when the case passed, 1 when it failed.

Flags from grpc/grpc ``doc/interop-test-descriptions.md``: ``--server_host --server_port
--server_host_override --test_case --use_tls --use_test_ca --service_config_json`` and the soak flags
(``--soak_iterations --soak_max_failures --soak_per_iteration_max_acceptable_latency_ms
--soak_overall_timeout_seconds --soak_min_time_ms_between_rpcs --soak_request_size --soak_response_size
--soak_num_threads``). Additions: ``--ca_file`` (the CA that ``--use_test_ca`` trusts, since our CA is made
per test session rather than the fixed ``ca.pem``) and ``--rpc_timeout_s`` (deadline on each RPC that has no
deadline of its own in the spec: a hang guard, not an assertion). The cloud-only auth cases
(compute_engine_creds, jwt_token_creds, oauth2_auth_token, per_rpc_creds) and cacheable_unary (needs a
caching proxy) are not implemented.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence

import grpc

from tests.interop.calls import InteropError
from tests.interop.cases import CASES, CaseContext
from tests.interop.server import parse_bool
from tests.interop.wire import NO_DECOMPRESSION


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.interop.client", description=__doc__.split("\n")[0]
    )
    add = parser.add_argument
    add("--server_host", default="localhost", help="the server host to connect to")
    add("--server_port", type=int, required=True, help="the server port to connect to")
    add("--server_host_override", help="name claimed in TLS (SNI, certificate check) and :authority")
    add("--test_case", default="large_unary", choices=[*CASES, "all"], help="the test case to run")
    add("--use_tls", type=parse_bool, default=False, help="use TLS (ALPN h2) instead of plaintext h2c")
    add("--use_test_ca", type=parse_bool, default=False, help="trust --ca_file instead of the system roots")
    add("--ca_file", help="PEM CA bundle trusted with --use_test_ca=true")
    add("--service_config_json", help="default service config for the channel")
    add("--rpc_timeout_s", type=float, default=30.0, help="deadline of RPCs the spec leaves without one")
    add("--soak_iterations", type=int, default=10)
    add("--soak_max_failures", type=int, default=0)
    add("--soak_per_iteration_max_acceptable_latency_ms", type=int, default=1000)
    add("--soak_overall_timeout_seconds", type=float, default=0, help="0: iterations x max latency")
    add("--soak_min_time_ms_between_rpcs", type=int, default=0)
    add("--soak_request_size", type=int, default=271828)
    add("--soak_response_size", type=int, default=314159)
    add("--soak_num_threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.use_test_ca and not args.ca_file:
        parser.error("--use_test_ca=true needs --ca_file (the CA of this test run)")
    return args


def open_channel(args: argparse.Namespace, inspect_compression: bool) -> grpc.Channel:
    """A channel to the target of ``args``; ``inspect_compression`` leaves compressed responses compressed."""
    target = (
        f"[{args.server_host}]:{args.server_port}"
        if ":" in args.server_host
        else (f"{args.server_host}:{args.server_port}")
    )
    options: list[tuple[str, str | int]] = []
    if inspect_compression:
        options.extend(NO_DECOMPRESSION)
    if args.service_config_json:
        options.append(("grpc.service_config", args.service_config_json))
    if args.server_host_override:
        options.append(("grpc.default_authority", args.server_host_override))
    if not args.use_tls:
        return grpc.insecure_channel(target, options=options)
    root = None
    if args.use_test_ca:
        with open(args.ca_file, "rb") as f:
            root = f.read()
    if args.server_host_override:
        options.append(("grpc.ssl_target_name_override", args.server_host_override))
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(root), options=options)


def _log(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run_case(args: argparse.Namespace, name: str) -> bool:
    """Run one case; print its verdict; True when it passed."""
    ctx = CaseContext(
        args=args,
        open_channel=lambda inspect: open_channel(args, inspect),
        rpc_timeout=args.rpc_timeout_s,
        log=_log,
    )
    start = time.monotonic()
    try:
        CASES[name](ctx)
    except InteropError as failure:
        _log(f"FAILED {name} ({time.monotonic() - start:.2f} s): {failure}")
        return False
    except grpc.RpcError as error:
        _log(
            f"FAILED {name} ({time.monotonic() - start:.2f} s): RPC error {error.code()}: {error.details()!r}"
        )
        return False
    except Exception:
        elapsed = time.monotonic() - start
        _log(f"FAILED {name} ({elapsed:.2f} s): unexpected exception\n{traceback.format_exc()}")
        return False
    finally:
        ctx.close()
    _log(f"PASSED {name} ({time.monotonic() - start:.2f} s)")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = list(CASES) if args.test_case == "all" else [args.test_case]
    failed = [name for name in names if not run_case(args, name)]
    if len(names) > 1:
        _log(f"{len(names) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

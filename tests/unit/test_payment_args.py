"""Command lines of payment-server and payment-client: defaults, validation, exit status 2."""

from __future__ import annotations

import pytest

from payment_service import client, server


def test_client_defaults() -> None:
    config, as_json = client.parse_config(["--target", "127.0.0.1:50051"])
    assert not as_json
    assert (config.target, config.method, config.rps, config.duration_s, config.concurrency) == (
        "127.0.0.1:50051",
        "charge",
        10.0,
        10.0,
        4,
    )
    assert (config.count, config.deadline_ms, config.payload_bytes, config.metadata, config.authority) == (
        0,
        0.0,
        0,
        (),
        None,
    )


def test_client_all_options() -> None:
    config, as_json = client.parse_config(
        [
            "--target",
            "[::1]:15001",
            "--rps",
            "0",
            "--duration",
            "0",
            "--concurrency",
            "8",
            "--count",
            "100",
            "--method",
            "mix",
            "--deadline-ms",
            "250",
            "--payload-bytes",
            "1024",
            "--echo-payload",
            "--metadata",
            "x-a=1",
            "--metadata",
            "x-a=2",
            "--metadata",
            "x-b-bin=\u00e9",
            "--authority",
            "payment.default.svc.cluster.local:8080",
            "--json",
            "--interval",
            "0.5",
        ]
    )
    assert as_json
    assert config.rps == 0 and config.duration_s == 0 and config.count == 100
    assert config.concurrency == 8 and config.method == "mix" and config.deadline_ms == 250
    assert config.payload_bytes == 1024 and config.echo_payload
    assert config.metadata == (("x-a", "1"), ("x-a", "2"), ("x-b-bin", "\u00e9".encode()))
    assert config.authority == "payment.default.svc.cluster.local:8080"
    assert config.interval_s == 0.5


@pytest.mark.parametrize(
    "argv",
    [
        [],  # --target is required
        ["--target", "nohost"],
        ["--target", "::1:80"],  # IPv6 needs brackets
        ["--target", "h:99999"],
        ["--target", "h:1", "--rps", "-1"],
        ["--target", "h:1", "--rps", "fast"],
        ["--target", "h:1", "--duration", "-2"],
        ["--target", "h:1", "--concurrency", "0"],
        ["--target", "h:1", "--count", "1.5"],
        ["--target", "h:1", "--method", "delete"],
        ["--target", "h:1", "--metadata", "novalue"],
        ["--target", "h:1", "--metadata", "X-Upper=1"],
        ["--target", "h:1", "--metadata", ":path=/x"],
        ["--target", "h:1", "--metadata", "grpc-timeout=1S"],
        ["--target", "h:1", "--metadata", "x-a=caf\u00e9"],  # non-ASCII needs a -bin key
        ["--target", "h:1", "--payload-bytes", str(64 * 1024 * 1024)],
    ],
)
def test_client_rejects_bad_arguments_with_status_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        client.parse_config(argv)
    assert exc.value.code == 2
    assert "payment-client" in capsys.readouterr().err


def test_server_arguments() -> None:
    args = server.build_parser().parse_args(
        [
            "--version",
            "v2",
            "--listen",
            "127.0.0.1:0",
            "--error-rate",
            "0.2",
            "--latency",
            "50",
            "--name",
            "p",
        ]
    )
    assert (args.version, args.listen, args.error_rate, args.latency, args.name) == (
        "v2",
        ("127.0.0.1", 0),
        0.2,
        50.0,
        "p",
    )
    assert args.workers == 32
    assert args.error_at == "before-headers"
    late = server.build_parser().parse_args(["--version", "v1", "--listen", ":1", "--error-at", "after-headers"])
    assert late.error_at == "after-headers"


@pytest.mark.parametrize(
    "argv",
    [
        ["--listen", "127.0.0.1:1"],  # --version is required
        ["--version", "v3", "--listen", "127.0.0.1:1"],
        ["--version", "v1", "--listen", "127.0.0.1"],
        ["--version", "v1", "--listen", "127.0.0.1:1", "--error-rate", "1.5"],
        ["--version", "v1", "--listen", "127.0.0.1:1", "--latency", "-5"],
        ["--version", "v1", "--listen", "127.0.0.1:1", "--workers", "0"],
        ["--version", "v1", "--listen", "127.0.0.1:1", "--error-at", "after-first-reply"],
    ],
)
def test_server_rejects_bad_arguments_with_status_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        server.main(argv)
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:15001", ("::1", 15001)),
        (":8080", ("0.0.0.0", 8080)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert server.split_host_port(text) == expected
    assert server.split_host_port(server.join_host_port(*expected)) == expected

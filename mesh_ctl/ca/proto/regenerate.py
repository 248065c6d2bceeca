"""Regenerate the Python code for ``protos/istio_ca.proto`` into this package (or into a given directory).

    python -m mesh_ctl.ca.proto.regenerate            # rewrite the committed files
    python -m mesh_ctl.ca.proto.regenerate /tmp/out   # write them elsewhere (the freshness test compares)

Uses ``grpc_tools.protoc`` from the running Python (grpcio-tools, as pinned in pyproject.toml), then:

* the service module's ``import istio_ca_pb2`` becomes package-relative, so the code imports as
  ``mesh_ctl.ca.proto.istio_ca_pb2(_grpc)`` from both the control plane and pyproxy;
* every generated file gets a header that keeps ruff and mypy out of it (generated code is not ours to lint;
  the ``.pyi`` stub is what mypy reads for the messages).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PROTO = REPO / "protos" / "istio_ca.proto"
PACKAGE_DIR = Path(__file__).resolve().parent
GENERATED = ("istio_ca_pb2.py", "istio_ca_pb2.pyi", "istio_ca_pb2_grpc.py")
HEADER = "# ruff: noqa\n# mypy: ignore-errors\n"
STUB_HEADER = "# ruff: noqa\n# mypy: disable-error-code=\"type-arg\"\n"  # protoc leaves Mapping bare
_ABSOLUTE = "import istio_ca_pb2 as istio__ca__pb2\n"
_RELATIVE = "from . import istio_ca_pb2 as istio__ca__pb2\n"


def regenerate(out: Path = PACKAGE_DIR) -> list[Path]:
    """Write the generated modules into ``out``; return their paths."""
    import grpc_tools
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/struct.proto
    status = protoc.main([
        "grpc_tools.protoc", f"--proto_path={PROTO.parent}", f"--proto_path={well_known}",
        f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", str(PROTO),
    ])
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status} on {PROTO}")
    service = out / "istio_ca_pb2_grpc.py"
    text = service.read_text()
    if _ABSOLUTE not in text:
        raise RuntimeError(f"cannot find {_ABSOLUTE.strip()!r} to rewrite in {service}")
    service.write_text(HEADER + text.replace(_ABSOLUTE, _RELATIVE))
    messages = out / "istio_ca_pb2.py"
    messages.write_text(HEADER + messages.read_text())
    stub = out / "istio_ca_pb2.pyi"
    stub.write_text(STUB_HEADER + stub.read_text())
    return [out / name for name in GENERATED]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for path in regenerate(Path(args[0]) if args else PACKAGE_DIR):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

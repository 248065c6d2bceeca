#!/usr/bin/env bash
# Regenerate the Python code for protos/payment.proto into payment_service/proto/ (or into $1).
#
#   scripts/gen_protos.sh            # rewrite the committed files
#   scripts/gen_protos.sh /tmp/out   # write them elsewhere (tests compare the two)
#
# Uses grpc_tools.protoc from the current Python (grpcio-tools, as pinned in pyproject.toml). The generated
# service module imports payment_pb2 by absolute name; it is rewritten to a package-relative import so that
# the code is importable as payment_service.proto.payment_pb2(_grpc).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo/payment_service/proto}"
python="${PYTHON:-python3}"

mkdir -p "$out"
"$python" -m grpc_tools.protoc \
    --proto_path="$repo/protos" \
    --python_out="$out" \
    --pyi_out="$out" \
    --grpc_python_out="$out" \
    "$repo/protos/payment.proto"

# "import payment_pb2 as payment__pb2" -> "from . import payment_pb2 as payment__pb2"
sed -i -e 's/^import payment_pb2 as payment__pb2$/from . import payment_pb2 as payment__pb2/' "$out/payment_pb2_grpc.py"
grep -q '^from . import payment_pb2 as payment__pb2$' "$out/payment_pb2_grpc.py" || {
    echo "gen_protos.sh: could not rewrite the payment_pb2 import in $out/payment_pb2_grpc.py" >&2
    exit 1
}

# protoc's .pyi leaves map-field Mapping types bare, which mypy --strict reports; say so once, at the top.
sed -i -e '1i # mypy: disable-error-code="type-arg"' "$out/payment_pb2.pyi"

if [ ! -f "$out/__init__.py" ]; then
    printf '"""Generated from protos/payment.proto by scripts/gen_protos.sh: do not edit."""\n' > "$out/__init__.py"
fi

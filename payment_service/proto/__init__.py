"""Generated from protos/payment.proto by scripts/gen_protos.sh: do not edit."""

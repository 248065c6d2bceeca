"""The CA's settings in the control plane, and the `mesh_ctl serve` options that set them.

Defaults follow Istio (``REFERENCE.md`` section 4): workload certificates 24 h, at most 90 d, at least 1 s;
bootstrap tokens 24 h. Where the material lives:

* ``--ca-dir`` (default ``<run dir>/certs/ca``, where `mesh_ctl up` has always kept the root): self-signed
  roots, their rotation state, the token signing key;
* ``--cacerts DIR`` (default ``<run dir>/cacerts`` if that directory exists, like istiod's
  ``/etc/cacerts``): Istio's plug-in CA files; the token key still lives in the CA directory.

Without those flags, Istio's own environment variables ``DEFAULT_WORKLOAD_CERT_TTL`` and
``MAX_WORKLOAD_CERT_TTL`` (Go durations such as ``24h``, ``90d``, ``30s``) set the TTLs.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from mesh_ctl.ca.authority import MAX_WORKLOAD_TTL, WORKLOAD_TTL
from mesh_ctl.ca.tokens import DEFAULT_TOKEN_TTL

DEFAULT_PUBLISH_DELAY = timedelta(seconds=10)  # how long a new root is only trusted before it signs
CACERTS_DIR = "cacerts"
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> timedelta:
    """``90d``, ``24h``, ``1h30m``, ``30s``, ``500ms``, or plain seconds (``45``); ValueError otherwise."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return timedelta(seconds=float(text))
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (examples: 30s, 24h, 1h30m, 90d)")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class CaOptions:
    directory: Path | None = None  # None: <run dir>/certs/ca (or <state dir>/ca without a run dir)
    cacerts: Path | None = None  # None: <run dir>/cacerts if it exists, else self-signed
    default_ttl: timedelta = WORKLOAD_TTL
    max_ttl: timedelta = MAX_WORKLOAD_TTL
    token_ttl: timedelta = DEFAULT_TOKEN_TTL
    publish_delay: timedelta = DEFAULT_PUBLISH_DELAY

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CaOptions:
        env = os.environ if environ is None else environ
        options = cls()
        if env.get("DEFAULT_WORKLOAD_CERT_TTL"):
            options = replace(options, default_ttl=parse_duration(env["DEFAULT_WORKLOAD_CERT_TTL"]))
        if env.get("MAX_WORKLOAD_CERT_TTL"):
            options = replace(options, max_ttl=parse_duration(env["MAX_WORKLOAD_CERT_TTL"]))
        return options

    def resolve(self, run_dir: Path | None, state_dir: Path) -> CaOptions:
        """Fill in the directories from the run dir (or the state dir when there is none)."""
        directory = self.directory or (run_dir / "certs" / "ca" if run_dir is not None else state_dir / "ca")
        cacerts = self.cacerts
        if cacerts is None and run_dir is not None and (run_dir / CACERTS_DIR).is_dir():
            cacerts = run_dir / CACERTS_DIR
        return replace(self, directory=directory, cacerts=cacerts)


# ---------------------------------------------------------------------------------------------- serve flags


def duration_arg(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The CA's `mesh_ctl serve` options."""
    env = CaOptions.from_env()
    g = parser.add_argument_group("certificate authority")
    g.add_argument("--ca-dir", metavar="DIR", help="self-signed roots, rotation state and the token key "
                                                   "(default: <run dir>/certs/ca)")
    g.add_argument("--cacerts", metavar="DIR", help="Istio plug-in CA files (ca-cert.pem, ca-key.pem, "
                                                    "root-cert.pem, cert-chain.pem); default: <run dir>/cacerts "
                                                    "if it exists, else a self-signed root")
    g.add_argument("--workload-cert-ttl", metavar="DURATION", type=duration_arg, default=env.default_ttl,
                   help=f"certificate lifetime when a CSR asks for none (default: {format_duration(env.default_ttl)})")
    g.add_argument("--max-workload-cert-ttl", metavar="DURATION", type=duration_arg, default=env.max_ttl,
                   help=f"longest certificate lifetime granted (default: {format_duration(env.max_ttl)})")
    g.add_argument("--root-publish-delay", metavar="DURATION", type=duration_arg, default=DEFAULT_PUBLISH_DELAY,
                   help="during a root rotation, how long the new root is only trusted before it signs "
                        f"(default: {format_duration(DEFAULT_PUBLISH_DELAY)})")


def from_args(args: argparse.Namespace) -> CaOptions:
    """CaOptions from the flags :func:`add_arguments` declared (directories resolved later)."""
    return CaOptions(
        directory=Path(args.ca_dir) if args.ca_dir else None,
        cacerts=Path(args.cacerts) if args.cacerts else None,
        default_ttl=args.workload_cert_ttl, max_ttl=args.max_workload_cert_ttl,
        publish_delay=args.root_publish_delay,
    )

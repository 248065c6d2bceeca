"""`mesh_ctl`: the command tree. Each command lives in ``mesh_ctl/commands/<name>.py`` (see its docstring).

    mesh_ctl up [--rps 50] [--concurrency 4] [--detach] [--run-dir DIR] [--topology FILE] [--no-summary]
    mesh_ctl down [--run-dir DIR]
    mesh_ctl status [-o table|json] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import cast

from mesh_ctl.commands import COMMANDS

Run = Callable[[argparse.Namespace], int]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, the options of that command alone are loaded (its module imported)."""
    parser = argparse.ArgumentParser(
        prog="mesh_ctl",
        description="minimesh: a service mesh for gRPC that runs on a laptop.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        p = sub.add_parser(name, help=summary, formatter_class=argparse.RawDescriptionHelpFormatter)
        if only is None or name == only:
            module = importlib.import_module(f"mesh_ctl.commands.{name.replace('-', '_')}")
            p.description = module.__doc__
            module.add_arguments(p)
            p.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        return cast(Run, args.run)(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mesh_ctl status | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1

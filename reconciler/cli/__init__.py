"""The `vmkeep` command line: one module per command, registered in `COMMANDS`.

Every command module exposes `register(subparsers, common)`; it adds its parser with
`parents=[common]` and sets `func`, a callable taking the parsed arguments and returning
the exit code. Errors derived from `VmkeepError` become a one-line (or one-per-diagnostic)
message on stderr and their exit code; bad input never shows a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from reconciler import __version__
from reconciler.cli import apply, gc, inventory, plan, state, validate, verify
from reconciler.errors import VmkeepError

__all__ = ["COMMANDS", "build_parser", "main"]

#: Command modules, in the order `vmkeep --help` lists them.
COMMANDS: tuple[ModuleType, ...] = (validate, plan, apply, state, inventory, verify, gc)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help="host config file (default: $VMKEEP_CONFIG, else ./vmkeep.yaml)",
    )
    parser = argparse.ArgumentParser(
        prog="vmkeep",
        description="Declarative GitOps backup reconciler for VMware vSphere.",
    )
    parser.add_argument("--version", action="version", version=f"vmkeep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module in COMMANDS:
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 1
    try:
        code: int = args.func(args)
    except VmkeepError as exc:
        print(f"vmkeep: error: {exc}" if "\n" not in str(exc) else str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vmkeep: interrupted", file=sys.stderr)
        return 130
    return code

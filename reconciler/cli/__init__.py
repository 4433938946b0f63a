"""The `vmkeep` command line: one module per command, registered in `COMMANDS`.

Every command module exposes `register(subparsers, common)`; it adds its parser with
`parents=[common]` and sets `func`, a callable taking the parsed arguments and returning
the exit code. Errors derived from `VmkeepError` become a one-line (or one-per-diagnostic)
message on stderr and their exit code; bad input never shows a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from reconciler import __version__
from reconciler.cli import (
    apply,
    files,
    gc,
    inventory,
    mount,
    plan,
    points,
    restore,
    run,
    state,
    status,
    validate,
    verify,
    worker,
)
from reconciler.errors import UsageError, VmkeepError

__all__ = ["COMMANDS", "build_parser", "entry", "main"]

#: Command modules, in the order `vmkeep --help` lists them.
COMMANDS: tuple[ModuleType, ...] = (
    validate, plan, apply, run, status, points, restore, state, inventory, verify, gc,
    files,
    mount,
    worker,
)


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage; vmkeep's contract is 1 (2 means "changes" for plan)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        help="host config file (default: $VMKEEP_CONFIG, else ./vmkeep.yaml)",
    )
    common.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="say more on stderr (-v progress details, -vv debug)",
    )
    parser = _Parser(
        prog="vmkeep",
        description="Declarative GitOps backup reconciler for VMware vSphere.",
    )
    parser.add_argument("--version", action="version", version=f"vmkeep {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module in COMMANDS:
        module.register(sub, common)
    return parser


class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is at the time (it may be replaced, e.g. in tests)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def _configure_logging(verbosity: int) -> None:
    """Warnings (and more with -v) from the adapters go to stderr as `vmkeep: ...` lines."""
    logger = logging.getLogger("reconciler")
    logger.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO if verbosity else
                    logging.WARNING)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("vmkeep: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"vmkeep: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 1
    _configure_logging(getattr(args, "verbose", 0))
    try:
        code: int = args.func(args)
    except VmkeepError as exc:
        print(f"vmkeep: error: {exc}" if "\n" not in str(exc) else str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vmkeep: interrupted", file=sys.stderr)
        return 130
    return code


def entry() -> NoReturn:
    """The `vmkeep` console script and `python -m reconciler`: `main`, then exit."""
    code = main()
    engine = sys.modules.get("reconciler.engine.connection")
    if engine is not None:
        engine.leave_process(code)
    sys.exit(code)

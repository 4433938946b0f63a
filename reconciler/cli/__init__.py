"""The `vmkeep` command line: one module per command, registered in `COMMANDS`.

Every command module exposes `register(subparsers, common)`; it adds its parser with
`parents=[common]` and sets `func`, a callable taking the parsed arguments and returning
the exit code. Errors derived from `VmkeepError` become a one-line (or one-per-diagnostic)
message on stderr and their exit code; bad input never shows a traceback. An `OSError` or
SQLite error no command expected is one line naming the file; any other exception is a bug,
reported in one line naming it and the file its traceback was written to (`crash_directory`),
the traceback itself shown only with `-v`. Every line printed goes through `errors.mask`.

Exit codes: 0 success; 1 error (bad input or usage, an unreachable vCenter, a failed command,
an internal error); 2 changes pending (`plan --detailed-exitcode`); 3 partly failed or needs
attention (`apply`, `run --once`, `status --check`); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import tempfile
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from reconciler import __version__
from reconciler.cli import (
    apply,
    files,
    forget,
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
from reconciler.errors import InputError, UsageError, VmkeepError, mask

__all__ = ["COMMANDS", "EXIT_INTERRUPTED", "build_parser", "crash_directory", "entry", "main"]

#: Command modules, in the order `vmkeep --help` lists them.
COMMANDS: tuple[ModuleType, ...] = (
    validate, plan, apply, run, status, points, restore, state, inventory, verify, gc,
    files,
    mount,
    forget,
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
            print(mask(self.format(record)), file=sys.stderr)
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
        if any("\x00" in arg for arg in argv or ()):  # no shell can pass one; a caller could
            raise UsageError("an argument contains a NUL character")
        args = parser.parse_args(argv)
    except UsageError as exc:
        _error(f"vmkeep: error: {exc}")
        return exc.exit_code
    except SystemExit as exc:  # --help and --version (they printed what was asked)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 1
    verbosity = getattr(args, "verbose", 0) or 0
    _configure_logging(verbosity)
    try:
        code: int = args.func(args)
    except VmkeepError as exc:
        located = isinstance(exc, InputError) and bool(exc.diagnostics)
        _error(f"vmkeep: error: {exc}" if "\n" not in str(exc) and not located else str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _error("vmkeep: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `vmkeep plan | head`: the reader is gone, nothing to tell it
        _silence_stdout()
        return 1
    except (OSError, sqlite3.Error) as exc:
        # The machine said no (disk full, read-only, permissions) where no command expected
        # it: one line naming the file, the traceback only with -v.
        if verbosity:
            traceback.print_exc(file=sys.stderr)
        _error(f"vmkeep: error: {_describe_os_error(exc)}")
        return 1
    except Exception as exc:
        return _report_bug(exc, verbosity, sys.argv[1:] if argv is None else list(argv))
    return code


#: Exit code after Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not complain about the
    closed pipe a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (tests, embedding)
        pass


def _error(text: str) -> None:
    print(mask(text), file=sys.stderr)


def _describe_os_error(exc: OSError | sqlite3.Error) -> str:
    if isinstance(exc, sqlite3.Error):
        return f"the state DB: {exc}; check the file system it is on and `state` in the host " \
            "config"
    where = f" {exc.filename!r}" if exc.filename is not None else ""
    return f"{exc.strerror or exc}{':' if where else ''}{where}"


def crash_directory() -> Path:
    """Where tracebacks of unexpected errors are written: `$XDG_STATE_HOME/vmkeep`, else
    `~/.local/state/vmkeep`."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "vmkeep"


def _report_bug(exc: Exception, verbosity: int, argv: list[str]) -> int:
    """An exception no command expected is a bug: one line naming it and the file holding
    its traceback (masked like every message); the traceback itself only with -v."""
    details = mask("".join(traceback.format_exception(exc)))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"crash-{stamp}-{os.getpid()}.log"
    header = mask(f"vmkeep {__version__}, arguments {argv!r}\n")
    saved: str
    try:
        directory = crash_directory()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(header + details, encoding="utf-8")
        saved = str(directory / name)
    except (OSError, RuntimeError):  # RuntimeError: no home directory to be found
        try:
            fd, saved = tempfile.mkstemp(prefix="vmkeep-crash-", suffix=".log")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(header + details)
        except OSError:
            saved = ""
    if verbosity:
        print(details, file=sys.stderr, end="")
    where = f"the details are in {saved}" if saved else "the details could not be saved"
    _error(f"vmkeep: error: internal error (a bug in vmkeep, please report it): "
           f"{type(exc).__name__}: {_first_line(str(exc))}; {where}"
           + ("" if verbosity else " (-v shows them here)"))
    return 1


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "(no message)"
    return line if len(line) <= 200 else line[:200] + "…"


def entry() -> NoReturn:
    """The `vmkeep` console script and `python -m reconciler`: `main`, then exit."""
    code = main()
    engine = sys.modules.get("reconciler.engine.connection")
    if engine is not None:
        engine.leave_process(code)
    sys.exit(code)

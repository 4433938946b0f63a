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
import atexit
import contextlib
import importlib
import logging
import os
import sqlite3
import sys
import tempfile
import threading
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from gc import freeze as _freeze_heap  # not `gc`: the `gc` command's module takes that name
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from reconciler import __version__
from reconciler.errors import InputError, UsageError, VmkeepError, mask

__all__ = ["COMMANDS", "EXIT_INTERRUPTED", "build_parser", "crash_directory", "entry", "main"]

#: The command modules' names, in the order `vmkeep --help` lists them. A command line naming
#: one of them imports that module alone (`vmkeep plan` does not pay for `apply`'s imports);
#: help, a bad command and anything else imports them all.
COMMAND_NAMES: tuple[str, ...] = (
    "validate", "plan", "apply", "run", "status", "points", "restore", "state", "inventory",
    "verify", "gc", "files", "mount", "forget", "worker",
)


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")


def __getattr__(name: str) -> tuple[ModuleType, ...]:
    """`COMMANDS`: every command module, imported on first use."""
    if name == "COMMANDS":
        return tuple(_command(command) for command in COMMAND_NAMES)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage; vmkeep's contract is 1 (2 means "changes" for plan)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(message)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `vmkeep` parser with every command, or with `command` alone (when the command line
    names it: nothing else of the parser can be reached then)."""
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
    for name in (command,) if command in COMMAND_NAMES else COMMAND_NAMES:
        _command(name).register(sub, common)
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
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(arguments[0] if arguments else None)
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


#: What the running command left for the process's end to release (`keep_until_exit`); a list
#: only under `entry`, the real process.
_kept: list[object] | None = None


def keep_until_exit(*values: object) -> None:
    """Leave `values` (a read-only command's large results: the observed state, the plan, its
    JSON document) for the end of the process to release with its memory, instead of freeing
    them one object at a time when the command returns. Everything allocated so far is
    moved out of the cyclic collector's sight (`gc.freeze`): the command built its millions
    of values with the collector paused, and its first pass after the pause would walk them
    all (0.4-0.5 s at 10,000 VMs, and as long again to free them). Only under `entry`: a
    caller of `main` (a test) frees them as usual. Nothing that needs closing may be kept:
    the command closes its files, locks and connections itself."""
    if _kept is not None:
        _kept.extend(values)
        _freeze_heap()


def entry() -> NoReturn:
    """The `vmkeep` console script and `python -m reconciler`: `main`, then exit."""
    global _kept
    _kept = []
    code = main()
    engine = sys.modules.get("reconciler.engine.connection")
    if engine is not None:
        engine.leave_process(code)
    if _kept:
        _exit_keeping_memory(code)
    sys.exit(code)


def _exit_keeping_memory(code: int) -> None:
    """End the process as `sys.exit` would, but without freeing every object first (the
    kernel takes the memory back at once): the exit handlers run (logging's flush among them),
    standard output and error are flushed, then `os._exit`. Returns, for the ordinary exit,
    when another thread still runs (the ordinary exit waits for it) or when flushing fails
    (the ordinary exit reports it as it always did)."""
    if threading.active_count() > 1:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    with contextlib.suppress(OSError, ValueError):  # nothing is left to tell it to
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)

"""Command-line pieces several commands share: where policies come from, output format.

    add_source_arguments(parser)        --policies DIR | --repo URL|PATH [--rev REV] [--path DIR]
    policy_source_from_args(args)       -> a PolicySource (directory or one Git commit)
    use_configured_source(args)         no source flag: fill them from the host config's
                                        `policies` (repo/rev/path or a directory)
    open_git_source(repo, rev, path)    -> a PolicySource at one revision (review: --base/--head)
    add_output_argument(parser, ...)    -o/--output FORMAT
    optional_host_config(args)          the host config if one is given or found, else None
    run_on_target(args, operation, render[, opened])
                                        open the target, run, close it, print JSON or text
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar

import orjson

from reconciler import observed, wiring
from reconciler.collector import collector_paused
from reconciler.errors import UsageError, VmkeepError
from reconciler.model import HostConfig, ObservedState
from reconciler.ports import PolicySource
from reconciler.render.document import EARLIEST, LATEST, supported_time
from reconciler.render.json_text import json_bytes

if TYPE_CHECKING:  # the repository (zstandard, blake3) is imported when a command runs
    from reconciler.adapters.repository import Repository

__all__ = [
    "DEFAULT_POLICIES",
    "add_output_argument",
    "add_source_arguments",
    "add_target_argument",
    "lease_taken_over",
    "load_state",
    "open_git_source",
    "open_target",
    "optional_host_config",
    "parse_moment",
    "parse_now",
    "policy_source_from_args",
    "run_on_target",
    "use_configured_source",
    "write_in_pieces",
    "write_json",
]

DEFAULT_POLICIES = "policies"


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--policies`, `--repo`, `--rev`, `--path` (a local directory or a Git commit)."""
    group = parser.add_argument_group(
        "policy source",
        "a local directory (--policies, default ./policies) or one commit of a Git "
        "repository (--repo with --rev and --path); Git is read from a bare cache clone, "
        "never from a work tree",
    )
    group.add_argument("--policies", metavar="DIR", help="local policy directory")
    group.add_argument("--repo", metavar="URL|PATH", help="Git repository holding the policies")
    group.add_argument("--rev", metavar="REV",
                       help="branch, tag or commit to read with --repo (default: remote HEAD)")
    group.add_argument("--path", metavar="SUBDIR", default="",
                       help="directory inside the repository (default: its root)")


def add_output_argument(
    parser: argparse.ArgumentParser, choices: Sequence[str] = ("text", "json"),
    default: str | None = None,
) -> None:
    """Add `-o/--output FORMAT` with the given choices (default: the first)."""
    parser.add_argument("-o", "--output", choices=list(choices), default=default or choices[0],
                        metavar="FORMAT", help=f"output format: {', '.join(choices)} "
                        f"(default: {default or choices[0]})")


def open_git_source(repo: str, rev: str | None, path: str = "") -> PolicySource:
    """The policy files of `repo` at `rev` (resolved to a commit SHA) under `path`."""
    return wiring.git_source(repo, rev or "HEAD", path)


def policy_source_from_args(
    args: argparse.Namespace, paths: Sequence[str] = ()
) -> PolicySource:
    """The source named on the command line; positional `paths` are local files or dirs.
    Without any, the host config's `policies` (see `use_configured_source`)."""
    if not paths:
        use_configured_source(args)
    repo = getattr(args, "repo", None)
    rev = getattr(args, "rev", None)
    subdir = getattr(args, "path", "") or ""
    policies = getattr(args, "policies", None)
    if repo:
        if policies or paths:
            raise UsageError("give either --repo or local policy paths (--policies), not both")
        return open_git_source(repo, rev, subdir)
    if rev or subdir:
        raise UsageError("--rev and --path need --repo")
    local = list(paths) or [policies or DEFAULT_POLICIES]
    if policies and paths:
        local = [policies, *paths]
    return wiring.policy_directory(local)


def optional_host_config(args: argparse.Namespace) -> HostConfig | None:
    """The host config when `--config`/`$VMKEEP_CONFIG` names one or ./vmkeep.yaml exists.

    Without one, references to vCenters, targets and hooks are not checked.
    """
    explicit = getattr(args, "config", None)
    if not explicit and not os.environ.get(wiring.CONFIG_ENV) \
            and not Path(wiring.DEFAULT_CONFIG).is_file():
        return None
    return wiring.load_host_config(explicit)


def use_configured_source(args: argparse.Namespace) -> bool:
    """When no source flag (`--policies`, `--repo`, `--rev`, `--path`) was given and the host
    config (found as `optional_host_config` finds it) has `policies`, set the flags from it.
    Returns whether it did; flags on the command line always win."""
    if getattr(args, "_configured_source", False):
        return True
    if any(getattr(args, name, None) for name in ("policies", "repo", "rev", "path")):
        return False
    try:
        config = optional_host_config(args)
    except VmkeepError:
        return False  # the command reports a broken host config where it reads it
    if config is None or config.policies is None:
        return False
    source = config.policies
    if source.repo:
        args.repo, args.rev, args.path = source.repo, source.rev, source.path
    else:
        args.policies = source.path
    args._configured_source = True
    return True


def lease_taken_over(holder: str) -> None:
    """Say that the applier lease of a dead process is taken over."""
    print(f"vmkeep: taking over the apply lease of {holder}: that process is gone",
          file=sys.stderr)


# ---------------------------------------------------------------------- times and files


def parse_now(text: str | None) -> datetime:
    """`--now ISO` (an offset is required; `Z` is fine, years `EARLIEST`..`LATEST`), or the
    clock."""
    return datetime.now(UTC) if text is None else parse_moment(text, "--now")


def parse_moment(text: str, flag: str) -> datetime:
    """The time a flag such as `--now` or `--at` names: ISO 8601 with an offset (`Z` is fine),
    years `EARLIEST`..`LATEST`; anything else is a one-line usage error."""
    try:
        moment = observed.parse_time(text.strip().replace("z", "Z"))
    except (ValueError, OverflowError):
        moment = None
    if moment is None or not supported_time(moment):
        raise UsageError(
            f"{flag} {text!r} is not an ISO 8601 time with an offset between "
            f"{EARLIEST.year} and {LATEST.year - 1}, e.g. 2026-11-25T01:00:00Z"
        ) from None
    return moment


def load_state(path: str) -> ObservedState:
    """Read `--state FILE`; unreadable or malformed files are clear errors."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise UsageError(f"cannot read state file {path!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"state file {path!r} is not JSON: {exc}") from None
    except RecursionError:
        raise UsageError(f"state file {path!r} is not a vmkeep state: nested too deeply") \
            from None
    with collector_paused():  # ~500,000 acyclic values at 10,000 VMs
        return observed.state_from_json(data, path)


def write_stdout(data: bytes) -> None:
    """UTF-8 bytes to standard output (as text where stdout has no byte buffer, e.g. a test's
    StringIO)."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(data.decode("utf-8"))
        sys.stdout.flush()
        return
    sys.stdout.flush()
    write_in_pieces(buffer, data)
    buffer.flush()


_PIECE = 1 << 20  # write_in_pieces


def write_in_pieces(stream: BinaryIO, data: bytes) -> None:
    """Write `data` in pieces of 1 MiB rather than in one call. A 110 MiB plan written by one
    `write(2)` took 0.6-1.1 s of kernel time on the benchmark machine, the same bytes in 1 MiB
    writes 0.03 s (docs/benchmarks.md, plan)."""
    view = memoryview(data)
    for start in range(0, len(view), _PIECE):
        stream.write(view[start:start + _PIECE])


def write_json(document: Any, path: str | None) -> None:
    """Write JSON to stdout, or atomically to a file (temp file + rename). Something that is
    not a regular file (`/dev/null`, a FIFO) is written into, never replaced: a rename over
    /dev/null, as root, would turn it into a file."""
    text = json_bytes(document)  # orjson: the same text as json.dumps(indent=2), 10x faster
    if path is None or path == "-":
        write_stdout(text)
        return
    target = Path(path)
    try:
        if target.exists() and not target.is_file() and not target.is_dir():
            with open(target, "wb") as stream:
                stream.write(text)
            return
    except OSError as exc:
        raise UsageError(f"cannot write {path!r}: {exc.strerror}") from None
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as handle:
            write_in_pieces(handle, text)
        os.replace(tmp, target)
    except OSError as exc:
        if tmp:  # a full disk or a directory in the way: leave no temporary file behind
            Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"cannot write {path!r}: {exc.strerror}") from None



# ---------------------------------------------------------------------- targets


def add_target_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        metavar="NAME",
        help="backup target from the host config (default: the only one)",
    )


def open_target(args: argparse.Namespace) -> tuple[str, Repository]:
    """The repository of `--target NAME` (or of the only target) in the host config."""
    config = wiring.load_host_config(getattr(args, "config", None))
    names = sorted(config.targets)
    name = getattr(args, "target", None)
    if name is None:
        if len(names) != 1:
            listed = ", ".join(names) or "none configured"
            raise UsageError(f"choose a target with --target NAME (targets: {listed})")
        name = names[0]
    if name not in config.targets:
        listed = ", ".join(names) or "none configured"
        raise UsageError(f"no target {name!r} in {config.path} (targets: {listed})")
    target = config.targets[name]
    if target.type != "directory":
        raise UsageError(f"target {name!r} has type {target.type!r}; only 'directory' exists")
    repo = wiring.open_repository(target.path, create=False, chunk_size=None, target=name)
    return name, repo


class Report(Protocol):
    """What a target command's operation returns: a result with a JSON form."""

    def to_json(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Report)


def run_on_target(
    args: argparse.Namespace,
    operation: Callable[[Repository], R],
    render: Callable[[str, R], str],
    opened: tuple[str, Repository] | None = None,
) -> R:
    """Open the target (`open_target`, or the `opened` name and repository), run `operation`
    on it, close it, and print `{"target": name, ...report}` as JSON (`-o json`) or
    `render(name, report)`. Returns the report, for the exit code."""
    name, repo = opened if opened is not None else open_target(args)
    try:
        report = operation(repo)
    finally:
        repo.close()
    if args.output == "json":
        print(json.dumps({"target": name, **report.to_json()}, indent=2))
    else:
        print(render(name, report))
    return report

"""`vmkeep state export`: capture the observed state (live inventory + catalog) to a file.

    vmkeep state export [--config FILE] [-o FILE] [--now ISO]

Reads every VM (with snapshot trees) of every vCenter in the host config and every restore
point of every target, and writes `schemas/state.schema.json` JSON to FILE (default:
stdout). `vmkeep plan --state FILE` then plans offline, e.g. in CI without vCenter access.
The file holds no secrets: names, UUIDs, folders, tags, snapshots and point ids only.
A vCenter that cannot be read (login refused, TLS, network) is recorded under `unobserved`
with the reason, the others are written as usual, and the exit code is 3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler import observed, wiring
from reconciler.errors import UsageError
from reconciler.model import ObservedState
from reconciler.render.document import EARLIEST, LATEST, supported_time
from reconciler.wiring import capture

__all__ = ["capture", "load_state", "parse_now", "register", "run", "write_json"]


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "state",
        parents=[common_parser],
        help="export the observed state (inventory + restore points) for offline planning",
        description="Work with the observed state: what exists in the vCenters and targets.",
    )
    actions = parser.add_subparsers(dest="state_command", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export",
        parents=[common_parser],
        help="write the live observed state as JSON (schemas/state.schema.json)",
        description="Read every configured vCenter and target and write the observed state "
        "as JSON, for `vmkeep plan --state FILE`.",
    )
    export.add_argument("-o", "--output", metavar="FILE", help="write here (default: stdout)")
    export.add_argument("--now", metavar="ISO", help="capture time to record (default: now)")
    export.set_defaults(func=run)


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
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read state file {path!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"state file {path!r} is not JSON: {exc}") from None
    except RecursionError:
        raise UsageError(f"state file {path!r} is not a vmkeep state: nested too deeply") \
            from None
    return observed.state_from_json(data, path)


def write_json(document: Any, path: str | None) -> None:
    """Write JSON to stdout, or atomically to a file (temp file + rename). Something that is
    not a regular file (`/dev/null`, a FIFO) is written into, never replaced: a rename over
    /dev/null, as root, would turn it into a file."""
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if path is None or path == "-":
        sys.stdout.write(text)
        return
    target = Path(path)
    try:
        if target.exists() and not target.is_file() and not target.is_dir():
            with open(target, "w", encoding="utf-8") as stream:
                stream.write(text)
            return
    except OSError as exc:
        raise UsageError(f"cannot write {path!r}: {exc.strerror}") from None
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except OSError as exc:
        if tmp:  # a full disk or a directory in the way: leave no temporary file behind
            Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"cannot write {path!r}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    config = wiring.load_host_config(args.config)
    now = parse_now(args.now)
    state = capture(config, now)
    write_json(observed.state_to_json(state), args.output)
    if args.output and args.output != "-":
        vms = sum(len(v) for v in state.vcenters.values())
        points = sum(len(p) for p in state.targets.values())
        print(
            f"wrote {args.output}: {vms} VMs in {len(state.vcenters)} vCenters, "
            f"{points} export points in {len(state.targets)} targets ({observed.digest(state)})",
            file=sys.stderr,
        )
    return 3 if state.unobserved else 0

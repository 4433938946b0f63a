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
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from reconciler import observed, wiring
from reconciler.errors import UsageError, VCenterError
from reconciler.model import ExportPoint, HostConfig, ObservedState, TargetConfig, VMRef
from reconciler.render.document import EARLIEST, LATEST, supported_time
from reconciler.render.json_text import json_bytes

__all__ = ["capture", "load_state", "parse_now", "register", "run", "write_json", "write_stdout"]


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


def _target_points(target: TargetConfig) -> list[ExportPoint]:
    if target.type != "directory":
        raise UsageError(f"target {target.name!r}: type {target.type!r} is not supported")
    if not Path(target.path).exists():
        return []  # nothing exported yet
    from reconciler.adapters.repository import Repository  # zstandard, blake3: when needed

    with Repository.open(target.path, create=False, target=target.name) as repo:
        points = list(repo.points())
        for partial in repo.partials():
            parts = partial.id.split("/")
            if len(parts) != 3:
                continue
            try:
                slot = datetime.strptime(parts[2], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            except ValueError:
                continue
            points.append(
                ExportPoint(
                    id=partial.id,
                    policy=parts[0],
                    vm=VMRef("", parts[1]),
                    slot=slot,
                    created_at=partial.started_at,
                    complete=False,
                    target=target.name,
                )
            )
    return points


def capture(config: HostConfig, now: datetime) -> ObservedState:
    """The live observed state of every configured vCenter and target.

    A vCenter that cannot be read (login refused, TLS verification, network: any
    `VCenterError`) does not stop the others: it is recorded in `unobserved` with the reason,
    and said on stderr. A missing password is a configuration error and stops everything.
    """
    from reconciler.adapters.vsphere import VSphereClient  # pyVmomi only when it is needed

    passwords = {name: wiring.resolve_password(vc) for name, vc in config.vcenters.items()}
    inventories, unobserved = [], {}
    for name, vc in sorted(config.vcenters.items()):
        try:
            with VSphereClient(vc, passwords[name]) as client:
                inventories.append(client.inventory())
        except VCenterError as exc:
            unobserved[name] = _reason(exc)
            print(f"vmkeep: vCenter {name!r} could not be observed: {unobserved[name]}; its "
                  "VMs' coverage is unknown and nothing is decided for them", file=sys.stderr)
    targets = {name: _target_points(t) for name, t in sorted(config.targets.items())}
    return observed.observed_from(inventories, targets, now, unobserved)


def _reason(exc: VCenterError) -> str:
    """The error without its `vCenter 'name': ` prefix (the name is said next to it)."""
    prefix = f"vCenter {exc.vcenter!r}: "
    text = str(exc)
    return text[len(prefix):] if text.startswith(prefix) else text


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
    buffer.write(data)
    buffer.flush()


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

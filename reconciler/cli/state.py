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
import sys
from typing import Any

from reconciler import observed, wiring
from reconciler.cli.common import load_state, parse_now, write_json
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

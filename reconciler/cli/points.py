"""`vmkeep points`: every restore point, newest first — vCenter snapshots and exports.

    vmkeep points [--vm NAME|UUID] [--policy P] [--vcenter V] [--target T]
                  [--kind snapshot|export] [-o text|json] [--config FILE]

Snapshot points are read from the vmkeep markers of every configured vCenter's snapshots,
export points from every target's manifests (no chunk data is read). `--kind export` asks no
vCenter, `--kind snapshot` opens no target. JSON: `{"points": [{"id", "kind", "policy",
"vcenter", "vm": {"name", "instanceUuid"}, "slot", "target", "consistency", "disks":
[{"name", "capacityBytes"}], "sizeBytes", "storedBytes", "createdAt", "lastVerified",
"complete", "snapshotId", "proxy"}]}` (`proxy`: the engine worker that wrote an export, else
null). Exit 0 (also when there is no point), 1 on bad options.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from reconciler import wiring
from reconciler.cli import common
from reconciler.cli.selection import gather_points
from reconciler.errors import UsageError
from reconciler.model import PointKind
from reconciler.points import Point, filter_points

__all__ = ["register", "render_text", "run"]

MiB = 1024 * 1024


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "points",
        parents=[common_parser],
        help="list the restore points (snapshots and exports), newest first",
        description="List every restore point of the configured vCenters (vmkeep's "
        "snapshots) and targets (exports), newest first, with the ids `restore` takes.",
    )
    parser.add_argument("--vm", metavar="NAME|UUID", help="only this VM's points")
    parser.add_argument("--policy", metavar="P", help="only this policy's points")
    parser.add_argument("--vcenter", metavar="V",
                        help="only points of VMs of this vCenter (snapshots: only this "
                        "vCenter is asked)")
    parser.add_argument("--target", metavar="T", help="only exports in this target")
    parser.add_argument("--kind", choices=[k.value for k in PointKind],
                        help="only snapshots or only exports")
    common.add_output_argument(parser, ("text", "json"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = wiring.load_host_config(args.config)
    for option, name, known in (("--vcenter", args.vcenter, config.vcenters),
                                ("--target", args.target, config.targets)):
        if name is not None and name not in known:
            listed = ", ".join(sorted(known)) or "none configured"
            raise UsageError(f"{option} {name!r} is not in {config.path} ({listed})")
    kind = PointKind(args.kind) if args.kind else None
    kinds = {kind} if kind else set(PointKind)
    if args.target is not None:
        kinds.discard(PointKind.SNAPSHOT)  # a target holds exports only
    points = gather_points(
        config,
        vcenters=[args.vcenter] if args.vcenter else None,
        targets=[args.target] if args.target else None,
        kinds=kinds,
        strict=False,
    )
    chosen = filter_points(points, vm=args.vm, policy=args.policy, vcenter=args.vcenter,
                           target=args.target, kind=kind)
    if args.output == "json":
        print(json.dumps({"points": [p.to_json() for p in chosen]}, indent=2))
    else:
        print(render_text(chosen))
    return 0


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / MiB:.1f} MiB"


def render_text(points: list[Point]) -> str:
    if not points:
        return "no restore points"
    header = ("ID", "KIND", "VM", "INSTANCE UUID", "POLICY", "SLOT", "WHERE", "CONSISTENCY",
              "DISKS", "STORED", "VERIFIED")
    rows = [header]
    for p in points:
        disks = ", ".join(f"{d.name} {_size(d.capacity_bytes)}" for d in p.disks) or "-"
        where = f"target {p.target}" if p.kind is PointKind.EXPORT else f"vcenter {p.vcenter}"
        verified = p.last_verified.strftime("%Y-%m-%dT%H:%MZ") if p.last_verified else "never"
        rows.append((p.id, p.kind.value, p.vm.name, p.vm.instance_uuid, p.policy,
                     p.slot.strftime("%Y-%m-%dT%H:%M:%SZ"), where, p.consistency or "-", disks,
                     _size(p.stored_bytes),
                     verified if p.kind is PointKind.EXPORT else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.append(f"{len(points)} restore point(s)")
    return "\n".join(lines)

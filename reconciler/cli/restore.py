"""`vmkeep restore`: a restore point back into vCenter (`restore_vcenter`) or into a new
local directory (here).

    vmkeep restore (--point ID | --vm NAME|UUID [--latest | --at ISO]) --to DIR
                   [--disk NAME]... [--target NAME] [--config FILE] [-o text|json]

The directory receives flat disk images with their VMDK descriptors and the VM's small files
(`.vmx`, `.nvram`, `vm.json`), ready to upload to a datastore and register (docs/restore.md).
Every chunk is checked against its hash; the directory appears only once everything is
written, and nothing existing is overwritten. Exit 0 when restored, 1 on any error (a
damaged chunk is named; the directory is then not created).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import wiring
from reconciler.cli import common, restore_vcenter
from reconciler.cli.selection import add_point_selection, open_point_target, resolve_point
from reconciler.errors import UsageError
from reconciler.model import PointKind
from reconciler.restore import RestoredDisk, RestoreReport, restore_point

if TYPE_CHECKING:
    from reconciler.adapters.repository import Repository

__all__ = ["register", "run"]

MiB = 1024 * 1024


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "restore",
        parents=[common_parser],
        help="bring a restore point back: into vCenter as a VM, a snapshot reverted, or "
        "into a directory",
        description="Bring a restore point back, every chunk checked against its hash: into "
        "vCenter as a VM (--vcenter NAME; --revert for a snapshot in place), or into a new "
        "or empty directory (--to DIR: flat disk images with VMDK descriptors and the VM's "
        "files). See docs/restore.md.",
    )
    add_point_selection(parser)
    parser.add_argument("--to", metavar="DIR", type=Path,
                        help="new (or empty) directory to restore into")
    parser.add_argument("--disk", metavar="NAME", action="append", default=[],
                        help="restore only this disk (e.g. disk-2000); repeatable")
    restore_vcenter.add_arguments(parser)
    common.add_output_argument(parser, ("text", "json"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    restore_vcenter.check_options(args)
    if args.vcenter is not None:
        return restore_vcenter.run(args)
    if args.to is None:
        raise UsageError("say where to restore: --to DIR or --vcenter NAME")
    name, repo = _target_holding(args)
    text = args.output == "text"

    def say(disk: RestoredDisk) -> None:
        if text:
            rate = disk.size_bytes / MiB / disk.seconds if disk.seconds > 0 else 0.0
            print(f"restored {disk.name} -> {disk.image} ({disk.size_bytes / MiB:.1f} MiB, "
                  f"{disk.seconds:.1f} s, {rate:.0f} MiB/s)", file=sys.stderr)

    common.run_on_target(
        args,
        lambda store: restore_point(store, args.point, args.to, disks=args.disk,
                                    about={"target": name}, on_disk=say),
        render_text,
        opened=(name, repo),
    )
    return 0


def _target_holding(args: argparse.Namespace) -> tuple[str, Repository]:
    """The export point `--point`/`--vm` name (among `--target NAME`, or every target) and
    the repository holding it; `args.point` is set to its id."""
    config = wiring.load_host_config(getattr(args, "config", None))
    point = resolve_point(args, kind=PointKind.EXPORT, config=config)
    args.point = point.id
    return point.target, open_point_target(config, point)


def render_text(target: str, report: RestoreReport) -> str:
    total = sum(d.size_bytes for d in report.disks)
    lines = [f"restore point {report.point} from target {target} -> {report.directory}"]
    for disk in report.disks:
        described = f" (descriptor {disk.descriptor})" if disk.descriptor else \
            " (no descriptor: not whole 512-byte sectors)"
        lines.append(f"  disk {disk.name}: {disk.image}{described}, "
                     f"{disk.size_bytes / MiB:.1f} MiB")
    if report.files:
        lines.append(f"  files: {', '.join(report.files)}")
    lines.extend(f"  {change}" for change in report.vmx_changes)
    lines.append(f"{len(report.disks)} disk(s), {total / MiB:.1f} MiB, every chunk verified, "
                 f"in {report.seconds:.1f} s")
    return "\n".join(lines)

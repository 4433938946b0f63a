"""`vmkeep mount`: restore points as a read-only FUSE file system, for the standard tools.

    vmkeep mount [--point ID | --vm NAME|UUID [--latest | --at ISO]] [--target NAME] MOUNTPOINT

With a point: its disks as raw images `<disk file stem>.img` (what `qemu-img`, `debugfs`,
`ntfscat`, `losetup -P`, `guestmount` or 7-Zip read), plus `vm.json` and the `.vmx`.
Without one: `<vcenter>/<vm name>/<slot>/…` for every export point of every target (or of
`--target NAME`). Every read
fetches and verifies only the chunks it touches. The mount ends on Ctrl-C, SIGTERM or
`fusermount -u MOUNTPOINT`, and leaves nothing behind. Exit 0 when unmounted, 1 on an error
(no FUSE here, a mount point that is not an empty directory, an unknown point).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from reconciler import wiring
from reconciler.cli.selection import add_selection, export_points, selected
from reconciler.errors import UsageError, VmkeepError

__all__ = ["register", "run"]


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "mount", parents=[common_parser],
        help="serve restore points as a read-only FUSE file system of raw disk images",
        description="Mount a restore point (its disks as raw .img files, vm.json and the "
        ".vmx) or, without --point, every point as <vcenter>/<vm name>/<slot>/, read-only; "
        "reads fetch only the chunks they touch, each verified. Ends on Ctrl-C, SIGTERM or "
        "`fusermount -u MOUNTPOINT`.")
    add_selection(parser)
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", type=Path,
                        help="an existing empty directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from reconciler.files import catalog_tree, point_tree

    mountpoint: Path = args.mountpoint
    if not mountpoint.is_dir() or mountpoint.is_symlink():
        raise UsageError(f"{mountpoint} is not a directory; make an empty one to mount on")
    if os.path.ismount(mountpoint) or any(mountpoint.iterdir()):
        raise UsageError(f"{mountpoint} is not empty (or already a mount point); "
                         "mount on an empty directory")
    missing = wiring.fuse_available()
    if missing:
        raise VmkeepError(f"cannot mount: {missing}")
    if args.point is not None or args.vm is not None:
        with selected(args) as (point_id, repo):
            tree = point_tree(repo, point_id)
            created = repo.manifest(point_id).created_at.timestamp()
            _serve(wiring.serve_mount, tree, mountpoint, f"restore point {point_id}", created)
        return 0
    if args.latest or args.at:
        raise UsageError("--latest and --at choose among the points of --vm NAME|UUID")
    with export_points(args) as pairs:
        tree = catalog_tree([(repo, p.id, p.vcenter, p.vm.name, p.slot) for p, repo in pairs])
        newest = max((p.slot.timestamp() for p, _ in pairs), default=0.0)
        _serve(wiring.serve_mount, tree, mountpoint, f"{len(pairs)} restore point(s)", newest)
    return 0


def _serve(serve: Any, tree: Any, mountpoint: Path, what: str, mtime: float) -> None:
    print(f"vmkeep: serving {what} read-only at {mountpoint}; end with Ctrl-C or "
          f"`fusermount -u {mountpoint}`", file=sys.stderr)
    serve(tree, str(mountpoint), mtime=mtime)
    print(f"vmkeep: unmounted {mountpoint}", file=sys.stderr)

"""`vmkeep verify`: re-read and re-hash restore points in an export target.

    vmkeep verify [--point ID | --all] [--target NAME] [--config FILE] [-o text|json]

Every chunk the chosen points reference is read back, decompressed and hashed. Exit 0 when
all is well, 1 when any point is damaged; the report names each damaged point and, for each
bad chunk, the disk or file, chunk number, byte offset and chunk id. Damaged chunk copies
are quarantined, so the next export of the same data stores a fresh copy.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from reconciler.cli import common

if TYPE_CHECKING:  # the repository (zstandard, blake3) is imported when a command runs
    from reconciler.adapters.repository import VerifyReport

__all__ = ["register", "run"]

MiB = 1024 * 1024


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "verify",
        parents=[common_parser],
        help="re-read and re-hash exported restore points; exit 1 on any damage",
        description="Re-read every chunk of the chosen restore points and check it against "
        "its hash. Exit 0 when all points are intact, 1 when any is damaged.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--point", metavar="ID", help="verify one restore point")
    which.add_argument("--all", action="store_true", help="verify every point (the default)")
    common.add_target_argument(parser)
    common.add_output_argument(parser, ("text", "json"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = common.run_on_target(args, lambda repo: repo.verify(args.point), render_text)
    return 0 if report.ok else 1


def render_text(target: str, report: VerifyReport) -> str:
    lines = []
    for damage in report.damaged:
        lines.append(f"DAMAGED {damage.point}")
        if damage.message:
            lines.append(f"  {damage.message}")
        lines.extend(f"  {chunk}" for chunk in damage.chunks)
    summary = (
        f"target {target}: {report.points_checked} point(s), {report.chunks_checked} chunk(s), "
        f"{report.bytes_checked / MiB:.1f} MiB read"
    )
    if report.ok:
        lines.append(f"{summary}: all intact")
    else:
        lines.append(f"{summary}: {len(report.damaged)} point(s) damaged")
        lines.append(
            "the damaged chunks are quarantined: the next export of the same data "
            "stores them again; restore another point meanwhile"
        )
    return "\n".join(lines)

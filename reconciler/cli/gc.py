"""`vmkeep gc`: delete data that no committed restore point references.

    vmkeep gc [--target NAME] [--grace DURATION] [--config FILE] [-o text|json]

Takes the target's writer lock (an export in progress makes it wait, then fail naming the
holder). Data of deleted points and of crashed or aborted exports is removed; packs that
are mostly garbage are rewritten. `--grace 1h` additionally spares files younger than that.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from reconciler import durations
from reconciler.cli import common
from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.adapters.repository import GcReport

__all__ = ["register", "run"]

MiB = 1024 * 1024


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "gc",
        parents=[common_parser],
        help="remove export data no restore point references",
        description="Delete chunks that no committed restore point references and rewrite "
        "packs that are mostly garbage. Safe against crashes and concurrent exports.",
    )
    common.add_target_argument(parser)
    parser.add_argument(
        "--grace",
        metavar="DURATION",
        default="0",
        help="leave files younger than this alone, e.g. 1h (default: 0)",
    )
    common.add_output_argument(parser, ("text", "json"))
    parser.set_defaults(func=run)


def parse_grace(text: str) -> timedelta:
    try:
        return durations.fixed_length(text, allow_zero=True)
    except durations.DurationError as exc:
        raise UsageError(f"--grace: {exc}") from None


def run(args: argparse.Namespace) -> int:
    grace = parse_grace(args.grace)
    common.run_on_target(args, lambda repo: repo.gc(grace), render_text)
    return 0


def render_text(target: str, report: GcReport) -> str:
    return (
        f"target {target}: {report.points} point(s) keep {report.live_chunks} chunk(s); "
        f"deleted {report.packs_deleted} of {report.packs_before} pack(s), rewrote "
        f"{report.packs_rewritten} ({report.bytes_copied / MiB:.1f} MiB copied), freed "
        f"{report.bytes_freed / MiB:.1f} MiB; removed {report.partials_removed} unfinished "
        f"export marker(s) and {report.temporary_removed} temporary file(s)"
    )

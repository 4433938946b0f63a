"""`vmkeep files ls|get|find`: browse, extract and search files inside a point's disks.

    vmkeep files ls   (point selection) [--disk D] [--partition N] [PATH] [-l] [-R] [-o text|json]
    vmkeep files get  (point selection) [--disk D] [--partition N] PATH... --to DIR [-o text|json]
    vmkeep files find (point selection | --vm NAME --all-points) PATTERN [-o text|json]

The file systems (ext2/3/4, NTFS, FAT, exFAT, HFS+, ISO 9660 …, in MBR or GPT partitions or
on the whole disk) are read in place with The Sleuth Kit: only the chunks a read touches are
fetched from the export target, each checked against its hash. Exit 0 on success, 1 on any
error (a file with a damaged chunk is named and left out; the others are still extracted).
"""

from __future__ import annotations

import argparse
import json
import logging
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.cli import common
from reconciler.cli.selection import add_selection, export_points, selected
from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.files import Entry, Match

__all__ = ["register", "run_find", "run_get", "run_ls"]

log = logging.getLogger("reconciler.files")
MiB = 1024 * 1024


# ------------------------------------------------------------------------------ parsers


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "files", parents=[common_parser],
        help="browse, search and extract single files inside a point's disks",
        description="Read the partitions and file systems inside a restore point's disks in "
        "place (The Sleuth Kit): list them, extract files and directories, find which points "
        "hold a file. Only the chunks a read touches are fetched, each verified.")
    actions = parser.add_subparsers(dest="files_command", metavar="ACTION", title="actions")
    actions.required = True

    ls = actions.add_parser("ls", parents=[common_parser],
                            help="list partitions and directories of a point's disks")
    add_selection(ls)
    _add_volume_arguments(ls)
    ls.add_argument("path", metavar="PATH", nargs="?", default="/",
                    help="directory or file inside the file system (default: /)")
    ls.add_argument("-l", dest="long", action="store_true",
                    help="long listing: type and mode, size, modification time")
    ls.add_argument("-R", dest="recursive", action="store_true", help="everything below PATH")
    common.add_output_argument(ls, ("text", "json"))
    ls.set_defaults(func=run_ls)

    get = actions.add_parser("get", parents=[common_parser],
                             help="extract files and directories into a directory")
    add_selection(get)
    _add_volume_arguments(get)
    get.add_argument("paths", metavar="PATH", nargs="+",
                     help="file or directory inside the file system (lands in DIR under its "
                     "last name)")
    get.add_argument("--to", metavar="DIR", required=True, type=Path,
                     help="directory to extract into (made if missing; nothing in it is "
                     "overwritten)")
    common.add_output_argument(get, ("text", "json"))
    get.set_defaults(func=run_get)

    find = actions.add_parser("find", parents=[common_parser],
                              help="which points hold a path matching a glob")
    add_selection(find)
    find.add_argument("--all-points", action="store_true",
                      help="with --vm: search all its export points, oldest first")
    find.add_argument("pattern", metavar="PATTERN",
                      help="glob on the name (*.conf) or, with a /, on the path (/etc/*.conf)")
    common.add_output_argument(find, ("text", "json"))
    find.set_defaults(func=run_find)


def _add_volume_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--disk", metavar="D",
                        help="the disk, by its name in the point (e.g. disk-2000); may be left "
                        "out when there is one")
    parser.add_argument("--partition", metavar="N", type=int,
                        help="the partition, numbered as Linux does (1 = the table's first "
                        "entry); may be left out when there is one file system")


# ------------------------------------------------------------------------------ ls


def run_ls(args: argparse.Namespace) -> int:
    from reconciler.files import PointFiles, UnreadableVolume, describe, entries

    listed: list[Entry] = []
    volumes: list[dict[str, Any]] = []
    missing: list[UsageError] = []
    with selected(args) as (point_id, repo):
        files = PointFiles(repo, point_id)
        chosen = files.file_systems(args.disk, args.partition)
        for volume, fs in chosen:
            volumes.append(describe(volume, fs))
            if isinstance(fs, UnreadableVolume):
                if len(chosen) == 1:
                    raise fs
                log.warning("%s", fs)
                continue
            try:
                listed.extend(entries(files, fs, args.path, recursive=args.recursive))
            except UsageError as exc:
                missing.append(exc)
        readable = [v for v in volumes if v["filesystem"]]
        if not listed and missing and len(missing) == len(readable):
            raise missing[0]
    if args.output == "json":
        print(json.dumps({"point": point_id, "partitions": volumes,
                          "entries": [e.to_json() for e in listed]}, indent=2,
                         ensure_ascii=False))
        return 0
    several = len(volumes) > 1
    for shown in volumes:
        if several and shown["filesystem"]:
            print(f"== {_label(shown['disk'], shown['partition'])}: {shown['filesystem']}, "
                  f"{shown['size'] / MiB:.1f} MiB")
        for entry in listed:
            if (entry.disk, entry.partition) == (shown["disk"], shown["partition"]):
                print(_line(entry, long=args.long))
    return 0


def _label(disk: str, partition: int | None) -> str:
    return disk if partition is None else f"{disk} partition {partition}"


def _line(entry: Entry, *, long: bool) -> str:
    from reconciler.files import file_mode, iso

    node = entry.node
    name = node.path + ("/" if node.type == "dir" else "")
    if node.type == "symlink":
        name += f" -> {node.target}"
    if not long:
        return name
    return f"{stat.filemode(file_mode(node))} {node.size:>12} {iso(node.mtime):<20} {name}"


# ------------------------------------------------------------------------------ get


def run_get(args: argparse.Namespace) -> int:
    from reconciler.files import PointFiles, extract

    with selected(args) as (point_id, repo):
        files = PointFiles(repo, point_id)
        fs = files.one_file_system(args.disk, args.partition)
        report = extract(files, fs, args.paths, args.to)
    for failure in report.failures:
        print(f"vmkeep: error: {failure}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps({"point": point_id, "disk": fs.volume.disk,
                          "partition": fs.volume.number, **report.to_json()}, indent=2,
                         ensure_ascii=False))
    else:
        for name in report.extracted:
            print(f"extracted {args.to / name}")
        print(f"{report.files} file(s), {report.bytes / MiB:.1f} MiB from restore point "
              f"{point_id} ({_label(fs.volume.disk, fs.volume.number)}, {fs.type}), "
              f"{files.fetched} chunk(s) read"
              + (f"; {len(report.failures)} could not be read" if report.failures else ""))
    return 1 if report.failures else 0


# ------------------------------------------------------------------------------ find


def run_find(args: argparse.Namespace) -> int:
    from reconciler.files import find

    if args.all_points:
        if args.vm is None or args.point is not None or args.latest or args.at:
            raise UsageError("--all-points searches every point of --vm NAME|UUID (without "
                             "--point, --latest or --at)")
        found = []
        with export_points(args, args.vm) as pairs:
            for point, repo in pairs:
                found.extend(find(repo, [point.id], args.pattern, warn=log.warning))
    else:
        if args.point is None and args.vm is None:
            raise UsageError("name a restore point: --point ID, --vm NAME|UUID (with --latest "
                             "or --at ISO), or --vm NAME|UUID --all-points")
        with selected(args) as (point_id, repo):
            found = find(repo, [point_id], args.pattern, warn=log.warning)
    if args.output == "json":
        print(json.dumps({"matches": [m.to_json() for m in found]}, indent=2,
                         ensure_ascii=False))
    else:
        for match in found:
            print(_match_line(match))
        if not found:
            print(f"no path matches {args.pattern!r}", file=sys.stderr)
    return 0


def _match_line(match: Match) -> str:
    from reconciler.files import iso

    where = _label(match.disk, match.partition)
    return f"{match.point}  {where}  {match.node.path}  {match.node.size}  " \
        f"{iso(match.node.mtime)}"

"""Choosing a restore point on the command line, the same way in every command that names one.

    add_point_selection(parser)     --point ID | --vm NAME|UUID [--latest | --at ISO], --target
    resolve_point(args, kind=…)     -> the one `Point` the options name (or `SelectionError`)
    gather_points(config, …)        -> every restore point of the chosen vCenters and targets
    open_point_target(config, point) -> the `Repository` holding an export point
    selected(args), export_points(args, vm) -> the chosen export point(s) with their
                                      repositories (`vmkeep files`, `vmkeep mount`)

Snapshot points come from the vmkeep markers of the vCenters' snapshots (one inventory read
per vCenter), export points from the targets' manifests (no chunk is read). The rules of
selection are the pure `reconciler.points.select_point`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler import observed, wiring
from reconciler.cli.common import parse_moment
from reconciler.errors import RepositoryError, UsageError, VCenterError
from reconciler.model import HostConfig, ObservedState, PointKind
from reconciler.points import Point, PointDisk, filter_points, select_point

if TYPE_CHECKING:
    from reconciler.adapters.repository import Repository

log = logging.getLogger(__name__)

__all__ = [
    "add_point_selection",
    "add_selection",
    "export_points",
    "gather_points",
    "open_point_target",
    "parse_at",
    "resolve_point",
    "selected",
]


def add_point_selection(parser: argparse.ArgumentParser, *, target: bool = True) -> None:
    """Add `--point ID`, `--vm NAME|UUID`, `--latest`, `--at ISO` (and `--target NAME`)."""
    group = parser.add_argument_group(
        "restore point", "--point ID, or --vm NAME|UUID with --latest (default) or --at ISO; "
        "`vmkeep points` lists them")
    group.add_argument("--point", metavar="ID",
                       help="the restore point's id (<policy>/<instance UUID>/<slot>)")
    group.add_argument("--vm", metavar="NAME|UUID",
                       help="the VM (name or instance UUID) whose point to use")
    when = group.add_mutually_exclusive_group()
    when.add_argument("--latest", action="store_true",
                      help="with --vm: its newest point (the default)")
    when.add_argument("--at", metavar="ISO",
                      help="with --vm: its newest point at or before this time "
                      "(e.g. 2026-11-25T12:00:00Z)")
    if target:
        group.add_argument("--target", metavar="NAME",
                           help="look for export points only in this target")
    group.add_argument("--kind", choices=[k.value for k in PointKind], dest="point_kind",
                       help="only this kind of point (an id names both a snapshot and an "
                       "export when a policy keeps both; default: the export)")


def parse_at(text: str | None) -> datetime | None:
    return None if text is None else parse_moment(text, "--at")


def resolve_point(
    args: argparse.Namespace,
    *,
    kind: PointKind | None = None,
    prefer: PointKind = PointKind.EXPORT,
    config: HostConfig | None = None,
    vcenters: Iterable[str] | None = None,
) -> Point:
    """The one restore point `--point`/`--vm`/`--latest`/`--at` name, among the points of
    the host config's targets (only `--target` when given) and, unless `kind` is export, the
    snapshots of its vCenters (or of `vcenters`). Bad options and unknown or ambiguous points
    are `UsageError`s (exit 1) that list the candidates."""
    point_id, vm = getattr(args, "point", None), getattr(args, "vm", None)
    at = parse_at(getattr(args, "at", None))
    if (at is not None or getattr(args, "latest", False)) and vm is None:
        raise UsageError("--latest and --at choose among the points of --vm NAME|UUID")
    if point_id is None and vm is None:
        raise UsageError("name a restore point: --point ID, or --vm NAME|UUID (with --latest "
                         "or --at ISO); `vmkeep points` lists them")
    asked = getattr(args, "point_kind", None)
    if asked is not None:
        if kind is not None and asked != kind.value:
            raise UsageError(f"--kind {asked}: this command works on {kind.value} points only")
        kind = PointKind(asked)
    config = config or wiring.load_host_config(getattr(args, "config", None))
    target = getattr(args, "target", None)
    if target is not None and target not in config.targets:
        listed = ", ".join(sorted(config.targets)) or "none configured"
        raise UsageError(f"no target {target!r} in {config.path} (targets: {listed})")
    kinds = {kind} if kind else {PointKind.EXPORT, PointKind.SNAPSHOT}
    points = gather_points(config, targets=[target] if target else None, kinds=kinds,
                           vcenters=vcenters)
    return select_point(points, point_id=point_id, vm=vm, at=at, kind=kind, prefer=prefer)


def gather_points(
    config: HostConfig,
    *,
    vcenters: Iterable[str] | None = None,
    targets: Iterable[str] | None = None,
    kinds: Iterable[PointKind] = (PointKind.EXPORT, PointKind.SNAPSHOT),
    strict: bool = True,
) -> list[Point]:
    """Every restore point of the named vCenters and targets (default: all configured).

    Not `strict`: a vCenter that cannot be read is a warning (its snapshot points are left
    out), for listing; choosing a point needs them all."""
    wanted = set(kinds)
    points: list[Point] = []
    if PointKind.EXPORT in wanted:
        for name in sorted(config.targets if targets is None else targets):
            points.extend(_export_points(config, name))
    if PointKind.SNAPSHOT in wanted:
        for name in sorted(config.vcenters if vcenters is None else vcenters):
            try:
                points.extend(_snapshot_points(config, name))
            except VCenterError as exc:  # unreachable, refused login, bad certificate
                if strict:
                    raise
                log.warning("%s; its snapshot points are not listed", exc)
    return points


def _export_points(config: HostConfig, name: str) -> list[Point]:
    target = config.targets[name]
    if target.type != "directory":
        raise UsageError(f"target {name!r} has type {target.type!r}; only 'directory' exists")
    if not Path(target.path).exists():
        return []  # nothing exported yet
    out: list[Point] = []
    with wiring.open_repository(target.path, create=False, target=name) as repo:
        for listed in repo.points():
            try:
                m = repo.manifest(listed.id)
            except RepositoryError:
                continue  # deleted meanwhile
            meta = m.metadata
            out.append(Point(
                id=m.id, kind=PointKind.EXPORT, policy=m.policy, vm=listed.vm, slot=listed.slot,
                vcenter=str(meta.get("vcenter") or ""), target=name, consistency=m.consistency,
                disks=tuple(PointDisk(d.name, d.size) for d in m.disks),
                stored_bytes=sum(d.stored_bytes for d in m.disks),
                created_at=m.created_at, last_verified=_time(meta.get("lastVerified")),
                proxy=str(meta["proxy"]) if meta.get("proxy") else None,
            ))
    return out


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return observed.parse_time(value)
    except (ValueError, OverflowError):  # a manifest's metadata is outside input too
        return None


def _snapshot_points(config: HostConfig, name: str) -> list[Point]:
    if name not in config.vcenters:
        listed = ", ".join(sorted(config.vcenters)) or "none configured"
        raise UsageError(f"no vCenter {name!r} in {config.path} (vCenters: {listed})")
    vc = config.vcenters[name]
    with wiring.vsphere_client(vc, wiring.resolve_password(vc)) as client:
        inventory = client.inventory()
    vms = {vm.instance_uuid: vm for vm in inventory.vms}
    state = ObservedState(captured_at=datetime.min, vcenters={name: inventory.vms}, targets={})
    out: list[Point] = []
    for p in observed.build_catalog(state).points:
        vm = vms[p.vm.instance_uuid]
        snap = next((s for s in vm.snapshots if s.id == p.snapshot_id), None)
        out.append(Point(
            id=p.point_id, kind=PointKind.SNAPSHOT, policy=p.policy, vm=p.vm, slot=p.slot,
            vcenter=name, consistency=("quiesce" if snap and snap.quiesced else "crash"),
            disks=tuple(PointDisk(f"disk-{d.key}", d.capacity_bytes) for d in vm.disks),
            created_at=snap.created_at if snap else None, snapshot_id=p.snapshot_id,
        ))
    return out


def open_point_target(config: HostConfig, point: Point) -> Repository:
    """The repository of the target holding export point `point` (close it when done)."""
    if point.kind is not PointKind.EXPORT:
        raise UsageError(f"restore point {point.id!r} is a snapshot in vCenter "
                         f"{point.vcenter!r}, not an export")
    target = config.targets[point.target]
    return wiring.open_repository(target.path, create=False, chunk_size=None,
                                  target=point.target)


# ------------------------------------------------------------------- point selection


def add_selection(parser: argparse.ArgumentParser) -> None:
    """`--point ID | --vm NAME|UUID [--latest | --at ISO]` and `--target NAME`."""
    add_point_selection(parser)


@contextmanager
def selected(args: argparse.Namespace) -> Iterator[tuple[str, Repository]]:
    """The chosen export point's id and the repository holding it (closed afterwards)."""
    config = wiring.load_host_config(getattr(args, "config", None))
    point = resolve_point(args, kind=PointKind.EXPORT, config=config)
    repo = open_point_target(config, point)
    try:
        yield point.id, repo
    finally:
        repo.close()


@contextmanager
def export_points(args: argparse.Namespace, vm: str | None = None,
                  ) -> Iterator[list[tuple[Point, Repository]]]:
    """Every export point (of `vm`, when given), oldest first, each with the repository
    holding it (`--target NAME` only, when given); the repositories are closed afterwards."""
    config = wiring.load_host_config(getattr(args, "config", None))
    target = getattr(args, "target", None)
    if target is not None and target not in config.targets:
        listed = ", ".join(sorted(config.targets)) or "none configured"
        raise UsageError(f"no target {target!r} in {config.path} (targets: {listed})")
    points = filter_points(gather_points(config, targets=[target] if target else None,
                                         kinds=(PointKind.EXPORT,)), vm=vm)
    if vm is not None and not points:
        raise UsageError(f"no export point of a VM {vm!r}; `vmkeep points` lists them")
    repos: dict[str, Repository] = {}
    try:
        for point in points:
            if point.target not in repos:
                repos[point.target] = open_point_target(config, point)
        yield [(p, repos[p.target]) for p in reversed(points)]
    finally:
        for repo in repos.values():
            repo.close()

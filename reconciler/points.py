"""Restore points as people list and choose them: the catalog as values, sorted, filtered,
and one point selected by id or by VM name and time (pure: no clock, no I/O).

    sort_points(points)                   newest first (slot, then kind, target, id)
    filter_points(points, vm=…, policy=…, vcenter=…, target=…, kind=…)
    select_point(points, point_id=… | vm=… [at=…], kind=…)  -> Point, or `SelectionError`

The shell (`reconciler.cli.selection`) gathers the points from the vCenters' snapshot
markers and the targets' manifests; `vmkeep points` lists them, `restore` (and every command
that names a point) selects one through the same function, so the rules are the same
everywhere: `--point ID`, or `--vm NAME|UUID` with the newest point (`--latest`) or the
newest at or before a time (`--at ISO`). A VM name that matches no point, or points of
several VMs (several VMs had that name), lists the candidates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.errors import SelectionError
from reconciler.model import PointKind, VMRef

__all__ = [
    "Point",
    "PointDisk",
    "SelectionError",
    "filter_points",
    "matches_vm",
    "select_point",
    "sort_points",
]


@dataclass(frozen=True)
class PointDisk:
    name: str  # disk-<device key>
    capacity_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "capacityBytes": self.capacity_bytes}


@dataclass(frozen=True)
class Point:
    """One restore point that exists: a vmkeep snapshot in a vCenter, or an export in a
    target. `vcenter` is where the VM lived (for an export: as recorded at export time)."""

    id: str
    kind: PointKind
    policy: str
    vm: VMRef
    slot: datetime
    vcenter: str = ""
    target: str = ""
    consistency: str = ""
    disks: tuple[PointDisk, ...] = ()
    stored_bytes: int | None = None
    created_at: datetime | None = None
    last_verified: datetime | None = None
    complete: bool = True
    snapshot_id: str | None = None  # the snapshot's managed object id (snapshot points)
    #: the engine worker (`vmkeep worker --identity`) that wrote an export; None when the
    #: embedded thread pool did, and for snapshots
    proxy: str | None = None

    @property
    def size_bytes(self) -> int:
        return sum(d.capacity_bytes for d in self.disks)

    def describe(self) -> str:
        """One line for messages: `gold/…/20261125T010000Z (export in local, web01)`."""
        where = f"in {self.target}" if self.kind is PointKind.EXPORT else f"on {self.vcenter}"
        return f"{self.id} ({self.kind.value} {where}, VM {self.vm.name})"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "policy": self.policy,
            "vcenter": self.vcenter,
            "vm": {"name": self.vm.name, "instanceUuid": self.vm.instance_uuid},
            "slot": _iso(self.slot),
            "target": self.target or None,
            "consistency": self.consistency or None,
            "disks": [d.to_json() for d in self.disks],
            "sizeBytes": self.size_bytes,
            "storedBytes": self.stored_bytes,
            "createdAt": _iso(self.created_at) if self.created_at else None,
            "lastVerified": _iso(self.last_verified) if self.last_verified else None,
            "complete": self.complete,
            "snapshotId": self.snapshot_id,
            "proxy": self.proxy,
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _order(p: Point) -> tuple[float, int, str, str, str]:
    # newest first; at one slot the export (it outlives the snapshot) before the snapshot
    return (-p.slot.timestamp(), 0 if p.kind is PointKind.EXPORT else 1, p.target,
            p.vcenter, p.id)


def sort_points(points: Iterable[Point]) -> list[Point]:
    """Newest first: by slot, then exports before snapshots, then target, vCenter, id."""
    return sorted(points, key=_order)


def matches_vm(point: Point, vm: str) -> bool:
    """`vm` is the point's VM name (exactly) or instance UUID (any case)."""
    return point.vm.name == vm or point.vm.instance_uuid.lower() == vm.lower()


def filter_points(
    points: Iterable[Point],
    *,
    vm: str | None = None,
    policy: str | None = None,
    vcenter: str | None = None,
    target: str | None = None,
    kind: PointKind | None = None,
) -> list[Point]:
    """The points answering every given filter, newest first."""
    return sort_points(
        p for p in points
        if (vm is None or matches_vm(p, vm))
        and (policy is None or p.policy == policy)
        and (vcenter is None or p.vcenter == vcenter)
        and (target is None or p.target == target)
        and (kind is None or p.kind is kind)
    )


def select_point(
    points: Sequence[Point],
    *,
    point_id: str | None = None,
    vm: str | None = None,
    at: datetime | None = None,
    kind: PointKind | None = None,
    prefer: PointKind = PointKind.EXPORT,
) -> Point:
    """The one point a command names: `point_id`, or the newest point of VM `vm` (name or
    instance UUID) at or before `at` (default: the newest). Only complete points of `kind`
    (when given) are candidates. A point id held by a snapshot and an export (same policy,
    VM and slot) gives the `prefer` kind; held by several targets, it asks for one."""
    pool = [p for p in points if p.complete and (kind is None or p.kind is kind)]
    what = "snapshot " if kind is PointKind.SNAPSHOT else ""
    if point_id is not None:
        if vm is not None or at is not None:
            raise SelectionError("give either --point ID or --vm NAME (with --latest or --at), "
                                 "not both")
        found = [p for p in pool if p.id == point_id]
        if not found:
            hint = _near_ids(pool, point_id)
            raise SelectionError(f"no {what}restore point {point_id!r}{hint}")
        return _one(found, prefer, f"restore point {point_id!r}")
    if vm is None:
        raise SelectionError("name a restore point: --point ID, or --vm NAME|UUID "
                             "(with --latest or --at ISO); `vmkeep points` lists them")
    mine = [p for p in pool if matches_vm(p, vm)]
    if not mine:
        raise SelectionError(f"no {what}restore point of a VM named {vm!r}; "
                             f"VMs with points: {_vm_list(pool)}")
    uuids = sorted({p.vm.instance_uuid for p in mine})
    if len(uuids) > 1:
        listed = "; ".join(
            f"{u} (newest {_iso(max(p.slot for p in mine if p.vm.instance_uuid == u))})"
            for u in uuids)
        raise SelectionError(f"several VMs named {vm!r} have restore points; choose one with "
                             f"--vm UUID: {listed}")
    eligible = [p for p in mine if at is None or p.slot <= at]
    if not eligible:
        assert at is not None  # without --at every point of the VM is eligible
        oldest = min(p.slot for p in mine)
        raise SelectionError(f"VM {vm!r} has no restore point at or before {_iso(at)} "
                             f"(its oldest: {_iso(oldest)})")
    newest = max(p.slot for p in eligible)
    return _one([p for p in eligible if p.slot == newest], prefer,
                f"the point of VM {vm!r} at {_iso(newest)}")


def _one(found: list[Point], prefer: PointKind, what: str) -> Point:
    if len({p.kind for p in found}) > 1:
        found = [p for p in found if p.kind is prefer]
    if len({p.id for p in found}) > 1:  # several policies at one slot: the last one made
        last = max(found, key=lambda p: (p.created_at or p.slot, p.id))
        found = [p for p in found if p.id == last.id]
    if len(found) == 1:
        return found[0]
    places = ", ".join(sorted(p.target or p.vcenter for p in found))
    option = "--target NAME" if found[0].kind is PointKind.EXPORT else "--vcenter NAME"
    raise SelectionError(f"{what} is held in several places ({places}); choose one with "
                         f"{option}")


def _vm_list(points: Sequence[Point]) -> str:
    names = sorted({f"{p.vm.name} ({p.vm.instance_uuid})" for p in points})
    if not names:
        return "none"
    more = f", … {len(names) - 20} more" if len(names) > 20 else ""
    return ", ".join(names[:20]) + more


def _near_ids(points: Sequence[Point], point_id: str) -> str:
    """A hint naming the VM's points when the id is one of its points' form but absent, or
    the VM when `point_id` is really a VM name."""
    parts = point_id.split("/")
    if len(parts) == 3:
        same = sort_points(p for p in points if p.vm.instance_uuid == parts[1])
        if same:
            return f"; points of that VM: {', '.join(p.id for p in same[:10])}"
    if any(matches_vm(p, point_id) for p in points):
        return f"; {point_id!r} is a VM: use --vm {point_id}"
    return "; `vmkeep points` lists them"

"""Small builders for planner, render and review tests: VMs, policies and observed states."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from reconciler.markers import Marker, MarkerKind, format_description, format_name, point_id
from reconciler.model import (
    VM,
    Duration,
    ExportPoint,
    ExportSpec,
    KeepRules,
    ObservedState,
    Policy,
    PowerState,
    Schedule,
    Selector,
    Snapshot,
    SnapshotSpec,
    VMRef,
    Window,
)

VCENTER = "vc1"
TARGET = "nas"


def at(text: str) -> datetime:
    """A UTC instant from 'YYYY-MM-DD HH:MM'."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def uuid_of(name: str) -> str:
    """A stable instance UUID derived from the VM name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vm:{name}"))


def marked_snapshot(
    policy: str, instance_uuid: str, slot: datetime, sid: str, kind: MarkerKind = MarkerKind.POINT
) -> Snapshot:
    marker = Marker(policy, point_id(policy, instance_uuid, slot), slot, kind)
    return Snapshot(sid, format_name(marker), format_description(marker), slot, False)


def foreign_snapshot(sid: str, created: datetime, parent: str | None = None) -> Snapshot:
    return Snapshot(sid, "before upgrade", "taken by hand", created, False, parent)


def vm(
    name: str,
    *,
    folder: str = "/DC0/vm/prod",
    tags: Iterable[str] = (),
    attributes: Mapping[str, str] | None = None,
    snapshots: Iterable[Snapshot] = (),
    instance_uuid: str | None = None,
) -> VM:
    return VM(
        vcenter=VCENTER,
        name=name,
        instance_uuid=instance_uuid or uuid_of(name),
        moref=f"vm-{name}",
        folder=folder,
        power_state=PowerState.ON,
        tools_running=True,
        attributes=dict(attributes or {}),
        tags=tuple(tags),
        snapshots=tuple(snapshots),
    )


def policy(
    name: str = "gold",
    *,
    cron: str = "0 1 * * *",
    timezone: str = "UTC",
    names: Iterable[str] = ("*",),
    folders: Iterable[str] = (),
    exclude: Selector | None = None,
    snapshot_keep: KeepRules | None = None,
    max_age: Duration | None = None,
    export_keep: KeepRules | None = None,
    window: Window | None = None,
) -> Policy:
    return Policy(
        name=name,
        vcenter=VCENTER,
        include=Selector(names=tuple(names), folders=tuple(folders)),
        exclude=exclude,
        schedule=Schedule(cron, timezone, window),
        snapshots=SnapshotSpec(snapshot_keep, max_age) if snapshot_keep else None,
        exports=ExportSpec(TARGET, export_keep) if export_keep else None,
    )


def export_point(
    policy_name: str, target_vm: VM | VMRef, slot: datetime, complete: bool = True
) -> ExportPoint:
    ref = target_vm.ref if isinstance(target_vm, VM) else target_vm
    return ExportPoint(
        id=point_id(policy_name, ref.instance_uuid, slot),
        policy=policy_name,
        vm=ref,
        slot=slot,
        created_at=slot,
        complete=complete,
        target=TARGET,
    )


def state(
    vms: Iterable[VM], points: Iterable[ExportPoint] = (), captured: datetime | None = None
) -> ObservedState:
    return ObservedState(
        captured_at=captured or at("2026-11-25 12:00"),
        vcenters={VCENTER: tuple(vms)},
        targets={TARGET: tuple(points)},
    )

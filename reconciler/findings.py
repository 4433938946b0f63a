"""Findings: what a plan reports but never acts on.

* VMs no policy selects (`vm-unprotected`, info) and VMs several policies select
  (`vm-multiple-policies`, info);
* hygiene: snapshots vmkeep did not make that are older than `hygiene.snapshotMaxAge`
  (`foreign-snapshot-old`, default 72 hours) and snapshot chains deeper than
  `hygiene.chainDepth` (`snapshot-chain-deep`, default 3), thresholds from the host config;
* restore points nobody plans for, all retained: of policies that no longer exist
  (`orphan-points`), of VMs that are gone (`gone-vm-points`) and of VMs their policy no
  longer selects (`unselected-vm-points`);
* temporary export snapshots whose marker names the installation that made them
  (`temporary-snapshot`, warning): an export running now, or one an interrupted run left.
  Only that installation removes it (its next apply's recovery); a plan never deletes it.
  Temporaries without an installation id (made before ids existed) are planned for removal
  as before.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from operator import attrgetter

from reconciler.markers import MarkerKind, parse_marker, parse_point
from reconciler.model import VM, Hygiene, ObservedState, PlanWarning, PointKind, Severity
from reconciler.observed import Catalog, CatalogPoint, snapshot_depths

__all__ = [
    "FOREIGN_MAX_AGE", "MAX_CHAIN_DEPTH", "point_findings", "temporary_findings", "vm_findings",
]

FOREIGN_MAX_AGE = timedelta(seconds=Hygiene().snapshot_max_age_seconds)
MAX_CHAIN_DEPTH = Hygiene().chain_depth

GroupKey = tuple[str, str, PointKind]  # policy, instance uuid, kind
_parent_of = attrgetter("parent_id")
_NO_PARENT = {None}


def _chain_depth(vm: VM, limit: int = MAX_CHAIN_DEPTH) -> int:
    if len(vm.snapshots) <= limit:
        return len(vm.snapshots)
    if set(map(_parent_of, vm.snapshots)) == _NO_PARENT:  # roots only: one deep
        return 1
    return max(snapshot_depths(vm.snapshots).values())


def vm_findings(
    observed: ObservedState,
    catalog: Catalog,
    selected: Mapping[tuple[str, str], list[str]],
    now: datetime,
    hygiene: Hygiene | None = None,
) -> list[PlanWarning]:
    """Selection and hygiene findings; `selected` maps (vCenter, UUID) to policy names."""
    hygiene = hygiene or Hygiene()
    max_depth = hygiene.chain_depth
    max_age = timedelta(seconds=hygiene.snapshot_max_age_seconds)
    found: list[PlanWarning] = []
    for vcenter, vms in sorted(observed.vcenters.items()):
        for vm in vms:
            names = selected.get((vcenter, vm.instance_uuid), [])
            if not names:
                found.append(
                    PlanWarning(
                        "vm-unprotected", Severity.INFO, "matched by no policy",
                        vcenter=vcenter, vm=vm.ref,
                    )
                )  # fmt: skip
            elif len(names) > 1:
                found.append(
                    PlanWarning(
                        "vm-multiple-policies", Severity.INFO,
                        f"matched by {len(names)} policies: {', '.join(sorted(names))}",
                        vcenter=vcenter, vm=vm.ref,
                    )
                )  # fmt: skip
            depth = _chain_depth(vm, max_depth)
            if depth > max_depth:
                found.append(
                    PlanWarning(
                        "snapshot-chain-deep", Severity.HYGIENE,
                        f"snapshot chain is {depth} deep (more than {max_depth} slows the "
                        "VM's disks down); keep fewer snapshots or consolidate",
                        vcenter=vcenter, vm=vm.ref,
                    )
                )  # fmt: skip
    for f in catalog.foreign:
        age = now - f.snapshot.created_at
        if age > max_age:
            found.append(
                PlanWarning(
                    "foreign-snapshot-old", Severity.HYGIENE,
                    f"snapshot {f.snapshot.name!r} ({f.snapshot.id}) not made by vmkeep is "
                    f"{age.days} days old; vmkeep never touches it",
                    vcenter=f.vcenter, vm=f.vm,
                )
            )  # fmt: skip
    return found


_MESSAGES = {
    "orphan-points": "policy {policy!r} no longer exists; its {n} points are retained "
    "(onPolicyRemoval: retain)",
    "gone-vm-points": "the VM is gone; its {n} points of policy {policy!r} are retained",
    "unselected-vm-points": "policy {policy!r} no longer selects the VM; its {n} points are "
    "retained",
}


def point_findings(
    groups: Mapping[GroupKey, list[CatalogPoint]],
    handled: Iterable[GroupKey],
    policies: Iterable[str],
    observed: ObservedState,
) -> list[PlanWarning]:
    """The restore points no planned group took care of, listed (and kept)."""
    present = {vm.instance_uuid for vms in observed.vcenters.values() for vm in vms}
    known, done = set(policies), set(handled)
    lists: dict[tuple[str, str, str], list[CatalogPoint]] = defaultdict(list)
    for key, points in groups.items():
        if key in done:
            continue
        policy, uuid, _ = key
        if policy not in known:
            code = "orphan-points"
        elif uuid not in present:
            code = "gone-vm-points"
        else:
            code = "unselected-vm-points"
        lists[(code, policy, uuid)].extend(points)
    found = []
    for (code, policy, _uuid), points in sorted(lists.items()):
        ids = tuple(sorted({p.point_id for p in points}))
        message = _MESSAGES[code].format(policy=policy, n=len(ids))
        incomplete = sum(1 for p in points if not p.complete)
        if incomplete:
            message += f" ({incomplete} of them incomplete)"
        found.append(
            PlanWarning(code, Severity.WARNING, message, vm=points[0].vm, policy=policy,
                        point_ids=ids)
        )  # fmt: skip
    return found


def temporary_findings(
    observed: ObservedState, now: datetime, catalog: Catalog | None = None
) -> tuple[list[PlanWarning], frozenset[str]]:
    """A `temporary-snapshot` warning per temporary export snapshot that names its
    installation, and those snapshots' ids (the plan leaves them to their installation).

    With the state's `catalog` only the VMs it found a snapshot on that is not a restore
    point of its own VM (a temporary or a foreign one) are read: every other VM's snapshots
    are all restore points (150,000 snapshots at 10,000 VMs, whose markers the catalog has
    already read)."""
    found: list[PlanWarning] = []
    owned: set[str] = set()
    suspects = None if catalog is None else _unlike_points(catalog)
    for vcenter, vms in sorted(observed.vcenters.items()):
        for vm in vms:
            uuid = vm.instance_uuid
            if suspects is not None and (vcenter, uuid) not in suspects:
                continue
            for snap in vm.snapshots:
                if parse_point(snap.name, snap.description, uuid) is not None:
                    continue  # a restore point's marker as vmkeep writes it (no Marker built)
                marker = parse_marker(snap.name, snap.description)
                if (marker is None or marker.kind is not MarkerKind.EXPORT_TEMP
                        or marker.installation is None):
                    continue
                owned.add(snap.id)
                minutes = max(0, int((now - snap.created_at).total_seconds() // 60))
                found.append(
                    PlanWarning(
                        "temporary-snapshot", Severity.WARNING,
                        f"temporary export snapshot {snap.id} of installation "
                        f"{marker.installation} ({minutes} min old): an export running now or "
                        "one an interrupted run left; only that installation removes it (its "
                        "next apply), a plan never does",
                        vcenter=vcenter, vm=vm.ref, policy=marker.policy,
                        point_ids=(marker.point_id,),
                    )
                )  # fmt: skip
    return found, frozenset(owned)


def _unlike_points(catalog: Catalog) -> set[tuple[str, str]]:
    """(vCenter, instance UUID) of the VMs with a snapshot the catalog did not take as a
    restore point of that VM: a temporary export snapshot or a foreign one (a temporary's
    marker naming another VM is foreign there)."""
    vms = {(p.vcenter, p.vm.instance_uuid) for p in catalog.temporaries}
    vms.update((f.vcenter, f.vm.instance_uuid) for f in catalog.foreign)
    return vms

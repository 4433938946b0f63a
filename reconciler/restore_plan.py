"""What a restore into vCenter would do, decided from values only (pure: no clock, no I/O).

    decide(request, config, survey, facts) -> RestorePlan

The plan says which VM is made (name, place, datastore, disks and their sizes, network
mapping, identity), what happens to a VM in the way (`--replace`: powered off and renamed
aside, never deleted), how much space each datastore has before and after, and — when the
restore cannot proceed — every reason, each one line. `vmkeep restore --plan` prints it;
the restore carries it out only when it has no refusal.

Three modes: `import` (an export point: the VM is created from its saved configuration and
its disks are streamed in), `clone` (a snapshot point into a new VM: a full clone of the
snapshot) and `revert` (a snapshot point, in place).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from reconciler.model import PointKind
from reconciler.points import Point
from reconciler.ports import DiskTarget, ExistingVM, Placement, RestoreSurvey
from reconciler.vmconfig import VMConfig, hardware_number

__all__ = ["PlanFacts", "RestorePlan", "RestoreRequest", "decide", "temporary_name"]

GiB = 1 << 30


@dataclass(frozen=True)
class RestoreRequest:
    point: Point
    vcenter: str
    name: str | None = None
    datastore: str | None = None
    folder: str | None = None
    host: str | None = None
    cluster: str | None = None
    resource_pool: str | None = None
    networks: Mapping[str, str] = field(default_factory=dict)
    power_on: bool = False
    replace: bool = False
    revert: bool = False


@dataclass(frozen=True)
class PlanFacts:
    """What the service found out besides the survey: when, the restore's token, the
    directory it would make, the bytes each disk holds (zeros are not written), and problems
    with the point itself (damaged, incomplete)."""

    now: datetime
    token: str
    directory: str
    data_bytes: Mapping[str, int] = field(default_factory=dict)
    point_problems: tuple[str, ...] = ()
    snapshot_vm: ExistingVM | None = None  # the VM holding a snapshot point


@dataclass(frozen=True)
class RestorePlan:
    mode: str  # import | clone | revert
    point_id: str
    vcenter: str
    name: str
    temporary: str
    placement: Placement | None
    datastore: str
    directory: str
    disks: tuple[DiskTarget, ...]
    networks: tuple[tuple[str, str], ...]  # (the NIC's network at export, the network now)
    space: tuple[tuple[str, int, int], ...]  # (datastore, free before, free after)
    replaced: ExistingVM | None = None
    aside: str = ""
    keep_identity: bool = False
    instance_uuid: str = ""
    power_on: bool = False
    already: ExistingVM | None = None  # a VM restored from this point has the name already
    lost: str = ""  # revert: what the VM loses
    refusals: tuple[str, ...] = ()

    @property
    def proceeds(self) -> bool:
        return not self.refusals

    def to_json(self) -> dict[str, Any]:
        p = self.placement
        return {
            "mode": self.mode,
            "point": self.point_id,
            "vcenter": self.vcenter,
            "vm": {"name": self.name, "temporaryName": self.temporary,
                   "instanceUuid": self.instance_uuid or None,
                   "keepsIdentity": self.keep_identity},
            "placement": None if p is None else {
                "datacenter": p.datacenter, "folder": p.folder, "resourcePool": p.pool,
                "host": p.host or None, "datastore": self.datastore,
                "directory": f"[{self.datastore}] {self.directory}" if self.directory else None},
            "disks": [{"name": f"disk-{d.key}", "capacityBytes": d.capacity_bytes,
                       "file": d.file} for d in self.disks],
            "datastores": [{"name": n, "freeBytesBefore": b, "freeBytesAfter": a}
                           for n, b, a in self.space],
            "networks": [{"from": old, "to": new} for old, new in self.networks],
            "replaces": None if self.replaced is None else {
                "name": self.replaced.name, "moref": self.replaced.moref,
                "renamedTo": self.aside},
            "alreadyRestored": None if self.already is None else {
                "name": self.already.name, "moref": self.already.moref},
            "powerOn": self.power_on,
            "loses": self.lost or None,
            "proceeds": self.proceeds,
            "refusals": list(self.refusals),
        }

    def lines(self) -> list[str]:
        """The plan for people, one fact per line."""
        out = [f"restore {self.point_id} into vCenter {self.vcenter} ({self.mode})"]
        if self.already is not None:
            out.append(f"  VM {self.already.name!r} ({self.already.moref}) was already restored "
                       "from this point: nothing to do")
        if self.mode == "revert":
            out.append(f"  revert VM {self.name!r} to its snapshot; it loses {self.lost}")
        else:
            ident = "keeps the original instance UUID and MAC addresses" if self.keep_identity \
                else "gets a new instance UUID and new MAC addresses"
            out.append(f"  VM {self.name!r} (built as {self.temporary!r}, renamed when whole); "
                       f"{ident}")
        if self.placement is not None:
            p = self.placement
            out.append(f"  place: datacenter {p.datacenter}, folder {p.folder}, pool {p.pool}"
                       + (f", host {p.host}" if p.host else ""))
        if self.directory:
            out.append(f"  files: [{self.datastore}] {self.directory}/")
        for d in self.disks:
            out.append(f"  disk-{d.key}: {d.capacity_bytes / GiB:.2f} GiB -> {d.file} (thin)")
        for name, before, after in self.space:
            out.append(f"  datastore {name}: {before / GiB:.2f} GiB free before, "
                       f"{after / GiB:.2f} GiB after")
        for old, new in self.networks:
            out.append(f"  network {old} -> {new}" if old != new else f"  network {old}")
        if self.replaced is not None:
            out.append(f"  the existing VM {self.replaced.name!r} ({self.replaced.moref}) is "
                       f"powered off and renamed {self.aside!r} (never deleted)")
        if self.power_on:
            out.append("  the VM is powered on at the end")
        out.extend(f"  refused: {r}" for r in self.refusals)
        out.append("would proceed" if self.proceeds else "would be refused")
        return out


def temporary_name(name: str, token: str) -> str:
    return f"{name}.vmkeep-restore-{token}"


def _stem(file: str, key: int, used: set[str]) -> str:
    base = PurePosixPath(file.rsplit("]", 1)[-1].strip()).name
    stem = base[: -len(".vmdk")] if base.lower().endswith(".vmdk") else ""
    stem = stem.rsplit("-", 1)[0] if stem[-6:].isdigit() and "-" in stem else stem
    if not stem or stem in used or not all(c.isalnum() or c in "._-" for c in stem):
        stem = f"disk-{key}"
    used.add(stem)
    return stem


def decide(request: RestoreRequest, config: VMConfig | None, survey: RestoreSurvey,
           facts: PlanFacts) -> RestorePlan:
    """The plan of `request`; see the module documentation."""
    point = request.point
    refusals: list[str] = list(facts.point_problems)
    snapshot = point.kind is PointKind.SNAPSHOT
    if request.revert and not snapshot:
        refusals.append(f"--revert needs a snapshot point; {point.id} is an export "
                        "(restore it as a VM instead)")
    if snapshot and request.vcenter != point.vcenter:
        refusals.append(f"restore point {point.id} is a snapshot in vCenter {point.vcenter!r}; "
                        f"it cannot go to {request.vcenter!r} (choose an export point)")
    mode = "revert" if request.revert else "clone" if snapshot else "import"
    if config is None:
        refusals.append(f"restore point {point.id} holds no saved VM configuration "
                        "(vm-config.json; exported by an older vmkeep): restore it with "
                        "--to DIR")
        config = VMConfig(name=point.vm.name, instance_uuid=point.vm.instance_uuid)
    name = request.name or config.name or point.vm.name
    temp = temporary_name(name, facts.token)
    if mode == "revert":
        return _revert_plan(request, facts, survey, name, refusals)
    if snapshot and request.name is None and survey.original is not None:
        refusals.append(f"VM {name!r} still exists: give --name NEW for a clone of the "
                        "snapshot, or --revert to go back to it in place")
    refusals.extend(survey.problems)
    # name conflicts
    already = next((v for v in survey.named if v.restored_from == point.id), None)
    replaced: ExistingVM | None = None
    if already is not None and not request.replace:
        return RestorePlan(mode, point.id, request.vcenter, name, temp, survey.placement, "",
                           "", (), (), (), already=already, refusals=())
    others = [v for v in survey.named if v is not already or request.replace]
    if others:
        if not request.replace:
            refusals.append(f"a VM named {name!r} exists in vCenter {request.vcenter!r} "
                            f"({others[0].moref}): add --replace to power it off and rename it "
                            "aside, or give another --name")
        elif len(others) > 1:
            refusals.append(f"{len(others)} VMs are named {name!r}; --replace renames one "
                            "aside: rename the others first")
        else:
            replaced = others[0]
    aside = f"{name}.replaced-{facts.now.astimezone(UTC):%Y%m%dT%H%M%SZ}" if replaced else ""
    # datastore
    datastore = request.datastore or config.datastore
    if datastore not in survey.datastores:
        listed = ", ".join(sorted(survey.datastores)) or "none"
        if request.datastore is not None:
            refusals.append(f"no datastore {request.datastore!r} in vCenter "
                            f"{request.vcenter!r} (datastores: {listed})")
        else:
            refusals.append(f"the VM's datastore {config.datastore!r} is not in vCenter "
                            f"{request.vcenter!r}: choose one with --datastore "
                            f"(datastores: {listed})")
    # disks, space
    used: set[str] = set()
    disks = tuple(
        DiskTarget(d.key, d.controller_key, d.unit, d.capacity_bytes,
                   f"[{datastore}] {facts.directory}/{_stem(d.file, d.key, used)}.vmdk")
        for d in config.disks)
    needed = sum(facts.data_bytes.get(f"disk-{d.key}", d.capacity_bytes) for d in disks)
    space: tuple[tuple[str, int, int], ...] = ()
    if datastore in survey.datastores:
        free = survey.datastores[datastore].free_bytes
        space = ((datastore, free, free - needed),)
        if needed > free:
            refusals.append(f"datastore {datastore!r} has {free / GiB:.2f} GiB free, the "
                            f"restore needs {needed / GiB:.2f} GiB")
    # networks
    mapping = dict(request.networks)
    had = {n.network for n in config.nics}
    for old in sorted(set(mapping) - had):
        refusals.append(f"--network {old}={mapping[old]}: the VM had no NIC on network "
                        f"{old!r} (it had: {', '.join(sorted(had)) or 'none'})")
    networks = tuple((n.network, mapping.get(n.network, n.network)) for n in config.nics)
    listed = ", ".join(survey.networks) or "none"
    for old, new in dict.fromkeys(networks):
        if new in survey.networks:
            continue
        if old in mapping:
            refusals.append(f"--network {old}={new}: network {new!r} does not exist in "
                            f"vCenter {request.vcenter!r} (networks: {listed})")
        else:
            refusals.append(f"the VM's network {old!r} does not exist in vCenter "
                            f"{request.vcenter!r} (networks: {listed}); map it with "
                            f"--network {old}=NEW")
    # hardware version
    wanted_hw = hardware_number(config.hardware_version)
    if wanted_hw is not None and survey.max_hardware is not None \
            and wanted_hw > survey.max_hardware:
        refusals.append(f"the VM has hardware version {config.hardware_version}, newer than "
                        f"the hosts of vCenter {request.vcenter!r} run (up to "
                        f"vmx-{survey.max_hardware})")
    keep = (mode == "import" and survey.original is None and replaced is None
            and request.vcenter == point.vcenter)
    return RestorePlan(
        mode, point.id, request.vcenter, name, temp, survey.placement, datastore,
        facts.directory, disks, networks, space, replaced, aside, keep,
        config.instance_uuid if keep else "", request.power_on, None, "",
        tuple(dict.fromkeys(refusals)))


def _revert_plan(request: RestoreRequest, facts: PlanFacts, survey: RestoreSurvey, name: str,
                 refusals: list[str]) -> RestorePlan:
    point = request.point
    vm = facts.snapshot_vm
    if vm is None:
        refusals.append(f"the VM of snapshot point {point.id} is gone")
    if request.name is not None or request.replace:
        refusals.append("--revert goes back in place: --name and --replace do not apply")
    lost = (f"everything written since {point.slot.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ} "
            "(its current disks and memory state; the snapshot itself and any other "
            "snapshots are kept)")
    return RestorePlan("revert", point.id, request.vcenter, vm.name if vm else name, "",
                       survey.placement, "", "", (), (), (), power_on=request.power_on,
                       lost=lost, refusals=tuple(dict.fromkeys(refusals)))

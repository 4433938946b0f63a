"""Restore a point into vCenter: plan it, carry it out crash-safely, clean up what a killed
restore left (the service behind `vmkeep restore --vcenter`, see docs/restore.md).

    prepare(request, target, config, ...)   -> RestorePlan  (reads, never changes)
    carry_out(plan, request, target, ...)    -> RestoreOutcome
    clean_leftovers(journal, targets, ...)   -> notes (also called by `apply`)

Crash safety. Before anything is created the restore writes its intent to the state DB's
journal (kind `restore.vcenter`: the temporary VM name, its directory, the holder process).
The VM is built under the temporary name `<name>.vmkeep-restore-<token>` and renamed only
when every disk is in; a failure removes the VM and its directory and says so; a killed
restore's leftovers (found through the journal: the VM by its moref or temporary name, the
directory) are removed by the next `restore` or `apply` once the holder process is gone. A
VM that was already renamed to its final name is whole and is left alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from reconciler.errors import RestoreFailed, RestoreRefused, VmkeepError
from reconciler.model import PointKind
from reconciler.ports import BuildSpec, CreatedVM, RestoreTarget
from reconciler.restore_plan import PlanFacts, RestorePlan, RestoreRequest, decide
from reconciler.vmconfig import VMConfig

__all__ = [
    "JOURNAL_KIND",
    "DiskSource",
    "RestoreFailed",
    "RestoreOutcome",
    "RestoreRefused",
    "carry_out",
    "clean_leftovers",
    "prepare",
]

log = logging.getLogger(__name__)

JOURNAL_KIND = "restore.vcenter"


class Journal(Protocol):
    def start_run(self, run_id: str, holder: str, now: float,
                  policy_revision: str | None = None) -> None: ...

    def finish_run(self, run_id: str, now: float, summary: Mapping[str, Any]) -> None: ...

    def record_intent(self, run_id: str, *, kind: str, point_id: str, vm_uuid: str,
                      vm_name: str, vcenter: str, now: float,
                      details: Mapping[str, Any] | None = None) -> int: ...

    def update_details(self, action_id: int, details: Mapping[str, Any]) -> None: ...

    def record_outcome(self, action_id: int, status: str, now: float,
                       error: str | None = None) -> None: ...

    def unfinished_actions(self) -> Sequence[Any]: ...


@dataclass(frozen=True)
class DiskSource:
    """One disk of an export point: its name, size and a fresh block iterator per call."""

    name: str
    size: int
    blocks: Callable[[], Iterable[bytes]]


@dataclass(frozen=True)
class RestoreOutcome:
    plan: RestorePlan
    status: str  # restored | already-restored | reverted
    vm: CreatedVM | None
    disks: tuple[Mapping[str, Any], ...] = ()
    seconds: float = 0.0
    replaced: str = ""
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        plan = self.plan.to_json()
        return {
            "status": self.status,
            "point": self.plan.point_id,
            "vcenter": self.plan.vcenter,
            "mode": self.plan.mode,
            "vm": None if self.vm is None else {
                "name": self.vm.name, "moref": self.vm.moref,
                "instanceUuid": self.vm.instance_uuid},
            "placement": plan["placement"],
            "disks": [dict(d) for d in self.disks],
            "networks": plan["networks"],
            "replaced": {"renamedTo": self.replaced} if self.replaced else None,
            "poweredOn": self.plan.power_on and self.status != "already-restored",
            "seconds": round(self.seconds, 3),
        }


def choose_directory(target: RestoreTarget, datacenter: str, datastore: str,
                     name: str) -> str:
    """A directory for the new VM on the datastore that does not exist yet: its name, else
    `<name>_1`, `<name>_2`, …"""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "vm"
    for n in range(100):
        candidate = safe if n == 0 else f"{safe}_{n}"
        if not target.directory_exists(datacenter, datastore, candidate):
            return candidate
    raise VmkeepError(f"datastore {datastore!r} has 100 directories named like {safe!r}; "
                      "choose another --name")


def prepare(request: RestoreRequest, target: RestoreTarget, config: VMConfig | None, *,
            now: datetime, token: str, data_bytes: Mapping[str, int] | None = None,
            point_problems: Sequence[str] = ()) -> RestorePlan:
    """The plan of `request` against the vCenter as it is now (changes nothing)."""
    name = request.name or (config.name if config else "") or request.point.vm.name
    survey = target.survey(config or VMConfig(name=name, instance_uuid=""), name=name,
                           folder=request.folder, host=request.host, cluster=request.cluster,
                           resource_pool=request.resource_pool)
    snapshot_vm = None
    if request.point.kind is PointKind.SNAPSHOT and request.vcenter == request.point.vcenter:
        snapshot_vm = target.find_by_uuid(request.point.vm.instance_uuid)
    datastore = request.datastore or (config.datastore if config else "")
    directory = ""
    if (survey.placement is not None and datastore in survey.datastores
            and request.point.kind is PointKind.EXPORT and not request.revert):
        directory = choose_directory(target, survey.placement.datacenter, datastore, name)
    facts = PlanFacts(now, token, directory, dict(data_bytes or {}), tuple(point_problems),
                      snapshot_vm)
    return decide(request, config, survey, facts)


def carry_out(
    plan: RestorePlan,
    request: RestoreRequest,
    target: RestoreTarget,
    journal: Journal,
    *,
    config: VMConfig | None,
    disks: Sequence[DiskSource] = (),
    run_id: str,
    holder: str,
    progress: Callable[[str, int, int], None] = lambda *_: None,
    clock: Callable[[], float] = time.time,
    confirmed: bool = False,
) -> RestoreOutcome:
    """Do what `plan` says (it must proceed); journaled, cleaned up on failure."""
    started = clock()
    if not plan.proceeds:
        raise RestoreRefused("restore refused: " + "; ".join(plan.refusals))
    if plan.already is not None:
        done = plan.already
        return RestoreOutcome(plan, "already-restored",
                              CreatedVM(done.moref, done.name, done.instance_uuid))
    if plan.mode == "revert":
        return _revert(plan, request, target, confirmed, started, clock)
    assert plan.placement is not None
    journal.start_run(run_id, holder, clock())
    details = {"temporary": plan.temporary, "final": plan.name, "holder": holder,
               "datacenter": plan.placement.datacenter, "datastore": plan.datastore,
               "directory": f"[{plan.datastore}] {plan.directory}" if plan.directory else ""}
    action = journal.record_intent(
        run_id, kind=JOURNAL_KIND, point_id=plan.point_id,
        vm_uuid=plan.instance_uuid or request.point.vm.instance_uuid, vm_name=plan.name,
        vcenter=plan.vcenter, now=clock(), details=details)
    created: dict[str, str] = {}

    def on_created(moref: str) -> None:
        created["moref"] = moref
        journal.update_details(action, {"moref": moref})

    timings: list[dict[str, Any]] = []
    replacing = False
    try:
        vm = _build(plan, request, target, config, disks, on_created, progress, clock, timings)
        journal.update_details(action, {"built": True})
        if plan.replaced is not None:
            journal.update_details(action, {"replaced": plan.replaced.moref,
                                            "aside": plan.aside,
                                            "wasOn": plan.replaced.power_state == "poweredOn"})
            replacing = True
            target.power_off_vm(plan.replaced.moref)
            target.rename(plan.replaced.moref, plan.aside)
        target.rename(vm.moref, plan.name)
        vm = replace(vm, name=plan.name)
        for entry in timings:
            if entry["name"] in vm.sent:
                entry["sentBytes"] = vm.sent[entry["name"]]
    except BaseException as exc:
        cleaned = _remove_partial(target, created.get("moref"), plan.temporary,
                                  plan.placement.datacenter, details["directory"])
        if replacing and plan.replaced is not None:
            cleaned += _put_back(target, plan.replaced.moref, plan.aside, plan.name,
                                 plan.replaced.power_state == "poweredOn")
        message = f"restore of {plan.point_id} into vCenter {plan.vcenter!r} failed: " \
                  f"{_reason(exc)}; {cleaned}"
        journal.record_outcome(action, "failed", clock(), message)
        journal.finish_run(run_id, clock(), {"failed": 1})
        if isinstance(exc, Exception):
            raise RestoreFailed(message) from None
        raise
    journal.record_outcome(action, "done", clock())
    journal.finish_run(run_id, clock(), {"done": 1})
    if plan.power_on:
        target.power_on_vm(vm.moref)
    return RestoreOutcome(plan, "restored", vm, tuple(timings), clock() - started,
                          plan.aside if plan.replaced is not None else "")


def _put_back(target: RestoreTarget, moref: str, aside: str, name: str, was_on: bool) -> str:
    """Undo `--replace` for a restore that did not finish: the VM renamed aside gets its
    name back (when nothing took it) and its power (when it was on)."""
    try:
        vm = target.find_by_moref(moref)
        if vm is None:
            return ""
        done: list[str] = []
        current = vm.name
        if current == aside and not target.vms_named(name):
            target.rename(moref, name)
            current = name
            done.append(f"renamed {aside!r} back to {name!r}")
        if current == name and was_on and vm.power_state != "poweredOn":
            target.power_on_vm(moref)
            done.append(f"powered {moref} on again")
    except VmkeepError as exc:
        return f"; the replaced VM {moref} could not be put back ({exc})"
    return f"; {' and '.join(done)}" if done else ""


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _build(plan: RestorePlan, request: RestoreRequest, target: RestoreTarget,
           config: VMConfig | None, disks: Sequence[DiskSource],
           on_created: Callable[[str], None], progress: Callable[[str, int, int], None],
           clock: Callable[[], float], timings: list[dict[str, Any]]) -> CreatedVM:
    assert plan.placement is not None and config is not None
    spec = BuildSpec(
        name=plan.temporary, placement=plan.placement, datastore=plan.datastore,
        directory=plan.directory, config=config, disks=plan.disks,
        networks=dict(plan.networks), instance_uuid=plan.instance_uuid or _new_uuid(),
        bios_uuid=config.bios_uuid if plan.keep_identity else "",
        keep_macs=plan.keep_identity, restored_from=plan.point_id)
    if plan.mode == "clone":
        snapshot = request.point.snapshot_id or ""
        original = target.find_by_uuid(request.point.vm.instance_uuid)
        if original is None:
            raise VmkeepError(f"the VM of snapshot point {plan.point_id} is gone")
        began = clock()
        vm = target.clone_from_snapshot(original.moref, snapshot, spec, on_created)
        timings.extend({"name": f"disk-{d.key}", "capacityBytes": d.capacity_bytes,
                        "file": d.file, "seconds": round(clock() - began, 3)}
                       for d in plan.disks)
        return vm
    by_name = {d.name: d for d in disks}
    ordered = [by_name[f"disk-{d.key}"] for d in plan.disks]
    marks: dict[str, float] = {}

    def tracking(name: str, done: int, total: int) -> None:
        marks.setdefault(name, clock())
        progress(name, done, total)
        if done >= total:
            timings.append({"name": name, "capacityBytes": total,
                            "file": next(d.file for d in plan.disks if f"disk-{d.key}" == name),
                            "seconds": round(clock() - marks[name], 3)})

    return target.import_vm(spec, [(d.name, d.size, d.blocks) for d in ordered], tracking,
                            on_created)


def _new_uuid() -> str:
    import uuid

    return str(uuid.uuid4())


def _remove_partial(target: RestoreTarget, moref: str | None, temporary: str, datacenter: str,
                    directory: str) -> str:
    """Remove the temporary VM (by moref, else by its unique temporary name) and its
    directory; says what was removed."""
    removed: list[str] = []
    try:
        known = target.find_by_moref(moref) if moref else None
        found = [known] if known is not None else target.vms_named(temporary)
        for vm in found:
            if vm.name != temporary:  # renamed to its final name: whole, kept with its files
                return f"the VM was already whole as {vm.name!r} ({vm.moref}); kept"
            target.power_off_vm(vm.moref)
            target.destroy(vm.moref)
            removed.append(f"the partial VM {temporary!r} ({vm.moref})")
        # removing the VM removes its files; whatever is left of the directory goes too
        if directory and (target.delete_directory(datacenter, directory) or removed):
            removed.append(f"its directory {directory}")
    except VmkeepError as exc:
        return (f"cleaning up failed too ({exc}); the next `vmkeep restore` or `apply` "
                "retries it")
    return ("removed " + " and ".join(removed)) if removed else "nothing had been created"


def _revert(plan: RestorePlan, request: RestoreRequest, target: RestoreTarget,
            confirmed: bool, started: float, clock: Callable[[], float]) -> RestoreOutcome:
    if not confirmed:
        raise RestoreRefused(f"reverting VM {plan.name!r} to {plan.point_id} loses "
                             f"{plan.lost}; add --yes to go ahead")
    vm = target.find_by_uuid(request.point.vm.instance_uuid)
    if vm is None:
        raise RestoreFailed(f"the VM of snapshot point {plan.point_id} is gone")
    target.revert(vm.moref, request.point.snapshot_id or "")
    if plan.power_on:
        target.power_on_vm(vm.moref)
    return RestoreOutcome(plan, "reverted", CreatedVM(vm.moref, vm.name, vm.instance_uuid),
                          (), clock() - started)


def clean_leftovers(
    journal: Journal,
    targets: Callable[[str], RestoreTarget | None],
    is_dead: Callable[[str], bool],
    clock: Callable[[], float] = time.time,
) -> list[str]:
    """Remove what killed restores left (their holder process is gone); one note each.

    A restore's VM still under its temporary name is removed with its directory; one that
    reached its final name is whole and kept; a VM renamed aside by `--replace` whose
    replacement never arrived gets its name back when that name is free."""
    notes: list[str] = []
    for record in journal.unfinished_actions():
        if record.kind != JOURNAL_KIND:
            continue
        details = record.details
        if not is_dead(str(details.get("holder", ""))):
            continue  # a restore running now
        target = targets(record.vcenter)
        if target is None:
            continue
        temporary = str(details.get("temporary", ""))
        done = _remove_partial(target, details.get("moref"), temporary,
                               str(details.get("datacenter", "")),
                               str(details.get("directory", "")))
        if details.get("aside") and details.get("replaced"):
            done += _put_back(target, str(details["replaced"]), str(details["aside"]),
                              str(details.get("final", "")), bool(details.get("wasOn")))
        if "failed too" in done:
            notes.append(f"could not clean up the interrupted restore of {record.point_id}: "
                         f"{done}")
            continue
        note = f"interrupted restore of {record.point_id} into {record.vcenter!r}: {done}"
        journal.record_outcome(record.id, "reconciled", clock(), note)
        notes.append(note)
    return notes

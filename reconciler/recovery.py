"""Crash recovery: repair what an interrupted run of *this installation* left, and only that.

`vmkeep apply` runs it under the applier lease, before planning (`JournaledRecovery`):

1. **NFC export leases.** A lease an interrupted export was reading from (journaled as
   `nfcLease`) is aborted first: a held lease blocks the VM's power operations. A run killed
   after asking for a lease (`nfcLeaseRequested`) and before journaling its id leaves one no
   run can name (vSphere lists no leases): recovery warns that vCenter ends it by itself
   after its timeout.
2. **Tasks still running.** For every action the journal holds without an outcome (intent
   written, the run killed), vCenter's recent tasks on its VM are waited for: a snapshot whose
   creation the killed run started may still be on its way, and observing before it lands
   would miss it (then the plan takes a second snapshot for the same slot). VMs are re-read
   after the wait.
3. **Power.** A VM vmkeep shut down (journaled before the shutdown) and found not on is
   powered on; so is one whose guest finished a shutdown after its action gave up waiting.
4. **Temporary export snapshots** carry the id of the installation that made them
   (`markers`). Only this installation's are removed (none is in use: the lease is held), after
   waiting for tasks still running on the VM. Another installation's are left alone and
   reported: that installation's own next run removes them. A temporary whose marker predates
   installation ids (no id) is removed only when this installation's journal worked on its
   restore point (then it is ours); otherwise it is reported like another's.
5. **Partial exports** in this installation's targets are discarded.

Each repair is one line ("powered VM 'db' back on …"); `JournaledRecovery` journals them
with the recovery (and its error, when it failed), settles the interrupted runs, and marks
their actions reconciled. A recovery that fails part-way raises `RecoveryError` after trying
every repair; the next apply tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler.errors import RecoveryError, VmkeepError
from reconciler.markers import MarkerKind, parse_marker
from reconciler.model import VM, ObservedState, PowerState
from reconciler.ports import ExportStore, VCenterOps

__all__ = [
    "JournaledRecovery",
    "Recovery",
    "RecoveryError",
    "RecoveryJournal",
    "RepairJournal",
    "UnfinishedAction",
    "temporaries",
]

log = logging.getLogger(__name__)


class UnfinishedAction(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def vm_uuid(self) -> str: ...

    @property
    def vcenter(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def details(self) -> Mapping[str, Any]: ...


class RepairJournal(Protocol):
    """What `Recovery` writes to the journal (see adapters.statedb)."""

    def record_outcome(self, action_id: int, status: str, now: float,
                       error: str | None = None) -> None: ...

    def update_details(self, action_id: int, details: Mapping[str, Any]) -> None: ...

    def knows_point(self, point_id: str) -> bool: ...


@dataclass
class Recovery:
    """Repairs what interrupted runs of installation `installation` left, one method per
    repair; `run` makes them all and returns one line per repair made. One object serves one
    recovery: it remembers the VMs it re-read, the repairs made and those that failed.

    The journal settles each action it repairs: an unfinished one is marked reconciled,
    one whose VM is back on loses its `poweredOffByUs`, and `knows_point(point_id)` says
    whether this installation worked on a point (for temporary snapshots whose marker has no
    installation id). `left_alone` hears about every temporary snapshot that is not this
    installation's. `unobserved`: vCenters that could not be read now; what concerns them
    is left for a later run (not marked reconciled, not a failure).
    """

    journal: RepairJournal
    vcenters: Mapping[str, VCenterOps]
    targets: Mapping[str, ExportStore]
    clock: Callable[[], float]
    installation: str = ""
    left_alone: Callable[[str], None] = lambda _: None
    unobserved: Collection[str] = ()
    notes: list[str] = field(default_factory=list, init=False)
    failures: list[str] = field(default_factory=list, init=False)
    #: VMs re-read after their tasks ended, by (vCenter, instance uuid).
    _fresh: dict[tuple[str, str], VM | None] = field(default_factory=dict, init=False)

    def run(self, unfinished: Iterable[UnfinishedAction], inventories: Mapping[str, Iterable[VM]],
            shut_down: Iterable[UnfinishedAction] = ()) -> list[str]:
        """Every repair, tried even when one fails: `unfinished` actions (their runs were
        killed), then `shut_down` ones (failed or reconciled, their VM shut down by vmkeep
        and never seen back on), then the temporary snapshots of the VMs in `inventories`
        and of those re-read, then the partial exports of the targets that no writer may
        still be at work on (`PartialPoint.live`). Raises `RecoveryError` naming every
        failure when some failed."""
        for record in unfinished:
            if record.vcenter not in self.unobserved:  # else: once that vCenter answers
                self._attempt(f"action {record.id} of an interrupted run",
                              self.unfinished_action, record)
        for record in shut_down:
            if record.vcenter in self.vcenters and record.vcenter not in self.unobserved:
                self._attempt(f"power state of VM {record.vm_uuid}",
                              self.vm_left_powered_off, record)
        for name in sorted(self.vcenters):
            if name not in self.unobserved:
                for vm in self._vms_to_check(name, inventories.get(name, ())):
                    self._attempt(f"temporary snapshots of VM {vm.name!r} ({name})",
                                  self.temporary_snapshots, name, vm)
        for tname, store in sorted(self.targets.items()):
            for partial in store.partials():
                if partial.live:  # another process's export in a shared repository
                    continue
                self._attempt(f"partial export {partial.id} in target {tname!r}",
                              self.partial_export, tname, partial.id)
        if self.failures:
            raise RecoveryError(
                "recovery of an interrupted run failed (the next apply tries again): "
                + "; ".join(self.failures)
                + (f" (repaired meanwhile: {'; '.join(self.notes)})" if self.notes else "")
            )
        return self.notes

    # ---------------------------------------------------------------- the repairs

    def unfinished_action(self, record: UnfinishedAction) -> None:
        """An action without an outcome: the NFC lease it read through is aborted (first: it
        blocks power operations; one it asked for but never named is warned of), the tasks
        on its VM waited for, the VM it shut down powered back on; then it is marked
        reconciled. A VM found on keeps the intent: a guest shutdown the killed run asked
        for may still complete, and the next run looks again (as `vm_left_powered_off`)."""
        vc = self.vcenters.get(record.vcenter)
        if vc is not None:
            self.notes.extend(_abort_left_lease(record, vc))
            vm = self._settled_vm(record.vcenter, vc, record.vm_uuid)
            if record.details.get("nfcLeaseRequested") and not record.details.get("nfcLease"):
                log.warning("%s", _unnamed_lease(vc.name, vm.name if vm else record.vm_uuid))
            if record.details.get("poweredOffByUs"):
                if vm is not None and vm.power_state is not PowerState.ON:
                    vc.power_on(vm)
                    self._fresh.pop((record.vcenter, record.vm_uuid), None)
                    self.notes.append(f"powered VM {vm.name!r} back on (a crashed run had shut "
                                      "it down)")
                if vm is None or vm.power_state is not PowerState.ON:
                    self._mark_powered_on(record.id)
        self.journal.record_outcome(record.id, "reconciled", self.clock(),
                                    "reconciled after an interrupted run")

    def vm_left_powered_off(self, record: UnfinishedAction) -> None:
        """A VM vmkeep asked to shut down whose guest went down after the action gave up
        waiting: powered on once found off, and its intent settled."""
        vc = self.vcenters[record.vcenter]
        vm = self._settled_vm(record.vcenter, vc, record.vm_uuid)
        if vm is not None and vm.power_state is PowerState.OFF:
            vc.power_on(vm)
            self._fresh.pop((record.vcenter, record.vm_uuid), None)
            self.notes.append(f"powered VM {vm.name!r} back on (its guest finished a shutdown "
                              "vmkeep had asked for after the action gave up waiting)")
        self._mark_powered_on(record.id)

    def temporary_snapshots(self, vcenter: str, vm: VM) -> None:
        """This installation's temporary export snapshots of a VM, removed once no task
        runs on it (a removal may be running); the others' reported to `left_alone`."""
        ours = [s for s in _temporaries(vm) if _is_ours(s, self.installation,
                                                        self.journal.knows_point,
                                                        self.left_alone, vm, vcenter)]
        if not ours:
            return
        vc = self.vcenters[vcenter]
        current = self._settled_vm(vcenter, vc, vm.instance_uuid)
        present = {s.id for s in current.snapshots} if current is not None else set()
        for snap in ours:
            if current is not None and snap.id in present:
                vc.remove_snapshot(current, snap.id)
                self.notes.append(f"removed leftover export snapshot {snap.id} of VM "
                                  f"{vm.name!r} ({vcenter})")

    def partial_export(self, target: str, point_id: str) -> None:
        """An export that never completed, discarded from its target."""
        self.targets[target].discard_partial(point_id)
        self.notes.append(f"discarded partial export {point_id} in target {target!r}")

    # ---------------------------------------------------------------- helpers

    def _attempt(self, what: str, repair: Callable[..., None], *args: Any) -> None:
        try:
            repair(*args)
        except VmkeepError as exc:
            self.failures.append(f"{what}: {exc}")

    def _mark_powered_on(self, action_id: int) -> None:
        self.journal.update_details(action_id, {"poweredOffByUs": False})

    def _settled_vm(self, vcenter: str, vc: VCenterOps, uuid: str) -> VM | None:
        """The VM once no task runs on it (waited for once per recovery)."""
        if (vcenter, uuid) not in self._fresh:
            vm = vc.find_vm(uuid)
            if vm is not None:
                for task in vc.wait_for_tasks(vm):
                    self.notes.append(f"waited for {task} on VM {vm.name!r} ({vcenter}), "
                                      "still running from an interrupted run")
                vm = vc.find_vm(uuid)
            self._fresh[(vcenter, uuid)] = vm
        return self._fresh[(vcenter, uuid)]

    def _vms_to_check(self, vcenter: str, inventory: Iterable[VM]) -> list[VM]:
        """The VMs of a vCenter with temporary snapshots, as re-read when they were (a VM
        re-read may not be in the inventory)."""
        seen = {vm.instance_uuid: vm for vm in inventory}
        for (name, uuid), again in self._fresh.items():
            if name == vcenter and again is not None:
                seen[uuid] = again
        found = []
        for uuid in sorted(seen):
            vm = self._fresh.get((vcenter, uuid), seen[uuid])
            if vm is not None and _temporaries(vm):
                found.append(vm)
        return found


def _abort_left_lease(record: UnfinishedAction, vc: VCenterOps) -> list[str]:
    """Abort the NFC export lease an interrupted export was reading from (the journal's
    `nfcLease`), if it has not ended by itself."""
    lease = record.details.get("nfcLease")
    if not lease:
        return []
    if vc.abort_lease(str(lease)):
        return [f"aborted NFC export lease {lease} a crashed run left ({vc.name})"]
    return []


def _unnamed_lease(vcenter: str, vm: str) -> str:
    """Why a lease may be held that no run can abort: vSphere lists no leases by id."""
    return (f"a crashed run had asked {vcenter} for an NFC export lease of VM {vm!r} and "
            "died before it journaled the lease's id: if vCenter made that lease, no run can "
            "name it to abort it; vCenter ends it by itself after the lease's timeout (300 s "
            "by default), and until then it may refuse power operations on that VM")


def _temporaries(vm: VM) -> list[Any]:
    found = []
    for snap in vm.snapshots:
        marker = parse_marker(snap.name, snap.description)
        if marker is not None and marker.kind is MarkerKind.EXPORT_TEMP:
            found.append(snap)
    return found


def _owned(snap: Any, installation: str, knows_point: Callable[[str], bool]) -> bool:
    """Whether a temporary snapshot is this installation's: its marker names it, or has no
    installation id (older vmkeep) and the journal worked on its point."""
    marker = parse_marker(snap.name, snap.description)
    if marker is None:
        return False
    if marker.installation is not None:
        return bool(installation) and marker.installation == installation
    return knows_point(marker.point_id)


def _is_ours(snap: Any, installation: str, knows_point: Callable[[str], bool],
             left_alone: Callable[[str], None], vm: VM, vcenter: str) -> bool:
    if _owned(snap, installation, knows_point):
        return True
    marker = parse_marker(snap.name, snap.description)
    left_alone(_foreign_note(snap.id, vm.name, vcenter, marker.installation if marker else None))
    return False


def _foreign_note(snapshot_id: str, vm: str, vcenter: str, installation: str | None) -> str:
    owner = (f"installation {installation}" if installation
             else "an unknown installation (a marker without an installation id)")
    return (f"temporary export snapshot {snapshot_id} of VM {vm!r} ({vcenter}) belongs to "
            f"{owner}: left alone; that installation's next apply removes it")


def temporaries(state: ObservedState, installation: str | None,
                knows_point: Callable[[str], bool] = lambda _: False,
                ) -> tuple[list[str], list[str]]:
    """The temporary export snapshots in `state`, one line each: (this installation's, which
    its next apply removes; the others', which it never touches)."""
    ours: list[str] = []
    others: list[str] = []
    for vcenter, vms in sorted(state.vcenters.items()):
        for vm in vms:
            for snap in _temporaries(vm):
                if _owned(snap, installation or "", knows_point):
                    ours.append(f"temporary export snapshot {snap.id} of VM {vm.name!r} "
                                f"({vcenter}) is left; the next apply removes it")
                else:
                    _is_ours(snap, installation or "", knows_point, others.append, vm,
                             vcenter)
    return ours, others


class RecoveryJournal(RepairJournal, Protocol):
    """What `JournaledRecovery` needs of the state DB (see adapters.statedb)."""

    def unfinished_actions(self) -> Sequence[UnfinishedAction]: ...

    def failed_with_vm_shut_down(self) -> Sequence[UnfinishedAction]: ...

    def installation_id(self) -> str: ...

    def interrupted_runs(self) -> list[str]: ...

    def action_counts(self, run_id: str) -> dict[str, int]: ...

    def settle_interrupted_run(self, run_id: str, repaired_by: str) -> None: ...

    def begin_recovery(self, holder: str, now: float) -> int: ...

    def record_repair(self, recovery_id: int, note: str, now: float) -> None: ...

    def end_recovery(self, recovery_id: int, now: float, error: str | None = None) -> None: ...


@dataclass
class JournaledRecovery:
    """`Recovery` with its journal: the repairs (each also given to `say`, and journaled),
    the interrupted runs settled, a failure journaled before it is raised. Journal rows of
    `other_kinds` (e.g. a restore's, cleaned up by its own service) are left alone."""

    journal: RecoveryJournal
    vcenters: Mapping[str, VCenterOps]
    targets: Mapping[str, ExportStore]
    clock: Callable[[], float]
    say: Callable[[str], None] = lambda _: None
    other_kinds: Collection[str] = ()

    def run(self, holder: str, run_id: str, state: ObservedState) -> list[str]:
        """Recover as `holder` (the applier lease's holder) before run `run_id`, on the
        state observed: the repairs made."""
        journal, clock = self.journal, self.clock
        recovery = journal.begin_recovery(holder, clock())
        interrupted = journal.interrupted_runs()
        notes: list[str] = []

        def note(text: str) -> None:
            journal.record_repair(recovery, text, clock())
            self.say(text)
            notes.append(text)

        try:
            for run in interrupted:
                counts = journal.action_counts(run)
                open_actions = counts.get("started", 0)
                if open_actions:
                    note(f"run {run} was interrupted: {open_actions} action(s) without an outcome "
                         "checked for what they left")
                else:
                    note(f"run {run} was interrupted; no action of it was left without an outcome")
            repairs = Recovery(
                journal, self.vcenters, self.targets, clock,
                installation=journal.installation_id(),
                left_alone=lambda text: log.warning("%s", text),
                unobserved={*state.unobserved,
                            *(name for name in self.vcenters if name not in state.vcenters)},
            ).run(
                [a for a in journal.unfinished_actions() if a.kind not in self.other_kinds],
                state.vcenters,
                journal.failed_with_vm_shut_down(),
            )
            for text in repairs:
                note(text)
            for run in interrupted:
                if not journal.action_counts(run).get("started"):  # else: a vCenter was down
                    journal.settle_interrupted_run(run, run_id)
        except VmkeepError as exc:
            journal.end_recovery(recovery, clock(), str(exc))
            raise
        except Exception as exc:  # a bug: journaled so that status shows it, then surfaced
            journal.end_recovery(recovery, clock(), f"{type(exc).__name__}: {exc}")
            raise
        journal.end_recovery(recovery, clock())
        return notes

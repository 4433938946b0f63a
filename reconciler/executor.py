"""Carry out a plan: one action on one VM at a time, idempotent, journaled, crash-safe.

The unit of work is `ActionRunner.run(action)`: it takes everything it needs from its ports,
re-reads reality before it mutates anything (the goal may already hold: then it is a no-op),
writes its intent to the journal before it starts and its outcome after, and reports progress
through a callback. `execute` schedules those units on a thread pool, one VM at a time,
within the host config's limits; a future worker process can run the same unit.

Order per VM: snapshot.create, export.create, then deletions. A group's deletions run only
when the VM's creations in this run succeeded, so the last good point is never pruned after
a failed backup.

`reconciler.recovery` reconciles what an earlier, crashed run of this installation left: the
VM it powered off is powered on, its temporary export snapshots are removed, partial exports
are discarded. The temporary snapshots an export takes carry the runner's `installation` id
in their marker; the executor removes only those (`ActionRunner._temporary_snapshot`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC
from typing import Any

from reconciler.consistency import SnapshotRequest, SnapshotTaken, take_consistent_snapshot
from reconciler.errors import VmkeepError, backoff_delay
from reconciler.markers import Marker, MarkerKind, format_description, format_name, parse_marker
from reconciler.model import (
    VM,
    Action,
    ActionKind,
    ActionStatus,
    Disk,
    DiskTransport,
    Limits,
    Plan,
    Policy,
    PowerState,
    Snapshot,
)
from reconciler.ports import (
    DiskStream,
    ExportStore,
    HookRunner,
    Journal,
    Lent,
    VCenterOps,
    lend_from,
    read_into,
)

__all__ = [
    "ActionOutcome",
    "ActionRunner",
    "DiskExport",
    "Journal",
    "OutcomeStatus",
    "Progress",
    "RunReport",
    "execute",
]

log = logging.getLogger(__name__)


#: An action's outcome: done, noop, failed or skipped (the journal's `ActionStatus`).
OutcomeStatus = ActionStatus


@dataclass(frozen=True)
class ActionOutcome:
    action: Action
    status: str
    message: str = ""
    consistency: str = ""  # achieved: "crash", "quiesce" or "poweroff"
    #: Why the achieved consistency is not the one the policy asked for (a fallback), or "".
    consistency_note: str = ""
    bytes_read: int = 0
    bytes_stored: int = 0
    seconds: float = 0.0
    started: float = 0.0  # clock time the action started
    #: For exports: when moving disk data began (clock time) and how long it took.
    transfer_started: float = 0.0
    transfer_seconds: float = 0.0
    #: For exports: per disk, how its data was read (`DiskExport`).
    disks: tuple[DiskExport, ...] = ()

    @property
    def transport(self) -> str:
        """"http", "nfc" or "http+nfc" for an export; "" otherwise."""
        return "+".join(sorted({d.transport.kind for d in self.disks if d.transport}))


@dataclass(frozen=True)
class DiskExport:
    """How one disk of an export was read: the transport and why, whether changed extents
    were read alone ("used"), known but not usable on this transport ("unavailable": the
    whole disk was read and deduplication kept only the changed chunks) or not known
    ("none"), and the bytes read."""

    disk: str
    transport: DiskTransport | None
    changed_extents: str
    bytes_read: int

    def describe(self) -> str:
        text = f"{self.disk} via {self.transport.describe()}" if self.transport else self.disk
        if self.changed_extents == "unavailable":
            text += (f"; the changed-extent shortcut is not available on NFC: read all "
                     f"{self.bytes_read} bytes, stored only the changed chunks")
        return text


@dataclass(frozen=True)
class RunReport:
    run_id: str
    outcomes: tuple[ActionOutcome, ...]
    recovered: tuple[str, ...] = ()

    @property
    def failed(self) -> tuple[ActionOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status == OutcomeStatus.FAILED)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for outcome in self.outcomes:
            counts[outcome.status] += 1
        return dict(counts)


@dataclass(frozen=True)
class Progress:
    """A progress report: `phase` is "start", "bytes" or "end"."""

    action: Action
    phase: str
    disk: str = ""
    done: int = 0
    total: int = 0
    message: str = ""


@dataclass(frozen=True)
class _ExportSource:
    """The snapshot an export reads from (`ActionRunner._temporary_snapshot`): the VM as
    seen once leftovers were removed, the snapshot, its consistency and why it is not the
    one asked for ("" when it is)."""

    vm: VM
    snapshot_id: str
    consistency: str
    note: str


@dataclass
class ActionRunner:
    """Everything one action needs, as ports; `run` is the idempotent unit of work."""

    run_id: str
    policies: Mapping[str, Policy]
    vcenters: Mapping[str, VCenterOps]
    targets: Mapping[str, ExportStore]
    hooks: HookRunner
    journal: Journal
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    policy_revision: str | None = None
    progress: Callable[[Progress], None] = lambda _p: None
    #: Tries per action when it fails with a transient error (each try re-reads reality).
    attempts: int = 3
    retry_delay: float = 2.0
    #: This installation's id (the state DB's), written into temporary snapshot markers.
    installation: str = ""
    #: The proxy (worker identity) running the action, recorded in export manifests.
    proxy: str | None = None
    #: A retry of an export cut off elsewhere (engine): continue from its temporary snapshot
    #: and the repository's checkpoint of the point instead of starting over.
    resume: bool = False
    #: Actions whose VM vmkeep shut down and has not seen back on yet.
    _powered_off: set[int] = field(default_factory=set, init=False, repr=False)

    def run(self, action: Action) -> ActionOutcome:
        started = self.clock()
        self.progress(Progress(action, "start"))
        action_id = self.journal.record_intent(
            self.run_id,
            kind=action.kind.value,
            point_id=action.point_id,
            vm_uuid=action.vm.instance_uuid,
            vm_name=action.vm.name,
            vcenter=action.vcenter,
            now=started,
            details={"target": action.target, "snapshotId": action.snapshot_id},
        )
        try:
            outcome = self._dispatch_with_retries(action, action_id)
        except VmkeepError as exc:
            outcome = ActionOutcome(action, OutcomeStatus.FAILED, str(exc))
        except Exception as exc:  # a bug or an unexpected library error: record it, go on
            outcome = ActionOutcome(action, OutcomeStatus.FAILED, f"{type(exc).__name__}: {exc}")
        outcome = replace(outcome, started=started, seconds=self.clock() - started)
        self.journal.record_outcome(
            action_id,
            outcome.status,
            self.clock(),
            outcome.message if outcome.status == OutcomeStatus.FAILED else None,
        )
        self.progress(Progress(action, "end", message=outcome.status))
        return outcome

    # ------------------------------------------------------------------ dispatch

    def _dispatch_with_retries(self, action: Action, action_id: int) -> ActionOutcome:
        try:
            for attempt in range(1, self.attempts + 1):
                try:
                    if attempt > 1:  # the failed try's request may still be carried out
                        self._wait_for_tasks(action)
                    # A try that shut the VM down may have failed to power it back on: do
                    # that first, or this try would take the VM for one that was off.
                    self._power_back_on(action, action_id)
                    return self._dispatch(action, action_id)
                except VmkeepError as exc:
                    if exc.retry_after is None or attempt == self.attempts:
                        raise
                    self.progress(Progress(action, "retry", message=str(exc)))
                    self.sleep(backoff_delay(attempt, self.retry_delay, hint=exc.retry_after))
            raise AssertionError("unreachable")
        except BaseException:
            with contextlib.suppress(VmkeepError):  # the action's own error stays in front
                self._power_back_on(action, action_id)
            raise

    def _wait_for_tasks(self, action: Action) -> None:
        """Wait for the VM's running tasks: a request whose answer was lost (a snapshot
        being created) lands before the retry re-reads the VM, so it is not done twice."""
        vc = self.vcenters[action.vcenter]
        vm = vc.find_vm(action.vm.instance_uuid)
        if vm is not None:
            vc.wait_for_tasks(vm)

    def _power_back_on(self, action: Action, action_id: int) -> None:
        """Power on the VM of an action that shut it down and did not see it back on.

        A VM found on is left so, and the journal keeps the intent: its guest may still be
        going down from a shutdown that timed out, and the next run's repair looks again."""
        if action_id not in self._powered_off:
            return
        vc = self.vcenters[action.vcenter]
        vm = vc.find_vm(action.vm.instance_uuid)
        self._powered_off.discard(action_id)
        if vm is not None and vm.power_state is not PowerState.ON:
            vc.power_on(vm)
            self.journal.update_details(action_id, {"poweredOffByUs": False})

    def _dispatch(self, action: Action, action_id: int) -> ActionOutcome:
        if action.kind is ActionKind.SNAPSHOT_CREATE:
            return self._snapshot_create(action, action_id)
        if action.kind is ActionKind.EXPORT_CREATE:
            return self._export_create(action, action_id)
        if action.kind is ActionKind.SNAPSHOT_DELETE:
            return self._snapshot_delete(action)
        return self._export_delete(action)

    def _vm(self, action: Action) -> tuple[VCenterOps, VM]:
        vc = self.vcenters[action.vcenter]
        vm = vc.find_vm(action.vm.instance_uuid)
        if vm is None:
            raise VmkeepError(
                f"VM {action.vm.name!r} ({action.vm.instance_uuid}) is no longer in vCenter "
                f"{action.vcenter!r}"
            )
        return vc, vm

    def _policy(self, action: Action) -> Policy:
        try:
            return self.policies[action.policy]
        except KeyError:
            raise VmkeepError(f"policy {action.policy!r} is not in this revision") from None

    def _marker(self, action: Action, kind: MarkerKind, consistency: str) -> SnapshotRequest:
        marker = Marker(action.policy, action.point_id, action.slot.astimezone(UTC), kind,
                        installation=(self.installation or None)
                        if kind is MarkerKind.EXPORT_TEMP else None)

        def describe(achieved: str) -> str:
            base = json.loads(format_description(marker))
            base["consistency"] = achieved
            return json.dumps(base, sort_keys=True, separators=(",", ":"))

        return SnapshotRequest(format_name(marker), describe)

    def _snapshot(self, vc: VCenterOps, vm: VM, policy: Policy, action: Action,
                  action_id: int, kind: MarkerKind) -> SnapshotTaken:
        def note_power_off(off: bool) -> None:
            if off:
                self._powered_off.add(action_id)
            else:
                self._powered_off.discard(action_id)
            self.journal.update_details(action_id, {"poweredOffByUs": off})

        taken = take_consistent_snapshot(
            vc,
            vm,
            policy,
            self._marker(action, kind, policy.consistency.mode.value),
            point_id=action.point_id,
            hooks=self.hooks,
            note_power_off=note_power_off,
            sleep=self.sleep,
            clock=self.clock,
        )
        self._note_consistency(action_id, taken.consistency, taken.note)
        return taken

    def _note_consistency(self, action_id: int, achieved: str, note: str) -> None:
        """The journal row says which consistency was achieved, and why when it fell back."""
        self.journal.update_details(action_id, {"consistency": achieved,
                                                "consistencyNote": note})

    # ------------------------------------------------------------------ snapshot.create

    def _snapshot_create(self, action: Action, action_id: int) -> ActionOutcome:
        vc, vm = self._vm(action)
        existing = _marked_snapshot(vm, action.point_id, MarkerKind.POINT)
        if existing is not None:
            return ActionOutcome(action, OutcomeStatus.NOOP, f"snapshot {existing.id} exists")
        policy = self._policy(action)
        taken = self._snapshot(vc, vm, policy, action, action_id, MarkerKind.POINT)
        self.journal.update_details(action_id, {"snapshotId": taken.snapshot_id})
        message = f"snapshot {taken.snapshot_id}" + (f"; {taken.note}" if taken.note else "")
        return ActionOutcome(action, OutcomeStatus.DONE, message, taken.consistency,
                             consistency_note=taken.note)

    # ------------------------------------------------------------------ export.create

    def _export_create(self, action: Action, action_id: int) -> ActionOutcome:
        store = self._store(action)
        if any(p.id == action.point_id and p.complete for p in store.points()):
            # an earlier try may have committed and then failed to remove its snapshot
            vc = self.vcenters[action.vcenter]
            current = vc.find_vm(action.vm.instance_uuid)
            if current is not None:
                self._remove_temporary(vc, current, action)
            return ActionOutcome(action, OutcomeStatus.NOOP, "export exists")
        vc, vm = self._vm(action)
        with self._temporary_snapshot(vc, vm, self._policy(action), action, action_id) as source:
            transfer_started = self.clock()
            try:
                read, stored, exported = self._copy(vc, source.vm, store, action,
                                                    source.snapshot_id, source.consistency,
                                                    action_id)
            except VmkeepError:
                if not any(p.id == action.point_id and p.complete for p in store.points()):
                    raise
                # another try of this action (cut off, then back) committed it meanwhile
                return ActionOutcome(action, OutcomeStatus.NOOP, "export committed by "
                                     "another try of this action", source.consistency)
            transfer_seconds = self.clock() - transfer_started
        how = "; ".join(d.describe() for d in exported if d.transport)
        note = source.note
        return ActionOutcome(
            action,
            OutcomeStatus.DONE,
            f"exported {read} bytes read, {stored} bytes stored"
            + "".join(f"; {text}" for text in (how, note) if text),
            source.consistency,
            consistency_note=note,
            bytes_read=read,
            bytes_stored=stored,
            transfer_started=transfer_started,
            transfer_seconds=transfer_seconds,
            disks=tuple(exported),
        )

    @contextlib.contextmanager
    def _temporary_snapshot(self, vc: VCenterOps, vm: VM, policy: Policy, action: Action,
                            action_id: int) -> Iterator[_ExportSource]:
        """The snapshot an export reads from, for the length of the `with` block.

        The slot's snapshot point when there is one (then nothing is taken or removed).
        Otherwise a temporary snapshot marked with this installation's id: the one a cut-off
        try left when resuming, else a new one. Its id is journaled (`tempSnapshotId`) as
        soon as it exists, and it is removed when the block ends, however it ends; the
        journal entry is cleared once it is gone (when the removal fails, the entry stays
        and the error goes up). A leftover of an earlier try that is not resumed is removed
        first, and so is the one being taken when taking it fails part-way.
        """
        kept = _marked_snapshot(vm, action.point_id, MarkerKind.EXPORT_TEMP,
                                self.installation) if self.resume else None
        if kept is None:
            vm = self._remove_temporary(vc, vm, action)  # left by an earlier try of this action
        shared = _marked_snapshot(vm, action.point_id, MarkerKind.POINT)
        if shared is not None:
            consistency, note = _consistency_of(shared), ""
            asked = policy.consistency.mode.value
            if consistency and consistency != asked:
                note = (f"read from the slot's snapshot point {shared.id}, taken {consistency} "
                        f"(the policy asks for {asked})")
            self._note_consistency(action_id, consistency, note)
            yield _ExportSource(vm, shared.id, consistency, note)
            return
        if kept is not None:  # the cut-off try's snapshot: its checkpoint is of this one
            source = _ExportSource(vm, kept.id, _consistency_of(kept), "")
        else:
            try:
                taken = self._snapshot(vc, vm, policy, action, action_id,
                                       MarkerKind.EXPORT_TEMP)
            except BaseException:
                # e.g. a post hook failed after the snapshot, or its answer was lost
                with contextlib.suppress(VmkeepError):  # the first error stays in front
                    current = vc.find_vm(action.vm.instance_uuid)
                    if current is not None:
                        self._remove_temporary(vc, current, action)
                raise
            source = _ExportSource(vm, taken.snapshot_id, taken.consistency, taken.note)
        self.journal.update_details(action_id, {"tempSnapshotId": source.snapshot_id})
        try:
            yield source
        finally:
            vc.remove_snapshot(vm, source.snapshot_id)
            self.journal.update_details(action_id, {"tempSnapshotId": None})

    def _remove_temporary(self, vc: VCenterOps, vm: VM, action: Action) -> VM:
        """Remove this point's temporary export snapshot when one is left (none is in use:
        the applier lease is held and this is the action that takes it); the VM as now."""
        leftover = _marked_snapshot(vm, action.point_id, MarkerKind.EXPORT_TEMP,
                                    self.installation)
        if leftover is None:
            return vm
        vc.remove_snapshot(vm, leftover.id)
        return replace(vm, snapshots=tuple(s for s in vm.snapshots if s.id != leftover.id))

    @contextlib.contextmanager
    def _open_disk(self, vc: VCenterOps, vm: VM, snapshot_id: str, disk: Disk,
                   action_id: int) -> Iterator[DiskStream]:
        """One disk of the snapshot, open for the length of the `with` block.

        An NFC export lease it reads through is journaled (`nfcLease`) as soon as it is
        granted, so that recovery aborts it if this run dies, and that one is asked for
        (`nfcLeaseRequested`) just before, so that recovery can say why a lease it cannot
        name may still be held. When the block fails the stream is failed (the lease is
        aborted, not completed); it is always closed, and the lease's journal entry
        cleared."""

        def note_lease(lease_id: str) -> None:
            if lease_id:
                self.journal.update_details(action_id,
                                            {"nfcLease": lease_id, "nfcLeaseRequested": None})
            else:
                self.journal.update_details(action_id, {"nfcLeaseRequested": True})

        opened = vc.open_disk(vm, snapshot_id, disk, on_lease=note_lease)
        try:
            yield opened
        except BaseException:
            fail = getattr(opened, "fail", None)
            if fail is not None:
                fail()
            raise
        finally:
            opened.close()
            if getattr(opened, "lease_id", ""):
                self.journal.update_details(action_id, {"nfcLease": None})

    def _store(self, action: Action) -> ExportStore:
        if not action.target or action.target not in self.targets:
            raise VmkeepError(f"export target {action.target!r} is not in the host config")
        return self.targets[action.target]

    def _copy(self, vc: VCenterOps, vm: VM, store: ExportStore, action: Action,
              snapshot_id: str, consistency: str,
              action_id: int) -> tuple[int, int, list[DiskExport]]:
        disks = vc.snapshot_disks(vm, snapshot_id)
        previous = _previous_point(store, action)
        previous_meta = store.manifest(previous).metadata if previous else {}
        previous_ids: Mapping[str, str] = previous_meta.get("changeIds", {}) or {}
        change_ids = {f"disk-{d.key}": d.change_id for d in disks if d.change_id}
        writer = store.begin_point(
            action.point_id, action.policy, vm.ref, action.slot,
            changeIds=change_ids, snapshotId=snapshot_id, vcenter=action.vcenter,
            **({"proxy": self.proxy} if self.proxy else {}),
            **({"resume": True} if self.resume else {}),
        )
        read = stored = 0
        exported: list[DiskExport] = []

        try:
            for disk in disks:
                name = f"disk-{disk.key}"
                with self._open_disk(vc, vm, snapshot_id, disk, action_id) as opened:
                    transport: DiskTransport | None = getattr(opened, "transport", None)
                    extents = None
                    shortcut = "none"
                    since = previous_ids.get(name)
                    if previous and since and disk.change_id:
                        if transport is None or transport.ranged:
                            extents = vc.changed_extents(vm, snapshot_id, disk, since)
                            shortcut = "none" if extents is None else "used"
                        else:  # one sequential stream: read it all, dedup keeps what changed
                            shortcut = "unavailable"
                    to_read = disk.capacity_bytes if extents is None else min(
                        disk.capacity_bytes, sum(length for _, length in extents))
                    stream = _Counting(opened, self.progress, action, name, to_read)
                    result = writer.add_disk(
                        name,
                        stream,
                        size=disk.capacity_bytes,
                        changed_extents=extents,
                        previous=(previous, name) if previous and extents is not None else None,
                    )
                disk_read = int(getattr(result, "read_bytes", stream.count))
                read += disk_read
                stored += int(getattr(result, "stored_bytes", 0))
                exported.append(DiskExport(name, transport, shortcut, disk_read))
            for fname, data in sorted(vc.vm_files(vm).items()):
                writer.add_file(fname, data)
            writer.add_file("vm.json", _describe_vm(vm, disks))
            writer.commit(consistency, policy_revision=self.policy_revision)
        except BaseException:
            writer.abort()
            raise
        return read, stored, exported

    # ------------------------------------------------------------------ deletions

    def _snapshot_delete(self, action: Action) -> ActionOutcome:
        vc = self.vcenters[action.vcenter]
        vm = vc.find_vm(action.vm.instance_uuid)
        if vm is None:
            return ActionOutcome(action, OutcomeStatus.NOOP, "VM is gone")
        snap = next((s for s in vm.snapshots if s.id == action.snapshot_id), None)
        if snap is None:
            return ActionOutcome(action, OutcomeStatus.NOOP, "snapshot already gone")
        marker = parse_marker(snap.name, snap.description)
        if marker is None or marker.point_id != action.point_id:
            raise VmkeepError(
                f"refusing to delete snapshot {snap.id} ({snap.name!r}) of VM {vm.name!r}: "
                "it does not carry vmkeep's marker for this restore point"
            )
        if (marker.kind is MarkerKind.EXPORT_TEMP and marker.installation is not None
                and marker.installation != self.installation):
            raise VmkeepError(
                f"refusing to delete snapshot {snap.id} ({snap.name!r}) of VM {vm.name!r}: "
                f"it is a temporary snapshot of installation {marker.installation}, which "
                "removes it itself"
            )
        vc.remove_snapshot(vm, snap.id)
        return ActionOutcome(action, OutcomeStatus.DONE, f"removed snapshot {snap.id}")

    def _export_delete(self, action: Action) -> ActionOutcome:
        store = self._store(action)
        if any(p.id == action.point_id for p in store.points()):
            store.delete_point(action.point_id)
            return ActionOutcome(action, OutcomeStatus.DONE, "manifest removed")
        if any(p.id == action.point_id for p in store.partials()):
            store.discard_partial(action.point_id)  # an export that never completed
            return ActionOutcome(action, OutcomeStatus.DONE, "partial export discarded")
        return ActionOutcome(action, OutcomeStatus.NOOP, "export already gone")


# ---------------------------------------------------------------------- scheduling


def execute(
    plan: Plan,
    runner: ActionRunner,
    limits: Limits,
    *,
    parallel: int | None = None,
    hosts: Mapping[str, str] | None = None,
    datastores: Mapping[str, tuple[str, ...]] | None = None,
) -> RunReport:
    """Run every action of `plan`: VMs in parallel, one action per VM at a time.

    `hosts` maps instance UUIDs to ESXi hosts for the per-host snapshot limit, `datastores`
    to the datastores of their disks for the per-datastore export limit (when set).
    """
    by_vm: dict[tuple[str, str], list[Action]] = defaultdict(list)
    for action in plan.actions:
        by_vm[(action.vcenter, action.vm.instance_uuid)].append(action)
    exports = threading.BoundedSemaphore(max(1, limits.concurrent_exports))
    per_host = _Slots(max(1, limits.concurrent_snapshots_per_host))
    per_store = _Slots(limits.concurrent_exports_per_datastore)
    host_of, stores_of = hosts or {}, datastores or {}

    def one_vm(actions: list[Action]) -> list[ActionOutcome]:
        outcomes: list[ActionOutcome] = []
        failed_policies: set[str] = set()
        for action in sorted(actions, key=_order):
            if action.kind.is_delete and action.policy in failed_policies:
                outcomes.append(ActionOutcome(
                    action, OutcomeStatus.SKIPPED,
                    "not pruned: this run's backup of the VM under this policy failed",
                ))
                continue
            semaphore = exports if action.kind is ActionKind.EXPORT_CREATE else None
            uuid = action.vm.instance_uuid
            with per_host.held([host_of.get(uuid, "")]):
                if semaphore is None:
                    outcome = runner.run(action)
                else:
                    with semaphore, per_store.held(stores_of.get(uuid, ())):
                        outcome = runner.run(action)
            if outcome.status == OutcomeStatus.FAILED and not action.kind.is_delete:
                failed_policies.add(action.policy)
            outcomes.append(outcome)
        return outcomes

    workers = parallel or max(2, limits.concurrent_exports * 2)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="vmkeep-vm") as pool:
        results = list(pool.map(one_vm, by_vm.values()))
    outcomes = tuple(o for vm_outcomes in results for o in vm_outcomes)
    if any(o.action.kind is ActionKind.EXPORT_DELETE and o.status == OutcomeStatus.DONE
           for o in outcomes):
        for name in sorted({o.action.target or "" for o in outcomes
                            if o.action.kind is ActionKind.EXPORT_DELETE}):
            if name in runner.targets:
                try:
                    runner.targets[name].gc()
                except VmkeepError as exc:  # the actions are done; the garbage waits
                    log.warning("target %r: garbage not collected after the run: %s", name, exc)
    return RunReport(runner.run_id, outcomes)


class _Slots:
    """`limit` slots per key (an ESXi host: `limits.concurrentSnapshotsPerHost`; a datastore:
    `limits.concurrentExportsPerDatastore`) in the thread pool. An action holds one slot of
    each of its keys, taken in name order (no two actions wait on each other crosswise); a
    limit of 0 holds nothing."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._guard = threading.Lock()

    def held(self, keys: Iterable[str]) -> contextlib.ExitStack:
        """Take a slot of each key now; leaving the returned stack gives them back."""
        names = sorted(set(keys)) if self._limit > 0 else []
        with self._guard:
            slots = [self._slots.setdefault(n, threading.BoundedSemaphore(self._limit))
                     for n in names]
        stack = contextlib.ExitStack()
        for slot in slots:
            stack.enter_context(slot)
        return stack


def _order(action: Action) -> tuple[int, str]:
    ranks = {
        ActionKind.SNAPSHOT_CREATE: 0,
        ActionKind.EXPORT_CREATE: 1,
        ActionKind.SNAPSHOT_DELETE: 2,
        ActionKind.EXPORT_DELETE: 3,
    }
    return ranks[action.kind], action.point_id


# ---------------------------------------------------------------------- helpers


def _marked_snapshot(vm: VM, point_id: str, kind: MarkerKind,
                     installation: str | None = None) -> Snapshot | None:
    """The VM's snapshot with vmkeep's marker of `kind` for the point; with `installation`,
    only one that installation made."""
    for snap in vm.snapshots:
        marker = parse_marker(snap.name, snap.description)
        if marker is not None and marker.point_id == point_id and marker.kind is kind and (
                installation is None or (marker.installation or "") == installation):
            return snap
    return None


def _consistency_of(snap: Snapshot) -> str:
    try:
        value = json.loads(snap.description).get("consistency", "")
    except (ValueError, AttributeError):
        return ""
    return str(value)


def _previous_point(store: ExportStore, action: Action) -> str | None:
    """The newest complete point of the same policy and VM older than this slot."""
    candidates = [
        p for p in store.points()
        if p.complete and p.policy == action.policy
        and p.vm.instance_uuid == action.vm.instance_uuid and p.slot < action.slot
    ]
    return max(candidates, key=lambda p: p.slot).id if candidates else None


def _describe_vm(vm: VM, disks: Iterable[Any]) -> bytes:
    body = {
        "name": vm.name,
        "instanceUuid": vm.instance_uuid,
        "biosUuid": vm.bios_uuid,
        "vcenter": vm.vcenter,
        "folder": vm.folder,
        "powerState": vm.power_state.value,
        "disks": [
            {"key": d.key, "label": d.label, "file": d.file, "capacityBytes": d.capacity_bytes}
            for d in disks
        ],
    }
    return json.dumps(body, indent=2, sort_keys=True).encode()


class _Counting:
    """Wraps a disk stream to count bytes and report progress about every 8 MiB (the display
    decides how often to show it); `total` is what is expected to be read."""

    STEP = 8 << 20

    def __init__(self, inner: DiskStream, progress: Callable[[Progress], None], action: Action,
                 disk: str, total: int) -> None:
        self._inner = inner
        self._progress = progress
        self._action = action
        self._disk = disk
        self._total = total
        self.count = 0
        self._next = self.STEP

    def read(self, size: int = -1, /) -> bytes:
        data = self._inner.read(size)
        self._counted(len(data))
        return data

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        n = read_into(self._inner, buffer)
        self._counted(n)
        return n

    def lend(self, n: int) -> Lent | None:
        lent = lend_from(self._inner, n)
        if lent is not None:
            self._counted(lent.length)
        return lent

    def _counted(self, n: int) -> None:
        self.count += n
        if self.count >= self._next or not n or self.count == self._total:
            self._next = self.count + self.STEP
            self._progress(Progress(self._action, "bytes", self._disk,
                                    min(self.count, self._total), self._total))

    def seek(self, offset: int, whence: int = 0, /) -> int:
        return self._inner.seek(offset, whence)

    def close(self) -> None:
        self._inner.close()

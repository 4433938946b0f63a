"""One reconcile: observe, recover, plan, guard, execute, journal.

    Reconciler(ports...).run(ReconcileRequest(policy_set, now, ...)) -> ReconcileResult

The heart of `vmkeep apply` and of every tick of `vmkeep run`, built from ports so it can
run against the real adapters (`wiring.reconciler`) or against fakes. The caller has
checked every input (host config, flags, policies, the plan file, passwords) before it
builds a request: nothing here reads user input. In order:

1. the state DB (journal) is opened and the applier lease taken (`reconciler.lease`; a
   dead holder's lease is taken over), renewed in the background while the run goes on;
2. the vCenters and the export targets are opened, and the state observed; a vCenter that
   cannot be observed is recorded as such and left alone (per-vCenter isolation);
3. what interrupted runs left is repaired (`vcenter_restore.clean_leftovers`, then
   `recovery.JournaledRecovery`), and the state observed again when anything was;
4. the plan is made (or a saved plan checked for staleness and re-made with today's
   limits); a blocked plan stops here, before any action;
5. the approval callback is asked (it raises to refuse), the run is journaled and executed;
   its report is returned with the repairs.

What a person would see is given to the event sink (`ReconcileEvents`); the service
prints nothing itself.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from reconciler import observed, planner
from reconciler.collector import collector_paused
from reconciler.errors import BlockedError, StalePlanError, UsageError
from reconciler.executor import ActionRunner, Progress, RunReport, execute
from reconciler.lease import LEASE, LeaseKeeper, holder_is_dead, new_holder, take_lease
from reconciler.model import (
    ActionKind,
    HostConfig,
    Hygiene,
    Limits,
    ObservedState,
    Plan,
    PolicySet,
)
from reconciler.ports import ExportStore, HookRunner, Journal, RestoreTarget, VCenterOps
from reconciler.recovery import JournaledRecovery, RecoveryJournal
from reconciler.vcenter_restore import JOURNAL_KIND as RESTORE_KIND
from reconciler.vcenter_restore import Journal as RestoreJournal
from reconciler.vcenter_restore import clean_leftovers

__all__ = [
    "EXIT_PARTIAL", "ReconcileEvents", "ReconcileJournal", "ReconcileRequest",
    "ReconcileResult", "Reconciler", "VCenters", "check_overrides", "new_run_id",
]

#: Exit code when some actions failed (the others completed), or deletions were held back,
#: or a vCenter could not be observed.
EXIT_PARTIAL = 3


@dataclass(frozen=True)
class ReconcileRequest:
    """What to reconcile: the validated policy set, as of `now`; optionally a saved plan
    to carry out instead of a fresh one, a deletion budget instead of the limits', and how
    many VMs to work on at once (None: from the limits)."""

    policy_set: PolicySet
    now: datetime
    saved_plan: Plan | None = None
    max_deletes: int | None = None
    parallel: int | None = None


@dataclass(frozen=True)
class ReconcileResult:
    """What one reconcile did: its exit code, the plan it carried out (None when it stopped
    before planning) and the run's report (None when there was nothing to do)."""

    code: int
    revision: str | None = None
    plan: Plan | None = None
    report: RunReport | None = None


class ReconcileJournal(RecoveryJournal, RestoreJournal, Journal, Protocol):
    """The state DB as one reconcile uses it (adapters.statedb.StateDB): the lease, the
    runs, the executor's journal and what recovery reads and writes."""

    def acquire_lease(self, name: str, holder: str, now: float, ttl: float, *,
                      take_over: str | None = None) -> None: ...

    def release_lease(self, name: str, holder: str) -> None: ...

    def start_run(self, run_id: str, holder: str, now: float,
                  policy_revision: str | None = None) -> None: ...

    def finish_run(self, run_id: str, now: float, summary: Mapping[str, Any]) -> None: ...

    def installation_id(self) -> str: ...


class VCenters(Protocol):
    """The open vCenter sessions of one reconcile (adapters.vsphere.VCenterPool, wrapped by
    wiring)."""

    def ops(self) -> Mapping[str, VCenterOps]: ...

    def prepare_exports(self, exports: Mapping[str, int]) -> None:
        """Exports about to run at once, at most, per vCenter name: the adapter may get ready
        for them now (start its disk reader processes) while the first VMs are looked up
        and snapshotted."""
        ...

    def restore_target(self, name: str) -> RestoreTarget:
        """The restore side of vCenter `name`; KeyError when it is not configured."""
        ...


class ReconcileEvents(Protocol):
    """What a reconcile tells the person (or log) watching it."""

    def lease_taken_over(self, holder: str) -> None: ...

    def repaired(self, note: str) -> None: ...

    def planned(self, plan: Plan) -> None: ...

    def nothing_to_do(self, message: str, plan: Plan | None, repaired: list[str]) -> None: ...

    def progress(self) -> AbstractContextManager[Callable[[Progress], None]]: ...

    def finished(self, report: RunReport, plan: Plan) -> None: ...


def check_overrides(config: HostConfig, max_deletes: int | None, parallel: int | None) -> None:
    """The request's overrides and the host config's targets, checked before anything is
    opened (DESIGN rule 8)."""
    if max_deletes is not None and max_deletes < 0:
        raise UsageError("--max-deletes must be 0 or more")
    if parallel is not None and parallel < 0:
        raise UsageError("--parallel must be 0 (the default) or more")
    for name, target in sorted(config.targets.items()):
        if target.type != "directory":
            raise UsageError(f"target {name!r}: type {target.type!r} is not supported")


def new_run_id() -> str:
    return f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"


@dataclass
class Reconciler:
    """One reconcile, from ports; see the module documentation.

    The `open_*` callables are called in this order, each inside the previous: the journal
    (then the lease is taken), the vCenters, the targets. `approve` raises to refuse the
    plan. `limits` are the host config's; a request's `max_deletes` overrides the deletion
    budget for planning only.
    """

    observe: Callable[[datetime], ObservedState]
    open_journal: Callable[[], AbstractContextManager[ReconcileJournal]]
    open_vcenters: Callable[[], AbstractContextManager[VCenters]]
    open_targets: Callable[[], AbstractContextManager[Mapping[str, ExportStore]]]
    hooks: HookRunner
    limits: Limits
    transports: Mapping[str, str]
    approve: Callable[[Plan], None]
    events: ReconcileEvents
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    is_dead: Callable[[str], bool] = holder_is_dead
    run_id: Callable[[], str] = new_run_id
    #: thresholds of the snapshot hygiene findings (host config `hygiene`)
    hygiene: Hygiene = field(default_factory=Hygiene)

    def run(self, request: ReconcileRequest) -> ReconcileResult:
        policy_set, now = request.policy_set, request.now
        limits = self.limits if request.max_deletes is None else replace(
            self.limits, max_deletes_per_run=request.max_deletes)
        run_id = self.run_id()
        holder = new_holder(run_id)
        with ExitStack() as stack:
            db = stack.enter_context(self.open_journal())
            take_lease(db, holder, on_take_over=self.events.lease_taken_over,
                       is_dead=self.is_dead, clock=self.clock)
            stack.callback(db.release_lease, LEASE, holder)
            stack.enter_context(LeaseKeeper(db, holder, self.clock))
            vcenters = stack.enter_context(self.open_vcenters())
            targets = stack.enter_context(self.open_targets())
            state = self.observe(now)
            notes = self._recover(db, holder, run_id, vcenters, state, targets)
            if notes:
                state = self.observe(now)
            plan = self._the_plan(request.saved_plan, policy_set, state, limits, now)
            self.events.planned(plan)
            _guard(plan)
            if not plan.actions:
                if plan.held:
                    self.events.nothing_to_do(
                        "Nothing to apply: every change is a deletion held back.", plan, notes)
                elif plan.unobserved:
                    self.events.nothing_to_do(
                        "No changes for the vCenters that could be observed.", plan, notes)
                else:
                    self.events.nothing_to_do(
                        "No changes: reality already matches the policies.", None, notes)
                code = EXIT_PARTIAL if plan.held or plan.unobserved else 0
                return ReconcileResult(code, policy_set.revision, plan)
            self.approve(plan)
            vcenters.prepare_exports(_exports_at_once(plan, self.limits))
            progress = stack.enter_context(self.events.progress())
            db.start_run(run_id, holder, self.clock(), policy_set.revision)
            runner = ActionRunner(
                run_id=run_id,
                policies=policy_set.by_name(),
                vcenters=vcenters.ops(),
                targets=targets,
                hooks=self.hooks,
                journal=db,
                clock=self.clock,
                sleep=self.sleep,
                policy_revision=policy_set.revision,
                progress=progress,
                installation=db.installation_id(),
            )
            hosts = {vm.instance_uuid: f"{vm.vcenter}/{vm.host}"  # a host is its vCenter's
                     for vms in state.vcenters.values() for vm in vms}
            stores = {vm.instance_uuid: tuple(f"{vm.vcenter}/{d}" for d in vm.datastores)
                      for vms in state.vcenters.values() for vm in vms}
            report = execute(plan, runner, self.limits, parallel=request.parallel, hosts=hosts,
                             datastores=stores)
            report = RunReport(report.run_id, report.outcomes, tuple(notes))
            db.finish_run(run_id, self.clock(), report.counts())
            self.events.finished(report, plan)
            attention = report.failed or plan.held or plan.unobserved
            return ReconcileResult(EXIT_PARTIAL if attention else 0, policy_set.revision, plan,
                                   report)
        raise AssertionError("unreachable")

    def _recover(self, db: ReconcileJournal, holder: str, run_id: str, vcenters: VCenters,
                 state: ObservedState, targets: Mapping[str, ExportStore]) -> list[str]:
        # The journal's records of a vCenter that could not be observed wait for a run that
        # sees it: repairing them now would mean asking that vCenter, or settling them
        # unrepaired.
        unseen = set(state.unobserved)

        def restore_target(name: str) -> RestoreTarget | None:
            if name in unseen:
                return None  # left for a run that sees that vCenter
            try:
                return vcenters.restore_target(name)
            except KeyError:
                return None  # a vCenter no longer in the host config

        # What killed `vmkeep restore --vcenter` runs left: their temporary VMs and files.
        notes = clean_leftovers(db, restore_target, self.is_dead)
        for note in notes:
            self.events.repaired(note)
        recovery = JournaledRecovery(db, vcenters.ops(), targets, self.clock,
                                     self.events.repaired, other_kinds={RESTORE_KIND})
        return notes + recovery.run(holder, run_id, state)

    def _the_plan(self, saved: Plan | None, policy_set: PolicySet, state: ObservedState,
                  limits: Limits, now: datetime) -> Plan:
        """A fresh plan, or the saved one after checking it is not stale (returned re-made
        with today's limits: its actions are the same, its guard verdict current)."""
        transports = dict(self.transports)
        if saved is None:
            with collector_paused():  # a million small acyclic values at 10,000 VMs
                return planner.plan(policy_set, state, now, limits, transports,
                                    hygiene=self.hygiene)
        if saved.policy_revision != policy_set.revision:
            raise StalePlanError(
                f"Saved plan is stale: it was made from policy revision "
                f"{saved.policy_revision}, the policies are now at {policy_set.revision}; "
                "run `vmkeep plan --out` again"
            )
        digest = observed.digest(state)
        if saved.observed_digest != digest:
            raise StalePlanError(
                "Saved plan is stale: vCenter or the targets changed since it was made "
                f"(observed state {saved.observed_digest[:19]}… is now {digest[:19]}…); "
                "run `vmkeep plan --out` again"
            )
        with collector_paused():
            fresh = planner.plan(policy_set, state, saved.now, limits, transports,
                                 hygiene=self.hygiene)
        # The same changes, whichever the deletion budget holds back today.
        if Counter((*fresh.actions, *fresh.held)) != Counter((*saved.actions, *saved.held)):
            raise StalePlanError(
                "Saved plan is stale: the policies now call for different actions than the "
                "saved plan lists; run `vmkeep plan --out` again"
            )
        return fresh


def _exports_at_once(plan: Plan, limits: Limits) -> dict[str, int]:
    """Per vCenter, the exports of the plan that can run at once: as many as it has, at
    most `limits.concurrentExports` (the executor's cap for all vCenters together)."""
    exports = Counter(a.vcenter for a in plan.actions if a.kind is ActionKind.EXPORT_CREATE)
    cap = max(1, limits.concurrent_exports)
    return {name: min(count, cap) for name, count in sorted(exports.items())}


def _guard(plan: Plan) -> None:
    """A blocked plan does not run at all. (Deletions beyond the deletion budget are not a
    block: the planner holds them back and the rest of the plan runs.)"""
    if plan.blocked:
        raise BlockedError(f"the plan is blocked, nothing was changed: {plan.blocked_reason}")



"""Status: how protected the estate is and how the last runs went, as one value.

Pure: the journal's records (runs, failed and unfinished actions, the applier lease) and,
when policies were given, the plan's coverage come in; a `Status` with the things that need
a person's attention comes out. `vmkeep status` gathers the inputs and renders it
(`reconciler.render.status`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.model import Coverage, CoverageState, Plan, PlanWarning, Severity
from reconciler.verify_schedule import VerificationView

__all__ = ["JournalAction", "RecoveryInfo", "RunRecord", "Status", "summarize"]


@dataclass(frozen=True)
class RunRecord:
    """One `vmkeep apply` run as the journal has it (newest first in `Status.runs`)."""

    run_id: str
    holder: str
    started_at: datetime
    finished_at: datetime | None  # None: still running, or killed
    policy_revision: str | None
    #: outcome status -> actions; a killed run's from the journal ("interrupted": actions
    #: that had no outcome when it was killed)
    counts: Mapping[str, int] = field(default_factory=dict)
    #: The apply whose recovery checked what this (killed) run left; None otherwise.
    repaired_by: str | None = None

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)


@dataclass(frozen=True)
class RecoveryInfo:
    """The newest recovery: the repairs an apply made before planning."""

    holder: str
    started_at: datetime
    finished_at: datetime | None  # None: running now, or killed
    error: str | None  # why it failed
    repairs: tuple[str, ...] = ()


@dataclass(frozen=True)
class JournalAction:
    """One action of a run: a failed one, or one whose run ended before its outcome."""

    run_id: str
    kind: str
    point_id: str
    vm_name: str
    vm_uuid: str
    vcenter: str
    started_at: datetime
    status: str
    error: str | None = None


@dataclass(frozen=True)
class Status:
    now: datetime
    apply_holder: str | None  # who holds the applier lease: an apply is running
    runs: tuple[RunRecord, ...]  # newest first
    failures: tuple[JournalAction, ...]  # failed actions of the newest finished run
    unfinished: tuple[JournalAction, ...]  # intent written, no outcome
    plan: Plan | None  # when policies were given: coverage, and what an apply would do now
    attention: tuple[str, ...]  # what a person should look at; empty when all is well
    #: scheduled verification (export points of policies with `exports.verify`)
    verification: VerificationView | None = None

    @property
    def findings(self) -> tuple[PlanWarning, ...]:
        """The snapshot hygiene findings of the plan (thresholds from the host config)."""
        if self.plan is None:
            return ()
        return tuple(w for w in self.plan.warnings if w.severity is Severity.HYGIENE)
    recovery: RecoveryInfo | None = None  # the newest recovery
    #: repairs the next apply will make (a VM that may be off, a temporary snapshot left)
    pending_repairs: tuple[str, ...] = ()
    #: other installations' temporary snapshots seen (reported, never touched)
    others: tuple[str, ...] = ()

    @property
    def coverage(self) -> tuple[Coverage, ...]:
        return self.plan.coverage if self.plan else ()

    def coverage_counts(self) -> dict[str, int]:
        counts = Counter(c.state.value for c in self.coverage)
        return {state.value: counts.get(state.value, 0) for state in CoverageState
                if state is not CoverageState.UNKNOWN or counts.get(state.value)}


def summarize(
    now: datetime,
    runs: Sequence[RunRecord],
    failures: Sequence[JournalAction],
    unfinished: Sequence[JournalAction],
    apply_holder: str | None = None,
    plan: Plan | None = None,
    *,
    keep_runs: int = 5,
    verification: VerificationView | None = None,
    recovery: RecoveryInfo | None = None,
    pending_repairs: Sequence[str] = (),
    others: Sequence[str] = (),
) -> Status:
    """The status at `now`. `runs` in any order; `failures` are the failed actions of every
    run (only the newest finished run's are kept: older failures were retried since).
    `recovery`: the newest recovery; `pending_repairs`: what the next apply will repair
    (beyond unfinished actions); `others`: other installations' temporaries seen."""
    ordered = sorted(runs, key=lambda r: (r.started_at, r.run_id), reverse=True)
    last_finished = next((r for r in ordered if r.finished_at is not None), None)
    last_failures = tuple(
        a for a in failures if last_finished is not None and a.run_id == last_finished.run_id
    )
    attention: list[str] = []
    if last_finished is not None and last_finished.failed:
        attention.append(
            f"the last finished run ({last_finished.run_id}) had {last_finished.failed} "
            "failed action(s)"
        )
    running = apply_holder is not None
    if recovery is not None and recovery.error:
        attention.append(f"the last recovery ({recovery.holder}) failed: {recovery.error}")
    elif recovery is not None and recovery.finished_at is None and recovery.holder != apply_holder:
        attention.append(f"the last recovery ({recovery.holder}) was interrupted; the next apply "
                         "repeats it")
    if unfinished and not running:
        ids = ", ".join(sorted({a.run_id for a in unfinished}))
        attention.append(
            f"{len(unfinished)} action(s) of an interrupted run ({ids}) have no outcome; the "
            "next apply checks what they left behind and repairs it"
        )
    open_runs = {a.run_id for a in unfinished}
    for r in ordered:
        if (r.finished_at is None and r.repaired_by is None and r.holder != apply_holder
                and r.run_id not in open_runs):
            attention.append(f"run {r.run_id} was interrupted (its process is gone); the next "
                             "apply settles it")
    if pending_repairs and not running:
        attention.extend(f"repair pending: {item}" for item in pending_repairs)
    if plan is not None:
        counts = Counter(c.state for c in plan.coverage)
        if counts[CoverageState.LATE]:
            attention.append(f"{counts[CoverageState.LATE]} VM/policy pair(s) late: their "
                             "newest restore point is older than the schedule allows")
        if counts[CoverageState.MISSING]:
            attention.append(f"{counts[CoverageState.MISSING]} VM/policy pair(s) without any "
                             "restore point past their first slot")
        if plan.blocked:
            attention.append(f"the next apply is blocked: {plan.blocked_reason}")
        if plan.held:
            attention.append(f"the next apply holds deletions back: {plan.held_reason}; to "
                             f"allow them: {plan.held_hint}")
        for name, reason in sorted(plan.unobserved.items()):
            attention.append(f"vCenter {name!r} could not be observed ({reason}): the "
                             "coverage of its VMs is unknown")
    if verification is not None and verification.damaged:
        attention.append(f"{len(verification.damaged)} export point(s) damaged (found by "
                         "scheduled verification): restore another point, the next export "
                         "stores the damaged data again")
    if verification is not None and verification.overdue:
        attention.append(f"{len(verification.overdue)} export point(s) not verified within "
                         "their exports.verify period (raise limits.verifyBytesPerHour?)")
    return Status(
        now=now,
        apply_holder=apply_holder,
        runs=tuple(ordered[: max(0, keep_runs)]),
        failures=last_failures,
        unfinished=tuple(unfinished),
        plan=plan,
        attention=tuple(attention),
        verification=verification,
        recovery=recovery,
        pending_repairs=tuple(pending_repairs),
        others=tuple(others),
    )

"""`vmkeep status` views: text for terminals, JSON for monitoring."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reconciler.model import ActionKind, CoverageState, PlanWarning
from reconciler.observed import format_time
from reconciler.render.document import coverage_to_json, summary
from reconciler.render.text import coverage_line
from reconciler.status import JournalAction, RecoveryInfo, RunRecord, Status

__all__ = ["status_text", "status_to_json"]


def _run_json(r: RunRecord, apply_holder: str | None) -> dict[str, Any]:
    return {
        "runId": r.run_id,
        "holder": r.holder,
        "startedAt": format_time(r.started_at),
        "finishedAt": format_time(r.finished_at) if r.finished_at else None,
        "policyRevision": r.policy_revision,
        "counts": dict(r.counts),
        "interrupted": r.finished_at is None and r.holder != apply_holder,
        "repairedBy": r.repaired_by,
    }


def _recovery_json(r: RecoveryInfo | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "holder": r.holder,
        "startedAt": format_time(r.started_at),
        "finishedAt": format_time(r.finished_at) if r.finished_at else None,
        "error": r.error,
        "repairs": list(r.repairs),
    }


def _action_json(a: JournalAction) -> dict[str, Any]:
    return {
        "runId": a.run_id,
        "kind": a.kind,
        "pointId": a.point_id,
        "vm": {"name": a.vm_name, "instanceUuid": a.vm_uuid},
        "vcenter": a.vcenter,
        "startedAt": format_time(a.started_at),
        "status": a.status,
        "error": a.error,
    }


def status_to_json(status: Status) -> dict[str, Any]:
    plan = status.plan
    return {
        "now": format_time(status.now),
        "ok": not status.attention,
        "attention": list(status.attention),
        "apply": {"running": status.apply_holder is not None, "holder": status.apply_holder},
        "runs": [_run_json(r, status.apply_holder) for r in status.runs],
        "recovery": _recovery_json(status.recovery),
        "pendingRepairs": list(status.pending_repairs),
        "othersTemporaries": list(status.others),
        "lastRunFailures": [_action_json(a) for a in status.failures],
        "unfinished": [_action_json(a) for a in status.unfinished],
        "coverage": None if plan is None else {
            "policyRevision": plan.policy_revision,
            "counts": status.coverage_counts(),
            "vms": [coverage_to_json(c) for c in plan.coverage],
        },
        "pending": None if plan is None else {
            **{kind.value: summary(plan)[kind.value] for kind in ActionKind},
            "blocked": plan.blocked, "blockedReason": plan.blocked_reason,
            "held": len(plan.held), "heldReason": plan.held_reason or None,
        },
        "findings": [_finding_json(w) for w in status.findings],
        "verification": None if status.verification is None
        else status.verification.to_json(_iso),
    }


def _iso(epoch: float) -> str:
    return format_time(datetime.fromtimestamp(epoch, UTC))


def _finding_json(w: PlanWarning) -> dict[str, Any]:
    return {
        "code": w.code,
        "severity": w.severity.value,
        "message": w.message,
        "vcenter": w.vcenter,
        "vm": None if w.vm is None else {"name": w.vm.name, "instanceUuid": w.vm.instance_uuid},
    }


def _duration(r: RunRecord, apply_holder: str | None) -> str:
    if r.finished_at is None:
        return "running" if r.holder == apply_holder else "interrupted"
    seconds = int((r.finished_at - r.started_at).total_seconds())
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def status_text(status: Status) -> str:
    lines = [f"vmkeep status at {format_time(status.now)}"]
    if status.apply_holder:
        lines.append(f"  apply running now: {status.apply_holder}")
    if not status.runs:
        lines.append("  no apply run recorded in the state DB yet")
    else:
        lines.append("Recent runs (newest first)")
        for r in status.runs:
            counts = ", ".join(f"{n} {k}" for k, n in sorted(r.counts.items())) or "no actions"
            started = format_time(r.started_at.replace(microsecond=0))
            lines.append(f"  {r.run_id}  {started}  {_duration(r, status.apply_holder):<12} "
                         f"{counts}  revision {(r.policy_revision or '-')[:12]}"
                         + (f"  (repaired by {r.repaired_by})" if r.repaired_by else ""))
    if status.failures:
        lines.append("Failed in the last finished run")
        for a in status.failures:
            lines.append(f"  {a.kind} {a.vcenter}/{a.vm_name} {a.point_id}: {a.error or 'failed'}")
    if status.unfinished:
        lines.append("Interrupted (intent recorded, no outcome)")
        for a in status.unfinished:
            lines.append(f"  {a.kind} {a.vcenter}/{a.vm_name} {a.point_id} "
                         f"(run {a.run_id}, {format_time(a.started_at)})")
    recovery = status.recovery
    if recovery is not None and (recovery.repairs or recovery.error):
        lines.append(f"Last recovery ({recovery.holder}, "
                     f"{format_time(recovery.started_at.replace(microsecond=0))})")
        lines.extend(f"  repaired: {note}" for note in recovery.repairs)
        if recovery.error:
            lines.append(f"  failed: {recovery.error}")
    if status.pending_repairs:
        lines.append("Repairs pending (the next apply makes them)")
        lines.extend(f"  {item}" for item in status.pending_repairs)
    if status.others:
        lines.append("Other installations' temporary snapshots (never touched by this one)")
        lines.extend(f"  {item}" for item in status.others)
    plan = status.plan
    if plan is not None:
        by_state = status.coverage_counts()
        lines.append(
            f"Coverage (revision {(plan.policy_revision or 'working directory')[:12]}): "
            + ", ".join(f"{n} {state}" for state, n in by_state.items())
        )
        lines.extend(coverage_line(c) for c in plan.coverage
                     if c.state is not CoverageState.COVERED)
        creates = sum(1 for a in plan.actions if not a.kind.is_delete)
        lines.append(f"  an apply now would create {creates} and delete {plan.delete_count} "
                     "restore point(s)")
    if status.findings:
        lines.append("Findings (snapshot hygiene)")
        lines.extend(f"  {w.code}: {w.vcenter}/{w.vm.name if w.vm else '-'}: {w.message}"
                     for w in status.findings)
    v = status.verification
    if v is not None and (v.points or v.damaged):
        lines.append(f"Verification: {len(v.points)} export point(s) on a schedule, "
                     f"{len(v.due)} due, {len(v.overdue)} overdue, {len(v.damaged)} damaged")
        lines.extend(f"  DAMAGED {r.target}:{r.point_id}: {r.message}" for r in v.damaged)
    if status.attention:
        lines.append("Needs attention")
        lines.extend(f"  - {item}" for item in status.attention)
    else:
        lines.append("All well.")
    return "\n".join(lines) + "\n"

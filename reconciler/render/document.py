"""The plan as JSON (`schemas/plan.schema.json`): `plan_to_json` and back, `plan_from_json`.

Enum values are read as `_value_` in the loops over every action, coverage line and retention
decision: `.value` is a Python-level property, a tenth of the rendering time at 10,000 VMs.

The JSON document is the plan artifact (`vmkeep plan --out plan.json`); the text and
Markdown views are rendered from the same `Plan` value.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from reconciler.collector import collector_paused
from reconciler.errors import Diagnostic, InputError
from reconciler.model import (
    Action,
    ActionKind,
    Coverage,
    CoverageState,
    Plan,
    PlanWarning,
    PointKind,
    RetentionDecision,
    Severity,
    VMRef,
)
from reconciler.observed import format_time, parse_time

__all__ = ["FORMAT_VERSION", "coverage_to_json", "plan_from_json", "plan_to_json", "summary"]

FORMAT_VERSION = 1


def _vm(ref: VMRef) -> dict[str, str]:
    return {"name": ref.name, "instanceUuid": ref.instance_uuid}


def summary(plan: Plan) -> dict[str, int]:
    """Action counts by kind (every kind present, zero included) and coverage counts."""
    kinds = Counter(a.kind._value_ for a in plan.actions)
    states = Counter(c.state._value_ for c in plan.coverage)
    counts = {kind.value: kinds.get(kind.value, 0) for kind in ActionKind}
    counts.update({state.value: states.get(state.value, 0) for state in CoverageState})
    return counts


def _action(a: Action) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": a.kind._value_,
        "policy": a.policy,
        "vcenter": a.vcenter,
        "vm": _vm(a.vm),
        "pointId": a.point_id,
        "slot": format_time(a.slot),
        "reason": a.reason,
    }
    if a.target is not None:
        out["target"] = a.target
    if a.snapshot_id is not None:
        out["snapshotId"] = a.snapshot_id
    if a.requires:
        out["requires"] = list(a.requires)
    return out


def coverage_to_json(c: Coverage) -> dict[str, Any]:
    return {
        "policy": c.policy,
        "vcenter": c.vcenter,
        "vm": _vm(c.vm),
        "state": c.state._value_,
        "slot": format_time(c.slot),
        "thresholdSeconds": c.threshold_seconds,
        "lastSlot": format_time(c.last_slot) if c.last_slot else None,
        "note": c.note,
    }


def plan_to_json(plan: Plan) -> dict[str, Any]:
    with collector_paused():  # ~1.5 M acyclic dicts and lists at 10,000 VMs
        return _plan_to_json(plan)


def _plan_to_json(plan: Plan) -> dict[str, Any]:
    return {
        "formatVersion": plan.format_version,
        "policyRevision": plan.policy_revision,
        "observedDigest": plan.observed_digest,
        "now": format_time(plan.now),
        "blocked": plan.blocked,
        "blockedReason": plan.blocked_reason,
        "deleteCount": plan.delete_count,
        "summary": summary(plan),
        "actions": [_action(a) for a in plan.actions],
        "coverage": [coverage_to_json(c) for c in plan.coverage],
        "warnings": [
            {
                "code": w.code,
                "severity": w.severity.value,
                "message": w.message,
                "vcenter": w.vcenter,
                "vm": _vm(w.vm) if w.vm else None,
                "policy": w.policy,
                "pointIds": list(w.point_ids),
            }
            for w in plan.warnings
        ],
        "retention": [
            {
                "pointId": d.point_id,
                "kind": d.kind._value_,
                "policy": d.policy,
                "vm": _vm(d.vm),
                "slot": format_time(d.slot),
                "keep": d.keep,
                "reasons": list(d.reasons),
            }
            for d in plan.retention
        ],
    }


def _ref(data: dict[str, Any]) -> VMRef:
    return VMRef(data["name"], data["instanceUuid"])


def plan_from_json(data: Any, source: str = "<plan>") -> Plan:
    """Read a saved plan back; a malformed file is an `InputError` naming `source`."""
    try:
        if data["formatVersion"] != FORMAT_VERSION:
            raise ValueError(f"unsupported formatVersion {data['formatVersion']!r}")
        return Plan(
            format_version=data["formatVersion"],
            policy_revision=data["policyRevision"],
            observed_digest=data["observedDigest"],
            now=parse_time(data["now"]),
            actions=tuple(
                Action(
                    kind=ActionKind(a["kind"]),
                    policy=a["policy"],
                    vcenter=a["vcenter"],
                    vm=_ref(a["vm"]),
                    point_id=a["pointId"],
                    slot=parse_time(a["slot"]),
                    reason=a["reason"],
                    target=a.get("target"),
                    snapshot_id=a.get("snapshotId"),
                    requires=tuple(a.get("requires", ())),
                )
                for a in data["actions"]
            ),
            coverage=tuple(
                Coverage(
                    policy=c["policy"],
                    vcenter=c["vcenter"],
                    vm=_ref(c["vm"]),
                    state=CoverageState(c["state"]),
                    slot=parse_time(c["slot"]),
                    threshold_seconds=c["thresholdSeconds"],
                    last_slot=parse_time(c["lastSlot"]) if c["lastSlot"] else None,
                    note=c["note"],
                )
                for c in data["coverage"]
            ),
            warnings=tuple(
                PlanWarning(
                    code=w["code"],
                    severity=Severity(w["severity"]),
                    message=w["message"],
                    vcenter=w["vcenter"],
                    vm=_ref(w["vm"]) if w["vm"] else None,
                    policy=w["policy"],
                    point_ids=tuple(w["pointIds"]),
                )
                for w in data["warnings"]
            ),
            retention=tuple(
                RetentionDecision(
                    point_id=d["pointId"],
                    kind=PointKind(d["kind"]),
                    policy=d["policy"],
                    vm=_ref(d["vm"]),
                    slot=parse_time(d["slot"]),
                    keep=d["keep"],
                    reasons=tuple(d["reasons"]),
                )
                for d in data["retention"]
            ),
            blocked=data["blocked"],
            blocked_reason=data["blockedReason"],
            delete_count=data["deleteCount"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            [
                Diagnostic(
                    source, 1, 1, f"not a vmkeep plan: {exc}", "write it with `vmkeep plan --out`"
                )
            ]
        ) from None

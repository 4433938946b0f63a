"""The plan as JSON (`schemas/plan.schema.json`): `plan_to_json` and back, `plan_from_json`.

Enum values are read as `_value_` in the loops over every action, coverage line and retention
decision: `.value` is a Python-level property, a tenth of the rendering time at 10,000 VMs.

The JSON document is the plan artifact (`vmkeep plan --out plan.json`); the text and
Markdown views are rendered from the same `Plan` value.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

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

__all__ = [
    "EARLIEST", "FORMAT_VERSION", "LATEST", "coverage_to_json", "held_to_json", "plan_from_json",
    "plan_to_json", "summary", "supported_time",
]

FORMAT_VERSION = 1


def _vm(ref: VMRef) -> dict[str, str]:
    return {"name": ref.name, "instanceUuid": ref.instance_uuid}


def summary(plan: Plan) -> dict[str, int]:
    """Action counts by kind (every kind present, zero included) and coverage counts
    (`unknown` only when a vCenter could not be observed)."""
    kinds = Counter(a.kind._value_ for a in plan.actions)
    states = Counter(c.state._value_ for c in plan.coverage)
    counts = {kind.value: kinds.get(kind.value, 0) for kind in ActionKind}
    counts.update({state.value: states.get(state.value, 0) for state in CoverageState
                   if state is not CoverageState.UNKNOWN or states.get(state.value)})
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


def held_to_json(plan: Plan) -> dict[str, Any]:
    """`heldCount`, `heldReason` (count and limit), `heldHint` (how to allow them) and `held`
    (the deletions the deletion budget holds back)."""
    return {
        "heldCount": len(plan.held),
        "heldReason": plan.held_reason,
        "heldHint": plan.held_hint,
        "held": [_action(a) for a in plan.held],
    }


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan's JSON document (~1.5 M acyclic dicts and lists at 10,000 VMs: callers pause
    the cyclic collector around it, `collector.collector_paused`)."""
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
        **held_to_json(plan),
        "unobservedVcenters": dict(sorted(plan.unobserved.items())),
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
        "retention": _retention(plan.retention),
    }


def _retention(decisions: tuple[RetentionDecision, ...]) -> list[dict[str, Any]]:
    """The retention decisions; a VM's `vm` object is built once and shared by its points
    (about 30 a VM: the plan's VMRef is one object per VM, held by the plan meanwhile). One
    comprehension unpacking each decision: 290,000 at 10,000 VMs."""
    refs: dict[int, dict[str, str]] = {}
    known = refs.get

    def first(ref: VMRef) -> dict[str, str]:
        vm = refs[id(ref)] = _vm(ref)
        return vm

    return [{"pointId": point_id, "kind": kind._value_, "policy": policy,
             "vm": known(id(ref)) or first(ref), "slot": format_time(slot), "keep": keep,
             "reasons": list(reasons)}
            for point_id, kind, policy, ref, slot, keep, reasons in decisions]


#: The times vmkeep works with (`--now`, a saved plan's `now` and slots): from `EARLIEST` up
#: to, not including, `LATEST`. Far enough from the ends of `datetime` (years 1 and 9999)
#: that schedules, retention buckets and time zones never run over them.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def supported_time(moment: datetime) -> bool:
    """Whether `moment` (aware) lies in [EARLIEST, LATEST)."""
    return EARLIEST <= moment < LATEST


def _time(text: Any, what: str) -> datetime:
    """A time of a saved plan; raises ValueError when it is not one vmkeep works with."""
    if not isinstance(text, str):
        raise ValueError(f"{what} is not a time")
    try:
        moment = parse_time(text)
    except OverflowError:
        moment = None
    if moment is None or not supported_time(moment):
        raise ValueError(f"{what} {text!r} is outside the years {EARLIEST.year} to "
                         f"{LATEST.year - 1}")
    return moment


def _ref(data: dict[str, Any]) -> VMRef:
    return VMRef(data["name"], data["instanceUuid"])


def _action_from(a: Any) -> Action:
    return Action(
        kind=ActionKind(a["kind"]),
        policy=a["policy"],
        vcenter=a["vcenter"],
        vm=_ref(a["vm"]),
        point_id=a["pointId"],
        slot=_time(a["slot"], "slot"),
        reason=a["reason"],
        target=a.get("target"),
        snapshot_id=a.get("snapshotId"),
        requires=tuple(a.get("requires", ())),
    )


def plan_from_json(data: Any, source: str = "<plan>") -> Plan:
    """Read a saved plan back; a malformed file is an `InputError` naming `source`."""
    try:
        if data["formatVersion"] != FORMAT_VERSION:
            raise ValueError(f"unsupported formatVersion {data['formatVersion']!r}")
        return Plan(
            format_version=data["formatVersion"],
            policy_revision=data["policyRevision"],
            observed_digest=data["observedDigest"],
            now=_time(data["now"], "now"),
            actions=tuple(_action_from(a) for a in data["actions"]),
            coverage=tuple(
                Coverage(
                    policy=c["policy"],
                    vcenter=c["vcenter"],
                    vm=_ref(c["vm"]),
                    state=CoverageState(c["state"]),
                    slot=_time(c["slot"], "slot"),
                    threshold_seconds=c["thresholdSeconds"],
                    last_slot=_time(c["lastSlot"], "lastSlot") if c["lastSlot"] else None,
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
                    slot=_time(d["slot"], "slot"),
                    keep=d["keep"],
                    reasons=tuple(d["reasons"]),
                )
                for d in data["retention"]
            ),
            blocked=data["blocked"],
            blocked_reason=data["blockedReason"],
            delete_count=data["deleteCount"],
            held=tuple(_action_from(a) for a in data.get("held", ())),
            held_reason=str(data.get("heldReason", "")),
            unobserved={str(k): str(v) for k, v in data.get("unobservedVcenters", {}).items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(
            [
                Diagnostic(
                    source, 1, 1, f"not a vmkeep plan: {exc}", "write it with `vmkeep plan --out`"
                )
            ]
        ) from None

"""Actions and outcomes as plain JSON values: what travels in workflow and activity payloads."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from reconciler.executor import ActionOutcome
from reconciler.model import Action, ActionKind, VMRef
from reconciler.observed import format_time, parse_time
from reconciler.ports import PolicyFile

__all__ = [
    "action_from_json",
    "action_to_json",
    "files_from_json",
    "files_to_json",
    "outcome_to_json",
]


def files_to_json(files: Iterable[PolicyFile]) -> list[dict[str, str]]:
    """Policy files as the workflow carries them to the workers (bytes exactly, base64)."""
    return [{"path": f.path, "data": base64.b64encode(f.data).decode("ascii")} for f in files]


def files_from_json(data: list[dict[str, str]]) -> list[PolicyFile]:
    return [PolicyFile(f["path"], base64.b64decode(f["data"])) for f in data]


def action_to_json(a: Action) -> dict[str, Any]:
    return {
        "kind": a.kind.value,
        "policy": a.policy,
        "vcenter": a.vcenter,
        "vm": {"name": a.vm.name, "instanceUuid": a.vm.instance_uuid},
        "pointId": a.point_id,
        "slot": format_time(a.slot),
        "reason": a.reason,
        "target": a.target,
        "snapshotId": a.snapshot_id,
        "requires": list(a.requires),
    }


def action_from_json(data: dict[str, Any]) -> Action:
    return Action(
        kind=ActionKind(data["kind"]),
        policy=data["policy"],
        vcenter=data["vcenter"],
        vm=VMRef(data["vm"]["name"], data["vm"]["instanceUuid"]),
        point_id=data["pointId"],
        slot=parse_time(data["slot"]),
        reason=data["reason"],
        target=data.get("target"),
        snapshot_id=data.get("snapshotId"),
        requires=tuple(data.get("requires", ())),
    )


def outcome_to_json(o: ActionOutcome, proxy: str) -> dict[str, Any]:
    return {
        "action": action_to_json(o.action),
        "status": o.status,
        "message": o.message,
        "consistency": o.consistency,
        "consistencyNote": o.consistency_note,
        "transport": o.transport,
        "bytesRead": o.bytes_read,
        "bytesStored": o.bytes_stored,
        "seconds": round(o.seconds, 3),
        "proxy": proxy,
    }

"""Review mode: what a change to the policy repo does, from two plans over the same state.

`review(base_policies, head_policies, base_plan, head_plan)` compares two revisions planned
against one observed state at one `now` and reports, for a pull request:

* policies added, removed or changed, with a field-by-field diff;
* VMs gaining or losing coverage (or moving between policies);
* restore points the change newly schedules for deletion, points it newly keeps, and points
  that become orphans (retained: removing a policy never deletes anything);
* guard violations of the head plan: the deletion budget exceeded, and every group whose
  rules would delete all its complete points, so the never-empty guard keeps the newest
  (marked when the base plan had the same guard hit: the change did not cause it).

Pure: values in, a value out.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime, time
from typing import Any

from reconciler.model import (
    Duration,
    Plan,
    PointKind,
    Policy,
    PolicySet,
    RetentionDecision,
    VMRef,
)

__all__ = [
    "CoverageChange",
    "FieldChange",
    "PointChange",
    "PolicyChange",
    "Review",
    "policy_fields",
    "review",
]


@dataclass(frozen=True)
class FieldChange:
    path: str  # dotted, e.g. "snapshots.keep.daily"
    before: str | None  # None: the field is not set on that side
    after: str | None


@dataclass(frozen=True)
class PolicyChange:
    name: str
    status: str  # "added" | "removed" | "changed"
    fields: tuple[FieldChange, ...] = ()


@dataclass(frozen=True)
class CoverageChange:
    vcenter: str
    vm: VMRef
    before: tuple[str, ...]  # policies selecting the VM at base
    after: tuple[str, ...]  # ... and at head

    @property
    def change(self) -> str:
        if not self.before:
            return "gains coverage"
        if not self.after:
            return "loses coverage"
        return "changes policies"


@dataclass(frozen=True)
class PointChange:
    point_id: str
    kind: PointKind | None  # None for orphan listings (the warning does not say which kind)
    policy: str
    vm: VMRef | None
    slot: datetime | None
    change: str  # "newly deleted" | "newly kept" | "orphaned (retained)"
    reason: str


@dataclass(frozen=True)
class Review:
    base_revision: str | None
    head_revision: str | None
    policies: tuple[PolicyChange, ...]
    coverage: tuple[CoverageChange, ...]
    points: tuple[PointChange, ...]
    guard_violations: tuple[str, ...]
    head: Plan

    @property
    def has_changes(self) -> bool:
        return bool(self.policies or self.coverage or self.points or self.head.actions
                    or self.head.held)


def _flatten(value: Any, prefix: str) -> Iterator[tuple[str, str]]:
    if value is None:
        return
    if isinstance(value, Duration | time):
        yield prefix, str(value)
    elif is_dataclass(value) and not isinstance(value, type):
        for f in fields(value):
            if f.name != "source":
                name = f"{prefix}.{f.name}" if prefix else f.name
                yield from _flatten(getattr(value, f.name), name)
    elif isinstance(value, Mapping):
        for key in sorted(value):
            yield from _flatten(value[key], f"{prefix}.{key}")
    elif isinstance(value, tuple):
        if value:
            yield prefix, ", ".join(str(v) for v in value)
    elif isinstance(value, enum.Enum):
        yield prefix, str(value.value)
    else:
        yield prefix, str(value)


#: Where a model field lives in the policy YAML, when that is not just its camelCase name.
_YAML_PATHS = {
    "name": "metadata.name",
    "description": "metadata.description",
    "labels": "metadata.labels",
    "include": "selector.include",
    "exclude": "selector.exclude",
    "consistency.pre_hooks": "consistency.hooks.pre",
    "consistency.post_hooks": "consistency.hooks.post",
}


def _camel(word: str) -> str:
    head, *rest = word.split("_")
    return head + "".join(w.title() for w in rest)


def _yaml_path(path: str) -> str:
    for prefix, replacement in _YAML_PATHS.items():
        if path == prefix or path.startswith(prefix + "."):
            path = replacement + path[len(prefix) :]
            break
    parts: list[str] = []
    for part in path.split("."):
        verbatim = bool(parts) and parts[-1] in ("labels", "attributes")  # user's own keys
        parts.append(part if verbatim else _camel(part))
    return ".".join(parts)


def policy_fields(policy: Policy) -> dict[str, str]:
    """Every set field of a policy as its YAML path (under `spec`, or `metadata.*`) -> text;
    the source location is left out."""
    return {_yaml_path(path): text for path, text in _flatten(policy, "")}


def _policy_changes(base: PolicySet, head: PolicySet) -> list[PolicyChange]:
    before, after = base.by_name(), head.by_name()
    changes: list[PolicyChange] = []
    for name in sorted(before.keys() | after.keys()):
        if name not in after:
            changes.append(PolicyChange(name, "removed"))
        elif name not in before:
            changes.append(PolicyChange(name, "added"))
        else:
            old, new = policy_fields(before[name]), policy_fields(after[name])
            diff = tuple(
                FieldChange(path, old.get(path), new.get(path))
                for path in sorted(old.keys() | new.keys())
                if old.get(path) != new.get(path)
            )
            if diff:
                changes.append(PolicyChange(name, "changed", diff))
    return changes


def _selection(plan: Plan) -> dict[tuple[str, VMRef], set[str]]:
    chosen: dict[tuple[str, VMRef], set[str]] = defaultdict(set)
    for c in plan.coverage:
        chosen[(c.vcenter, c.vm)].add(c.policy)
    return chosen


def _coverage_changes(base: Plan, head: Plan) -> list[CoverageChange]:
    before, after = _selection(base), _selection(head)
    changes = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key, set()), after.get(key, set())
        if old != new:
            changes.append(CoverageChange(key[0], key[1], tuple(sorted(old)), tuple(sorted(new))))
    return changes


def _point_changes(base: Plan, head: Plan) -> list[PointChange]:
    # Deletions the deletion budget holds back are deletions the change makes all the same.
    base_deletes = {(a.kind, a.point_id): a for a in (*base.actions, *base.held)
                    if a.kind.is_delete}
    head_deletes = {(a.kind, a.point_id): a for a in (*head.actions, *head.held)
                    if a.kind.is_delete}
    kept = {(d.kind.value, d.point_id): d for d in head.retention if d.keep}
    changes: list[PointChange] = []
    for key in sorted(head_deletes.keys() - base_deletes.keys()):
        a = head_deletes[key]
        kind = PointKind(a.kind.value.split(".")[0])
        changes.append(
            PointChange(a.point_id, kind, a.policy, a.vm, a.slot, "newly deleted", a.reason)
        )
    for key in sorted(base_deletes.keys() - head_deletes.keys()):
        a = base_deletes[key]
        kind = PointKind(a.kind.value.split(".")[0])
        decision = kept.get((kind.value, a.point_id))
        reason = ", ".join(decision.reasons) if decision else "no longer planned for deletion"
        changes.append(PointChange(a.point_id, kind, a.policy, a.vm, a.slot, "newly kept", reason))
    orphaned_before = {
        pid for w in base.warnings if w.code == "orphan-points" for pid in w.point_ids
    }
    for w in head.warnings:
        if w.code != "orphan-points":
            continue
        for pid in w.point_ids:
            if pid not in orphaned_before:
                changes.append(
                    PointChange(
                        pid,
                        None,
                        w.policy,
                        w.vm,
                        None,
                        "orphaned (retained)",
                        "its policy was removed; onPolicyRemoval: retain (after the merge, "
                        f"`vmkeep forget --policy {w.policy} --orphaned` deletes them)",
                    )
                )
    return changes


def _guarded(plan: Plan) -> list[RetentionDecision]:
    """Points the never-empty guard keeps (the planner's reason starts with "guard:")."""
    return [d for d in plan.retention if d.keep and any(r.startswith("guard:") for r in d.reasons)]


def _guard_violations(base: Plan, head: Plan) -> list[str]:
    violations = [head.blocked_reason] if head.blocked else []
    if head.held:
        violations.append(head.held_reason)
    before = {(d.kind, d.point_id) for d in _guarded(base)}
    for d in sorted(_guarded(head), key=lambda d: (d.policy, d.vm.name, d.kind, d.point_id)):
        also = " (already so at the base revision)" if (d.kind, d.point_id) in before else ""
        violations.append(
            f"policy {d.policy} would delete every complete {d.kind.value} point of "
            f"{d.vm.name}; the never-empty guard keeps the newest, {d.point_id}{also}"
        )
    return violations


def review(base_policies: PolicySet, head_policies: PolicySet, base: Plan, head: Plan) -> Review:
    return Review(
        base_revision=base_policies.revision,
        head_revision=head_policies.revision,
        policies=tuple(_policy_changes(base_policies, head_policies)),
        coverage=tuple(_coverage_changes(base, head)),
        points=tuple(_point_changes(base, head)),
        guard_violations=tuple(_guard_violations(base, head)),
        head=head,
    )

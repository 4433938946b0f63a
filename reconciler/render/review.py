"""The review-mode report (`vmkeep plan --base REV --head REV`) as text, JSON and Markdown.

The Markdown is made inert as `render.markdown` describes: policy fields (a description is
whatever the pull request says), VM names and guard messages are escaped or fenced.
"""

from __future__ import annotations

from typing import Any

from reconciler.model import VMRef
from reconciler.observed import format_time
from reconciler.render.document import plan_to_json
from reconciler.render.markdown import LIMIT, Section, assemble, code, text
from reconciler.review import Review

__all__ = ["GUARDS_IN_HEAD", "review_markdown", "review_text", "review_to_json"]

GUARDS_IN_HEAD = 5  # guard violations quoted above the summary; all are in their own section


def _short(revision: str | None) -> str:
    return (revision or "working directory")[:12]


def _vm(ref: VMRef | None) -> dict[str, str] | None:
    return {"name": ref.name, "instanceUuid": ref.instance_uuid} if ref else None


def review_to_json(r: Review) -> dict[str, Any]:
    return {
        "formatVersion": 1,
        "baseRevision": r.base_revision,
        "headRevision": r.head_revision,
        "policies": [
            {
                "name": p.name,
                "status": p.status,
                "fields": [
                    {"path": f.path, "before": f.before, "after": f.after} for f in p.fields
                ],
            }
            for p in r.policies
        ],
        "coverage": [
            {
                "vcenter": c.vcenter,
                "vm": _vm(c.vm),
                "change": c.change,
                "before": list(c.before),
                "after": list(c.after),
            }
            for c in r.coverage
        ],
        "points": [
            {
                "pointId": p.point_id,
                "kind": p.kind.value if p.kind else None,
                "policy": p.policy,
                "vm": _vm(p.vm),
                "slot": format_time(p.slot) if p.slot else None,
                "change": p.change,
                "reason": p.reason,
            }
            for p in r.points
        ],
        "guardViolations": list(r.guard_violations),
        "headPlan": plan_to_json(r.head),
    }


def _counts(r: Review) -> dict[str, int]:
    counts = {"newly deleted": 0, "newly kept": 0, "orphaned (retained)": 0}
    for p in r.points:
        counts[p.change] += 1
    return counts


def _policy_lines(r: Review) -> list[str]:
    lines = []
    for p in r.policies:
        sign = {"added": "+", "removed": "-", "changed": "~"}[p.status]
        lines.append(f"{sign} policy {p.name} {p.status}")
        for f in p.fields:
            lines.append(f"    {f.path}: {f.before or '(unset)'} -> {f.after or '(unset)'}")
    return lines


def _coverage_lines(r: Review) -> list[str]:
    return [
        f"{'+' if not c.before else '-' if not c.after else '~'} {c.vcenter}/{c.vm.name} "
        f"{c.change}: [{', '.join(c.before)}] -> [{', '.join(c.after)}]"
        for c in r.coverage
    ]


def _point_lines(r: Review) -> list[str]:
    signs = {"newly deleted": "-", "newly kept": "+", "orphaned (retained)": "!"}
    return [f"{signs[p.change]} {p.point_id}  {p.change}: {p.reason}" for p in r.points]


def review_text(r: Review) -> str:
    counts = _counts(r)
    lines = [
        f"vmkeep review: {_short(r.base_revision)} -> {_short(r.head_revision)}",
        f"  now: {format_time(r.head.now)}, observed state: {r.head.observed_digest}",
        "",
    ]
    for title, body in (
        ("Policies", _policy_lines(r)),
        ("Coverage", _coverage_lines(r)),
        ("Restore points", _point_lines(r)),
    ):
        lines.append(f"{title}:")
        lines.extend(f"  {line}" for line in body or ["(no change)"])
        lines.append("")
    for violation in r.guard_violations:
        lines.append(f"GUARD: {violation}")
    lines.append(
        f"Review: {len(r.policies)} policies changed, {len(r.coverage)} VMs change coverage, "
        f"{counts['newly deleted']} points newly deleted, {counts['newly kept']} newly kept, "
        f"{counts['orphaned (retained)']} orphaned."
    )
    return "\n".join(lines) + "\n"


def review_markdown(r: Review, limit: int = LIMIT) -> str:
    counts = _counts(r)
    head = [
        "### vmkeep plan review",
        "",
        f"{code(_short(r.base_revision))} → {code(_short(r.head_revision))} · now "
        f"{code(format_time(r.head.now))} · observed {code(r.head.observed_digest[:19])}",
        "",
    ]
    for violation in r.guard_violations[:GUARDS_IN_HEAD]:
        head += [f"> :no_entry: **Guard:** {text(violation)}", ""]
    more = len(r.guard_violations) - GUARDS_IN_HEAD
    if more > 0:
        head += [f"> :no_entry: … and {more:,} more guard violations, listed below.", ""]
    head += [
        "| policies changed | VMs gaining | VMs losing | points newly deleted | newly kept "
        "| orphaned |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {len(r.policies)} | {sum(1 for c in r.coverage if not c.before)} "
        f"| {sum(1 for c in r.coverage if not c.after)} | {counts['newly deleted']} "
        f"| {counts['newly kept']} | {counts['orphaned (retained)']} |",
    ]
    sections = [
        Section(
            f"Guard violations ({len(r.guard_violations)})",
            [f"- {text(v)}" for v in r.guard_violations] if more > 0 else [],
            open=True,
        ),
        Section(f"Policies ({len(r.policies)})", _policy_lines(r), fenced="diff", open=True),
        Section(f"Coverage ({len(r.coverage)})", _coverage_lines(r), fenced="diff", open=True),
        Section(f"Restore points ({len(r.points)})", _point_lines(r), fenced="diff"),
        Section(
            f"Head plan actions ({len(r.head.actions)})",
            [
                f"{'-' if a.kind.is_delete else '+'} {a.kind.value:<16} {a.vcenter}/{a.vm.name} "
                f"{a.point_id}  # {a.reason}"
                for a in r.head.actions
            ],
            fenced="diff",
        ),
    ]
    return assemble(head, sections, limit)

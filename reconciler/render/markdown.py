"""The plan (and review) as Markdown for pull-request comments.

A summary table comes first, then collapsible `<details>` sections. The whole comment is
kept under `LIMIT` characters (GitHub refuses comments over 65,535): sections are filled in
order of importance and whatever does not fit is cut, with a note saying how much.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from reconciler.model import CoverageState, Plan
from reconciler.observed import format_time

__all__ = ["LIMIT", "Section", "assemble", "render_markdown"]

LIMIT = 60_000


@dataclass
class Section:
    """A collapsible section: `lines` go inside, one per item, cut from the end if needed."""

    title: str
    lines: list[str] = field(default_factory=list)
    fenced: str | None = None  # a code-fence language ("diff"), or None for plain Markdown
    open: bool = False


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def assemble(head: Sequence[str], sections: Sequence[Section], limit: int = LIMIT) -> str:
    """Join the head and the sections, cutting section lines so the result fits `limit`."""
    text = "\n".join(head) + "\n"
    cut: list[str] = []
    reserve = 400  # room for the note about what was cut
    for section in sections:
        if not section.lines:
            continue
        opening = f"\n<details{' open' if section.open else ''}>"
        opening += f"<summary>{section.title}</summary>\n\n"
        if section.fenced is not None:
            opening += f"```{section.fenced}\n"
        closing = "```\n" if section.fenced is not None else ""
        closing += "\n</details>\n"
        budget = limit - reserve - len(text) - len(opening) - len(closing) - 80
        if budget <= 0:
            cut.append(f"{section.title} ({len(section.lines)} lines)")
            continue
        body: list[str] = []
        used = 0
        for line in section.lines:
            if used + len(line) + 1 > budget:
                break
            body.append(line)
            used += len(line) + 1
        missing = len(section.lines) - len(body)
        if missing:
            body.append(f"… {missing} more lines cut")
            cut.append(f"{section.title}: {missing} of {len(section.lines)} lines")
        text += opening + "\n".join(body) + "\n" + closing
    if cut:
        text += (
            "\n> **Cut to stay under "
            f"{limit:,} characters:** {'; '.join(cut)}. "
            "The full plan is in `vmkeep plan -o json`.\n"
        )
    return text


def render_markdown(plan: Plan, limit: int = LIMIT) -> str:
    creates = sum(1 for a in plan.actions if not a.kind.is_delete)
    head = [
        "### vmkeep plan",
        "",
        f"**{creates} to create, {plan.delete_count} to delete** · "
        f"policy revision `{(plan.policy_revision or 'working directory')[:12]}` · "
        f"observed `{plan.observed_digest[:19]}` · now `{format_time(plan.now)}`",
        "",
    ]
    if plan.blocked:
        head += [f"> :no_entry: **Blocked:** {plan.blocked_reason}. Nothing will be applied.", ""]
    head += _summary_table(plan)
    return assemble(head, _sections(plan), limit)


def _summary_table(plan: Plan) -> list[str]:
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    for c in plan.coverage:
        rows[c.policy]["vms"] += 1
        rows[c.policy][c.state.value] += 1
    for a in plan.actions:
        rows[a.policy]["delete" if a.kind.is_delete else "create"] += 1
    lines = [
        "| policy | VMs | covered | due | late | missing | create | delete |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in sorted(rows):
        r = rows[name]
        lines.append(
            f"| `{_escape(name)}` | {r['vms']} | {r['covered']} | {r['due']} | {r['late']} "
            f"| {r['missing']} | {r['create']} | {r['delete']} |"
        )
    if not rows:
        lines.append("| (no policies) | 0 | 0 | 0 | 0 | 0 | 0 | 0 |")
    return lines


def _sections(plan: Plan) -> list[Section]:
    actions = Section(f"Actions ({len(plan.actions)})", fenced="diff", open=True)
    for a in plan.actions:
        sign = "-" if a.kind.is_delete else "+"
        actions.lines.append(
            f"{sign} {a.kind.value:<16} {a.vcenter}/{a.vm.name} {a.point_id}  # {a.reason}"
        )
    problems = [c for c in plan.coverage if c.state is not CoverageState.COVERED]
    coverage = Section(f"Coverage problems ({len(problems)})")
    if problems:
        coverage.lines += [
            "| VM | policy | state | slot | last point | note |",
            "|---|---|---|---|---|---|",
        ]
        for c in problems:
            last = format_time(c.last_slot) if c.last_slot else "never"
            coverage.lines.append(
                f"| {_escape(c.vcenter)}/{_escape(c.vm.name)} | `{_escape(c.policy)}` | "
                f"{c.state.value} | {format_time(c.slot)} | {last} | {_escape(c.note)} |"
            )
    warnings = Section(f"Warnings ({len(plan.warnings)})")
    for w in plan.warnings:
        subject = f"{w.vcenter}/{w.vm.name}" if w.vm else w.policy
        ids = f" ({len(w.point_ids)} points)" if w.point_ids else ""
        warnings.lines.append(
            f"- **{w.severity.value}** `{w.code}` {_escape(subject)}: {_escape(w.message)}{ids}"
        )
    kept = [d for d in plan.retention if d.keep]
    retention = Section(f"Retention: points kept ({len(kept)})")
    if kept:
        retention.lines += ["| point | kind | reasons |", "|---|---|---|"]
        retention.lines += [
            f"| `{d.point_id}` | {d.kind.value} | {_escape(', '.join(d.reasons))} |" for d in kept
        ]
    return [actions, coverage, warnings, retention]

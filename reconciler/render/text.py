"""The plan for terminals: Terraform-like `+`/`-` lines grouped by VM, each with its reason.

Colour is used only when asked (the CLI asks when stdout is a TTY and NO_COLOR is unset).
"""

from __future__ import annotations

from collections import Counter
from itertools import groupby

from reconciler.model import Action, Coverage, CoverageState, Plan, PlanWarning, Severity
from reconciler.observed import format_time

__all__ = ["coverage_line", "held_lines", "render_text", "unobserved_lines"]

_RESET = "\x1b[0m"
_COLOURS = {"+": "\x1b[32m", "-": "\x1b[31m", "!": "\x1b[33m", "bold": "\x1b[1m"}


class _Painter:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def __call__(self, style: str, text: str) -> str:
        return f"{_COLOURS[style]}{text}{_RESET}" if self.colour else text


def _sign(action: Action) -> str:
    return "-" if action.kind.is_delete else "+"


def coverage_line(c: Coverage) -> str:
    """`  late     vc/vm [policy] slot …, last point …` for a VM that is not covered."""
    note = f" - {c.note}" if c.note else ""
    last = format_time(c.last_slot) if c.last_slot else "never"
    return (f"  {c.state.value:<8} {c.vcenter}/{c.vm.name} [{c.policy}] slot "
            f"{format_time(c.slot)}, last point {last}{note}")


def render_text(plan: Plan, *, colour: bool = False) -> str:
    paint = _Painter(colour)
    lines = [
        paint("bold", "vmkeep plan"),
        f"  policy revision: {plan.policy_revision or '(working directory)'}",
        f"  observed state:  {plan.observed_digest}",
        f"  now:             {format_time(plan.now)}",
        "",
    ]
    lines.extend(unobserved_lines(plan, colour=colour))
    if not plan.actions:
        lines.append("No changes. Every selected VM is covered or waiting for its window.")
    for (vcenter, vm), actions in groupby(plan.actions, key=lambda a: (a.vcenter, a.vm)):
        lines.append(paint("bold", f"{vcenter}/{vm.name}") + f" ({vm.instance_uuid})")
        for a in actions:
            sign = _sign(a)
            where = f" -> {a.target}" if a.target else ""
            head = paint(sign, f"  {sign} {a.kind.value:<16}") + f" {a.point_id}{where}"
            lines.append(head)
            lines.append(f"      {a.reason}")
            if a.requires:
                lines.append(f"      only after {', '.join(a.requires)} exists")
        lines.append("")

    problems = [c for c in plan.coverage if c.state is not CoverageState.COVERED]
    if problems:
        lines.append(paint("bold", "Coverage"))
        lines.extend(coverage_line(c) for c in problems)
        lines.append("")
    if plan.warnings:
        lines.append(paint("bold", "Warnings"))
        lines.extend(_warning_line(w, paint) for w in plan.warnings)
        lines.append("")

    counts = Counter(c.state for c in plan.coverage)
    creates = sum(1 for a in plan.actions if not a.kind.is_delete)
    kept = sum(1 for d in plan.retention if d.keep)
    unknown = f", {counts[CoverageState.UNKNOWN]} unknown" if plan.unobserved else ""
    lines.append(
        f"Coverage: {counts[CoverageState.COVERED]} covered, {counts[CoverageState.DUE]} due, "
        f"{counts[CoverageState.LATE]} late, {counts[CoverageState.MISSING]} missing{unknown}; "
        f"{kept} points kept by retention."
    )
    held = f", {len(plan.held)} held back" if plan.held else ""
    lines.append(paint("bold", f"Plan: {creates} to create, {plan.delete_count} to delete{held}."))
    lines.extend(held_lines(plan, colour=colour))
    if plan.blocked:
        lines.append(paint("-", f"BLOCKED: {plan.blocked_reason}. Nothing will be applied."))
    return "\n".join(lines) + "\n"


def unobserved_lines(plan: Plan, *, colour: bool = False) -> list[str]:
    """One line per vCenter that could not be observed (and a blank line after them)."""
    if not plan.unobserved:
        return []
    paint = _Painter(colour)
    lines = [
        paint("!", f"UNOBSERVED: vCenter {name!r} could not be observed: {reason}. ")
        + "Its VMs' coverage is unknown; nothing is created or deleted for them."
        for name, reason in sorted(plan.unobserved.items())
    ]
    return [*lines, ""]


def held_lines(plan: Plan, *, colour: bool = False) -> list[str]:
    """The HELD section: the reason (count, limit, how to allow them) and every deletion the
    deletion budget holds back, with its reason; empty when nothing is held."""
    if not plan.held:
        return []
    paint = _Painter(colour)
    lines = [paint("!", f"HELD: {plan.held_reason}: they are held back, the backups still "
                        f"run. To allow them: {plan.held_hint}.")]
    for a in plan.held:
        where = f" in {a.target}" if a.target else ""
        lines.append(f"  - {a.kind.value:<16} {a.point_id}{where} ({a.vcenter}/{a.vm.name}): "
                     f"{a.reason}")
    return lines


def _warning_line(w: PlanWarning, paint: _Painter) -> str:
    where = f"{w.vcenter}/{w.vm.name}" if w.vm and w.vcenter else (w.vm.name if w.vm else "")
    subject = " ".join(x for x in (where, f"[{w.policy}]" if w.policy else "") if x)
    label = (
        paint("!", f"{w.severity.value:<8}")
        if w.severity is not Severity.INFO
        else (f"{w.severity.value:<8}")
    )
    text = f"  {label} {w.code}: {subject + ': ' if subject else ''}{w.message}"
    if w.point_ids:
        shown = ", ".join(w.point_ids[:5])
        more = f" (+{len(w.point_ids) - 5} more)" if len(w.point_ids) > 5 else ""
        text += f"\n           {shown}{more}"
    return text

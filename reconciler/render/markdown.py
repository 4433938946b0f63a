"""The plan (and review) as Markdown for pull-request comments.

A summary table comes first, then collapsible `<details>` sections. The whole comment is
always shorter than `LIMIT` characters (GitHub refuses comments over 65,535):

* the summary table lists at most `SUMMARY_ROWS` policies, the most important first
  (deletions, then late or missing coverage), and one row adding up the rest;
* sections are filled in order of importance and whatever does not fit is cut;
* a final check drops whole sections, and as a last resort cuts the head, until the
  comment, with its note of what was cut, fits.

Every text that comes from outside (policy names and descriptions, VM, vCenter and tag
names, fault messages, revisions) is made inert before it goes in, since a pull request's
author controls some of it and the comment is what reviewers trust:

* `one_line` first: line breaks become `⏎`, other control characters and bidirectional
  overrides become `�`, so nothing can start a new block (a heading, a quote, a fence);
* in a code block (`Section.fenced`) the fence is longer than any run of backticks inside,
  so no line can close it; code blocks render no HTML, links or mentions;
* in plain Markdown `text` escapes what is Markdown inside a line with a backslash (no
  HTML, emphasis, links, images, tables, entities or math), and breaks what GitHub turns
  into links or notifications by itself with a zero-width space: `@` mentions, bare
  `scheme://` and `www.` links;
* `code` makes an inline code span whose backtick run is longer than any inside.
"""

from __future__ import annotations

import html
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from reconciler.model import CoverageState, Plan
from reconciler.observed import format_time

__all__ = [
    "LIMIT", "SUMMARY_ROWS", "Section", "assemble", "code", "fence", "one_line",
    "render_markdown", "text",
]

LIMIT = 60_000
SUMMARY_ROWS = 50  # policies listed in the summary table; the rest are added up in one row

_NOTE_ROOM = 600  # kept free for the note about what was cut
_COLUMNS = ("vms", "covered", "due", "late", "missing", "create", "delete")


@dataclass
class Section:
    """A collapsible section: `lines` go inside, one per item, cut from the end if needed."""

    title: str
    lines: list[str] = field(default_factory=list)  # plain: made inert by the caller
    fenced: str | None = None  # a code-fence language ("diff"), or None for plain Markdown
    open: bool = False


_ZWSP = "\u200b"
#: Line breaks of any kind (CommonMark's and Unicode's).
_BREAKS = re.compile("\r\n|[\n\r\v\f\x85\u2028\u2029]")
#: Other control characters, and the bidirectional formatting ones that can make text
#: read differently from what it is ("Trojan Source").
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f"
                       "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: What is Markdown (or HTML, an entity, math) anywhere in a line: code, emphasis,
#: strikethrough, links and images, tables, raw HTML and autolinks, entities, math. (Text
#: never starts a line, so block markers such as `#`, `-`, `1.` need no escape.)
_PUNCTUATION = re.compile(r"([\\`*_\[\]<>!|~&$])")
_AUTOLINK = re.compile(r"(?i)(://|(?<![a-z0-9])www\.)")


def one_line(value: str) -> str:
    """`value` on one line: breaks shown as `⏎`, control and bidi characters as `�`."""
    return _CONTROLS.sub("\ufffd", _BREAKS.sub("⏎", value.replace("\t", " ")))


def text(value: str) -> str:
    """`value` as inert Markdown text, fit for a table cell, a list item or a quote."""
    # `@name` would notify, `scheme://` and `www.` would become links: a zero-width space
    # after `@`, inside `://` and after `www` stops GitHub (it matches on the text).
    flat = _AUTOLINK.sub(_break_link, one_line(value).replace("@", "@" + _ZWSP))
    return _PUNCTUATION.sub(r"\\\1", flat)


def _break_link(match: re.Match[str]) -> str:
    found = match.group(1)
    return f":{_ZWSP}//" if found == "://" else f"{found[:-1]}{_ZWSP}."


def code(value: str, *, in_table: bool = True) -> str:
    """`value` as an inline code span (nothing inside one is Markdown, HTML or a link);
    in a table `|` is escaped as GFM requires even inside code."""
    flat = one_line(value)
    ticks = "`" * (_longest_backtick_run(flat) + 1)
    pad = " " if flat.startswith(("`", " ")) or flat.endswith(("`", " ")) or not flat else ""
    if in_table:
        flat = flat.replace("|", "\\|")
    return f"{ticks}{pad}{flat}{pad}{ticks}"


def fence(lines: Sequence[str]) -> str:
    """A code fence no line of `lines` can close: longer than any backtick run in them."""
    return "`" * max(3, max((_longest_backtick_run(line) for line in lines), default=0) + 1)


def _longest_backtick_run(value: str) -> int:
    return max((len(run) for run in re.findall("`+", value)), default=0)


@dataclass
class _Block:
    name: str  # a section's title ("" for the head)
    text: str
    lines: int = 0  # how many lines the section had before any cut


def assemble(
    head: Sequence[str],
    sections: Sequence[Section],
    limit: int = LIMIT,
    cut: Sequence[str] = (),
) -> str:
    """Join the head and the sections into fewer than `limit` characters.

    Section lines are cut from the end of each section as needed; `cut` names what the
    caller already left out (e.g. summary rows). Whatever was cut is listed in a final note.
    """
    if limit < 1_000:
        raise ValueError(f"a Markdown limit of {limit} characters leaves no room for a summary")
    notes = list(cut)
    blocks = [_head_block(head, limit - _NOTE_ROOM, notes)]
    for section in sections:
        if not section.lines:
            continue
        lines = [one_line(line) for line in section.lines] if section.fenced is not None \
            else section.lines
        ticks = fence(lines)
        opening = f"\n<details{' open' if section.open else ''}>"
        opening += f"<summary>{html.escape(section.title)}</summary>\n\n"
        if section.fenced is not None:
            opening += f"{ticks}{section.fenced}\n"
        closing = f"{ticks}\n" if section.fenced is not None else ""
        closing += "\n</details>\n"
        used_so_far = sum(len(b.text) for b in blocks)
        budget = limit - _NOTE_ROOM - used_so_far - len(opening) - len(closing) - 80
        body: list[str] = []
        used = 0
        for line in lines:
            if used + len(line) + 1 > budget:
                break
            body.append(line)
            used += len(line) + 1
        if not body:
            notes.append(f"{section.title} ({len(section.lines):,} lines)")
            continue
        missing = len(section.lines) - len(body)
        if missing:
            body.append(f"… {missing:,} more lines cut")
            notes.append(f"{section.title}: {missing:,} of {len(section.lines):,} lines")
        text = opening + "\n".join(body) + "\n" + closing
        blocks.append(_Block(section.title, text, len(section.lines)))
    return _fit(blocks, notes, limit)


def _head_block(head: Sequence[str], budget: int, notes: list[str]) -> _Block:
    """The head, cut line by line from the end if it alone does not fit `budget`."""
    text = "\n".join(head) + "\n"
    if len(text) <= budget:
        return _Block("", text)
    kept: list[str] = []
    used = 0
    for line in head:
        if used + len(line) + 1 > budget - 80:
            break
        kept.append(line)
        used += len(line) + 1
    missing = len(head) - len(kept)
    notes.append(f"the summary: {missing:,} of {len(head):,} lines")
    return _Block("", "\n".join([*kept, "", f"… {missing:,} more lines cut"]) + "\n")


def _note(notes: Sequence[str], limit: int) -> str:
    if not notes:
        return ""
    return (
        f"\n> **Cut to stay under {limit:,} characters:** {'; '.join(notes)}. "
        "The full plan is in `vmkeep plan -o json`.\n"
    )


def _fit(blocks: list[_Block], notes: list[str], limit: int) -> str:
    """The final guarantee: drop whole sections from the end, then cut the head, until the
    text with its note is shorter than `limit`."""
    text = "".join(b.text for b in blocks) + _note(notes, limit)
    while len(text) >= limit and len(blocks) > 1:
        dropped = blocks.pop()
        notes = [n for n in notes if not n.startswith(f"{dropped.name}:")]
        notes.append(f"{dropped.name} ({dropped.lines:,} lines)")
        text = "".join(b.text for b in blocks) + _note(notes, limit)
    if len(text) >= limit:  # only the head is left and it is still too long
        note = _note([*notes, "the rest of the head"], limit)
        note = note if len(note) < limit // 2 else _note(["(too much to list)"], limit)
        room = limit - len(note) - 20
        head = blocks[0].text[:room]
        head = head[: head.rfind("\n") + 1] if "\n" in head else head
        text = head + "\n… cut\n" + note
    return text


def render_markdown(plan: Plan, limit: int = LIMIT) -> str:
    creates = sum(1 for a in plan.actions if not a.kind.is_delete)
    head = [
        "### vmkeep plan",
        "",
        f"**{creates} to create, {plan.delete_count} to delete** · "
        f"policy revision {code((plan.policy_revision or 'working directory')[:12])} · "
        f"observed {code(plan.observed_digest[:19])} · now {code(format_time(plan.now))}",
        "",
    ]
    if plan.blocked:
        head += [f"> :no_entry: **Blocked:** {text(plan.blocked_reason or '')}. Nothing will "
                 "be applied.", ""]
    for name, reason in sorted(plan.unobserved.items()):
        head += [f"> :warning: **vCenter {text(name)} could not be observed:** "
                 f"{text(reason)}. Its VMs' coverage is unknown; nothing is created or "
                 "deleted for them.", ""]
    if plan.held:  # the reason holds only numbers and fixed words
        head += [f"> :warning: **Held back:** {plan.held_reason}: they are held back, the "
                 f"backups still run. To allow them: {plan.held_hint}.", ""]
    table, cut = _summary_table(plan)
    head += table
    return assemble(head, _sections(plan), limit, cut)


def _importance(name: str, row: Counter[str]) -> tuple[int, int, int, int, str]:
    return (-row["delete"], -(row["late"] + row["missing"]), -row["due"], -row["create"], name)


def _summary_table(plan: Plan, max_rows: int = SUMMARY_ROWS) -> tuple[list[str], list[str]]:
    """The per-policy summary, most important first, and a note when rows were left out."""
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
    order = sorted(rows, key=lambda name: _importance(name, rows[name]))
    for name in order[:max_rows]:
        counts = " | ".join(str(rows[name][column]) for column in _COLUMNS)
        lines.append(f"| {code(name)} | {counts} |")
    rest = order[max_rows:]
    if rest:
        total: Counter[str] = Counter()
        for name in rest:
            total.update(rows[name])
        counts = " | ".join(str(total[column]) for column in _COLUMNS)
        lines.append(f"| … {len(rest):,} more policies | {counts} |")
    if not rows:
        lines.append("| (no policies) | 0 | 0 | 0 | 0 | 0 | 0 | 0 |")
    cut = (
        [
            f"summary table: {len(rest):,} of {len(order):,} policies added up in one row "
            "(those with deletions or late coverage are listed first)"
        ]
        if rest
        else []
    )
    return lines, cut


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
                f"| {text(f'{c.vcenter}/{c.vm.name}')} | {code(c.policy)} | "
                f"{text(c.state.value)} | {format_time(c.slot)} | {last} | {text(c.note)} |"
            )
    warnings = Section(f"Warnings ({len(plan.warnings)})")
    for w in plan.warnings:
        subject = f"{w.vcenter}/{w.vm.name}" if w.vm else w.policy
        ids = f" ({len(w.point_ids)} points)" if w.point_ids else ""
        warnings.lines.append(
            f"- **{text(w.severity.value)}** {code(w.code, in_table=False)} {text(subject)}: "
            f"{text(w.message)}{ids}"
        )
    kept = [d for d in plan.retention if d.keep]
    retention = Section(f"Retention: points kept ({len(kept)})")
    if kept:
        retention.lines += ["| point | kind | reasons |", "|---|---|---|"]
        retention.lines += [
            f"| {code(d.point_id)} | {text(d.kind.value)} | {text(', '.join(d.reasons))} |"
            for d in kept
        ]
    if not plan.held:
        return [actions, coverage, warnings, retention]
    held = Section(f"Held back by the deletion budget ({len(plan.held)})", fenced="diff",
                   open=True)
    for a in plan.held:
        held.lines.append(
            f"- {a.kind.value:<16} {a.vcenter}/{a.vm.name} {a.point_id}  # held: {a.reason}"
        )
    return [actions, held, coverage, warnings, retention]

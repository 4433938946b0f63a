"""The controller's status page (`GET /`): plain HTML and CSS, nothing else.

No script, no external asset, no form (a `<meta>` refresh reloads it every minute): a
coverage grid (one row per VM, one column per policy, a cell coloured by coverage state),
the last runs, the failures of the last run, the findings, and the export points due for
verification or found damaged. Every value is escaped (`html.escape`, quotes included):
names come from vCenter and from policy files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape

from reconciler.model import CoverageState
from reconciler.observed import format_time
from reconciler.status import Status

__all__ = ["status_page"]

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eee}
td.state{text-align:center;font-weight:600;min-width:6em}
.covered{background:#b7e4b0}.due{background:#fff1a8}.late{background:#ffc48a}
.missing{background:#f4a3a3}.unknown{background:#ddd}.none{background:#fff;color:#999}
.ok{color:#1d6b1d}.bad{color:#a11}
ul{margin:.2em 0;padding-left:1.4em}
p.meta{color:#555;margin:.2em 0}
.legend span{display:inline-block;padding:0 .6em;margin-right:.3em;border:1px solid #ccc}
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table; the cells in `rows` must already be escaped HTML."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _grid(status: Status) -> str:
    plan = status.plan
    if plan is None:
        return "<p>No policies given: coverage unknown.</p>"
    policies = sorted({c.policy for c in plan.coverage})
    vms: dict[tuple[str, str, str], dict[str, CoverageState]] = {}
    for c in plan.coverage:
        vms.setdefault((c.vcenter, c.vm.name, c.vm.instance_uuid), {})[c.policy] = c.state
    if not vms:
        return "<p>No VM is selected by any policy.</p>"
    head = "<th>vCenter</th><th>VM</th>" + "".join(f"<th>{_e(p)}</th>" for p in policies)
    rows = []
    for (vcenter, name, uuid), states in sorted(vms.items()):
        cells = []
        for p in policies:
            state = states.get(p)
            if state is None:
                cells.append('<td class="state none" data-state="">&#8211;</td>')
            else:
                cells.append(f'<td class="state {_e(state.value)}" data-policy="{_e(p)}" '
                             f'data-state="{_e(state.value)}">{_e(state.value)}</td>')
        rows.append(f'<tr data-vm="{_e(name)}" data-uuid="{_e(uuid)}"><td>{_e(vcenter)}</td>'
                    f"<td>{_e(name)}</td>{''.join(cells)}</tr>")
    legend = "".join(f'<span class="{s.value}">{s.value}</span>' for s in CoverageState)
    counts = status.coverage_counts()
    summary = ", ".join(f"{counts.get(s.value, 0)} {s.value}" for s in CoverageState)
    return (f'<p class="legend">{legend}</p><p class="meta">{_e(summary)}</p>'
            f'<table id="coverage"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _iso(epoch: float) -> str:
    return format_time(datetime.fromtimestamp(epoch, UTC))


def status_page(status: Status, *, title: str = "vmkeep", controller: Sequence[str] = ()
                ) -> str:
    """The whole page. `controller` lines (already plain text) describe the loop."""
    parts = [f"<h1>{_e(title)}</h1>",
             f'<p class="meta">status at {_e(format_time(status.now))}</p>']
    parts.extend(f'<p class="meta">{_e(line)}</p>' for line in controller)
    if status.attention:
        items = "".join(f"<li>{_e(a)}</li>" for a in status.attention)
        parts.append(f'<h2 class="bad">Needs attention</h2><ul id="attention">{items}</ul>')
    else:
        parts.append('<h2 class="ok">All well</h2>')
    parts.append("<h2>Coverage</h2>" + _grid(status))

    parts.append("<h2>Last runs</h2>")
    if status.runs:
        parts.append(_table(
            ["run", "started", "finished", "revision", "outcomes"],
            ([_e(r.run_id), _e(format_time(r.started_at)),
              _e(format_time(r.finished_at)) if r.finished_at else "not finished",
              _e((r.policy_revision or "-")[:12]),
              _e(", ".join(f"{n} {k}" for k, n in sorted(r.counts.items())) or "no actions")]
             for r in status.runs), "runs"))
    else:
        parts.append("<p>No apply run recorded yet.</p>")

    parts.append("<h2>Failures of the last run</h2>")
    if status.failures:
        parts.append(_table(["kind", "VM", "point", "error"], (
            [_e(a.kind), _e(f"{a.vcenter}/{a.vm_name}"), _e(a.point_id), _e(a.error or "failed")]
            for a in status.failures), "failures"))
    else:
        parts.append("<p>None.</p>")

    parts.append("<h2>Findings</h2>")
    findings = status.plan.warnings if status.plan else ()
    if findings:
        parts.append(_table(["code", "severity", "VM", "message"], (
            [_e(w.code), _e(w.severity.value),
             _e(f"{w.vcenter}/{w.vm.name}" if w.vm else w.policy or "-"), _e(w.message)]
            for w in findings), "findings"))
    else:
        parts.append("<p>None.</p>")

    parts.append("<h2>Verification</h2>")
    v = status.verification
    if v is None or not (v.points or v.damaged):
        parts.append("<p>No policy asks for scheduled verification (exports.verify).</p>")
    else:
        parts.append(f'<p class="meta">{len(v.points)} export point(s) on a schedule, '
                     f"{len(v.due)} due, {len(v.overdue)} overdue, "
                     f"{len(v.damaged)} damaged</p>")
        if v.damaged:
            parts.append(_table(["target", "damaged point", "verified", "what"], (
                [_e(r.target), _e(r.point_id), _e(_iso(r.verified_at)), _e(r.message)]
                for r in v.damaged), "damaged"))
        if v.due:
            parts.append(_table(["target", "point due for verification", "last verified",
                                 "due by"], (
                [_e(c.target), _e(c.point_id),
                 _e(_iso(c.last_verified)) if c.last_verified else "never",
                 _e(_iso(c.due_at))] for c in v.due), "due"))
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="refresh" content="60">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )

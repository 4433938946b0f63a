"""Renderers: golden text/Markdown/JSON for one varied plan, schema validity, size cap.

Regenerate the golden files with `VMKEEP_UPDATE_GOLDEN=1 pytest tests/unit/test_render.py`
and review the diff.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from reconciler.markers import MarkerKind
from reconciler.model import CoverageState, Duration, KeepRules, Limits, Plan, PolicySet
from reconciler.observed import state_to_json
from reconciler.planner import plan
from reconciler.render import plan_from_json, plan_to_json, render_markdown, render_text
from reconciler.render.markdown import SUMMARY_ROWS, Section, assemble
from tests.unit.estate import (
    at,
    export_point,
    foreign_snapshot,
    marked_snapshot,
    policy,
    state,
    uuid_of,
    vm,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "plan"
UPDATE = os.environ.get("VMKEEP_UPDATE_GOLDEN") == "1"
NOW = at("2026-11-25 12:00")
SLOT = at("2026-11-25 01:00")


def schema(name: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads((ROOT / "schemas" / name).read_text()))


def sample_plan(limit: int = 50) -> Plan:
    """A plan with every action kind, coverage state and warning kind."""

    def snaps(name: str, days: range, pol: str = "gold") -> list:
        return [
            marked_snapshot(pol, uuid_of(name), SLOT - timedelta(days=d), f"snapshot-{d}")
            for d in days
        ]

    web1 = vm("web1", snapshots=snaps("web1", range(1, 10)))
    web2 = vm(
        "web2",
        snapshots=[
            *snaps("web2", range(0, 3)),
            foreign_snapshot("snapshot-77", NOW - timedelta(days=10)),
            marked_snapshot("gold", uuid_of("web2"), SLOT, "snapshot-tmp", MarkerKind.EXPORT_TEMP),
        ],
    )
    db1 = vm("db1", folder="/DC0/vm/db", snapshots=snaps("db1", range(2, 4), pol="retired"))
    points = [
        export_point("gold", web1, SLOT - timedelta(days=7)),
        export_point("gold", web1, SLOT - timedelta(days=14)),
        export_point("gold", web1, SLOT - timedelta(days=1), complete=False),
        export_point("gold", vm("gone1"), SLOT - timedelta(days=30)),
    ]
    gold = policy(
        "gold",
        names=("web*",),
        timezone="Europe/Berlin",
        cron="0 2 * * *",
        snapshot_keep=KeepRules(daily=5),
        max_age=Duration(days=7, text="7d"),
        export_keep=KeepRules(weekly=1),
    )
    return plan(
        PolicySet((gold,), "0123456789abcdef0123456789abcdef01234567"),
        state([web1, web2, db1], points),
        NOW,
        Limits(max_deletes_per_run=limit),
    )


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; rerun with VMKEEP_UPDATE_GOLDEN=1"


def test_text_rendering_matches_the_golden_file() -> None:
    check_golden("sample.txt", render_text(sample_plan()))


def test_held_deletions_are_listed_in_the_text_rendering_as_in_the_golden_file() -> None:
    text = render_text(sample_plan(limit=2))
    check_golden("held.txt", text)
    assert "HELD: " in text and "--max-deletes" in text and "limits.maxDeletesPerRun" in text


def test_markdown_rendering_matches_the_golden_file() -> None:
    check_golden("sample.md", render_markdown(sample_plan(limit=2)))


def test_json_rendering_matches_the_golden_file_and_the_schema() -> None:
    document = plan_to_json(sample_plan())
    schema("plan.schema.json").validate(document)
    check_golden("sample.json", json.dumps(document, indent=2) + "\n")


def test_the_json_plan_reads_back_to_the_same_value() -> None:
    original = sample_plan()
    assert plan_from_json(json.loads(json.dumps(plan_to_json(original)))) == original


def test_observed_state_json_matches_the_state_schema() -> None:
    web = vm("web1", tags=("backup/gold",), attributes={"owner": "ops"})
    observed = state([web], [export_point("gold", web, SLOT)])
    schema("state.schema.json").validate(state_to_json(observed))


def test_colour_is_used_only_when_asked() -> None:
    p = sample_plan()
    assert "\x1b[" not in render_text(p)
    assert "\x1b[32m" in render_text(p, colour=True)


def test_every_action_appears_with_its_sign_and_reason_in_the_text() -> None:
    p = sample_plan()
    text = render_text(p)
    for a in p.actions:
        sign = "-" if a.kind.is_delete else "+"
        assert f"{sign} {a.kind.value}" in text and a.reason in text


@pytest.mark.parametrize("vms", [10, 400, 3000])
def test_markdown_stays_under_the_limit_and_says_what_was_cut(vms: int) -> None:
    p = sample_plan()
    many = tuple(
        a._replace(vm=replace(a.vm, name=f"vm{i:05d}")) for i in range(vms) for a in p.actions[:3]
    )
    big = replace(p, actions=many)
    text = render_markdown(big)
    assert len(text) < 60_000
    assert text.startswith("### vmkeep plan")
    assert ("lines cut" in text) == (vms >= 400)


def test_assemble_keeps_the_head_and_notes_whole_sections_that_did_not_fit() -> None:
    head = ["# head", "x" * 900]
    sections = [Section("first", ["a" * 50] * 30), Section("second", ["b" * 50] * 30)]
    text = assemble(head, sections, limit=1_500)
    assert text.startswith("# head") and len(text) < 1_500
    assert "second (30 lines)" in text


def many_policies(count: int) -> Plan:
    """The sample plan repeated for `count` policies with long names; only the last three
    (alphabetically) delete anything or are late, so they must head the summary table."""
    p = sample_plan(limit=10_000)
    deleting = {f"zz-{i}-team-policy-for-a-long-list-of-production-databases" for i in range(3)}
    names = sorted(
        {f"team-{i:05d}-policy-for-a-long-list-of-production-databases" for i in range(count - 3)}
        | deleting
    )
    actions, coverage, retention = [], [], []
    for name in names:
        uuid = f"{name}-uuid"
        actions += [
            a._replace(policy=name, vm=replace(a.vm, instance_uuid=uuid))
            for a in p.actions
            if name in deleting or not a.kind.is_delete
        ]
        state = CoverageState.LATE if name in deleting else CoverageState.DUE
        coverage += [
            replace(c, policy=name, vm=replace(c.vm, instance_uuid=uuid), state=state)
            for c in p.coverage
        ]
        retention += [d._replace(policy=name) for d in p.retention]
    deletes = sum(1 for a in actions if a.kind.is_delete)
    return replace(
        p,
        actions=tuple(actions),
        coverage=tuple(coverage),
        retention=tuple(retention),
        delete_count=deletes,
    )


def summary_rows(text: str) -> list[list[str]]:
    table = text[text.index("| policy | VMs |") : text.index("\n\n", text.index("| policy |"))]
    return [row.strip("|").split(" | ") for row in table.splitlines()[2:]]


@pytest.mark.parametrize("count", [3, SUMMARY_ROWS, SUMMARY_ROWS + 1, 1_200, 5_000])
def test_markdown_of_many_policies_stays_under_the_limit_with_the_summary_first(
    count: int,
) -> None:
    big = many_policies(count)
    text = render_markdown(big)
    assert len(text) < 60_000
    assert text.startswith("### vmkeep plan")
    assert text.index("| policy | VMs |") < text.index("<details")
    rows = summary_rows(text)
    assert len(rows) == min(count, SUMMARY_ROWS + 1)
    # the policies that delete or are late come first, whatever their names
    assert [r[0].startswith(" `zz-") for r in rows[:3]] == [True] * 3
    # nothing is lost from the table: the last row adds up the policies left out
    assert sum(int(r[1]) for r in rows) == len(big.coverage)
    assert sum(int(r[7]) for r in rows) == big.delete_count
    if count > SUMMARY_ROWS:
        left_out = count - SUMMARY_ROWS
        assert rows[-1][0] == f" … {left_out:,} more policies"
        assert f"summary table: {left_out:,} of {count:,} policies added up in one row" in text
    else:
        assert "more policies" not in text and "summary table:" not in text


def test_the_note_names_every_section_that_was_cut() -> None:
    text = render_markdown(many_policies(5_000))
    note = text[text.index("> **Cut to stay under 60,000 characters:**") :]
    assert note.endswith("The full plan is in `vmkeep plan -o json`.\n")
    for title in ("summary table:", "Actions (", "Coverage problems (", "Retention: points kept"):
        assert title in note


def test_a_head_longer_than_the_limit_is_cut_and_said_so() -> None:
    head = ["### vmkeep plan", "", *(f"| row {i} | " + "x" * 90 + " |" for i in range(2_000))]
    text = assemble(head, [Section("first", ["a" * 50] * 30)], limit=60_000)
    assert len(text) < 60_000
    assert text.startswith("### vmkeep plan\n\n| row 0 |")
    assert "the summary: " in text and "first (30 lines)" in text


@settings(max_examples=200, deadline=None)
@given(
    head=st.lists(st.text(max_size=3_000), min_size=1, max_size=30),
    sections=st.lists(
        st.tuples(
            st.text(max_size=200),
            st.lists(st.text(max_size=2_000), max_size=40),
            st.sampled_from([None, "diff"]),
        ),
        max_size=6,
    ),
    cut=st.lists(st.text(max_size=300), max_size=3),
    limit=st.integers(1_000, 20_000),
)
def test_assemble_is_always_under_the_limit(
    head: list[str],
    sections: list[tuple[str, list[str], str | None]],
    cut: list[str],
    limit: int,
) -> None:
    parts = [Section(title, lines, fenced) for title, lines, fenced in sections]
    text = assemble(["### head", *head], parts, limit=limit, cut=cut)
    assert len(text) < limit
    assert text.startswith("### head")

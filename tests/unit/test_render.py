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
from jsonschema import Draft202012Validator

from reconciler.markers import MarkerKind
from reconciler.model import Duration, KeepRules, Limits, Plan, PolicySet
from reconciler.observed import state_to_json
from reconciler.planner import plan
from reconciler.render import plan_from_json, plan_to_json, render_markdown, render_text
from reconciler.render.markdown import Section, assemble
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


def test_blocked_text_rendering_matches_the_golden_file() -> None:
    check_golden("blocked.txt", render_text(sample_plan(limit=2)))


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
        replace(a, vm=replace(a.vm, name=f"vm{i:05d}")) for i in range(vms) for a in p.actions[:3]
    )
    big = replace(p, actions=many)
    text = render_markdown(big)
    assert len(text) <= 60_000
    assert text.startswith("### vmkeep plan")
    assert ("lines cut" in text) == (vms >= 400)


def test_assemble_keeps_the_head_and_notes_whole_sections_that_did_not_fit() -> None:
    head = ["# head", "x" * 900]
    sections = [Section("first", ["a" * 50] * 30), Section("second", ["b" * 50] * 30)]
    text = assemble(head, sections, limit=1_500)
    assert text.startswith("# head") and len(text) <= 1_500
    assert "second (30 lines)" in text

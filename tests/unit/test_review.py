"""Review mode, pure: what a policy change does, and its text/Markdown/JSON renderings.

Regenerate the golden files with `VMKEEP_UPDATE_GOLDEN=1 pytest tests/unit/test_review.py`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from reconciler.model import Duration, KeepRules, Limits, PolicySet, SnapshotSpec
from reconciler.planner import plan
from reconciler.render.review import (
    GUARDS_IN_HEAD,
    review_markdown,
    review_text,
    review_to_json,
)
from reconciler.review import FieldChange, PolicyChange, policy_fields, review
from tests.unit.estate import at, marked_snapshot, policy, state, uuid_of, vm

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "review"
UPDATE = os.environ.get("VMKEEP_UPDATE_GOLDEN") == "1"
NOW = at("2026-11-25 12:00")
SLOT = at("2026-11-25 01:00")


def observed():
    web = vm(
        "web1",
        snapshots=[
            marked_snapshot("gold", uuid_of("web1"), SLOT - timedelta(days=d), f"s{d}")
            for d in range(10)
        ],
    )
    return state([web, vm("app1"), vm("db1")])


def both(base: PolicySet, head: PolicySet, limit: int = 50):
    limits = Limits(max_deletes_per_run=limit)
    state_ = observed()
    return review(base, head, plan(base, state_, NOW, limits), plan(head, state_, NOW, limits))


BASE = PolicySet(
    (
        policy("gold", names=("web*",), snapshot_keep=KeepRules(daily=10)),
        policy("silver", names=("app*",), snapshot_keep=KeepRules(last=2)),
    ),
    "a" * 40,
)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; rerun with VMKEEP_UPDATE_GOLDEN=1"


def head_with_changes() -> PolicySet:
    gold = BASE.policies[0]
    shrunk = replace(
        gold,
        snapshots=SnapshotSpec(KeepRules(daily=4), Duration(days=30, text="30d")),
        include=replace(gold.include, names=("web*", "db*")),
    )
    return PolicySet((shrunk,), "b" * 40)


def test_a_changed_policy_lists_each_changed_field() -> None:
    result = both(BASE, head_with_changes())
    changes = {c.name: c for c in result.policies}
    assert changes["silver"].status == "removed"
    assert changes["gold"].fields == (
        FieldChange("selector.include.names", "web*", "web*, db*"),
        FieldChange("snapshots.keep.daily", "10", "4"),
        FieldChange("snapshots.maxAge", None, "30d"),
    )


def test_vms_gaining_and_losing_coverage_are_listed() -> None:
    result = both(BASE, head_with_changes())
    assert [(c.vm.name, c.change) for c in result.coverage] == [
        ("app1", "loses coverage"),
        ("db1", "gains coverage"),
    ]


def test_points_newly_deleted_are_exactly_the_ones_the_shrunk_rule_drops() -> None:
    result = both(BASE, head_with_changes())
    gone = sorted(p.slot for p in result.points if p.change == "newly deleted")
    # daily 4 counting the point about to be created keeps today and the 3 days before
    assert gone == [SLOT - timedelta(days=d) for d in range(9, 3, -1)]


def test_growing_a_rule_lists_points_newly_kept_with_their_reasons() -> None:
    shrunk = PolicySet((replace(BASE.policies[0], snapshots=SnapshotSpec(KeepRules(daily=4))),))
    result = both(shrunk, BASE)
    kept = [p for p in result.points if p.change == "newly kept"]
    assert len(kept) == 6 and {p.reason for p in kept} == {"daily snapshot"}


def test_a_head_plan_over_the_deletion_budget_is_a_guard_violation_still_listing_the_points(
) -> None:
    result = both(BASE, head_with_changes(), limit=3)
    assert result.guard_violations == ("6 deletions exceed limits.maxDeletesPerRun (3)",)
    assert sum(p.change == "newly deleted" for p in result.points) == 6


def test_an_unchanged_revision_reviews_as_no_change() -> None:
    result = both(BASE, BASE)
    assert (result.policies, result.coverage, result.points) == ((), (), ())


def test_policy_fields_flatten_durations_and_times_as_written() -> None:
    fields = policy_fields(head_with_changes().policies[0])
    assert fields["snapshots.maxAge"] == "30d"
    assert fields["schedule.cron"] == "0 1 * * *"
    assert "source.path" not in fields and fields["metadata.name"] == "gold"


def test_review_renderings_match_the_golden_files() -> None:
    result = both(BASE, head_with_changes(), limit=3)
    check_golden("change.txt", review_text(result))
    check_golden("change.md", review_markdown(result))
    document = review_to_json(result)
    assert document["headPlan"]["blocked"] is False
    assert document["headPlan"]["heldCount"] == len(result.head.held) > 3
    assert [p["status"] for p in document["policies"]] == ["changed", "removed"]
    assert [c["change"] for c in document["coverage"]] == ["loses coverage", "gains coverage"]


def head_with_max_age(hours: int = 6) -> PolicySet:
    """gold keeps 10 dailies but no snapshot older than `hours`: at 12:00 every snapshot
    of web1 (the newest from 01:00) is older, so only the never-empty guard keeps one."""
    gold = BASE.policies[0]
    aged = replace(gold, snapshots=SnapshotSpec(KeepRules(daily=10), Duration(hours=hours)))
    return PolicySet((aged, BASE.policies[1]), "c" * 40)


GUARD = (
    f"policy gold would delete every complete snapshot point of web1; the never-empty guard "
    f"keeps the newest, gold/{uuid_of('web1')}/20261125T010000Z"
)


def test_a_group_the_head_plan_would_empty_is_a_guard_violation() -> None:
    result = both(BASE, head_with_max_age())
    assert result.guard_violations == (GUARD,)
    assert not result.head.blocked


def test_a_guard_hit_the_base_plan_already_had_is_marked_as_such() -> None:
    result = both(head_with_max_age(), head_with_max_age(hours=5))
    assert result.guard_violations == (GUARD + " (already so at the base revision)",)


def test_both_guards_are_listed_when_both_trigger() -> None:
    result = both(BASE, head_with_max_age(), limit=3)
    assert result.guard_violations == ("9 deletions exceed limits.maxDeletesPerRun (3)", GUARD)


def test_guard_hits_appear_in_the_text_json_and_markdown_renderings() -> None:
    result = both(BASE, head_with_max_age())
    check_golden("guard.txt", review_text(result))
    check_golden("guard.md", review_markdown(result))
    assert f"GUARD: {GUARD}\n" in review_text(result)
    assert f"> :no_entry: **Guard:** {GUARD}\n" in review_markdown(result)
    assert review_to_json(result)["guardViolations"] == [GUARD]


def test_a_huge_review_stays_under_the_limit_with_the_summary_first() -> None:
    result = both(BASE, head_with_max_age())
    long = "team-policy-for-a-long-list-of-production-databases"
    policies = tuple(
        PolicyChange(
            f"{long}-{i:05d}",
            "changed",
            tuple(FieldChange(f"snapshots.keep.{k}", "30", "7") for k in ("daily", "weekly")),
        )
        for i in range(3_000)
    )
    point = result.points[0]
    points = tuple(replace(point, point_id=f"{point.point_id}-{i}") for i in range(3_000))
    guards = tuple(f"policy {long}-{i:05d} would delete every complete ..." for i in range(2_000))
    huge = replace(result, policies=policies, points=points, guard_violations=guards)
    text = review_markdown(huge)
    assert len(text) < 60_000
    assert text.startswith("### vmkeep plan review")
    assert text.index("| policies changed |") < text.index("<details")
    assert text.count(":no_entry: **Guard:**") == GUARDS_IN_HEAD
    assert f"… and {2_000 - GUARDS_IN_HEAD:,} more guard violations, listed below." in text
    note = text[text.index("> **Cut to stay under 60,000 characters:**") :]
    assert "Guard violations (2000): " in note and "Policies (3000)" in note
    assert "Restore points (3000)" in note

"""The planner: coverage, creates, retention deletes, guards and warnings."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from reconciler.markers import MarkerKind
from reconciler.model import (
    ActionKind,
    CoverageState,
    Duration,
    KeepRules,
    Limits,
    PolicySet,
    Selector,
    Window,
)
from reconciler.planner import plan
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

NOW = at("2026-11-25 12:00")
SLOT = at("2026-11-25 01:00")


def daily_snapshots(name: str, days: int, pol: str = "gold") -> list:
    return [
        marked_snapshot(pol, uuid_of(name), SLOT - timedelta(days=d), f"snapshot-{name}-{d}")
        for d in range(days)
    ]


def kinds(p) -> list[str]:
    return [a.kind.value for a in p.actions]


def test_a_vm_without_a_point_for_the_current_slot_gets_a_snapshot_create() -> None:
    result = plan(
        PolicySet((policy(snapshot_keep=KeepRules(daily=7)),), "abc"), state([vm("web1")]), NOW
    )
    (action,) = result.actions
    assert action.kind is ActionKind.SNAPSHOT_CREATE
    assert action.point_id == f"gold/{uuid_of('web1')}/20261125T010000Z"
    assert action.slot == SLOT and action.policy == "gold" and action.vm.name == "web1"
    assert result.policy_revision == "abc" and result.observed_digest.startswith("sha256:")


def test_a_covered_vm_gets_nothing_and_reports_covered() -> None:
    observed = state([vm("web1", snapshots=daily_snapshots("web1", 1))])
    result = plan(PolicySet((policy(snapshot_keep=KeepRules(daily=7)),)), observed, NOW)
    assert result.actions == ()
    assert [c.state for c in result.coverage] == [CoverageState.COVERED]


@pytest.mark.parametrize(
    ("now", "history", "expected"),
    [
        (at("2026-11-25 02:00"), 0, CoverageState.DUE),
        (at("2026-11-25 12:59"), 0, CoverageState.DUE),
        (at("2026-11-25 13:00"), 0, CoverageState.MISSING),
        (at("2026-11-25 13:00"), 3, CoverageState.LATE),
        (at("2026-11-25 02:00"), 3, CoverageState.DUE),
    ],
)
def test_coverage_turns_late_or_missing_after_half_the_schedule_interval(
    now, history, expected
) -> None:
    snaps = [
        marked_snapshot("gold", uuid_of("web1"), SLOT - timedelta(days=d), f"s{d}")
        for d in range(1, history + 1)
    ]
    result = plan(
        PolicySet((policy(snapshot_keep=KeepRules(daily=7)),)),
        state([vm("web1", snapshots=snaps)]),
        now,
    )
    (coverage,) = result.coverage
    assert coverage.state is expected
    assert coverage.threshold_seconds == 12 * 3600


def test_outside_the_window_nothing_is_created_and_the_plan_says_waiting_for_window() -> None:
    pol = policy(snapshot_keep=KeepRules(daily=7), window=Window(time(22, 0), time(6, 0)))
    result = plan(PolicySet((pol,)), state([vm("web1")]), NOW)
    assert result.actions == ()
    assert result.coverage[0].note == "waiting for window"
    inside = plan(PolicySet((pol,)), state([vm("web1")]), at("2026-11-25 23:30"))
    assert kinds(inside) == ["snapshot.create"]


def test_retention_deletes_what_no_rule_keeps_counting_the_point_being_created() -> None:
    observed = state([vm("web1", snapshots=daily_snapshots("web1", 10)[1:])])  # slots d-1..d-9
    result = plan(PolicySet((policy(snapshot_keep=KeepRules(daily=7)),)), observed, NOW)
    assert kinds(result) == [
        "snapshot.create",
        "snapshot.delete",
        "snapshot.delete",
        "snapshot.delete",
    ]
    deleted = sorted(a.slot for a in result.actions if a.kind.is_delete)
    assert deleted == [SLOT - timedelta(days=d) for d in (9, 8, 7)]
    assert all(a.reason == "kept by no rule (keep daily 7)" for a in result.actions[1:])
    kept = [d for d in result.retention if d.keep]
    assert len(kept) == 6 and all(d.reasons == ("daily snapshot",) for d in kept)


def test_max_age_removes_snapshots_that_rules_would_keep() -> None:
    observed = state([vm("web1", snapshots=daily_snapshots("web1", 5))])
    pol = policy(snapshot_keep=KeepRules(daily=30), max_age=Duration(days=2, text="2d"))
    result = plan(PolicySet((pol,)), observed, NOW)
    deleted = sorted(a.slot for a in result.actions)
    assert deleted == [SLOT - timedelta(days=d) for d in (4, 3, 2)]
    assert result.actions[0].reason == "older than snapshots.maxAge 2d"


def test_when_max_age_expired_every_point_the_deletions_require_the_new_point() -> None:
    snaps = [
        marked_snapshot("gold", uuid_of("web1"), SLOT - timedelta(days=d), f"s{d}") for d in (5, 6)
    ]
    pol = policy(snapshot_keep=KeepRules(daily=30), max_age=Duration(days=2, text="2d"))
    result = plan(PolicySet((pol,)), state([vm("web1", snapshots=snaps)]), NOW)
    create, *deletes = result.actions
    assert kinds(result) == ["snapshot.create", "snapshot.delete", "snapshot.delete"]
    assert all(a.requires == (create.point_id,) for a in deletes)


def test_a_deletion_that_relies_on_a_planned_create_says_so() -> None:
    snaps = [marked_snapshot("gold", uuid_of("web1"), SLOT - timedelta(days=1), "s1")]
    result = plan(
        PolicySet((policy(snapshot_keep=KeepRules(last=1)),)),
        state([vm("web1", snapshots=snaps)]),
        NOW,
    )
    create, delete = result.actions
    assert delete.kind is ActionKind.SNAPSHOT_DELETE
    assert delete.requires == (create.point_id,)


def test_outside_the_window_the_last_point_is_kept_by_the_guard() -> None:
    snaps = [marked_snapshot("gold", uuid_of("web1"), SLOT - timedelta(days=3), "s3")]
    pol = policy(
        snapshot_keep=KeepRules(last=1),
        max_age=Duration(days=1, text="1d"),
        window=Window(time(22, 0), time(6, 0)),
    )
    result = plan(PolicySet((pol,)), state([vm("web1", snapshots=snaps)]), NOW)
    assert result.actions == ()
    (decision,) = result.retention
    assert decision.keep and decision.reasons[0].startswith("guard:")


def test_foreign_snapshots_are_never_touched_and_old_ones_are_reported() -> None:
    snaps = [
        foreign_snapshot("f1", NOW - timedelta(hours=73)),
        foreign_snapshot("f2", NOW - timedelta(hours=10), parent="f1"),
    ]
    result = plan(
        PolicySet((policy(snapshot_keep=KeepRules(last=1)),)),
        state([vm("web1", snapshots=snaps)]),
        NOW,
    )
    assert all(a.snapshot_id not in {"f1", "f2"} for a in result.actions)
    codes = [w.code for w in result.warnings]
    assert codes.count("foreign-snapshot-old") == 1


def test_a_snapshot_chain_deeper_than_three_is_a_hygiene_warning() -> None:
    snaps = [foreign_snapshot("f0", NOW - timedelta(hours=1))] + [
        foreign_snapshot(f"f{i}", NOW - timedelta(hours=1), parent=f"f{i - 1}") for i in range(1, 4)
    ]
    result = plan(PolicySet(()), state([vm("web1", snapshots=snaps)]), NOW)
    assert [w.code for w in result.warnings if w.severity == "hygiene"] == ["snapshot-chain-deep"]


def test_a_marker_with_another_vms_uuid_is_treated_as_foreign() -> None:
    snaps = [marked_snapshot("gold", uuid_of("other"), SLOT - timedelta(days=9), "s9")]
    result = plan(
        PolicySet((policy(snapshot_keep=KeepRules(last=1)),)),
        state([vm("web1", snapshots=snaps)]),
        NOW,
    )
    assert kinds(result) == ["snapshot.create"]


def test_unselected_and_multiply_selected_vms_are_info_warnings() -> None:
    gold = policy("gold", names=("web*",), snapshot_keep=KeepRules(last=1))
    silver = policy("silver", names=("web1",), snapshot_keep=KeepRules(last=1))
    result = plan(PolicySet((gold, silver)), state([vm("web1"), vm("db1")]), NOW)
    by_code = {w.code: w for w in result.warnings}
    assert by_code["vm-unprotected"].vm == vm("db1").ref
    assert by_code["vm-multiple-policies"].vm == vm("web1").ref
    assert "gold, silver" in by_code["vm-multiple-policies"].message


def test_points_of_a_removed_policy_are_kept_and_listed_as_orphans() -> None:
    snaps = daily_snapshots("web1", 3, pol="retired")
    result = plan(
        PolicySet((policy(snapshot_keep=KeepRules(last=1)),)),
        state([vm("web1", snapshots=snaps)]),
        NOW,
    )
    assert all(a.policy != "retired" for a in result.actions)
    (orphans,) = [w for w in result.warnings if w.code == "orphan-points"]
    assert len(orphans.point_ids) == 3 and orphans.policy == "retired"


def test_exports_of_a_vm_that_is_gone_are_kept_and_listed() -> None:
    gone = vm("old1")
    points = [export_point("gold", gone, SLOT - timedelta(days=d)) for d in range(3)]
    pol = policy(export_keep=KeepRules(last=1))
    result = plan(PolicySet((pol,)), state([vm("web1")], points), NOW)
    assert kinds(result) == ["export.create"]
    (w,) = [w for w in result.warnings if w.code == "gone-vm-points"]
    assert w.vm == gone.ref and len(w.point_ids) == 3


def test_an_incomplete_export_is_removed_once_a_newer_complete_point_exists() -> None:
    web = vm("web1")
    points = [
        export_point("gold", web, SLOT - timedelta(days=2), complete=False),
        export_point("gold", web, SLOT - timedelta(days=1)),
        export_point("gold", web, SLOT, complete=False),
    ]
    result = plan(PolicySet((policy(export_keep=KeepRules(daily=7)),)), state([web], points), NOW)
    assert kinds(result) == ["export.create", "export.delete"]
    assert result.actions[1].slot == SLOT - timedelta(days=2)
    assert result.actions[1].reason.startswith("incomplete export")


def test_a_leftover_temporary_export_snapshot_is_deleted() -> None:
    temp = marked_snapshot("gold", uuid_of("web1"), SLOT, "tmp", MarkerKind.EXPORT_TEMP)
    web = vm("web1", snapshots=[temp])
    result = plan(
        PolicySet((policy(export_keep=KeepRules(daily=7)),)),
        state([web], [export_point("gold", web, SLOT)]),
        NOW,
    )
    (action,) = result.actions
    assert action.kind is ActionKind.SNAPSHOT_DELETE and action.snapshot_id == "tmp"


def test_deletions_above_the_limit_are_held_back_with_the_count_and_the_creates_still_run(
) -> None:
    vms = [vm(f"web{i}", snapshots=daily_snapshots(f"web{i}", 5)) for i in range(3)]
    vms.append(vm("fresh"))  # no point yet: a create
    result = plan(
        PolicySet((policy(snapshot_keep=KeepRules(daily=2)),)),
        state(vms),
        NOW,
        Limits(max_deletes_per_run=8),
    )
    assert not result.blocked
    assert len(result.held) == 9 and all(a.kind.is_delete for a in result.held)
    assert [a.kind for a in result.actions] == [ActionKind.SNAPSHOT_CREATE]
    assert result.delete_count == 0
    assert result.held_reason == "9 deletions exceed limits.maxDeletesPerRun (8)"
    assert result.held_hint == ("pass --max-deletes 9 (apply, run) or raise "
                                "limits.maxDeletesPerRun to 9 in the host config")
    relaxed = plan(
        PolicySet((policy(snapshot_keep=KeepRules(daily=2)),)),
        state(vms),
        NOW,
        Limits(max_deletes_per_run=9),
    )
    assert relaxed.held == () and relaxed.held_reason == "" and relaxed.delete_count == 9
    assert set(relaxed.actions) == {*result.actions, *result.held}


def test_the_removal_of_a_leftover_temporary_snapshot_is_never_held() -> None:
    temp = marked_snapshot("gold", uuid_of("web1"), SLOT, "tmp", MarkerKind.EXPORT_TEMP)
    web = vm("web1", snapshots=[temp])
    result = plan(
        PolicySet((policy(export_keep=KeepRules(daily=7)),)),
        state([web], [export_point("gold", web, SLOT)]),
        NOW,
        Limits(max_deletes_per_run=0),
    )
    (action,) = result.actions
    assert action.snapshot_id == "tmp" and result.held == ()


@pytest.mark.parametrize(
    ("include", "exclude", "selected"),
    [
        (Selector(names=("web*",)), None, ["web1", "web2"]),
        (Selector(folders=("/DC0/vm/prod",)), None, ["db1", "web1"]),
        (Selector(folders=("/DC0/vm",)), None, ["db1", "web1", "web2"]),
        (Selector(tags=("backup/gold", "env/prod")), None, ["web1"]),
        (Selector(attributes={"owner": "dba"}), None, ["db1"]),
        (Selector(names=("*",)), Selector(names=("web2",)), ["db1", "web1"]),
        (Selector(names=("web*",), folders=("/DC0/vm/test",)), None, ["web2"]),
    ],
)
def test_selectors_match_names_folders_tags_and_attributes(include, exclude, selected) -> None:
    vms = [
        vm("web1", tags=("backup/gold", "env/prod")),
        vm("web2", folder="/DC0/vm/test", tags=("backup/gold",)),
        vm("db1", attributes={"owner": "dba"}),
    ]
    pol = policy(snapshot_keep=KeepRules(last=1))
    pol = type(pol)(**{**pol.__dict__, "include": include, "exclude": exclude})
    result = plan(PolicySet((pol,)), state(vms), NOW)
    assert sorted(a.vm.name for a in result.actions) == selected


def test_a_policy_on_an_unknown_vcenter_plans_nothing_and_warns() -> None:
    pol = policy(snapshot_keep=KeepRules(last=1))
    pol = type(pol)(**{**pol.__dict__, "vcenter": "elsewhere"})
    result = plan(PolicySet((pol,)), state([vm("web1")]), NOW)
    assert result.actions == ()
    assert "vcenter-not-observed" in [w.code for w in result.warnings]


def test_slots_follow_the_policy_time_zone() -> None:
    pol = policy(cron="0 1 * * *", timezone="Europe/Berlin", snapshot_keep=KeepRules(last=1))
    result = plan(PolicySet((pol,)), state([vm("web1")]), NOW)
    assert result.actions[0].slot == at("2026-11-25 00:00")
    assert result.actions[0].point_id.endswith("/20261125T000000Z")


def test_a_schedule_that_never_fires_plans_nothing_for_its_policy_and_says_why() -> None:
    snaps = daily_snapshots("web1", 3)
    pol = policy(cron="0 0 30 2 *", snapshot_keep=KeepRules(last=1))
    result = plan(PolicySet((pol,)), state([vm("web1", snapshots=snaps)]), NOW)
    assert result.actions == ()
    assert "schedule-unusable" in [w.code for w in result.warnings]


def test_an_export_only_policy_whose_target_is_not_observed_claims_no_coverage() -> None:
    observed = state([vm("web1")])
    observed = type(observed)(observed.captured_at, observed.vcenters, {})
    result = plan(PolicySet((policy(export_keep=KeepRules(daily=7)),)), observed, NOW)
    assert result.actions == () and result.coverage == ()
    assert [w.code for w in result.warnings] == ["target-not-observed"]


def test_after_a_schedule_change_a_newer_point_of_the_same_day_covers_the_slot() -> None:
    # cron moved from 05:00 to 01:00; today's 05:00 point exists. A point for the 01:00 slot
    # would be the older of two in the same daily bucket (and not the oldest point, which
    # restic keeps while a rule has count left), so the very next plan would prune it.
    old = [marked_snapshot("gold", uuid_of("web1"), at(f"2026-11-{d} 05:00"), f"s-{d}")
           for d in (23, 24, 25)]
    observed = state([vm("web1", snapshots=old)])
    result = plan(PolicySet((policy(snapshot_keep=KeepRules(daily=7)),)), observed, NOW)
    assert result.actions == ()
    (coverage,) = result.coverage
    assert coverage.state is CoverageState.COVERED
    assert "a newer point supersedes this slot" in coverage.note


def test_a_newer_point_that_retention_would_not_prefer_does_not_cover_the_slot() -> None:
    # keep last 2: a point for the 01:00 slot would be kept beside the 05:00 one: create it.
    today_at_5 = marked_snapshot("gold", uuid_of("web1"), at("2026-11-25 05:00"), "s-5")
    observed = state([vm("web1", snapshots=[today_at_5])])
    result = plan(PolicySet((policy(snapshot_keep=KeepRules(last=2)),)), observed, NOW)
    assert kinds(result) == ["snapshot.create"]
    assert result.coverage[0].state is CoverageState.DUE

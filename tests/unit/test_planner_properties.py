"""Hypothesis properties of retention and the planner.

The number of examples comes from VMKEEP_HYPOTHESIS_EXAMPLES (default 150) so long
randomized runs are possible without slowing the normal suite.
"""

from __future__ import annotations

import os
import random
from dataclasses import replace
from datetime import datetime, time, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.markers import MarkerKind, parse_marker
from reconciler.model import (
    Action,
    ActionKind,
    Duration,
    ExportPoint,
    KeepRules,
    ObservedState,
    PolicySet,
    Snapshot,
    Window,
)
from reconciler.observed import build_catalog
from reconciler.planner import plan
from reconciler.retention import apply_rules
from reconciler.schedule import zone_of
from tests.unit.estate import (
    TARGET,
    VCENTER,
    at,
    export_point,
    foreign_snapshot,
    marked_snapshot,
    policy,
    state,
    vm,
)

EXAMPLES = int(os.environ.get("VMKEEP_HYPOTHESIS_EXAMPLES", "150"))
BASE = at("2026-03-29 00:00")  # Berlin and New York DST changes are both near
ZONES = ("UTC", "Europe/Berlin", "America/New_York")
CRONS = ("0 1 * * *", "30 2 * * *", "0 */6 * * *", "15 * * * *", "0 3 * * 0")

counts = st.one_of(st.none(), st.integers(1, 6), st.just(-1))
durations = st.one_of(
    st.none(),
    st.builds(
        lambda d, h: Duration(days=d, hours=h, text=f"{d}d{h}h"),
        st.integers(0, 10),
        st.integers(0, 30),
    ),
)
rules = st.builds(
    KeepRules,
    last=counts,
    hourly=counts,
    daily=counts,
    weekly=counts,
    monthly=counts,
    within=durations,
    within_daily=durations,
)
moments = st.integers(-60 * 24 * 40, 60 * 24 * 5).map(lambda m: BASE + timedelta(minutes=m))


@settings(max_examples=EXAMPLES, deadline=None)
@given(times=st.lists(moments, max_size=40, unique=True), keep=rules, zone=st.sampled_from(ZONES))
def test_retention_partitions_its_input_into_keep_and_remove(times, keep, zone) -> None:
    items = [(i, t) for i, t in enumerate(times)]
    result = apply_rules(items, keep, zone_of(zone), BASE)
    kept, removed = set(result.keep), set(result.remove)
    assert kept | removed == set(range(len(times)))
    assert not kept & removed
    assert all(d.reasons for d in result.decisions if d.keep)
    if times and not keep.is_empty() and any(t < BASE for t in times):
        assert kept, "a non-empty policy keeps at least the newest point"


@st.composite
def estates(draw):
    """Random policies, VMs with marked/foreign snapshots, and export points."""
    rnd = random.Random(draw(st.integers(0, 2**32)))
    now = draw(moments) + timedelta(days=40)
    policies = []
    for i in range(draw(st.integers(1, 3))):
        window = None
        if draw(st.booleans()):
            window = Window(time(rnd.randrange(24)), time(rnd.randrange(24), 30))
        policies.append(
            policy(
                f"p{i}",
                cron=draw(st.sampled_from(CRONS)),
                timezone=draw(st.sampled_from(ZONES)),
                names=(draw(st.sampled_from(["*", "vm1", "vm[12]", "vm3"])),),
                snapshot_keep=draw(st.one_of(st.none(), rules)),
                max_age=draw(durations) if draw(st.booleans()) else None,
                export_keep=draw(st.one_of(st.none(), rules)),
                window=window,
            )
        )
    names = ["p0", "p1", "p2", "gone-policy"]
    vms, points = [], []
    for n in range(1, draw(st.integers(1, 4)) + 1):
        base = vm(f"vm{n}")
        snaps: list[Snapshot] = []
        for k in range(draw(st.integers(0, 12))):
            slot = now - timedelta(minutes=rnd.randrange(60 * 24 * 40))
            slot = slot.replace(second=0, microsecond=0)
            if rnd.random() < 0.15:
                snaps.append(foreign_snapshot(f"f{n}-{k}", slot))
            else:
                kind = MarkerKind.EXPORT_TEMP if rnd.random() < 0.05 else MarkerKind.POINT
                snaps.append(
                    marked_snapshot(rnd.choice(names), base.instance_uuid, slot, f"s{n}-{k}", kind)
                )
        for _ in range(draw(st.integers(0, 12))):
            slot = (now - timedelta(minutes=rnd.randrange(60 * 24 * 40))).replace(second=0)
            points.append(export_point(rnd.choice(names), base, slot, rnd.random() > 0.1))
        vms.append(replace(base, snapshots=_unique_ids(snaps)))
    if draw(st.booleans()):  # exports of a VM that is gone
        points.append(export_point("p0", vm("gone"), now - timedelta(days=3)))
    return PolicySet(tuple(policies), "rev"), state(vms, _unique_points(points)), now


def _unique_ids(snaps: list[Snapshot]) -> tuple[Snapshot, ...]:
    seen: dict[str, Snapshot] = {}
    for s in snaps:
        marker = parse_marker(s.name, s.description)
        seen.setdefault(marker.point_id + marker.kind if marker else s.id, s)
    return tuple(seen.values())


def _unique_points(points: list[ExportPoint]) -> list[ExportPoint]:
    return list({p.id: p for p in points}.values())


def apply(observed: ObservedState, actions: tuple[Action, ...]) -> ObservedState:
    """What a perfect executor would leave behind."""
    vms = {v.instance_uuid: v for v in observed.vcenters[VCENTER]}
    points = {p.id: p for p in observed.targets[TARGET]}
    for a in actions:
        target_vm = vms.get(a.vm.instance_uuid)
        if a.kind is ActionKind.SNAPSHOT_CREATE and target_vm:
            snap = marked_snapshot(a.policy, a.vm.instance_uuid, a.slot, "new-" + a.point_id)
            vms[a.vm.instance_uuid] = replace(target_vm, snapshots=(*target_vm.snapshots, snap))
        elif a.kind is ActionKind.SNAPSHOT_DELETE and target_vm:
            kept = tuple(s for s in target_vm.snapshots if s.id != a.snapshot_id)
            vms[a.vm.instance_uuid] = replace(target_vm, snapshots=kept)
        elif a.kind is ActionKind.EXPORT_CREATE:
            points[a.point_id] = export_point(a.policy, a.vm, a.slot)
        elif a.kind is ActionKind.EXPORT_DELETE:
            points.pop(a.point_id)
    return state(vms.values(), points.values(), observed.captured_at)


@settings(max_examples=EXAMPLES, deadline=None)
@given(estate=estates())
def test_planning_is_deterministic(estate) -> None:
    policies, observed, now = estate
    first = plan(policies, observed, now)
    assert plan(policies, observed, now) == first
    shuffled = PolicySet(tuple(reversed(policies.policies)), policies.revision)
    reordered = ObservedState(
        observed.captured_at,
        {VCENTER: tuple(reversed(observed.vcenters[VCENTER]))},
        {TARGET: tuple(reversed(observed.targets[TARGET]))},
    )
    again = plan(shuffled, reordered, now)
    assert again.actions == first.actions
    assert again.coverage == first.coverage and again.warnings == first.warnings


@settings(max_examples=EXAMPLES, deadline=None)
@given(estate=estates())
def test_foreign_snapshots_are_never_in_an_action(estate) -> None:
    policies, observed, now = estate
    foreign = {f.snapshot.id for f in build_catalog(observed).foreign}
    result = plan(policies, observed, now)
    assert not {a.snapshot_id for a in result.actions} & foreign


@settings(max_examples=EXAMPLES, deadline=None)
@given(estate=estates())
def test_no_group_is_ever_emptied(estate) -> None:
    policies, observed, now = estate
    result = plan(policies, observed, now)
    deleted = {(a.kind, a.point_id) for a in result.actions if a.kind.is_delete and not a.requires}
    groups: dict[tuple[str, str, str], set[str]] = {}
    for p in build_catalog(observed).points:
        if p.complete:
            groups.setdefault((p.policy, p.vm.instance_uuid, p.kind), set()).add(p.point_id)
    for (_, _, kind), ids in groups.items():
        delete_kind = ActionKind(f"{kind}.delete")
        assert any((delete_kind, pid) not in deleted for pid in ids)


@settings(max_examples=EXAMPLES, deadline=None)
@given(estate=estates())
def test_applying_a_plan_and_planning_again_creates_and_deletes_nothing(estate) -> None:
    policies, observed, now = estate
    first = plan(policies, observed, now)
    second = plan(policies, apply(observed, first.actions), now)
    assert second.actions == ()


def test_the_property_estates_are_not_trivial() -> None:
    """Guard against a generator that never produces work (the properties would be vacuous)."""
    policies = PolicySet((policy("p0", snapshot_keep=KeepRules(daily=2)),))
    snaps = [
        marked_snapshot("p0", vm("vm1").instance_uuid, at(f"2026-03-0{d} 01:00"), f"s{d}")
        for d in range(1, 6)
    ]
    observed = state([replace(vm("vm1"), snapshots=tuple(snaps))])
    first = plan(policies, observed, datetime.fromisoformat("2026-03-06T12:00:00+00:00"))
    assert [a.kind for a in first.actions].count(ActionKind.SNAPSHOT_DELETE) == 4
    assert plan(policies, apply(observed, first.actions), first.now).actions == ()


@settings(max_examples=EXAMPLES, deadline=None)
@given(estate=estates())
def test_retention_decides_every_complete_point_of_a_planned_group_once(estate) -> None:
    policies, observed, now = estate
    result = plan(policies, observed, now)
    decided = [(d.kind, d.point_id) for d in result.retention]
    assert len(decided) == len(set(decided))
    removed = {(d.kind.value, d.point_id) for d in result.retention if not d.keep}
    deleted = {
        (a.kind.value.split(".")[0], a.point_id)
        for a in result.actions
        if a.kind.is_delete and not a.reason.startswith(("incomplete", "temporary"))
    }
    assert deleted == removed
    assert all(d.reasons for d in result.retention)


def test_a_schedule_change_settles_after_one_apply() -> None:
    """The case the random estates rarely draw: points made under an old cron (05:00) that are
    newer than the new cron's slot (01:00). Planning must settle, not create-then-prune."""
    now = at("2026-11-25 12:00")
    base = vm("vm1")
    snaps = tuple(
        marked_snapshot("p0", base.instance_uuid, at(f"2026-11-{d} 05:00"), f"s{d}")
        for d in (22, 23, 24, 25)
    )
    observed = state([replace(base, snapshots=snaps)])
    for keep in (KeepRules(daily=7), KeepRules(last=1), KeepRules(daily=2, weekly=2)):
        policies = PolicySet((policy("p0", snapshot_keep=keep),), "rev")
        first = plan(policies, observed, now)
        assert plan(policies, apply(observed, first.actions), now).actions == (), keep


def test_a_slot_kept_only_once_an_expired_point_is_gone_is_made_in_the_same_plan() -> None:
    """Found by the properties: with `monthly: -1` restic keeps the oldest point, and the
    oldest is one maxAge removes in this very plan. The slot's point must be judged with the
    points that survive, or the next plan would create what this one skipped."""
    now = at("2026-05-08 00:00")
    p0 = policy("p0", cron="15 * * * *", snapshot_keep=KeepRules(monthly=-1),
                max_age=Duration(hours=1, text="1h"))
    base = vm("vm3")
    snaps = tuple(marked_snapshot("p0", base.instance_uuid, at(t), f"s{i}")
                  for i, t in enumerate(["2026-04-04 22:09", "2026-05-07 23:56"]))
    observed = state([replace(base, snapshots=snaps)])
    policies = PolicySet((p0,), "rev")
    first = plan(policies, observed, now)
    assert sorted(a.kind.value for a in first.actions) == ["snapshot.create", "snapshot.delete"]
    assert plan(policies, apply(observed, first.actions), now).actions == ()

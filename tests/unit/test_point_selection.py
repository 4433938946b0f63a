"""Choosing one restore point by id, or by VM and time; listing them newest first."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.model import PointKind, VMRef
from reconciler.points import Point, SelectionError, filter_points, select_point, sort_points

WEB = VMRef("web01", "5003aaaa-0000-0000-0000-000000000001")
WEB_TWIN = VMRef("web01", "5003bbbb-0000-0000-0000-000000000002")  # another VM, same name
DB = VMRef("db01", "5003cccc-0000-0000-0000-000000000003")
EXPORT, SNAPSHOT = PointKind.EXPORT, PointKind.SNAPSHOT


def at(day: int, hour: int = 1) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def point(vm: VMRef, day: int, kind: PointKind = EXPORT, *, policy: str = "gold",
          target: str = "nas", complete: bool = True) -> Point:
    slot = at(day)
    return Point(id=f"{policy}/{vm.instance_uuid}/{slot:%Y%m%dT%H%M%SZ}", kind=kind,
                 policy=policy, vm=vm, slot=slot, vcenter="vc1",
                 target=target if kind is EXPORT else "", complete=complete)


POINTS = [
    point(WEB, 24), point(WEB, 25), point(WEB, 25, SNAPSHOT), point(WEB, 26, SNAPSHOT),
    point(DB, 26), point(DB, 27, complete=False),
]


def test_points_are_listed_newest_first_with_the_export_before_the_snapshot_of_one_slot():
    listed = sort_points(reversed(POINTS))
    assert [(p.slot.day, p.kind.value) for p in listed] == [
        (27, "export"), (26, "export"), (26, "snapshot"), (25, "export"), (25, "snapshot"),
        (24, "export")]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"vm": "web01"}, [(26, "snapshot"), (25, "export"), (25, "snapshot"), (24, "export")]),
        ({"vm": WEB.instance_uuid.upper()}, [(26, "snapshot"), (25, "export"),
                                             (25, "snapshot"), (24, "export")]),
        ({"vm": "web01", "kind": EXPORT}, [(25, "export"), (24, "export")]),
        ({"kind": SNAPSHOT}, [(26, "snapshot"), (25, "snapshot")]),
        ({"target": "nas", "vm": "db01"}, [(27, "export"), (26, "export")]),
        ({"policy": "silver"}, []),
    ],
)
def test_filters_keep_only_the_points_answering_every_one(filters, expected):
    assert [(p.slot.day, p.kind.value) for p in filter_points(POINTS, **filters)] == expected


def test_a_vm_name_without_a_time_selects_its_newest_complete_point():
    assert select_point(POINTS, vm="web01") == point(WEB, 26, SNAPSHOT)
    assert select_point(POINTS, vm="db01") == point(DB, 26)  # day 27 is incomplete


def test_at_selects_the_newest_point_at_or_before_that_time():
    assert select_point(POINTS, vm="web01", at=at(25, 1)) == point(WEB, 25)
    assert select_point(POINTS, vm="web01", at=at(25, 0)) == point(WEB, 24)
    assert select_point(POINTS, vm="web01", at=at(25, 23), kind=SNAPSHOT) == \
        point(WEB, 25, SNAPSHOT)


def test_a_time_before_every_point_names_the_oldest():
    with pytest.raises(SelectionError, match=r"no restore point at or before "
                       r"2026-11-01T01:00:00Z \(its oldest: 2026-11-24T01:00:00Z\)"):
        select_point(POINTS, vm="web01", at=at(1))


def test_an_id_held_as_snapshot_and_export_gives_the_preferred_kind():
    pid = point(WEB, 25).id
    assert select_point(POINTS, point_id=pid).kind is EXPORT
    assert select_point(POINTS, point_id=pid, prefer=SNAPSHOT).kind is SNAPSHOT
    assert select_point(POINTS, point_id=pid, kind=SNAPSHOT).kind is SNAPSHOT


def test_an_unknown_vm_name_lists_the_vms_that_have_points():
    with pytest.raises(SelectionError) as caught:
        select_point(POINTS, vm="web1")
    assert str(caught.value) == (
        f"no restore point of a VM named 'web1'; VMs with points: db01 ({DB.instance_uuid}), "
        f"web01 ({WEB.instance_uuid})")


def test_a_name_two_vms_had_lists_both_uuids_to_choose_from():
    points = [*POINTS, point(WEB_TWIN, 20)]
    with pytest.raises(SelectionError) as caught:
        select_point(points, vm="web01")
    message = str(caught.value)
    assert message.startswith("several VMs named 'web01' have restore points; choose one with "
                              "--vm UUID: ")
    assert f"{WEB.instance_uuid} (newest 2026-11-26T01:00:00Z)" in message
    assert f"{WEB_TWIN.instance_uuid} (newest 2026-11-20T01:00:00Z)" in message
    assert select_point(points, vm=WEB_TWIN.instance_uuid) == point(WEB_TWIN, 20)


def test_an_unknown_id_of_a_known_vm_lists_that_vms_points():
    missing = f"gold/{WEB.instance_uuid}/20261101T010000Z"
    with pytest.raises(SelectionError, match="no restore point .*; points of that VM: "
                       f"gold/{WEB.instance_uuid}/20261126T010000Z"):
        select_point(POINTS, point_id=missing)


def test_a_vm_name_given_as_point_id_says_to_use_vm():
    with pytest.raises(SelectionError, match="'db01' is a VM: use --vm db01"):
        select_point(POINTS, point_id="db01")


def test_one_id_in_two_targets_asks_for_a_target():
    points = [point(WEB, 25, target="nas"), point(WEB, 25, target="offsite")]
    with pytest.raises(SelectionError, match=r"held in several places \(nas, offsite\); "
                       "choose one with --target NAME"):
        select_point(points, point_id=points[0].id)


def test_an_id_and_a_vm_together_are_refused():
    with pytest.raises(SelectionError, match="either --point ID or --vm NAME"):
        select_point(POINTS, point_id=point(WEB, 25).id, vm="web01")


def test_the_json_of_a_point_has_the_documented_keys():
    body = point(WEB, 25).to_json()
    assert {"id", "kind", "policy", "vcenter", "vm", "slot", "target", "consistency",
            "disks"} <= set(body)
    assert body["vm"] == {"name": "web01", "instanceUuid": WEB.instance_uuid}
    assert body["slot"] == "2026-11-25T01:00:00Z"

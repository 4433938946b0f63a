"""Observed state JSON, its digest, ownership markers and the catalog."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from reconciler.errors import InputError
from reconciler.markers import (
    Marker,
    MarkerKind,
    format_description,
    format_name,
    parse_marker,
    parse_point,
    point_id,
)
from reconciler.model import PointKind, Snapshot
from reconciler.observed import (
    _depths_walked,
    build_catalog,
    canonical_json,
    digest,
    snapshot_depths,
    state_from_json,
    state_to_json,
)
from tests.unit.estate import (
    at,
    export_point,
    foreign_snapshot,
    marked_snapshot,
    state,
    uuid_of,
    vm,
)

ROOT = Path(__file__).resolve().parents[2]
SLOT = at("2026-11-25 01:00")
UUID = uuid_of("web1")


def sample():
    web = vm(
        "web1",
        tags=("backup/gold",),
        attributes={"owner": "ops"},
        snapshots=[
            marked_snapshot("gold", UUID, SLOT, "snapshot-1"),
            foreign_snapshot("snapshot-2", SLOT - timedelta(days=5), parent="snapshot-1"),
        ],
    )
    return state([web], [export_point("gold", web, SLOT), export_point("gold", web, SLOT, False)])


def test_state_json_round_trips_and_matches_the_schema() -> None:
    original = sample()
    document = json.loads(json.dumps(state_to_json(original)))
    schema = json.loads((ROOT / "schemas" / "state.schema.json").read_text())
    Draft202012Validator(schema).validate(document)
    assert state_from_json(document) == original


def test_the_digest_is_stable_and_changes_with_the_state() -> None:
    first = sample()
    assert digest(first) == digest(sample())
    assert digest(first).startswith("sha256:") and len(digest(first)) == 71
    web = first.vcenters["vc1"][0]
    renamed = replace(first, vcenters={"vc1": (replace(web, name="web9"),)})
    assert digest(renamed) != digest(first)


def test_the_digest_does_not_depend_on_the_time_zone_a_time_was_given_in() -> None:
    first = sample()
    berlin = first.captured_at.astimezone(ZoneInfo("Europe/Berlin"))
    assert digest(replace(first, captured_at=berlin)) == digest(first)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("formatVersion"), "$.formatVersion: required field is missing"),
        (lambda d: d.update(formatVersion=2), "unsupported version 2"),
        (lambda d: d.update(capturedAt="yesterday"), "$.capturedAt: not an ISO 8601 time"),
        (
            lambda d: d["vcenters"]["vc1"]["vms"][0].update(powerState="on"),
            "$.vcenters.vc1.vms[0].powerState: expected poweredOn, poweredOff or suspended",
        ),
        (
            lambda d: d["vcenters"]["vc1"]["vms"][0]["snapshots"][0].update(quiesced="no"),
            "$.vcenters.vc1.vms[0].snapshots[0].quiesced: expected bool",
        ),
        (
            lambda d: d["targets"]["nas"]["points"][0].update(complete=1),
            "$.targets.nas.points[0].complete: expected bool",
        ),
        (
            lambda d: d["vcenters"]["vc1"]["vms"][0].update(tags=[1]),
            "$.vcenters.vc1.vms[0].tags: entries must be strings",
        ),
    ],
)
def test_a_malformed_state_file_is_an_input_error_naming_the_field(edit, message) -> None:
    document = state_to_json(sample())
    edit(document)
    with pytest.raises(InputError) as caught:
        state_from_json(document, "state.json")
    assert str(caught.value).startswith("state.json:1:1: ")
    assert message in str(caught.value)


# --------------------------------------------------------------------------- markers


def marker(kind: MarkerKind = MarkerKind.POINT, policy: str = "gold") -> Marker:
    return Marker(policy, point_id(policy, UUID, SLOT), SLOT, kind)


@pytest.mark.parametrize("kind", list(MarkerKind))
def test_a_marker_round_trips_through_name_and_description(kind: MarkerKind) -> None:
    m = marker(kind)
    assert parse_marker(format_name(m), format_description(m)) == m
    assert parse_marker(format_name(m), format_description(m), UUID) == m


def test_the_marker_format_is_documented_exactly() -> None:
    m = marker()
    assert format_name(m) == "vmkeep:gold:20261125T010000Z"
    assert format_description(m) == (
        f'{{"kind":"point","pointId":"gold/{UUID}/20261125T010000Z","policy":"gold",'
        '"slot":"2026-11-25T01:00:00Z","vmkeep":1}'
    )


def test_the_fast_path_and_the_full_parse_agree_on_unusual_policy_names() -> None:
    m = marker(policy='we"ird')
    assert parse_marker(format_name(m), format_description(m), UUID) == m


@pytest.mark.parametrize(
    ("name", "description"),
    [
        ("before upgrade", format_description(marker())),  # no prefix
        ("vmkeep:gold:20261125T010000Z", "taken by hand"),  # not JSON
        ("vmkeep:gold:20261125T010000Z", "[1, 2]"),  # not an object
        ("vmkeep:gold:20261125T010000Z", format_description(marker()).replace(":1}", ":2}")),
        ("vmkeep:gold:20261125T010000Z", format_description(marker()).replace(":1}", ":true}")),
        ("vmkeep:gold:20261125T010000Z", format_description(marker()).replace("point", "disk")),
        (
            "vmkeep:gold:20261125T010000Z",
            format_description(marker()).replace('"policy":"gold"', '"policy":"silver"'),
        ),
        (
            "vmkeep:gold:20261125T010000Z",
            format_description(marker()).replace("01:00:00Z", "02:00:00Z"),
        ),
        ("vmkeep:gold:20261125T010000Z", format_description(marker()).replace('Z"', '"')),
    ],
)
def test_anything_but_a_valid_marker_is_foreign(name: str, description: str) -> None:
    assert parse_marker(name, description) is None
    assert parse_marker(name, description, UUID) is None


def test_the_catalog_shortcut_reads_a_marker_as_vmkeep_writes_it_like_the_full_parse() -> None:
    m = marker()
    assert parse_point(format_name(m), format_description(m), UUID) == (m.policy, m.point_id, SLOT)


@pytest.mark.parametrize(
    ("m", "description", "instance_uuid"),
    [
        (marker(MarkerKind.EXPORT_TEMP), None, UUID),  # temporary snapshots take the full parse
        (marker(), None, uuid_of("another")),  # written for another VM
        (marker(), None, ""),
        (marker(), None, "a/b"),
        (marker(policy="a/b"), None, UUID),  # its point id would not name the VM
        (marker(), json.dumps({"vmkeep": 1, "policy": "gold", "pointId": marker().point_id,
                               "slot": "2026-11-25T01:00:00Z", "kind": "point"}), UUID),
    ],
)  # fmt: skip
def test_the_catalog_shortcut_leaves_anything_else_to_the_full_parse(
    m: Marker, description: str | None, instance_uuid: str
) -> None:
    assert parse_point(format_name(m), description or format_description(m), instance_uuid) is None


def test_a_marker_naming_another_vm_is_foreign() -> None:
    m = Marker("gold", point_id("gold", uuid_of("another"), SLOT), SLOT, MarkerKind.POINT)
    snap = Snapshot("snapshot-1", format_name(m), format_description(m), SLOT, False)
    catalog = build_catalog(state([vm("web1", snapshots=[snap])]))
    assert catalog.points == () and [f.snapshot.id for f in catalog.foreign] == ["snapshot-1"]


def test_the_catalog_has_snapshot_and_export_points_and_foreign_snapshots() -> None:
    catalog = build_catalog(sample())
    kinds = sorted((p.kind.value, p.complete) for p in catalog.points)
    assert kinds == [("export", False), ("export", True), ("snapshot", True)]
    (snap,) = [p for p in catalog.points if p.kind is PointKind.SNAPSHOT]
    assert snap.snapshot_id == "snapshot-1" and snap.point_id == point_id("gold", UUID, SLOT)
    (foreign,) = catalog.foreign
    assert foreign.snapshot.id == "snapshot-2" and foreign.depth == 2


def test_a_temporary_export_snapshot_is_listed_apart_from_points() -> None:
    temp = marked_snapshot("gold", UUID, SLOT, "snapshot-9", MarkerKind.EXPORT_TEMP)
    catalog = build_catalog(state([vm("web1", snapshots=[temp])]))
    assert catalog.points == () and [t.snapshot_id for t in catalog.temporaries] == ["snapshot-9"]


def test_snapshot_depth_follows_parents_and_survives_cycles() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    snaps = [
        Snapshot("c", "n", "", t, False, "b"),
        Snapshot("a", "n", "", t, False, None),
        Snapshot("b", "n", "", t, False, "a"),
        Snapshot("x", "n", "", t, False, "y"),
        Snapshot("y", "n", "", t, False, "x"),
    ]
    depths = {
        f.snapshot.id: f.depth for f in build_catalog(state([vm("v", snapshots=snaps)])).foreign
    }
    assert (depths["a"], depths["b"], depths["c"]) == (1, 2, 3)
    assert {depths["x"], depths["y"]} == {1, 2}


def test_depths_of_parents_listed_first_are_those_of_the_walk() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    chain = [Snapshot(f"s{i}", "n", "", t, False, f"s{i - 1}" if i else None) for i in range(9)]
    branches = [*chain[:3], Snapshot("r", "n", "", t, False, None),
                Snapshot("b", "n", "", t, False, "s1"), Snapshot("c", "n", "", t, False, "r")]
    for snaps in (chain, branches, chain[::-1]):
        assert snapshot_depths(snaps) == _depths_walked(snaps)
    assert snapshot_depths(chain)["s8"] == 9
    assert snapshot_depths(branches) == {"s0": 1, "s1": 2, "s2": 3, "r": 1, "b": 3, "c": 2}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.none() | st.sampled_from("abcdefg")),
                max_size=8))
def test_snapshot_depths_equal_the_walk_on_any_forest(pairs: list[tuple[str, str | None]]) -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    snaps = [Snapshot(sid, "n", "", t, False, parent) for sid, parent in pairs]
    assert snapshot_depths(snaps) == _depths_walked(snaps)


@pytest.mark.parametrize("vms", [0, 1, 3000])
def test_the_streamed_digest_hashes_exactly_the_canonical_json_of_the_state(vms: int) -> None:
    base = sample()
    many = tuple(replace(base.vcenters["vc1"][0], name=f"vm{i}") for i in range(vms))
    points = base.targets["nas"] * (vms or 1)
    observed = replace(base, vcenters={"vc1": many, "vc2": ()}, targets={"nas": points})
    content = {"vcenters": observed.vcenters, "targets": observed.targets}
    expected = "sha256:" + hashlib.sha256(canonical_json(content)).hexdigest()
    assert digest(observed) == expected


def test_the_digest_leaves_out_the_capture_time_so_an_unchanged_estate_digests_alike() -> None:
    first = sample()
    later = replace(first, captured_at=first.captured_at + timedelta(hours=5))
    assert digest(later) == digest(first)

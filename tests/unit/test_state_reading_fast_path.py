"""Reading a state file: the fast path for well-formed entries reads what the careful reader
reads, and anything not exactly well-formed falls through to it (same values, same errors)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import observed
from reconciler.errors import InputError

#: Values of the right type and of wrong ones: each field is drawn from all of them.
TIMES = st.sampled_from(["2026-11-25T01:00:00Z", "2026-11-25T02:00:00.5+01:00"])
BAD_TIMES = st.sampled_from(["yesterday", "2026-11-25T01:00:00", "0001-01-01T00:00:00+14:00"])
ANY = st.one_of(st.none(), st.booleans(), st.integers(-2, 2**40), st.text(max_size=5), TIMES,
                BAD_TIMES, st.just([]), st.just({}))


def field_values(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return good


@st.composite
def spoiled(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> Any:
    """A valid entry, or one with one field (or a nested one) replaced by any value."""
    data = draw(valid)
    keys = sorted(data)
    where = draw(st.one_of(st.none(), st.sampled_from(keys)))
    if where is not None:
        target = data[where]
        if isinstance(target, dict) and target and draw(st.booleans()):
            target[draw(st.sampled_from(sorted(target)))] = draw(ANY)
        elif isinstance(target, list) and target and draw(st.booleans()):
            item = target[draw(st.integers(0, len(target) - 1))]
            if isinstance(item, dict) and item:
                item[draw(st.sampled_from(sorted(item)))] = draw(ANY)
        else:
            data[where] = draw(ANY)
    return data


POINT = st.fixed_dictionaries(
    {
        "id": field_values(st.text(max_size=8)),
        "policy": field_values(st.text(max_size=8)),
        "vm": st.fixed_dictionaries({"name": st.text(max_size=5),
                                     "instanceUuid": st.text(max_size=5)}),
        "slot": field_values(TIMES),
        "createdAt": field_values(TIMES),
        "complete": field_values(st.booleans()),
    },
    optional={"consistency": field_values(st.text(max_size=5)),
              "sizeBytes": field_values(st.integers(0, 2**40)), "extra": ANY},
)
SNAPSHOT = st.fixed_dictionaries(
    {"id": field_values(st.text(max_size=5)), "name": field_values(st.text(max_size=5)),
     "createdAt": field_values(TIMES)},
    optional={"description": field_values(st.text(max_size=5)),
              "quiesced": field_values(st.booleans()),
              "parentId": field_values(st.one_of(st.none(), st.text(max_size=5)))},
)
DISK = st.fixed_dictionaries(
    {"key": st.integers(0, 3000)},
    optional={"label": st.text(max_size=5), "file": st.text(max_size=5),
              "capacityBytes": st.integers(0, 2**40),
              "changeId": st.one_of(st.none(), st.text(max_size=5)),
              "parent": st.one_of(st.none(), st.text(max_size=5)),
              "datastoreType": st.sampled_from(["VMFS", "vsan", ""])},
)
TEXT = st.text(max_size=5)
VM = st.fixed_dictionaries(
    {"name": field_values(st.text(max_size=5)), "instanceUuid": field_values(st.text(max_size=5)),
     "snapshots": st.lists(SNAPSHOT, max_size=3)},
    optional={"moref": TEXT, "folder": TEXT, "toolsStatus": TEXT, "biosUuid": TEXT,
              "host": TEXT, "cluster": TEXT, "toolsRunning": st.booleans(),
              "changeTracking": st.booleans(),
              "powerState": st.sampled_from(["poweredOn", "poweredOff", "suspended", "off"]),
              "tags": st.lists(TEXT, max_size=2),
              "attributes": st.dictionaries(TEXT, TEXT, max_size=2),
              "disks": st.lists(DISK, max_size=2)},
)


def outcome(read: Any, *args: Any) -> Any:
    try:
        return read(observed._Reader("state.json"), *args)
    except InputError as exc:
        return ("error", str(exc))


def careful_points(r: observed._Reader, target: str, points: list[Any], where: str) -> Any:
    return tuple(observed._point_checked(r, target, p, f"{where}.points[{i}]")
                 for i, p in enumerate(points))


@settings(max_examples=300, deadline=None)
@given(st.lists(spoiled(POINT), max_size=3))
def test_points_read_the_same_by_the_fast_path_and_the_careful_reader(data: Any) -> None:
    assert outcome(observed._points_from, "nas", data, "$.p") == outcome(
        careful_points, "nas", data, "$.p")


@settings(max_examples=300, deadline=None)
@given(spoiled(VM))
def test_a_vm_reads_the_same_by_the_fast_path_and_the_careful_reader(data: Any) -> None:
    fast = outcome(observed._vm_from, "vc1", data, "$.v")
    careful = outcome(observed._vm_checked, "vc1", data, "$.v", None)
    assert fast == careful
    if not isinstance(careful, tuple):  # read: the digest sees the same fields in order
        assert observed.canonical_json(fast) == observed.canonical_json(careful)


def test_a_vm_field_of_an_unhashable_type_is_named_by_the_careful_reader() -> None:
    for field in ("powerState", "tags", "attributes", "disks"):
        data = {"name": "a", "instanceUuid": "u", field: [{}] if field != "tags" else {}}
        assert outcome(observed._vm_from, "vc1", data, "$.v") == outcome(
            observed._vm_checked, "vc1", data, "$.v", None)
        assert outcome(observed._vm_from, "vc1", data, "$.v")[0] == "error"

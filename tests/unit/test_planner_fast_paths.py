"""The planner's fast paths give what the careful paths beside them give (Hypothesis).

* `findings.temporary_findings` with the catalog reads only the VMs the catalog found a
  snapshot on that is not one of its own restore points;
* selection by name bisects the sorted candidates instead of testing every name;
* retention decisions of a group whose points line up with its history are built in order.
"""

from __future__ import annotations

import os
import random
from dataclasses import replace
from datetime import timedelta
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import findings, planner, selection
from reconciler.markers import Marker, MarkerKind, format_description, format_name, point_id
from reconciler.model import KeepRules, PolicySet, Snapshot
from reconciler.observed import build_catalog, snapshot_depths
from tests.unit.estate import at, foreign_snapshot, marked_snapshot, policy, state, uuid_of, vm
from tests.unit.test_planner_properties import estates

EXAMPLES = int(os.environ.get("VMKEEP_HYPOTHESIS_EXAMPLES", "150"))
NOW = at("2026-11-25 12:00")
UUIDS = [uuid_of(f"vm{n}") for n in range(3)]


def snapshot_of(rnd: random.Random, sid: str, own_uuid: str) -> Snapshot:
    """A snapshot as a VM may carry it: a restore point or a temporary (of this VM or another,
    with or without an installation, written as vmkeep writes it or not) or a foreign one."""
    slot = NOW - timedelta(hours=rnd.randrange(1, 200))
    choice = rnd.randrange(6)
    if choice == 0:
        return foreign_snapshot(sid, slot)
    uuid = own_uuid if rnd.random() < 0.7 else rnd.choice(UUIDS)
    kind = MarkerKind.POINT if choice < 3 else MarkerKind.EXPORT_TEMP
    installation = rnd.choice([None, "inst-a"]) if kind is MarkerKind.EXPORT_TEMP else None
    marker = Marker("gold", point_id("gold", uuid, slot), slot, kind, installation=installation)
    description = format_description(marker)
    if rnd.random() < 0.2:  # a marker written differently: only the full parse reads it
        description = description.replace(",", ", ")
    return Snapshot(sid, format_name(marker), description, slot, False)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.integers(0, 2**32))
def test_temporary_findings_with_the_catalog_are_those_read_from_every_snapshot(seed) -> None:
    rnd = random.Random(seed)
    vms = [
        replace(vm(f"vm{n}"), snapshots=tuple(
            snapshot_of(rnd, f"s{n}-{k}", UUIDS[n]) for k in range(rnd.randrange(5))))
        for n in range(3)
    ]
    observed = state(vms)
    careful = findings.temporary_findings(observed, NOW)
    assert findings.temporary_findings(observed, NOW, build_catalog(observed)) == careful


names = st.text(alphabet="ab-*?[]!", max_size=5)


@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(names=st.lists(st.text(alphabet="ab-c", max_size=4), max_size=12),
       globs=st.lists(names, min_size=1, max_size=3))
def test_selection_by_name_bisects_sorted_candidates_to_the_same_vms(names, globs) -> None:
    vms = [vm(f"{name}", instance_uuid=f"u{i}") for i, name in enumerate(sorted(names))]
    every_name = [v.name for v in vms]
    scanned = selection._by_names(tuple(globs), vms, every_name)
    assert selection._by_names(tuple(globs), vms, every_name, in_order=True) == scanned
    assert selection.Candidates(vms).in_order


def test_candidates_out_of_name_order_are_scanned() -> None:
    assert not selection.Candidates([vm("b"), vm("a")]).in_order


def decided_each(group: planner._Group, judged: planner._Judged) -> object:
    """What `_decide_in_order` stands in for: each point decided by its slot's verdict."""
    return planner._decide_each(group, judged.verdicts, None, ())


@settings(max_examples=EXAMPLES, deadline=None)
@given(estate=estates())
def test_retention_decisions_built_in_order_are_those_decided_point_by_point(estate) -> None:
    policies, observed, now = estate
    fast = planner.plan(policies, observed, now)
    with patch.object(planner, "_decide_in_order", side_effect=decided_each):
        assert planner.plan(policies, observed, now) == fast


def test_a_settled_group_takes_the_in_order_path() -> None:
    base = vm("vm0")
    snaps = tuple(marked_snapshot("gold", base.instance_uuid, at(f"2026-11-2{d} 01:00"), f"s{d}")
                  for d in range(1, 5))
    observed = state([replace(base, snapshots=snaps)])
    policies = PolicySet((policy("gold", snapshot_keep=KeepRules(last=10)),), "rev")
    with patch.object(planner, "_decide_in_order", wraps=planner._decide_in_order) as fast:
        result = planner.plan(policies, observed, at("2026-11-24 12:00"))
    assert fast.call_count == 1
    assert result.actions == () and [d.keep for d in result.retention] == [True] * 4


@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.none() | st.sampled_from(["", "a", "b"])),
                min_size=4, max_size=8))
def test_a_chain_of_roots_only_is_as_deep_as_the_walk_says(links) -> None:
    snaps = tuple(Snapshot(sid, "n", "", NOW, False, parent) for sid, parent in links)
    target = replace(vm("vm0"), snapshots=snaps)
    assert findings._chain_depth(target, 3) == max(snapshot_depths(snaps).values())

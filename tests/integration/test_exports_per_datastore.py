"""`limits.concurrentExportsPerDatastore` in the embedded thread pool: exports of VMs on one
datastore run one after another when the limit is 1, though `concurrentExports` would let
them run together. Observed by the export actions' start and end times in the journal."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from reconciler.adapters.statedb import StateDB
from tests.integration.apply_world import Estate

pytestmark = pytest.mark.vcsim

DAY1 = "2026-11-25T01:00:00Z"


def overlapping(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The intervals that start before the one before them ended."""
    ordered = sorted(intervals)
    return [b for a, b in itertools.pairwise(ordered) if b[0] < a[1]]


def test_exports_from_one_datastore_run_one_at_a_time_under_a_limit_of_one(
        start_vcsim, tmp_path: Path) -> None:
    estate = Estate(start_vcsim(vms=3), tmp_path)
    stores = {vm.name: vm.datastores for vm in estate.vms().values()}
    assert len({s for s in stores.values()}) == 1 and all(stores.values()), stores
    estate.config.write_text(estate.config.read_text().replace(
        "concurrentExports: 2,", "concurrentExports: 3, concurrentExportsPerDatastore: 1,"))
    # each export takes its own temporary snapshot: slow, so exports side by side would overlap
    estate.sim.faults(taskDelayMs=400, taskDelayMatch="CreateSnapshot")
    run = estate.apply(DAY1, "--parallel", "3")
    assert run.code == 0, run.out + run.err
    with StateDB(estate.root / "state.db") as db:
        exports = [(r.started_at, r.finished_at or 0.0) for r in db.actions()
                   if r.kind == "export.create" and r.status == "done"]
    assert len(exports) == 3
    assert overlapping(exports) == []
    assert len(estate.points()) == 3

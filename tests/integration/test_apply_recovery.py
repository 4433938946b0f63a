"""Recovery after a killed apply, against the simulator (issue 9 A, B, F, K).

Each test kills `vmkeep apply` (SIGKILL) at a point it waits for, then runs the next apply
and `vmkeep status`, and checks what vCenter, the target and the journal hold afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.adapters.statedb import StateDB
from reconciler.markers import MarkerKind, parse_marker
from reconciler.model import VM

from .apply_world import Run
from .conftest import StartVcsim
from .kill_world import KillEstate

pytestmark = pytest.mark.vcsim

DAY1, DAY2 = "2026-01-01T01:30:00Z", "2026-01-02T01:30:00Z"


def status(estate: KillEstate) -> Run:
    return estate.vmkeep("status", "--policies", str(estate.policies), "--now", DAY1,
                         "--check", "-o", "json")


def temporaries(vm: VM) -> list[str]:
    return [s.id for s in vm.snapshots
            if (m := parse_marker(s.name, s.description)) and m.kind is MarkerKind.EXPORT_TEMP]


def points_per_slot(vm: VM) -> dict[str, int]:
    slots: dict[str, int] = {}
    for s in vm.snapshots:
        marker = parse_marker(s.name, s.description)
        if marker is not None and marker.kind is MarkerKind.POINT:
            slots[marker.point_id] = slots.get(marker.point_id, 0) + 1
    return slots


def test_an_exports_only_apply_killed_in_its_post_hook_is_repaired_and_status_tells_so(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    # Issue 9 A and K: crash mode, exports only; the kill leaves export-temp snapshots. The
    # next apply's recovery used to die with AttributeError (remove_snapshot on a fresh
    # client), status said "All well." and showed the killed run with "no actions".
    estate = KillEstate(start_vcsim(vms=2), tmp_path)
    estate.set_shape(mode="crash", hooks=True)
    proc = estate.spawn_apply(DAY1, "--parallel", "1")
    estate.wait_for(proc, estate.held("post"), "a post hook holding")
    estate.kill(proc)
    left = {vm.name: temporaries(vm) for vm in estate.vms().values()}
    assert sum(map(len, left.values())) == 1, left

    before = status(estate)
    assert before.code == 3, before.out + before.err
    body = before.json()
    [killed] = body["runs"]
    assert killed["interrupted"] is True
    assert killed["counts"] == {"interrupted": 1}
    assert any(killed["runId"] in item for item in body["attention"])

    repair = estate.apply(DAY1)
    assert repair.code == 0, repair.out + repair.err
    assert "repaired: removed leftover export snapshot" in repair.err
    assert f"repaired: run {killed['runId']} was interrupted" in repair.err
    assert all(temporaries(vm) == [] for vm in estate.vms().values())

    after = status(estate)
    assert after.code == 0, after.out
    runs = {r["runId"]: r for r in after.json()["runs"]}
    assert runs[killed["runId"]]["repairedBy"] is not None
    assert runs[killed["runId"]]["counts"] == {"interrupted": 1}
    assert any("removed leftover export snapshot" in note
               for note in after.json()["recovery"]["repairs"])


@pytest.mark.parametrize(("mode", "snapshots"), [("poweroff", 1), ("crash", None)],
                         ids=["poweroff-snapshots-and-exports", "crash-exports-only"])
def test_a_snapshot_still_being_created_at_the_kill_is_waited_for_and_never_doubled(
    start_vcsim: StartVcsim, tmp_path: Path, mode: str, snapshots: int | None
) -> None:
    # Issue 9 B: CreateSnapshot_Task delayed; the kill lands while it runs. The next apply
    # used to observe before the task finished: an export-temp snapshot stayed behind, and
    # in poweroff mode the slot got a second snapshot.
    sim = start_vcsim(vms=2)
    estate = KillEstate(sim, tmp_path)
    estate.set_shape(mode=mode, snapshots=snapshots)
    sim.faults(taskDelayMs=2500, taskDelayMatch="CreateSnapshot_Task")
    proc = estate.spawn_apply(DAY1)
    estate.wait_for(proc, estate.requested("CreateSnapshot_Task"), "a CreateSnapshot request")
    estate.kill(proc)

    repair = estate.apply(DAY1)
    assert repair.code == 0, repair.out + repair.err
    for vm in estate.vms().values():
        assert temporaries(vm) == [], vm.name
        assert all(n == 1 for n in points_per_slot(vm).values()), vm.snapshots
        assert vm.power_state.value == "poweredOn", vm.name
    assert estate.plan(DAY1, "--detailed-exitcode").code == 0
    assert "repaired: waited for CreateSnapshot_Task" in repair.err


def test_another_installations_temporary_snapshot_is_reported_and_never_touched(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    # Issue 9 F: two host configs (own state DB, own target) on one vCenter. B's apply used to
    # remove A's temporary snapshot (recovery was per vCenter, the lease per state DB).
    sim = start_vcsim(vms=2)
    a = KillEstate(sim, tmp_path / "a")
    b = KillEstate(sim, tmp_path / "b")
    a.set_shape(mode="crash", hooks=True, names=["DC0_C0_RP0_VM0"])
    b.set_shape(mode="crash", names=["DC0_C0_RP0_VM1"])
    proc = a.spawn_apply(DAY1)
    a.wait_for(proc, a.held("post"), "A's post hook holding")
    a.kill(proc)
    [theirs] = temporaries(a.vms()["DC0_C0_RP0_VM0"])

    applied = b.apply(DAY1)
    assert applied.code == 0, applied.out + applied.err
    assert temporaries(b.vms()["DC0_C0_RP0_VM0"]) == [theirs]
    plan = b.plan(DAY1).json()
    assert [w["code"] for w in plan["warnings"] if w["code"] == "temporary-snapshot"] == [
        "temporary-snapshot"]
    assert all(act["snapshotId"] != theirs for act in plan["actions"])
    status = b.vmkeep("status", "--policies", str(b.policies), "-o", "json")
    assert any(theirs in line for line in status.json()["othersTemporaries"]), status.out

    mine = a.apply(DAY1)
    assert mine.code == 0, mine.out + mine.err
    assert temporaries(a.vms()["DC0_C0_RP0_VM0"]) == []
    assert json.loads(a.plan(DAY1).out)["actions"] == []


def test_status_check_names_a_failed_recovery_until_an_apply_recovers(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    # Issue 9 A: every apply died in recovery while `status --check` said "All well.".
    estate = KillEstate(start_vcsim(vms=1), tmp_path)
    estate.set_shape(mode="crash")
    with StateDB(estate.root / "state.db") as db:
        recovery = db.begin_recovery("host/1/run-x", 10.0)
        db.end_recovery(recovery, 11.0, "AttributeError: 'NoneType' object has no attribute "
                        "'InvokeMethod'")
    failed = status(estate)
    assert failed.code == 3
    assert any("the last recovery (host/1/run-x) failed: AttributeError" in item
               for item in failed.json()["attention"])

    assert estate.apply(DAY1).code == 0
    recovered = status(estate)
    assert recovered.code == 0, recovered.out
    assert recovered.json()["recovery"]["error"] is None

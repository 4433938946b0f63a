"""`vmkeep apply` killed with SIGKILL at chosen points, then run again.

Every trial is a new day: each run snapshots, exports and prunes. The trials cycle through
the consistency modes (crash, quiesce, poweroff), two policy shapes (exports only; snapshot
points and exports) and the points where the apply is killed. Each kill point is an event
the test waits for — never a guessed moment:

* `pre-hook` / `post-hook`: a policy hook holds (before the snapshot; after it, with the
  temporary or point snapshot present);
* `snapshot-task`, `remove-task`, `power-on-task`: the simulator delays that vCenter task and
  the kill comes once the request arrived, so the task is still running at the kill and
  finishes afterwards (the next run must wait for it);
* `export`: an export's intent is journaled (disk data is being read);
* `between-actions`: the run's first outcome is journaled.

After every kill the next apply must exit 0 and leave: no temporary snapshot, no slot with two
snapshots, every VM in the power state it had, the day's export of every VM, `verify --all`
clean and nothing left to do.

Trials: $VMKEEP_APPLY_KILL_TRIALS (default 30).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from reconciler.adapters.repository import Repository
from reconciler.markers import MarkerKind, parse_marker

from .conftest import StartVcsim
from .kill_world import KillEstate

pytestmark = pytest.mark.vcsim

TRIALS = int(os.environ.get("VMKEEP_APPLY_KILL_TRIALS", "30"))
START = datetime(2026, 1, 1, 1, 30)
MODES = ("crash", "quiesce", "poweroff")
SHAPES = (None, 1)  # snapshot points kept: none (exports only), or the last one
#: How long the simulator keeps a delayed task running (it finishes after the kill).
TASK_DELAY_MS = 1500
OPEN_EXPORT = "kind = 'export.create' AND status = 'started'"
AN_OUTCOME = "finished_at IS NOT NULL"


@dataclass(frozen=True)
class KillPoint:
    name: str
    #: Whether a run of this mode and shape reaches the point on every day.
    reached: Callable[[str, int | None], bool]
    #: Arms the point for the next apply; returns the event to wait for.
    arm: Callable[[KillEstate], Callable[[], bool]]


def delayed(task: str) -> Callable[[KillEstate], Callable[[], bool]]:
    def arm(estate: KillEstate) -> Callable[[], bool]:
        estate.sim.faults(taskDelayMs=TASK_DELAY_MS, taskDelayMatch=task)
        return estate.requested(task)

    return arm


#: Most specific first: a mode/shape pair takes the first ones it reaches.
KILL_POINTS = (
    KillPoint("power-on-task", lambda mode, _: mode == "poweroff", delayed("PowerOnVM_Task")),
    KillPoint("remove-task", lambda _, shape: shape is None, delayed("RemoveSnapshot_Task")),
    KillPoint("snapshot-task", lambda *_: True, delayed("CreateSnapshot_Task")),
    KillPoint("post-hook", lambda *_: True, lambda e: e.held("post")),
    KillPoint("export", lambda *_: True, lambda e: e.journaled(OPEN_EXPORT)),
    KillPoint("between-actions", lambda *_: True, lambda e: e.journaled(AN_OUTCOME)),
    KillPoint("pre-hook", lambda *_: True, lambda e: e.held("pre")),
)


def schedule(trials: int) -> list[tuple[str, int | None, KillPoint]]:
    """Trial i: mode i % 3, shape (i // 3) % 2, and the pair's kill points in turn."""
    plan = []
    for i in range(trials):
        mode, shape = MODES[i % 3], SHAPES[(i // 3) % 2]
        points = [p for p in KILL_POINTS if p.reached(mode, shape)]
        plan.append((mode, shape, points[(i // 6) % len(points)]))
    return plan


def test_the_trials_cover_every_mode_shape_and_kill_point() -> None:
    trials = schedule(max(TRIALS, 30))
    assert {(m, s) for m, s, _ in trials} == {(m, s) for m in MODES for s in SHAPES}
    assert {p.name for _, _, p in trials} == {p.name for p in KILL_POINTS}


def test_apply_killed_at_chosen_points_is_repaired_by_the_next_run(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    sim = start_vcsim(vms=3)
    estate = KillEstate(sim, tmp_path)
    vms = estate.vms()
    estate.power_off(vms["DC0_C0_RP0_VM2"])  # stays off whatever the mode
    power = {vm.name: vm.power_state for vm in estate.vms().values()}
    previous_shape: int | str | None = "none yet"
    for trial, (mode, shape, point) in enumerate(schedule(TRIALS), start=1):
        day = (START + timedelta(days=trial)).isoformat() + "Z"
        if shape != previous_shape:  # a day on the new shape first: its kill points hold then
            estate.set_shape(mode=mode, snapshots=shape, hooks=True)
            settle = estate.apply((START + timedelta(days=trial, hours=-12)).isoformat() + "Z")
            assert settle.code == 0, settle.out + settle.err
            previous_shape = shape
        estate.set_shape(mode=mode, snapshots=shape, hooks=True)
        what = f"trial {trial} ({mode}, {'exports only' if shape is None else 'snapshots'}, " \
               f"killed at {point.name})"
        event = point.arm(estate)
        proc = estate.spawn_apply(day)
        estate.wait_for(proc, event, f"{what}: the kill point")
        estate.kill(proc)
        sim.faults(taskDelayMs=0, taskDelayMatch="")
        repair = estate.apply(day)
        assert repair.code == 0, f"{what}: {repair.out}\n{repair.err}"
        check_invariants(estate, day, what, power)


def check_invariants(estate: KillEstate, day: str, what: str,
                     power: Mapping[str, object]) -> None:
    vms = estate.vms()
    for vm in vms.values():
        assert vm.power_state == power[vm.name], f"{what}: {vm.name} is {vm.power_state}"
        markers = [parse_marker(s.name, s.description) for s in vm.snapshots]
        temps = [m for m in markers if m and m.kind is MarkerKind.EXPORT_TEMP]
        points = [m.point_id for m in markers if m and m.kind is MarkerKind.POINT]
        assert temps == [], f"{what}: leftover export snapshot on {vm.name}"
        assert len(points) == len(set(points)), f"{what}: {vm.name} has two snapshots for a slot"
    with Repository.open(estate.target, create=False) as repo:
        assert repo.partials() == [], f"{what}: partial export visible"
        newest = {p.vm.instance_uuid for p in repo.points()
                  if p.slot.strftime("%Y-%m-%dT%H") == day[:11] + "01"}
    assert newest == {vm.instance_uuid for vm in vms.values()}, f"{what}: missing export"
    verify = estate.vmkeep("verify", "--all")
    assert verify.code == 0, f"{what}: {verify.out}{verify.err}"
    assert estate.plan(day, "--detailed-exitcode").code == 0, f"{what}: work left"

"""`vmkeep apply` killed with SIGKILL at random moments, then run again.

Every trial is a new day, so each run snapshots (powering VMs off: poweroff mode), exports
and prunes the previous day's points. After a kill the next apply must leave: no marked
snapshot behind beyond the retained points, no VM powered off that was on, no partial export
visible, every committed point verifying, and nothing left to do.

Trials: $VMKEEP_APPLY_KILL_TRIALS (default 30).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from reconciler.adapters.repository import Repository
from reconciler.markers import MarkerKind, parse_marker

from .apply_world import Estate
from .conftest import REPO, StartVcsim

pytestmark = pytest.mark.vcsim

TRIALS = int(os.environ.get("VMKEEP_APPLY_KILL_TRIALS", "30"))
START = datetime(2026, 1, 1, 1, 30)
MiB = 1 << 20


def spawn_apply(estate: Estate, now: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VMKEEP_SIM_PASSWORD": estate.sim.password}
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "--config", str(estate.config),
         "--policies", str(estate.policies), "--now", now, "--auto-approve"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def test_apply_killed_at_random_moments_is_repaired_by_the_next_run(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = Estate(start_vcsim(vms=3), tmp_path)
    estate.set_policy(mode="poweroff", snapshots=1, daily=1)
    for vm in estate.vms().values():
        estate.grow_disk(vm, 8 * MiB)
        estate.fill_disk(estate.vms()[vm.name], os.urandom(4 * MiB) + bytes(4 * MiB))
    rng = random.Random(int(os.environ.get("VMKEEP_KILL_SEED", "20261125")))

    # How long one uninterrupted daily run takes here: kills are spread over that.
    started = time.monotonic()
    first = spawn_apply(estate, START.isoformat() + "Z")
    assert first.wait(120) == 0, first.stderr.read() if first.stderr else ""
    span = max(time.monotonic() - started, 1.0)

    killed_during = 0
    for trial in range(1, TRIALS + 1):
        day = (START + timedelta(days=trial)).isoformat() + "Z"
        proc = spawn_apply(estate, day)
        time.sleep(rng.uniform(0.0, span))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed_during += 1
        proc.wait(60)
        repair = estate.apply(day)
        assert repair.code == 0, f"trial {trial}: {repair.out}\n{repair.err}"
        check_invariants(estate, day, trial)
    assert killed_during >= TRIALS // 2, "most kills should land while apply is running"


def check_invariants(estate: Estate, day: str, trial: int) -> None:
    vms = estate.vms()
    for vm in vms.values():
        assert vm.power_state.value == "poweredOn", f"trial {trial}: {vm.name} left off"
        markers = [parse_marker(s.name, s.description) for s in vm.snapshots]
        temps = [m for m in markers if m and m.kind is MarkerKind.EXPORT_TEMP]
        points = [m for m in markers if m and m.kind is MarkerKind.POINT]
        assert temps == [], f"trial {trial}: leftover export snapshot on {vm.name}"
        assert len(points) == 1, f"trial {trial}: {vm.name} has {len(points)} snapshot points"
    with Repository.open(estate.target, create=False) as repo:
        assert repo.partials() == [], f"trial {trial}: partial export visible"
        report = repo.verify()
        assert not report.damaged, f"trial {trial}: {report}"
        newest = {p.vm.instance_uuid for p in repo.points()
                  if p.slot.strftime("%Y-%m-%dT%H") == day[:11] + "01"}
    assert newest == {vm.instance_uuid for vm in vms.values()}, f"trial {trial}: missing export"
    assert estate.plan(day, "--detailed-exitcode").code == 0, f"trial {trial}: work left"

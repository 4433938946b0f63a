"""`vmkeep apply` killed with SIGKILL while exports go through NFC export leases (vSAN), then
run again.

The simulator runs with `--datastore-type vsan`, so every running VM's disk comes through the
snapshot's `ExportSnapshot` lease, and the policy is in poweroff mode, so every run powers the
VMs off and on: a lease left held would refuse that. Odd trials kill at a random moment of a
run; even trials kill right while an export lease is held (and journaled). After each kill the
next apply must leave: no export lease held, no temporary snapshot, no VM off, no partial
export, every point verifying, nothing left to do.

One window cannot be repaired at once: a kill after vCenter created a lease and before the run
journaled its id leaves a lease no later run can name (vSphere lists no leases). vCenter ends
such a lease after `info.leaseTimeout` without progress (300 s by default; LEASE_TIMEOUT here),
so for those trials the repair warns of it (the journal says a lease was asked for) and may
fail on the held lease, and the run after the timeout must converge. The kill of the even
trials is timed on a journaled lease, which is when the other VM's lease is being created, so
the window is hit now and then.

Trials: $VMKEEP_NFC_KILL_TRIALS (default 8).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.repository import Repository
from reconciler.markers import MarkerKind, parse_marker

from .apply_world import Estate
from .conftest import REPO, StartVcsim, wait_until

pytestmark = pytest.mark.vcsim

TRIALS = int(os.environ.get("VMKEEP_NFC_KILL_TRIALS", "8"))
START = datetime(2026, 1, 1, 1, 30)
MiB = 1 << 20
#: info.leaseTimeout of the simulator's export leases in this test (seconds).
LEASE_TIMEOUT = 6


def spawn_apply(estate: Estate, now: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VMKEEP_SIM_PASSWORD": estate.sim.password}
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", "apply", "--config", str(estate.config),
         "--policies", str(estate.policies), "--now", now, "--auto-approve"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def ready_leases(estate: Estate) -> list[dict[str, Any]]:
    return [lease for lease in estate.sim.control("leases") if lease["state"] == "ready"]


def journaled_leases(estate: Estate) -> set[str]:
    """Lease ids in the journal's unfinished actions (read-only)."""
    db = estate.root / "state.db"
    if not db.exists():
        return set()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT details FROM actions WHERE status = 'started'").fetchall()
    return {str(json.loads(d).get("nfcLease")) for (d,) in rows if json.loads(d).get("nfcLease")}


def held_and_journaled(estate: Estate) -> bool:
    return bool({lease["lease"] for lease in ready_leases(estate)} & journaled_leases(estate))


def test_apply_killed_during_nfc_exports_is_repaired_by_the_next_run(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = Estate(start_vcsim("--datastore-type", "vsan", vms=2), tmp_path)
    estate.set_policy(mode="poweroff", snapshots=1, daily=1)
    for vm in estate.vms().values():
        estate.grow_disk(vm, 8 * MiB)
        estate.fill_disk(estate.vms()[vm.name], os.urandom(4 * MiB) + bytes(4 * MiB))
    rng = random.Random(int(os.environ.get("VMKEEP_KILL_SEED", "20261207")))
    estate.sim.faults(nfcLeaseTimeout=LEASE_TIMEOUT)

    started = time.monotonic()
    first = spawn_apply(estate, START.isoformat() + "Z")
    assert first.wait(120) == 0, first.stderr.read() if first.stderr else ""
    span = max(time.monotonic() - started, 1.0)

    held_at_kill = 0
    for trial in range(1, TRIALS + 1):
        day = (START + timedelta(days=trial)).isoformat() + "Z"
        # even trials: downloads paced (2 s a disk) so the kill lands while a lease is held on
        # any machine; odd trials at full speed
        estate.sim.faults(nfcBytesPerSecond=0 if trial % 2 else 4 * MiB,
                          nfcLeaseTimeout=LEASE_TIMEOUT)
        proc = spawn_apply(estate, day)
        if trial % 2:
            time.sleep(rng.uniform(0.0, span))
        else:  # right while a lease is held and journaled
            wait_until(lambda p=proc: p.poll() is not None or held_and_journaled(estate),  # type: ignore[misc]
                       timeout=60)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        estate.sim.faults(nfcBytesPerSecond=0, nfcLeaseTimeout=LEASE_TIMEOUT)
        held = {lease["lease"] for lease in ready_leases(estate)}
        held_at_kill += bool(held)
        unnamed = held - journaled_leases(estate)
        repair = estate.apply(day)
        if unnamed:  # vCenter times them out; the run after that converges
            assert "no run can name it" in repair.err, f"trial {trial}: {repair.err}"
            assert {lease["lease"] for lease in ready_leases(estate)} <= unnamed, f"trial {trial}"
            wait_until(lambda: not ready_leases(estate), timeout=LEASE_TIMEOUT * 5)
            repair = estate.apply(day)
        assert repair.code == 0, f"trial {trial}: {repair.out}\n{repair.err}"
        check_invariants(estate, day, trial)
    assert held_at_kill >= TRIALS // 2, "the kills should catch NFC leases held"


def check_invariants(estate: Estate, day: str, trial: int) -> None:
    assert ready_leases(estate) == [], f"trial {trial}: an export lease is still held"
    vms = estate.vms()
    for vm in vms.values():
        assert vm.power_state.value == "poweredOn", f"trial {trial}: {vm.name} left off"
        markers = [parse_marker(s.name, s.description) for s in vm.snapshots]
        assert not [m for m in markers if m and m.kind is MarkerKind.EXPORT_TEMP], \
            f"trial {trial}: leftover export snapshot on {vm.name}"
    with Repository.open(estate.target, create=False) as repo:
        assert repo.partials() == [], f"trial {trial}: partial export visible"
        report = repo.verify()
        assert not report.damaged, f"trial {trial}: {report}"
        newest = {p.vm.instance_uuid for p in repo.points()
                  if p.slot.strftime("%Y-%m-%dT%H") == day[:11] + "01"}
    assert newest == {vm.instance_uuid for vm in vms.values()}, f"trial {trial}: missing export"
    assert estate.plan(day, "--detailed-exitcode").code == 0, f"trial {trial}: work left"

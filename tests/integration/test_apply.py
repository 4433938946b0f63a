"""`vmkeep apply` end to end: the simulator, a policy directory, a real export target
directory and a real SQLite state file. Each test gets a fresh simulator (they mutate)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters.datastore import upload
from reconciler.adapters.repository import Repository
from reconciler.adapters.statedb import StateDB
from reconciler.markers import parse_marker

from .apply_world import Estate, Run
from .conftest import REPO, StartVcsim, wait_until

pytestmark = pytest.mark.vcsim

DAY1 = "2026-11-25T01:30:00Z"
DAY2 = "2026-11-26T01:30:00Z"
DAY3 = "2026-11-27T01:30:00Z"
MiB = 1 << 20


@pytest.fixture
def estate(start_vcsim: StartVcsim, tmp_path: Path) -> Iterator[Estate]:
    yield Estate(start_vcsim(vms=3), tmp_path)


def marked_snapshots(estate: Estate) -> dict[str, list[str]]:
    return {
        name: sorted(s.name for s in vm.snapshots if parse_marker(s.name, s.description))
        for name, vm in estate.vms().items()
    }


def test_apply_then_plan_shows_nothing_to_do_and_a_second_apply_changes_nothing(estate):
    first = estate.apply(DAY1)
    assert first.code == 0, first.err
    assert "6 done" in first.out
    assert estate.plan(DAY1, "--detailed-exitcode").code == 0
    snapshots, points = marked_snapshots(estate), estate.points()
    estate.sim.reset_stats()
    again = estate.apply(DAY1)
    assert again.code == 0
    assert "No changes" in again.out
    assert marked_snapshots(estate) == snapshots
    assert estate.points() == points
    calls = estate.sim.stats().get("methods", estate.sim.stats())
    assert not any("Task" in str(name) for name in calls), calls


def test_exports_are_byte_exact_and_the_next_day_stores_about_what_changed(estate):
    vm = estate.vms()["DC0_C0_RP0_VM0"]
    estate.grow_disk(vm, 16 * MiB)
    data = bytearray(os.urandom(8 * MiB) + bytes(8 * MiB))
    estate.fill_disk(vm, bytes(data))
    assert estate.apply(DAY1).code == 0
    disk = f"disk-{vm.disks[0].key}"
    [day1] = [p for p in estate.points() if p.vm.name == vm.name]
    assert estate.read_point_disk(day1.id, disk) == bytes(data)

    for offset in range(0, 8 * MiB, 64 * 64 * 1024):  # 1 % of the disk's 64 KiB blocks
        data[offset : offset + 64 * 1024] = os.urandom(64 * 1024)
    estate.fill_disk(vm, bytes(data))
    run = estate.apply(DAY2, "-o", "json")
    assert run.code == 0, run.err
    [export] = [o for o in run.json()["outcomes"]
                if o["kind"] == "export.create" and o["vm"]["name"] == vm.name]
    assert export["bytesStored"] < 0.05 * 16 * MiB  # ≈ 1 % changed (compressed, plus tables)
    [day2] = [p for p in estate.points() if p.vm.name == vm.name and p.id != day1.id]
    assert estate.read_point_disk(day2.id, disk) == bytes(data)
    assert estate.read_point_disk(day1.id, disk) != bytes(data)


def test_an_exported_disk_streams_back_onto_the_datastore_byte_exact(estate):
    vm = estate.vms()["DC0_C0_RP0_VM2"]
    estate.grow_disk(vm, 12 * MiB)
    data = os.urandom(2 * MiB) + bytes(9 * MiB) + os.urandom(MiB)
    estate.fill_disk(vm, data)
    assert estate.apply(DAY1).code == 0
    [point] = [p for p in estate.points() if p.vm.name == vm.name]
    estate.fill_disk(vm, bytes(12 * MiB))  # the disk is wiped
    file, connect, cookie = estate.flat_file(vm)
    with Repository.open(estate.target, create=False) as repo:
        disk = repo.open_disk(point.id, f"disk-{vm.disks[0].key}")
        upload(file, connect, cookie, disk.blocks(), disk.size)  # the restore's data path
    assert estate.disk_bytes(vm) == data


def test_vmkeep_restore_writes_the_exported_disk_and_vm_files_into_a_directory(estate):
    vm = estate.vms()["DC0_C0_RP0_VM1"]
    estate.grow_disk(vm, 6 * MiB)
    data = os.urandom(MiB) + bytes(4 * MiB) + os.urandom(MiB)
    estate.fill_disk(vm, data)
    assert estate.apply(DAY1).code == 0
    [point] = [p for p in estate.points() if p.vm.name == vm.name]
    out = estate.root / "restored"
    run = estate.vmkeep("restore", "--point", point.id, "--to", str(out), "-o", "json")
    assert run.code == 0, run.err
    [disk] = run.json()["disks"]
    stem = vm.disks[0].file.rsplit("/", 1)[-1].removesuffix(".vmdk")
    assert (disk["image"], disk["descriptor"]) == (f"{stem}-flat.vmdk", f"{stem}.vmdk")
    assert (out / disk["image"]).read_bytes() == data
    extent = f'RW {len(data) // 512} VMFS "{stem}-flat.vmdk"'
    assert extent in (out / disk["descriptor"]).read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted([
        f"{vm.name}.vmx", f"{vm.name}.nvram", "vm.json", "vm-config.json", "restore.json",
        f"{stem}.vmdk", f"{stem}-flat.vmdk"])


@pytest.mark.parametrize("nfc_format", ["raw", "streamOptimized"])
def test_a_powered_off_vm_is_exported_through_an_nfc_lease_and_left_off(estate, nfc_format):
    estate.sim.faults(nfcFormat=nfc_format)
    vm = estate.vms()["DC0_C0_RP0_VM1"]
    estate.grow_disk(vm, 8 * MiB)
    data = os.urandom(3 * MiB) + bytes(4 * MiB) + os.urandom(MiB)
    estate.fill_disk(vm, data)
    estate.power_off(vm)
    estate.sim.reset_stats()
    run = estate.apply(DAY1)
    assert run.code == 0, run.out + run.err
    methods = estate.sim.stats()["methods"]
    assert methods.get("ExportVm") == 1  # only the powered-off VM goes through NFC
    assert methods.get("HttpNfcLeaseComplete") == 1
    assert "HttpNfcLeaseAbort" not in methods
    [point] = [p for p in estate.points() if p.vm.name == vm.name]
    assert estate.read_point_disk(point.id, f"disk-{vm.disks[0].key}") == data
    assert estate.vms()[vm.name].power_state.value == "poweredOff"
    assert estate.vms()["DC0_C0_RP0_VM0"].power_state.value == "poweredOn"


def test_with_change_tracking_the_next_export_reads_only_the_changed_blocks(estate):
    vm = estate.vms()["DC0_C0_RP0_VM0"]
    size = 32 * MiB
    estate.grow_disk(vm, size)
    estate.enable_change_tracking(vm)
    data = bytearray(os.urandom(size // 2) + bytes(size // 2))
    estate.fill_disk(vm, bytes(data))
    first = estate.apply(DAY1, "-o", "json")
    assert first.code == 0, first.err
    disk = f"disk-{vm.disks[0].key}"

    block = 64 * 1024
    changed = range(3, size // block, 100)  # 1 % of the 64 KiB blocks, spread out
    for index in changed:
        data[index * block : index * block + 512] = os.urandom(512)
    estate.fill_disk(vm, bytes(data))
    estate.sim.reset_stats()
    second = estate.apply(DAY2, "-o", "json")
    assert second.code == 0, second.err
    [export] = [o for o in second.json()["outcomes"]
                if o["kind"] == "export.create" and o["vm"]["name"] == vm.name]
    assert 0 < export["bytesRead"] <= 0.05 * size, export
    assert estate.sim.stats()["methods"].get("QueryChangedDiskAreas", 0) >= 1
    [day2] = [p for p in estate.points()
              if p.vm.name == vm.name and p.slot.day == 26]
    assert estate.read_point_disk(day2.id, disk) == bytes(data)


def test_on_a_terminal_apply_draws_a_progress_bar_per_disk(estate):
    vm = estate.vms()["DC0_C0_RP0_VM0"]
    estate.grow_disk(vm, 16 * MiB)
    estate.fill_disk(vm, os.urandom(16 * MiB))
    primary, secondary = pty.openpty()
    env = {**os.environ, "VMKEEP_SIM_PASSWORD": estate.sim.password}
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "--config", str(estate.config),
         "--policies", str(estate.policies), "--now", DAY1, "--auto-approve"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=secondary, timeout=120, check=False,
    )
    os.close(secondary)
    screen = b""
    while chunk := _read_pty(primary):
        screen += chunk
    os.close(primary)
    assert done.returncode == 0, screen.decode()
    text = screen.decode()
    assert f"{vm.name} disk-{vm.disks[0].key} [" in text
    assert "MiB/s" in text and "\x1b[1A\x1b[2K" in text
    assert f"✓ {vm.name}: export.create done" in text


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the other side is closed
        return b""


def test_a_running_vm_whose_disk_is_a_delta_is_refused_with_advice_not_read_wrong(estate):
    # A VM that had snapshots before vmkeep's: its disk is a delta on top of a parent file.
    vm = estate.vms()["DC0_C0_RP0_VM0"]
    estate.make_delta_disk(vm, "[LocalDS_0] DC0_C0_RP0_VM0/disk1-base.vmdk")
    run = estate.apply(DAY1)
    assert run.code == 3
    assert "is a delta disk on top of [LocalDS_0] DC0_C0_RP0_VM0/disk1-base.vmdk" in run.out
    assert "Remove or consolidate the VM's other snapshots" in run.out
    assert {p.vm.name for p in estate.points()} == {"DC0_C0_RP0_VM1", "DC0_C0_RP0_VM2"}
    # the snapshot point stays; the export's temporary snapshot was removed after the failure
    assert marked_snapshots(estate)[vm.name] == ["vmkeep:gold:20261125T010000Z"]


def test_a_failing_snapshot_on_one_vm_lets_the_others_complete_and_exits_3(estate):
    estate.sim.faults(failSnapshot="^DC0_C0_RP0_VM1$", failSnapshotFault="NoDiskSpace")
    run = estate.apply(DAY1)
    assert run.code == 3
    assert "NoDiskSpace" in run.out
    assert "DC0_C0_RP0_VM1" in run.out
    snapshots = marked_snapshots(estate)
    assert snapshots["DC0_C0_RP0_VM1"] == []
    assert len(snapshots["DC0_C0_RP0_VM0"]) == 1
    assert {p.vm.name for p in estate.points()} == {"DC0_C0_RP0_VM0", "DC0_C0_RP0_VM2"}


def test_slow_tasks_and_sessions_ending_mid_run_still_complete(estate):
    estate.sim.faults(taskDelayMs=300, taskDelayMatch="Snapshot")
    assert estate.apply(DAY1).code == 0
    estate.sim.reset_stats()
    estate.sim.faults(taskDelayMs=0, sessionCallLimit=15)  # every session dies after 15 calls
    run = estate.apply(DAY2)
    assert run.code == 0, run.out + run.err
    assert estate.sim.stats()["sessionsTerminated"] >= 3
    assert all(len(s) == 2 for s in marked_snapshots(estate).values())
    estate.sim.faults(sessionCallLimit=0)
    assert estate.plan(DAY2, "--detailed-exitcode").code == 0


def test_http_503_from_vcenter_is_retried(estate):
    estate.sim.faults(failRequests=2, failStatus=503)
    run = estate.apply(DAY1)
    assert run.code == 0, run.out + run.err


def test_deletions_over_the_budget_are_held_back_while_the_backups_run(estate):
    estate.set_policy(snapshots=1)
    assert estate.apply(DAY1).code == 0
    estate.write_config(max_deletes=2)
    day1 = marked_snapshots(estate)
    run = estate.apply(DAY2)
    assert run.code == 3, run.out + run.err
    assert "HELD: 3 deletions exceed limits.maxDeletesPerRun (2)" in run.out
    assert "--max-deletes 3" in run.out and "limits.maxDeletesPerRun" in run.out
    assert "held back: 3 deletion(s)" in run.out
    # the new day's snapshots and exports were taken; day 1's snapshots are all still there
    assert {name: snaps[0] for name, snaps in marked_snapshots(estate).items()} == \
        {name: snaps[0] for name, snaps in day1.items()}
    assert all(len(s) == 2 for s in marked_snapshots(estate).values())
    assert sum(p.id.endswith("20261126T010000Z") for p in estate.points()) == 3
    plan = estate.plan(DAY2)
    assert plan.json()["heldCount"] == 3 and plan.json()["actions"] == []
    held = estate.apply(DAY2, "-o", "json")
    assert held.code == 3 and held.json()["heldCount"] == 3
    saved = estate.root / "held.json"  # a saved plan with held deletions is not stale
    assert estate.plan(DAY2, "--out", str(saved)).code == 0  # under --max-deletes 3 either
    allowed = estate.vmkeep("apply", str(saved), "--policies", str(estate.policies),
                            "--max-deletes", "3", "--auto-approve")
    assert allowed.code == 0, allowed.out + allowed.err
    assert all(len(s) == 1 for s in marked_snapshots(estate).values())


def test_a_users_own_snapshot_is_never_touched(estate):
    vm = estate.vms()["DC0_C0_RP0_VM0"]
    estate.add_user_snapshot(vm)
    estate.set_policy(snapshots=1)
    for now in (DAY1, DAY2, DAY3):
        assert estate.apply(now).code == 0
    names = [s.name for s in estate.vms()["DC0_C0_RP0_VM0"].snapshots]
    assert "before-upgrade" in names
    assert marked_snapshots(estate)["DC0_C0_RP0_VM0"] == ["vmkeep:gold:20261127T010000Z"]


def test_a_renamed_vm_is_still_identified_by_its_instance_uuid(estate):
    estate.set_policy(snapshots=1)
    vm = estate.vms()["DC0_C0_RP0_VM2"]
    assert estate.apply(DAY1).code == 0
    estate.rename(vm, "renamed-vm")
    assert estate.apply(DAY2).code == 0
    renamed = estate.vms()["renamed-vm"]
    assert renamed.instance_uuid == vm.instance_uuid
    assert [s.name for s in renamed.snapshots] == ["vmkeep:gold:20261126T010000Z"]
    assert estate.plan(DAY2, "--detailed-exitcode").code == 0


def test_a_vm_renamed_while_apply_runs_is_still_identified_by_its_instance_uuid(estate):
    estate.set_policy(snapshots=1)
    vm = estate.vms()["DC0_C0_RP0_VM2"]
    estate.sim.reset_stats()
    estate.sim.faults(taskDelayMs=1500, taskDelayMatch="CreateSnapshot")
    runs: list = []
    worker = threading.Thread(target=lambda: runs.append(estate.apply(DAY1)))
    worker.start()
    wait_until(lambda: estate.sim.stats()["methods"].get("CreateSnapshot_Task", 0) >= 1)
    estate.rename(vm, "renamed-mid-run")  # while the snapshot tasks are still running
    worker.join(120)
    assert runs and runs[0].code == 0, runs[0].out + runs[0].err if runs else "no run"
    renamed = estate.vms()["renamed-mid-run"]
    assert renamed.instance_uuid == vm.instance_uuid
    assert [s.name for s in renamed.snapshots] == ["vmkeep:gold:20261125T010000Z"]
    assert any(p.vm.instance_uuid == vm.instance_uuid for p in estate.points())
    estate.sim.faults(taskDelayMs=0)
    assert estate.plan(DAY1, "--detailed-exitcode").code == 0


def test_poweroff_mode_powers_the_vm_back_on(estate):
    estate.set_policy(mode="poweroff")
    assert estate.apply(DAY1).code == 0
    assert {vm.power_state.value for vm in estate.vms().values()} == {"poweredOn"}
    assert {p.consistency for p in estate.points()} == {"poweroff"}


def test_every_action_is_journaled_in_the_state_db(estate):
    estate.sim.faults(failSnapshot="^DC0_C0_RP0_VM1$")
    assert estate.apply(DAY1).code == 3  # one action failed, the others completed
    with StateDB(estate.root / "state.db") as db:
        records = db.actions()
        assert db.unfinished_actions() == []
        assert db.lease_holder("apply", now=0) is None  # released, whatever its expiry
    statuses = {(r.vm_name, r.kind): r.status for r in records}
    assert statuses[("DC0_C0_RP0_VM1", "snapshot.create")] == "failed"
    assert statuses[("DC0_C0_RP0_VM0", "export.create")] == "done"


def test_a_saved_plan_is_applied_and_refused_once_stale(estate):
    saved = estate.root / "plan.json"
    assert estate.plan(DAY1, "--out", str(saved)).code == 0
    estate.add_user_snapshot(estate.vms()["DC0_C0_RP0_VM0"])
    stale = estate.vmkeep("apply", str(saved), "--policies", str(estate.policies),
                          "--auto-approve")
    assert stale.code == 1
    assert "Saved plan is stale" in stale.err
    assert estate.points() == []
    assert estate.plan(DAY1, "--out", str(saved)).code == 0
    fresh = estate.vmkeep("apply", str(saved), "--policies", str(estate.policies),
                          "--auto-approve")
    assert fresh.code == 0, fresh.err


def test_without_a_terminal_apply_refuses_to_run_unapproved(estate):
    run = estate.vmkeep("apply", "--policies", str(estate.policies), "--now", DAY1)
    assert run.code == 1
    assert "--auto-approve" in run.err
    assert estate.points() == []


def test_status_reports_runs_failures_and_coverage_and_check_exits_3_when_something_is_wrong(
    estate,
):
    def status(*extra: str, now: str = DAY1) -> Run:
        return estate.vmkeep("status", "--policies", str(estate.policies), "--now", now,
                             *extra)

    before = status("--check", "-o", "json")
    assert before.code == 0, before.err  # due is not late: nothing needs attention yet
    body = before.json()
    assert body["runs"] == [] and not body["apply"]["running"]
    assert body["coverage"]["counts"]["due"] == 3  # nothing yet, still inside the threshold
    assert body["pending"]["snapshot.create"] == 3
    assert not (estate.root / "state.db").exists()  # status reads the journal, never makes it

    estate.sim.faults(failSnapshot="^DC0_C0_RP0_VM1$", failSnapshotFault="NoDiskSpace")
    assert estate.apply(DAY1).code == 3
    failed = status("--check")
    assert failed.code == 3
    assert "Failed in the last finished run" in failed.out
    assert "DC0_C0_RP0_VM1" in failed.out and "NoDiskSpace" in failed.out
    assert "had 2 failed action(s)" in failed.out  # its snapshot and its export

    estate.sim.faults(failSnapshot="")
    assert estate.apply(DAY1).code == 0
    well = status("--check", "-o", "json")
    assert well.code == 0, well.out
    body = well.json()
    assert body["ok"] and body["attention"] == [] and body["lastRunFailures"] == []
    assert body["coverage"]["counts"] == {"covered": 3, "due": 0, "late": 0, "missing": 0}
    assert [sum(r["counts"].values()) > 0 for r in body["runs"]] == [True, True]
    assert "All well." in status().out
    later = status("--check", now="2026-11-26T20:00:00Z")  # 19 h past the next slot: late
    assert later.code == 3
    assert "3 VM/policy pair(s) late" in later.out and "late     sim/DC0_C0_RP0_VM0" in later.out

"""Exports through the snapshot's NFC export lease: vSAN/VVol datastores (no flat files), the
host config's `transport`, changed blocks on the NFC path, and leases that are always ended.

The simulator runs with `--datastore-type vsan`: every datastore reports type vsan and answers
a datastore HTTP GET of a `-flat.vmdk` with 404; its `GET /vmkeep/leases` shows how each
export lease ended (docs/simulator.md)."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import pytest
from pyVim.task import WaitForTask

from reconciler.adapters.vsphere import VSphereClient, VSphereOperations
from reconciler.markers import MarkerKind, parse_marker

from .apply_world import Estate, wait
from .conftest import StartVcsim

pytestmark = pytest.mark.vcsim

DAY1 = "2026-11-25T01:30:00Z"
DAY2 = "2026-11-26T01:30:00Z"
MiB = 1 << 20
VM0 = "DC0_C0_RP0_VM0"
VM1 = "DC0_C0_RP0_VM1"


def vsan_estate(start_vcsim: StartVcsim, tmp_path: Path, *flags: str,
                transport: str | None = None) -> Estate:
    estate = Estate(start_vcsim(*flags, vms=2), tmp_path)
    if transport:
        set_transport(estate, transport)
    return estate


def set_transport(estate: Estate, transport: str) -> None:
    text = estate.config.read_text()
    text = re.sub(r"(\n(\s+)caFile: [^\n]*\n)", rf"\1\2transport: {transport}\n", text, count=1)
    estate.config.write_text(text)


def export_outcome(run: Any, vm: str) -> dict[str, Any]:
    [outcome] = [o for o in run.json()["outcomes"]
                 if o["kind"] == "export.create" and o["vm"]["name"] == vm]
    return dict(outcome)


def leases(estate: Estate) -> list[dict[str, Any]]:
    return list(estate.sim.control("leases"))


def restored_disk(estate: Estate, point_id: str, out: Path) -> bytes:
    run = estate.vmkeep("restore", "--point", point_id, "--to", str(out), "-o", "json")
    assert run.code == 0, run.err
    [disk] = run.json()["disks"]
    return (out / disk["image"]).read_bytes()


def fill(estate: Estate, name: str, data: bytes) -> None:
    vm = estate.vms()[name]
    estate.grow_disk(vm, len(data))
    estate.fill_disk(estate.vms()[name], data)


def no_export_snapshots_left(estate: Estate) -> bool:
    return not any(
        (m := parse_marker(s.name, s.description)) and m.kind is MarkerKind.EXPORT_TEMP
        for vm in estate.vms().values() for s in vm.snapshots
    )


@pytest.mark.parametrize(("kind", "mode"), [("vsan", "crash"), ("vsan", "quiesce"),
                                            ("vvol", "crash")])
def test_on_vsan_and_vvol_a_running_vm_exports_byte_exact_through_export_snapshot(
    start_vcsim: StartVcsim, tmp_path: Path, kind: str, mode: str
) -> None:
    estate = vsan_estate(start_vcsim, tmp_path, "--datastore-type", kind, "--tools-running")
    estate.set_policy(names=[VM0], mode=mode, snapshots=0)
    data = os.urandom(3 * MiB) + bytes(4 * MiB) + os.urandom(MiB)
    fill(estate, VM0, data)
    estate.sim.reset_stats()

    run = estate.apply(DAY1, "-o", "json")
    assert run.code == 0, run.out + run.err
    outcome = export_outcome(run, VM0)
    assert outcome["status"] == "done" and outcome["consistency"] == mode
    assert outcome["transport"] == "nfc"
    [disk] = outcome["disks"]
    reported, name = {"vsan": ("vsan", "vSAN"), "vvol": ("VVOL", "VVol")}[kind]
    assert (disk["transport"], disk["method"], disk["datastoreType"]) == (
        "nfc", "ExportSnapshot", reported)
    assert f"NFC (ExportSnapshot): {name} datastore 'LocalDS_0' keeps disks as objects" \
        in outcome["message"]
    methods = estate.sim.stats()["methods"]
    assert methods.get("ExportSnapshot") == 1 and "ExportVm" not in methods
    [point] = [p for p in estate.points() if p.vm.name == VM0]
    assert restored_disk(estate, point.id, tmp_path / "restored") == data
    [lease] = leases(estate)
    assert (lease["method"], lease["state"], lease["ended"]) == (
        "ExportSnapshot", "done", "completed")
    assert estate.vms()[VM0].power_state.value == "poweredOn"
    assert no_export_snapshots_left(estate)


def test_opening_a_disk_over_nfc_says_a_lease_is_asked_for_before_vcenter_makes_it(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = vsan_estate(start_vcsim, tmp_path, "--datastore-type", "vsan")
    ops = VSphereOperations(VSphereClient(estate.sim.config(), estate.sim.password))
    vm = next(v for v in ops.client.inventory().vms if v.name == VM0)
    snapshot = wait(estate.sim.vm(VM0).CreateSnapshot_Task(
        name="s", description="made by the test", memory=False, quiesce=False))
    [disk] = ops.snapshot_disks(vm, snapshot._moId)
    heard: list[tuple[str, list[str]]] = []  # (what on_lease heard, the leases then)

    def on_lease(lease_id: str) -> None:
        heard.append((lease_id, [lease["lease"] for lease in leases(estate)]))

    ops.open_disk(vm, snapshot._moId, disk, on_lease=on_lease).close()
    ops.client.close()
    [(asked, before), (lease_id, after)] = heard
    assert (asked, before) == ("", [])  # heard before vCenter was asked for it
    assert lease_id and after == [lease_id]


def test_on_vsan_day_two_after_a_one_percent_change_stores_about_one_percent(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = vsan_estate(start_vcsim, tmp_path, "--datastore-type", "vsan")
    estate.set_policy(names=[VM0], snapshots=0)
    size = 32 * MiB
    data = bytearray(random.Random(5).randbytes(size))
    fill(estate, VM0, bytes(data))
    estate.enable_change_tracking(estate.vms()[VM0])
    assert estate.apply(DAY1).code == 0

    block = 64 * 1024  # the repository's chunk size: a write touching 2 chunks stores both
    changed = 5 * block  # 5 places, 1 % of the disk in all
    for start in range(3 * block, size, size // 5 // block * block):
        data[start : start + block] = random.Random(start).randbytes(block)
    estate.fill_disk(estate.vms()[VM0], bytes(data))
    run = estate.apply(DAY2, "-o", "json")
    assert run.code == 0, run.out + run.err
    outcome = export_outcome(run, VM0)
    [disk] = outcome["disks"]
    assert disk["changedExtents"] == "unavailable"
    assert outcome["bytesRead"] == disk["bytesRead"] == size  # the whole stream was read
    assert "the changed-extent shortcut is not available on NFC: read all 33554432 bytes" \
        in outcome["message"]
    assert changed <= outcome["bytesStored"] <= 1.2 * changed, outcome  # about 1 %
    [day2] = [p for p in estate.points() if p.slot.day == 26]
    assert restored_disk(estate, day2.id, tmp_path / "day2") == bytes(data)


def test_on_vsan_a_powered_off_vm_still_goes_through_export_vm(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = vsan_estate(start_vcsim, tmp_path, "--datastore-type", "vsan")
    estate.set_policy(names=[VM1], snapshots=0)
    data = os.urandom(2 * MiB)
    fill(estate, VM1, data)
    estate.power_off(estate.vms()[VM1])
    estate.sim.reset_stats()
    run = estate.apply(DAY1, "-o", "json")
    assert run.code == 0, run.out + run.err
    [disk] = export_outcome(run, VM1)["disks"]
    assert (disk["method"], disk["reason"]) == ("ExportVm", "the VM is powered off")
    methods = estate.sim.stats()["methods"]
    assert methods.get("ExportVm") == 1 and "ExportSnapshot" not in methods
    [point] = estate.points()
    assert estate.read_point_disk(point.id, f"disk-{estate.vms()[VM1].disks[0].key}") == data
    assert estate.vms()[VM1].power_state.value == "poweredOff"


def test_a_failing_nfc_export_aborts_its_leases_and_the_next_run_finishes_the_job(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = vsan_estate(start_vcsim, tmp_path, "--datastore-type", "vsan")
    estate.set_policy(names=[VM0], snapshots=0)
    data = os.urandom(4 * MiB)
    fill(estate, VM0, data)
    estate.sim.faults(nfcFailAfter=MiB)

    failed = estate.apply(DAY1, "-o", "json")
    assert failed.code != 0
    assert export_outcome(failed, VM0)["status"] == "failed"
    tries = leases(estate)
    assert tries and all((t["state"], t["ended"]) == ("done", "aborted") for t in tries), tries
    ref = estate.sim.vm(VM0)  # a held lease would refuse these
    WaitForTask(ref.PowerOffVM_Task())
    WaitForTask(ref.PowerOnVM_Task())
    assert no_export_snapshots_left(estate)

    estate.sim.faults(nfcFailAfter=0)
    again = estate.apply(DAY1, "-o", "json")
    assert again.code == 0, again.out + again.err
    assert export_outcome(again, VM0)["status"] == "done"
    assert not [t for t in leases(estate) if t["state"] == "ready"]
    assert no_export_snapshots_left(estate)
    [point] = estate.points()
    assert restored_disk(estate, point.id, tmp_path / "restored") == data


def test_transport_http_on_vsan_fails_with_one_line_naming_the_datastore_type(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = vsan_estate(start_vcsim, tmp_path, "--datastore-type", "vsan", transport="http")
    estate.set_policy(names=[VM0], snapshots=0)
    run = estate.apply(DAY1)
    assert run.code != 0
    [line] = [x for x in run.out.splitlines() if "failed: export.create" in x]
    assert "datastore 'LocalDS_0' is of type vsan (vSAN)" in line
    assert "set transport: auto or nfc" in line
    assert "Traceback" not in run.out + run.err
    assert leases(estate) == [] and no_export_snapshots_left(estate)
    assert estate.points() == []


def test_transport_nfc_on_vmfs_exports_through_export_snapshot(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = vsan_estate(start_vcsim, tmp_path, transport="nfc")
    estate.set_policy(names=[VM0], snapshots=0)
    data = os.urandom(2 * MiB) + bytes(2 * MiB)
    fill(estate, VM0, data)
    run = estate.apply(DAY1, "-o", "json")
    assert run.code == 0, run.out + run.err
    [disk] = export_outcome(run, VM0)["disks"]
    assert (disk["transport"], disk["method"], disk["reason"]) == (
        "nfc", "ExportSnapshot", "transport: nfc")
    [point] = estate.points()
    assert restored_disk(estate, point.id, tmp_path / "restored") == data
    assert [lease["ended"] for lease in leases(estate)] == ["completed"]


def test_transport_auto_on_a_file_datastore_reads_over_datastore_http(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = vsan_estate(start_vcsim, tmp_path)
    estate.set_policy(names=[VM0], snapshots=0)
    fill(estate, VM0, os.urandom(MiB))
    run = estate.apply(DAY1, "-o", "json")
    assert run.code == 0, run.out + run.err
    outcome = export_outcome(run, VM0)
    [disk] = outcome["disks"]
    assert (outcome["transport"], disk["method"]) == ("http", "datastore HTTP")
    assert "holds the disk as a file" in disk["reason"]
    assert leases(estate) == []


@pytest.mark.parametrize("status", [403, 404])
def test_transport_auto_falls_back_to_the_snapshot_export_when_the_datastore_refuses_the_read(
    start_vcsim: StartVcsim, tmp_path: Path, status: int
) -> None:
    estate = vsan_estate(start_vcsim, tmp_path)
    estate.set_policy(names=[VM0], snapshots=0)
    data = os.urandom(MiB) + bytes(MiB)
    fill(estate, VM0, data)
    estate.sim.faults(refuseFlatReads=status)
    run = estate.apply(DAY1, "-o", "json")
    assert run.code == 0, run.out + run.err
    [disk] = export_outcome(run, VM0)["disks"]
    assert (disk["transport"], disk["method"]) == ("nfc", "ExportSnapshot")
    assert "datastore 'LocalDS_0' refused the read of the disk's file" in disk["reason"]
    [point] = estate.points()
    assert restored_disk(estate, point.id, tmp_path / "restored") == data


def test_transport_http_does_not_fall_back_when_the_datastore_refuses_the_read(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = vsan_estate(start_vcsim, tmp_path, transport="http")
    estate.set_policy(names=[VM0], snapshots=0)
    estate.sim.faults(refuseFlatReads=404)
    run = estate.apply(DAY1)
    assert run.code != 0
    assert "does not exist" in run.out and leases(estate) == []


def test_the_plan_explains_that_exports_of_vsan_disks_go_through_nfc(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = vsan_estate(start_vcsim, tmp_path, "--datastore-type", "vsan")
    estate.set_policy(names=[VM0], snapshots=0)
    run = estate.plan(DAY1)
    assert run.code == 0, run.err
    [export] = [a for a in run.json()["actions"] if a["kind"] == "export.create"]
    label = estate.vms()[VM0].disks[0].label
    assert f"; {label} via NFC (ExportSnapshot): vSAN datastore 'LocalDS_0' keeps disks as " \
        "objects, not files" in export["reason"]
    set_transport(estate, "http")
    [export] = [a for a in estate.plan(DAY1).json()["actions"] if a["kind"] == "export.create"]
    assert "will fail: datastore 'LocalDS_0' is of type vsan (vSAN)" in export["reason"]


def test_on_a_file_datastore_the_plan_says_nothing_about_transports(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = vsan_estate(start_vcsim, tmp_path)
    estate.set_policy(names=[VM0], snapshots=0)
    [export] = [a for a in estate.plan(DAY1).json()["actions"] if a["kind"] == "export.create"]
    assert "NFC" not in export["reason"] and "transport" not in export["reason"]
    set_transport(estate, "nfc")
    [export] = [a for a in estate.plan(DAY1).json()["actions"] if a["kind"] == "export.create"]
    assert "via NFC (ExportSnapshot): transport: nfc" in export["reason"]


def test_a_slow_nfc_export_keeps_its_lease_alive_at_the_interval_the_lease_asks_for(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = vsan_estate(start_vcsim, tmp_path, "--datastore-type", "vsan")
    estate.set_policy(names=[VM0], snapshots=0)
    data = os.urandom(3 * MiB)
    fill(estate, VM0, data)
    # the lease times out after 1 s without progress; the download takes about 3 s
    estate.sim.faults(nfcLeaseTimeout=1, nfcBytesPerSecond=MiB)
    run = estate.apply(DAY1, "-o", "json")
    assert run.code == 0, run.out + run.err
    [lease] = leases(estate)
    assert (lease["leaseTimeout"], lease["ended"]) == (1, "completed"), lease
    assert lease["progressCalls"] >= 2
    [point] = estate.points()
    assert restored_disk(estate, point.id, tmp_path / "restored") == data

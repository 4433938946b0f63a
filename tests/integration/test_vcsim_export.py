"""The simulator's disk data paths: ExportVm/NFC downloads and changed block tracking.

Data gets onto a VM's disk the way the tests of the rest of vmkeep put it there: by writing
the disk's flat file over the datastore HTTP interface. pyVmomi is used directly to check the
wire behaviour the vSphere adapter relies on (docs/simulator.md, tests/vcsim/PATCHES.md).
"""

from __future__ import annotations

import http.client
import io
import random
import re
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim, vmodl

from reconciler.adapters.vmdk import StreamOptimizedReader

from .conftest import Simulator, StartVcsim

pytestmark = pytest.mark.vcsim

VM = "DC0_C0_RP0_VM0"
FLAT_FILE = f"{VM}/disk1-flat.vmdk"
BLOCK = 64 * 1024
MIB = 1024 * 1024


# --------------------------------------------------------------------------- helpers


def session_cookie(sim: Simulator) -> str:
    """The admin session's cookie as a client sends it: `vmware_soap_session="..."`."""
    return str(sim.admin().sessionManager._stub.cookie).split(";")[0]


def https(sim: Simulator, method: str, path: str, body: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    parts = urlsplit(sim.url)
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                       context=sim.ssl_context(), timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def upload(sim: Simulator, path: str, data: bytes) -> None:
    """PUT a file on LocalDS_0 through the datastore HTTP interface."""
    query = urlencode({"dcPath": "DC0", "dsName": "LocalDS_0"})
    status, body = https(sim, "PUT", f"/folder/{path}?{query}", data,
                         {"Cookie": session_cookie(sim)})
    assert status == 200, (status, body)


def disk_of(vm: Any) -> Any:
    disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    assert len(disks) == 1
    return disks[0]


def snapshot_disk(sim: Simulator, snapshot: Any) -> Any:
    """The snapshot's own disk device, read through RetrievePropertiesEx."""
    pc = sim.admin().propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=snapshot)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(
            type=vim.vm.Snapshot, pathSet=["config.hardware.device"])],
    )
    result = pc.RetrievePropertiesEx([spec], vmodl.query.PropertyCollector.RetrieveOptions())
    (obj,) = result.objects
    (prop,) = obj.propSet
    return next(d for d in prop.val if isinstance(d, vim.vm.device.VirtualDisk))


def power_off(vm: Any) -> None:
    WaitForTask(vm.PowerOffVM_Task())


def snapshot(vm: Any, name: str) -> Any:
    WaitForTask(vm.CreateSnapshot_Task(name, "", False, False))
    return vm.snapshot.currentSnapshot


def enable_change_tracking(vm: Any) -> None:
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=True)))


def pattern(size: int, seed: int) -> bytearray:
    return bytearray(random.Random(seed).randbytes(size))


def extents(info: Any) -> list[tuple[int, int]]:
    return [(area.start, area.length) for area in info.changedArea]


# --------------------------------------------------------------------------- ExportVm / NFC


def test_export_of_a_powered_off_vm_serves_the_bytes_uploaded_to_its_disk(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim(vms=2)
    data = bytes(pattern(8 * MIB, seed=1))
    upload(sim, FLAT_FILE, data)
    vm = sim.vm(VM)
    disk = disk_of(vm)
    assert (disk.capacityInKB, disk.capacityInBytes) == (8 * 1024, 8 * MIB)
    power_off(vm)

    lease = vm.ExportVm()
    assert lease.state == vim.HttpNfcLease.State.ready
    (device,) = lease.info.deviceUrl
    assert device.disk is True
    assert device.fileSize == 8 * MIB
    assert device.key == f"/{vm._moId}/ParaVirtualSCSIController0:0"
    assert device.targetId == "disk-0.vmdk"
    assert re.fullmatch(r"https://\*/nfc/[0-9a-f-]{36}/disk-0\.vmdk", device.url), device.url

    path = urlsplit(device.url).path
    cookie = {"Cookie": session_cookie(sim)}
    assert https(sim, "GET", path, headers=cookie) == (200, data)
    ranged = dict(cookie, Range="bytes=1000-70999")
    assert https(sim, "GET", path, headers=ranged) == (206, data[1000:71000])

    lease.HttpNfcLeaseProgress(100)
    lease.HttpNfcLeaseComplete()
    assert https(sim, "GET", path, headers=cookie)[0] == 404


def test_with_the_stream_optimized_knob_nfc_serves_a_vmdk_of_the_disk(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim(vms=2)
    sim.faults(nfcFormat="streamOptimized")
    data = bytes(4 * MIB) + bytes(pattern(MIB, seed=3)) + bytes(3 * MIB - 512) + b"\x07" * 512
    upload(sim, FLAT_FILE, data)
    vm = sim.vm(VM)
    power_off(vm)
    lease = vm.ExportVm()
    path = urlsplit(lease.info.deviceUrl[0].url).path
    status, body = https(sim, "GET", path, headers={"Cookie": session_cookie(sim),
                                                    "Range": "bytes=0-99"})
    assert status == 200  # a stream: Range is ignored, as by vCenter
    assert body[:4] == b"KDMV" and len(body) < len(data) // 4  # zeros are not sent
    assert StreamOptimizedReader(io.BytesIO(body)).read() == data
    lease.HttpNfcLeaseComplete()


def test_an_untouched_disk_exports_as_its_capacity_of_zeros(start_vcsim: StartVcsim) -> None:
    sim = start_vcsim(vms=2)
    vm = sim.vm(VM)
    power_off(vm)
    lease = vm.ExportVm()
    (device,) = lease.info.deviceUrl
    assert device.fileSize == disk_of(vm).capacityInBytes == MIB
    status, body = https(sim, "GET", urlsplit(device.url).path,
                         headers={"Cookie": session_cookie(sim)})
    assert (status, body) == (200, bytes(MIB))
    lease.HttpNfcLeaseAbort()


def test_export_of_a_powered_on_vm_is_refused(start_vcsim: StartVcsim) -> None:
    sim = start_vcsim(vms=2)
    with pytest.raises(vim.fault.InvalidPowerState):
        sim.vm(VM).ExportVm()


def test_nfc_downloads_need_a_live_session_cookie(start_vcsim: StartVcsim) -> None:
    sim = start_vcsim(vms=2)
    vm = sim.vm(VM)
    power_off(vm)
    path = urlsplit(vm.ExportVm().info.deviceUrl[0].url).path
    assert https(sim, "GET", path)[0] == 401
    forged = {"Cookie": 'vmware_soap_session="not-a-session"'}
    assert https(sim, "GET", path, headers=forged)[0] == 401


# --------------------------------------------------------------------------- changed blocks


def test_changed_block_tracking_reports_exactly_the_blocks_changed_between_snapshots(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim(vms=2)
    size = 16 * MIB  # 256 blocks of 64 KiB
    data = pattern(size, seed=2)
    upload(sim, FLAT_FILE, bytes(data))
    vm = sim.vm(VM)
    enable_change_tracking(vm)
    assert vm.config.changeTrackingEnabled is True

    first = snapshot(vm, "day 1")
    first_change_id = snapshot_disk(sim, first).backing.changeId
    assert first_change_id

    changed_blocks = [5, 6, 200]  # about 1 % of the disk; 5 and 6 are adjacent
    for block in changed_blocks:
        data[block * BLOCK + 100] ^= 0xFF
    upload(sim, FLAT_FILE, bytes(data))
    second = snapshot(vm, "day 2")
    key = disk_of(vm).key
    second_disk = snapshot_disk(sim, second)
    assert second_disk.backing.changeId not in ("", first_change_id)
    assert disk_of(vm).backing.changeId == second_disk.backing.changeId
    assert snapshot_disk(sim, first).backing.changeId == first_change_id
    assert second_disk.backing.fileName == f"[LocalDS_0] {VM}/disk1.vmdk"
    assert second_disk.capacityInBytes == size

    info = vm.QueryChangedDiskAreas(second, key, 0, first_change_id)
    assert (info.startOffset, info.length) == (0, size)
    assert extents(info) == [(5 * BLOCK, 2 * BLOCK), (200 * BLOCK, BLOCK)]

    middle = 6 * BLOCK + 10
    info = vm.QueryChangedDiskAreas(second, key, middle, first_change_id)
    assert (info.startOffset, info.length) == (middle, size - middle)
    assert extents(info) == [(middle, 7 * BLOCK - middle), (200 * BLOCK, BLOCK)]

    unchanged = vm.QueryChangedDiskAreas(second, key, 0, second_disk.backing.changeId)
    assert extents(unchanged) == []


def test_change_id_star_reports_the_blocks_that_are_not_zeros(start_vcsim: StartVcsim) -> None:
    sim = start_vcsim(vms=2)
    data = bytearray(4 * MIB)
    data[0:10] = b"boot block"
    data[3 * BLOCK : 5 * BLOCK] = b"\x01" * (2 * BLOCK)
    data[-1] = 1
    upload(sim, FLAT_FILE, bytes(data))
    vm = sim.vm(VM)
    enable_change_tracking(vm)
    snap = snapshot(vm, "full")

    info = vm.QueryChangedDiskAreas(snap, disk_of(vm).key, 0, "*")
    assert (info.startOffset, info.length) == (0, 4 * MIB)
    assert extents(info) == [(0, BLOCK), (3 * BLOCK, 2 * BLOCK), (4 * MIB - BLOCK, BLOCK)]


def test_changed_areas_are_refused_for_unknown_change_ids_and_without_tracking(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim(vms=2)
    vm = sim.vm(VM)
    key = disk_of(vm).key
    untracked = snapshot(vm, "before tracking")
    with pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(untracked, key, 0, "*")

    enable_change_tracking(vm)
    with pytest.raises(vim.fault.FileFault):  # taken before tracking was on
        vm.QueryChangedDiskAreas(untracked, key, 0, "*")
    tracked = snapshot(vm, "tracked")
    with pytest.raises(vim.fault.FileFault):
        unknown = "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 00/1"
        vm.QueryChangedDiskAreas(tracked, key, 0, unknown)
    with pytest.raises(vmodl.fault.InvalidArgument):
        vm.QueryChangedDiskAreas(tracked, key + 1000, 0, "*")

    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=False)))
    with pytest.raises(vim.fault.FileFault):
        vm.QueryChangedDiskAreas(tracked, key, 0, "*")


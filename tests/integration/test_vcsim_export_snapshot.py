"""The simulator's ExportSnapshot, its export-lease bookkeeping and vSAN/VVol datastores
(tests/vcsim/PATCHES.md, patch 9), checked on the wire with pyVmomi."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from .conftest import Simulator, StartVcsim, wait_until
from .test_vcsim_export import FLAT_FILE, VM, https, session_cookie, snapshot, upload

pytestmark = pytest.mark.vcsim

MIB = 1024 * 1024


def leases(sim: Simulator) -> list[dict[str, Any]]:
    return list(sim.control("leases"))


def download(sim: Simulator, lease: Any) -> tuple[int, bytes]:
    (device,) = lease.info.deviceUrl
    return https(sim, "GET", urlsplit(device.url).path, headers={"Cookie": session_cookie(sim)})


def test_export_snapshot_serves_the_disk_as_it_was_when_the_snapshot_was_taken(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim(vms=2)
    before = random.Random(1).randbytes(2 * MIB)
    upload(sim, FLAT_FILE, before)
    vm = sim.vm(VM)
    snap = snapshot(vm, "frozen")
    upload(sim, FLAT_FILE, random.Random(2).randbytes(2 * MIB))  # the VM writes on

    lease = snap.ExportSnapshot()
    assert lease.state == vim.HttpNfcLease.State.ready
    assert vm.runtime.powerState == "poweredOn"
    (device,) = lease.info.deviceUrl
    assert device.key == f"/{vm._moId}/ParaVirtualSCSIController0:0"
    assert device.fileSize == 2 * MIB
    assert download(sim, lease) == (200, before)
    lease.HttpNfcLeaseComplete()
    assert download(sim, lease)[0] == 404
    [record] = leases(sim)
    assert record["method"] == "ExportSnapshot" and record["snapshot"] == snap._moId
    assert (record["state"], record["ended"]) == ("done", "completed")


def test_a_ready_export_lease_blocks_power_operations_until_it_is_aborted(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim(vms=2)
    vm = sim.vm(VM)
    lease = snapshot(vm, "s").ExportSnapshot()
    with pytest.raises(vim.fault.InvalidState):
        WaitForTask(vm.PowerOffVM_Task())
    lease.HttpNfcLeaseProgress(40)
    lease.HttpNfcLeaseAbort()
    WaitForTask(vm.PowerOffVM_Task())
    assert vm.runtime.powerState == "poweredOff"
    [record] = leases(sim)
    assert (record["state"], record["ended"]) == ("done", "aborted")
    assert (record["progressCalls"], record["percent"]) == (1, 40)
    with pytest.raises(vim.fault.InvalidState):  # an ended lease stays ended
        lease.HttpNfcLeaseComplete()


def test_another_session_can_abort_a_lease_left_behind(start_vcsim: StartVcsim) -> None:
    sim = start_vcsim(vms=2)
    lease = snapshot(sim.vm(VM), "s").ExportSnapshot()
    sim.admin().sessionManager.Logout()
    sim._admin = None  # the next admin() logs in anew: another session
    other = vim.HttpNfcLease(lease._moId, sim.admin().sessionManager._stub)
    other.HttpNfcLeaseAbort()
    assert leases(sim)[0]["ended"] == "aborted"


def test_a_lease_that_hears_no_progress_times_out(start_vcsim: StartVcsim) -> None:
    sim = start_vcsim(vms=2)
    sim.faults(nfcLeaseTimeout=1)
    lease = snapshot(sim.vm(VM), "s").ExportSnapshot()
    assert lease.info.leaseTimeout == 1
    wait_until(lambda: leases(sim)[0]["state"] == "error")
    assert leases(sim)[0]["ended"] == "timedOut"
    assert lease.state == vim.HttpNfcLease.State.error
    assert isinstance(lease.error, vim.fault.Timedout)


def test_the_fail_after_knob_breaks_a_download_off_mid_body(start_vcsim: StartVcsim) -> None:
    sim = start_vcsim(vms=2)
    upload(sim, FLAT_FILE, random.Random(3).randbytes(2 * MIB))
    sim.faults(nfcFailAfter=100_000)
    lease = snapshot(sim.vm(VM), "s").ExportSnapshot()
    with pytest.raises(Exception) as broken:
        download(sim, lease)
    assert "IncompleteRead" in type(broken.value).__name__ or "closed" in str(broken.value)
    lease.HttpNfcLeaseAbort()


@pytest.mark.parametrize(("flag", "reported"), [("vsan", "vsan"), ("vvol", "VVOL")])
def test_datastore_type_flag_reports_the_type_and_refuses_flat_file_reads(
    start_vcsim: StartVcsim, flag: str, reported: str,
) -> None:
    sim = start_vcsim("--datastore-type", flag, vms=2)
    assert sim.info["datastoreType"] == reported
    content = sim.admin()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.Datastore], True)
    assert {ds.summary.type for ds in view.view} == {reported}
    data = random.Random(4).randbytes(MIB)
    upload(sim, FLAT_FILE, data)  # PUT stays allowed
    query = urlencode({"dcPath": "DC0", "dsName": "LocalDS_0"})
    cookie = {"Cookie": session_cookie(sim)}
    assert https(sim, "GET", f"/folder/{FLAT_FILE}?{query}", headers=cookie)[0] == 404
    assert https(sim, "HEAD", f"/folder/{FLAT_FILE}?{query}", headers=cookie)[0] == 404
    descriptor = FLAT_FILE.replace("-flat", "")
    assert https(sim, "GET", f"/folder/{descriptor}?{query}", headers=cookie)[0] == 200
    lease = snapshot(sim.vm(VM), "s").ExportSnapshot()  # NFC still reads the disk
    assert download(sim, lease) == (200, data)
    lease.HttpNfcLeaseComplete()

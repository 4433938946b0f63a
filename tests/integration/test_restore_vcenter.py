"""`vmkeep restore --vcenter` end to end: points exported from the simulator by `apply` into a
real repository and state file, restored into the simulator; every result is checked through
pyVmomi and plain HTTPS reads of the datastore, not through vmkeep."""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from pyVmomi import vim

from reconciler.adapters.repository import Repository

from .apply_world import Estate, wait
from .conftest import StartVcsim

pytestmark = pytest.mark.vcsim

DAY1 = "2026-11-25T01:30:00Z"
DAY2 = "2026-11-26T01:30:00Z"
DAY3 = "2026-11-27T01:30:00Z"
MiB = 1 << 20
VM0 = "DC0_C0_RP0_VM0"


@pytest.fixture
def estate(start_vcsim: StartVcsim, tmp_path: Path) -> Iterator[Estate]:
    world = Estate(start_vcsim(vms=2), tmp_path)
    world.set_policy(names=[VM0, "restored*"])
    yield world


# ---------------------------------------------------------------------- independent reads


def hardware(estate: Estate, name: str) -> dict[str, Any]:
    vm = estate.sim.vm(name)
    devices = vm.config.hardware.device
    return {
        "cpu": vm.config.hardware.numCPU,
        "memoryMB": vm.config.hardware.memoryMB,
        "disks": [d.capacityInBytes for d in devices if isinstance(d, vim.vm.device.VirtualDisk)],
        "nics": len([d for d in devices if isinstance(d, vim.vm.device.VirtualEthernetCard)]),
    }


def macs(estate: Estate, name: str) -> list[str]:
    return [str(d.macAddress) for d in estate.sim.vm(name).config.hardware.device
            if isinstance(d, vim.vm.device.VirtualEthernetCard)]


def read_disk(estate: Estate, name: str) -> bytes:
    """The VM's first disk's flat file, by a plain HTTPS GET of the datastore interface."""
    vm = estate.sim.vm(name)
    disk: Any = next(d for d in vm.config.hardware.device
                     if isinstance(d, vim.vm.device.VirtualDisk))
    datastore, path = disk.backing.fileName[1:].split("] ", 1)
    flat = path[: -len(".vmdk")] + "-flat.vmdk"
    parts = urlsplit(estate.sim.url)
    url = (f"https://{parts.netloc}/folder/{quote(flat)}?dcPath=DC0&dsName={quote(datastore)}")
    request = urllib.request.Request(url, headers={
        "Cookie": estate.sim.admin().sessionManager._stub.cookie})
    context = ssl.create_default_context(cafile=estate.sim.ca_file)
    with urllib.request.urlopen(request, context=context, timeout=60) as response:
        return bytes(response.read())


def vm_names(estate: Estate) -> list[str]:
    content = estate.sim.admin()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return sorted(vm.name for vm in view.view)
    finally:
        view.DestroyView()


def datastore_files(estate: Estate) -> list[str]:
    """Every file and directory on every datastore (their local directories)."""
    content = estate.sim.admin()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.Datastore], True)
    try:
        roots = [Path(ds.info.url) for ds in view.view]
    finally:
        view.DestroyView()
    return sorted(f"{root.name}/{p.relative_to(root)}" for root in roots for p in root.rglob("*"))


def add_datastore(estate: Estate, name: str) -> str:
    """A new local datastore on one host; that host's name."""
    content = estate.sim.admin()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
    try:
        host = sorted(view.view, key=lambda h: h.name)[0]
    finally:
        view.DestroyView()
    path = estate.root / name
    path.mkdir()
    host.configManager.datastoreSystem.CreateLocalDatastore(name=name, path=str(path))
    return str(host.name)


def add_folder(estate: Estate, name: str) -> None:
    content = estate.sim.admin()
    content.rootFolder.childEntity[0].vmFolder.CreateFolder(name)


def export_with(estate: Estate, data: bytes, now: str = DAY1) -> None:
    vm = estate.vms()[VM0]
    estate.fill_disk(vm, data)
    run = estate.apply(now)
    assert run.code == 0, run.out + run.err


# ---------------------------------------------------------------------- tests


def test_an_export_comes_back_as_a_new_vm_elsewhere_with_the_same_hardware_and_bytes(estate):
    vm = estate.vms()[VM0]
    estate.grow_disk(vm, 8 * MiB)
    data = os.urandom(2 * MiB) + bytes(4 * MiB) + os.urandom(2 * MiB)
    export_with(estate, data)
    host = add_datastore(estate, "LocalDS_1")
    add_folder(estate, "restored")
    run = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim", "--name", "restored-web",
                        "--datastore", "LocalDS_1", "--folder", "/DC0/vm/restored", "--host",
                        host, "-o", "json")
    assert run.code == 0, run.err
    report = run.json()
    assert report["status"] == "restored"
    assert report["vm"]["name"] == "restored-web" and report["vm"]["moref"].startswith("vm-")
    assert [(d["name"], d["capacityBytes"]) for d in report["disks"]] == [
        (f"disk-{vm.disks[0].key}", 8 * MiB)]
    assert 4 * MiB < report["disks"][0]["sentBytes"] < 5 * MiB  # the zeros are not sent
    assert "seconds" in report

    restored = estate.sim.vm("restored-web")
    assert hardware(estate, "restored-web") == hardware(estate, VM0)
    assert read_disk(estate, "restored-web") == data
    assert restored.parent.name == "restored" and restored.runtime.host.name == host
    assert restored.config.files.vmPathName.startswith("[LocalDS_1] restored-web/")
    assert restored.config.instanceUuid != vm.instance_uuid  # next to its original
    assert set(macs(estate, "restored-web")).isdisjoint(macs(estate, VM0))
    assert not [n for n in vm_names(estate) if "vmkeep-restore" in n]

    # apply treats it as another VM; the original's points are untouched
    before = {p.id for p in estate.points() if p.vm.instance_uuid == vm.instance_uuid}
    assert estate.apply(DAY2).code == 0
    after = {p.id for p in estate.points() if p.vm.instance_uuid == vm.instance_uuid}
    assert before < after and len(after) == 2
    mine = [p for p in estate.points() if p.vm.name == "restored-web"]
    assert [p.vm.instance_uuid for p in mine] == [restored.config.instanceUuid]


def test_after_the_original_is_deleted_it_returns_to_its_place_with_its_identity(estate):
    vm = estate.vms()[VM0]
    estate.grow_disk(vm, 4 * MiB)
    data = os.urandom(MiB) + bytes(2 * MiB) + os.urandom(MiB)
    export_with(estate, data)
    original = hardware(estate, VM0)
    original_macs = macs(estate, VM0)
    folder = estate.sim.vm(VM0).parent.name
    estate.power_off(vm)
    wait(estate.sim.vm(VM0).Destroy_Task())

    run = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim", "--power-on")
    assert run.code == 0, run.err
    back = estate.sim.vm(VM0)
    assert back.config.instanceUuid == vm.instance_uuid
    assert macs(estate, VM0) == original_macs
    assert hardware(estate, VM0) == original and read_disk(estate, VM0) == data
    assert back.parent.name == folder and back.runtime.powerState == "poweredOn"
    assert back.config.files.vmPathName == f"[LocalDS_0] {VM0}/{VM0}.vmx"

    again = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim")
    assert again.code == 0, again.err
    assert "was already restored from" in again.out and "nothing to do" in again.out
    assert vm_names(estate).count(VM0) == 1


def test_an_incremental_point_several_days_deep_restores_as_it_was_that_day(estate):
    vm = estate.vms()[VM0]
    estate.grow_disk(vm, 4 * MiB)
    estate.enable_change_tracking(vm)
    days: dict[int, bytes] = {}
    for day, now in enumerate((DAY1, DAY2, DAY3)):
        data = bytearray(os.urandom(4 * MiB)) if day == 0 else bytearray(days[day - 1])
        data[day * MiB : day * MiB + 4096] = os.urandom(4096)
        days[day] = bytes(data)
        export_with(estate, days[day], now)
    run = estate.vmkeep("restore", "--vm", VM0, "--at", "2026-11-26T12:00:00Z",
                        "--vcenter", "sim", "--name", "restored-day2")
    assert run.code == 0, run.err
    assert read_disk(estate, "restored-day2") == days[1] != days[2]


def test_replace_powers_the_vm_in_the_way_off_and_renames_it_aside(estate):
    vm = estate.vms()[VM0]
    export_with(estate, os.urandom(MiB))
    estate.fill_disk(vm, bytes(MiB))  # the VM's disk changes after the export
    run = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim", "--replace",
                        "--now", "2026-11-25T09:00:00Z", "-o", "json")
    assert run.code == 0, run.err
    aside = estate.sim.vm(f"{VM0}.replaced-20261125T090000Z")
    assert aside.runtime.powerState == "poweredOff"
    assert aside.config.instanceUuid == vm.instance_uuid  # the same VM, renamed, kept
    new = estate.sim.vm(VM0)
    assert new.config.instanceUuid != vm.instance_uuid
    assert run.json()["replaced"] == {"renamedTo": f"{VM0}.replaced-20261125T090000Z"}


def test_plan_shows_what_would_happen_and_changes_nothing(estate):
    vm = estate.vms()[VM0]
    export_with(estate, os.urandom(MiB))
    vms, files = vm_names(estate), datastore_files(estate)
    tasks = len(estate.sim.admin().taskManager.recentTask)
    estate.sim.reset_stats()

    run = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim", "--name", "copy", "--plan",
                        "-o", "json")
    assert run.code == 0, run.err
    plan = run.json()["plan"]
    assert plan["proceeds"] is True and plan["refusals"] == []
    assert plan["vm"]["name"] == "copy" and plan["placement"]["datastore"] == "LocalDS_0"
    assert plan["disks"] == [{"name": f"disk-{vm.disks[0].key}", "capacityBytes": MiB,
                              "file": "[LocalDS_0] copy/disk1.vmdk"}]
    [space] = plan["datastores"]
    assert space["freeBytesBefore"] - space["freeBytesAfter"] == MiB
    assert plan["networks"] == [{"from": "VM Network", "to": "VM Network"}]

    refused = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim", "--plan")
    assert refused.code == 1
    assert f"refused: a VM named '{VM0}' exists in vCenter 'sim'" in refused.out
    assert "would be refused" in refused.out

    assert vm_names(estate) == vms and datastore_files(estate) == files
    assert len(estate.sim.admin().taskManager.recentTask) == tasks
    methods = estate.sim.stats()["methods"]
    assert not {m for m in methods if m.endswith("_Task") or m == "ImportVApp"}
    assert not (estate.root / "state.db-restore").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--name", "copy", "--network", "VM Network=nowhere"],
         "--network VM Network=nowhere: network 'nowhere' does not exist in vCenter 'sim' "
         "(networks: VM Network)"),
        (["--name", "copy", "--network", "lab=VM Network"],
         "--network lab=VM Network: the VM had no NIC on network 'lab'"),
        ([], f"a VM named '{VM0}' exists in vCenter 'sim'"),
        (["--name", "copy", "--datastore", "nas9"], "no datastore 'nas9' in vCenter 'sim'"),
        (["--name", "copy", "--folder", "/DC0/vm/nope"], "no VM folder '/DC0/vm/nope'"),
        (["--name", "copy", "--host", "esx9"], "no host 'esx9' in datacenter 'DC0'"),
    ],
)
def test_a_refused_restore_says_why_in_one_line_and_changes_nothing(estate, argv, message):
    export_with(estate, os.urandom(MiB))
    vms, files = vm_names(estate), datastore_files(estate)
    run = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim", *argv)
    assert run.code == 1
    assert run.err.startswith("vmkeep: error: restore of gold/") and message in run.err
    assert run.err.count("\n") == 1 and "Traceback" not in run.err
    assert vm_names(estate) == vms and datastore_files(estate) == files


def no_leftovers(estate: Estate, files: list[str]) -> None:
    assert not [n for n in vm_names(estate) if "vmkeep-restore" in n]
    assert datastore_files(estate) == files


@pytest.mark.parametrize(
    ("faults", "said"),
    [
        ({"failUploadAfter": 300_000}, "upload of disk-"),
        ({"failMethod": "^ImportVApp$"}, "import VM 'copy.vmkeep-restore-"),
        ({"failMethod": "^HttpNfcLeaseComplete$"}, "complete the lease: SystemError"),
        ({"failMethod": "^Rename_Task$", "failMethodCount": 1}, "to 'copy': SystemError"),
    ],
)
def test_a_fault_in_upload_or_registration_leaves_no_half_vm_and_no_files(estate, faults, said):
    vm = estate.vms()[VM0]
    estate.grow_disk(vm, 4 * MiB)
    export_with(estate, os.urandom(4 * MiB))
    vms, files = vm_names(estate), datastore_files(estate)
    estate.sim.control("restore-faults", faults)
    run = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim", "--name", "copy")
    estate.sim.control("restore-faults", {"failUploadAfter": 0, "failMethod": ""})
    assert run.code == 1 and "Traceback" not in run.err
    assert "vmkeep: error: restore of gold/" in run.err and said in run.err
    if faults.get("failMethod") == "^ImportVApp$":
        assert "nothing had been created" in run.err
    else:
        assert "removed the partial VM 'copy.vmkeep-restore-" in run.err
        assert "and its directory [LocalDS_0] copy" in run.err
    assert vm_names(estate) == vms
    no_leftovers(estate, files)
    done = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim", "--name", "copy")
    assert done.code == 0, done.err


def test_a_damaged_chunk_ends_the_restore_and_removes_what_it_made(estate):
    vm = estate.vms()[VM0]
    estate.grow_disk(vm, 4 * MiB)
    export_with(estate, os.urandom(4 * MiB))
    files = datastore_files(estate)
    [point] = estate.points()
    with Repository.open(estate.target, create=False) as repo:
        reader = repo.open_disk(point.id, f"disk-{vm.disks[0].key}")
        loc = repo.index.get(reader.ids[-1])
        assert loc is not None
        pack = repo.layout.pack(loc.pack)
        raw = bytearray(pack.read_bytes())
        raw[loc.offset + loc.stored // 2] ^= 0x5A
        pack.write_bytes(bytes(raw))
    run = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim", "--name", "copy")
    assert run.code == 1 and "is damaged" in run.err and "removed the partial VM" in run.err
    no_leftovers(estate, files)


def test_a_snapshot_point_is_cloned_into_a_new_vm_or_reverted_in_place(estate):
    vm = estate.vms()[VM0]
    data = os.urandom(MiB)
    export_with(estate, data)
    [snapshot] = json.loads(estate.vmkeep("points", "--kind", "snapshot", "-o", "json").out)[
        "points"]
    clone = estate.vmkeep("restore", "--point", snapshot["id"], "--kind", "snapshot",
                          "--vcenter", "sim", "--name", "restored-clone", "-o", "json")
    assert clone.code == 0, clone.err
    assert clone.json()["mode"] == "clone"
    assert read_disk(estate, "restored-clone") == data == read_disk(estate, VM0)
    assert hardware(estate, "restored-clone") == hardware(estate, VM0)
    assert estate.sim.vm("restored-clone").config.instanceUuid != vm.instance_uuid

    unconfirmed = estate.vmkeep("restore", "--vm", VM0, "--revert", "--vcenter", "sim")
    assert unconfirmed.code == 1
    assert "loses everything written since 2026-11-25T01:00:00Z" in unconfirmed.err
    assert "add --yes" in unconfirmed.err
    estate.sim.reset_stats()
    reverted = estate.vmkeep("restore", "--vm", VM0, "--revert", "--yes", "--vcenter", "sim")
    assert reverted.code == 0, reverted.err
    assert estate.sim.stats()["methods"].get("RevertToSnapshot_Task") == 1
    current = estate.sim.vm(VM0).snapshot.currentSnapshot
    assert current._moId == snapshot["snapshotId"]


def test_a_point_of_one_vcenter_is_restored_into_another(estate, start_vcsim, monkeypatch):
    vm = estate.vms()[VM0]
    estate.grow_disk(vm, 2 * MiB)
    data = os.urandom(MiB) + bytes(MiB)
    export_with(estate, data)
    dr = start_vcsim(vms=1)
    monkeypatch.setenv("VMKEEP_DR_PASSWORD", dr.password)
    text = estate.config.read_text()
    estate.config.write_text(text.replace("targets:", (
        f'  dr:\n    url: "{dr.url}"\n    username: {dr.username}\n'
        f'    passwordEnv: VMKEEP_DR_PASSWORD\n    caFile: "{dr.ca_file}"\ntargets:'), 1))
    run = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "dr", "--name", "dr-web",
                        "-o", "json")
    assert run.code == 0, run.err
    assert run.json()["vcenter"] == "dr"
    other = Estate.__new__(Estate)
    other.sim, other.root = dr, estate.root
    assert read_disk(other, "dr-web") == data
    assert hardware(other, "dr-web") == hardware(estate, VM0)
    assert dr.vm("dr-web").config.instanceUuid != vm.instance_uuid  # told apart by the catalog
    assert "dr-web" not in vm_names(estate)


def test_a_replace_that_fails_at_the_last_rename_gives_the_old_vm_back_its_name(estate):
    vm = estate.vms()[VM0]
    export_with(estate, os.urandom(MiB))
    files = datastore_files(estate)
    estate.sim.control("restore-faults", {"failMethod": "^Rename_Task$", "failMethodSkip": 1,
                                          "failMethodCount": 1})
    run = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim", "--replace")
    estate.sim.control("restore-faults", {"failMethod": "", "failMethodSkip": 0})
    assert run.code == 1, run.err
    assert f"renamed '{VM0}.replaced-" in run.err and f"back to '{VM0}'" in run.err
    assert "powered vm-" in run.err
    back = estate.sim.vm(VM0)
    assert back.config.instanceUuid == vm.instance_uuid
    assert back.runtime.powerState == "poweredOn"
    no_leftovers(estate, files)


def test_a_vm_of_a_newer_hardware_version_than_the_hosts_run_is_refused(estate):
    wait(estate.sim.vm(VM0).ReconfigVM_Task(spec=vim.vm.ConfigSpec(version="vmx-99")))
    export_with(estate, os.urandom(MiB))
    vms, files = vm_names(estate), datastore_files(estate)
    run = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim", "--name", "copy")
    assert run.code == 1
    assert ("the VM has hardware version vmx-99, newer than the hosts of vCenter 'sim' run "
            "(up to vmx-13)") in run.err
    assert vm_names(estate) == vms and datastore_files(estate) == files

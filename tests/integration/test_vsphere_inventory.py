"""The inventory adapter against the real simulator: what it reads, and how few calls it takes."""

from __future__ import annotations

import math
import os
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from reconciler.adapters.vsphere import VSphereClient
from reconciler.model import Inventory, PowerState

from .conftest import Simulator, StartVcsim

pytestmark = pytest.mark.vcsim



def read(sim: Simulator, **options: Any) -> Inventory:
    with VSphereClient(sim.config(), sim.password, **options) as client:
        return client.inventory()


def test_every_vm_is_read_with_its_folder_host_power_state_and_disk(
    vcsim_small: Simulator,
) -> None:
    inventory = read(vcsim_small)

    assert inventory.vcenter == "sim"
    assert len(inventory.vms) == vcsim_small.vm_count == 20
    assert len({vm.instance_uuid for vm in inventory.vms}) == 20
    assert len({vm.bios_uuid for vm in inventory.vms}) == 20
    assert {vm.folder for vm in inventory.vms} == {
        "/DC0/vm", "/DC0/vm/prod", "/DC0/vm/prod/db", "/DC0/vm/dev",
    }
    assert inventory.vms == tuple(sorted(inventory.vms, key=lambda v: (v.folder, v.name)))
    for vm in inventory.vms:
        assert vm.moref.startswith("vm-")
        assert vm.power_state is PowerState.ON
        assert vm.tools_running is False  # the simulator never runs Tools
        assert vm.host.startswith("DC0_C0_H")
        assert vm.snapshots == ()
        assert vm.change_tracking is False
        (disk,) = vm.disks
        assert disk.file == f"[LocalDS_0] {vm.name}/disk1.vmdk"
        assert disk.capacity_bytes == 1024 * 1024
        assert disk.label
        assert disk.change_id is None
    assert inventory.tags_available is True


def test_a_2000_vm_inventory_takes_the_same_calls_as_20_vms_plus_one_per_page(
    vcsim: Simulator, vcsim_small: Simulator, http_requests: Counter[str]
) -> None:
    page = 500
    counts = {}
    pages = {}
    for sim in (vcsim_small, vcsim):
        sim.reset_stats()
        before = http_requests.total()
        inventory = read(sim, page_size=page)
        counts[sim.vm_count] = http_requests.total() - before
        stats = sim.stats()
        pages[sim.vm_count] = 1 + stats["methods"].get("ContinueRetrievePropertiesEx", 0)
        assert len(inventory.vms) == sim.vm_count
        # One traversal: a single RetrievePropertiesEx, no per-VM reads.
        assert stats["methods"]["RetrievePropertiesEx"] == 1
        assert "Fetch" not in stats["methods"] and "RetrieveProperties" not in stats["methods"]
        # Every SOAP request the server saw went through the counted HTTP layer.
        soap = sum(n for key, n in http_requests.items() if key == "POST /sdk")
        assert stats["requests"] <= soap

    # The server pages at our maxObjects: 2,000 VMs and 13 other objects (7 folders, the
    # datacenter, 3 hosts, the custom fields manager, the root folder) → 5 pages of 500.
    assert pages[20] == 1
    assert pages[2000] == math.ceil((2000 + 13) / page) == 5
    # Nothing grows with the number of VMs except the continuation pages.
    assert counts[2000] - counts[20] == pages[2000] - pages[20]
    # versions.xml, RetrieveServiceContent, Login, CreateContainerView, RetrievePropertiesEx,
    # DestroyView, Logout, and REST login, tag list, logout (no tags defined).
    assert counts[20] <= 10


def test_snapshot_trees_are_flattened_parents_first_with_descriptions_and_quiesce(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim(vms=2)
    vm = sim.vm("DC0_C0_RP0_VM0")
    description = '{"vmkeep": 1, "note": "<&>\\"\' ünïcødé"}'

    def snapshot(name: str, quiesce: bool = False) -> vim.vm.Snapshot:
        task = vm.CreateSnapshot_Task(name, f"{name}: {description}", False, quiesce)
        WaitForTask(task)
        return task.info.result

    started = datetime.now(UTC) - timedelta(seconds=5)
    first = snapshot("first", quiesce=True)
    second = snapshot("second")
    snapshot("third")  # child of second
    WaitForTask(first.RevertToSnapshot_Task())
    fourth = snapshot("fourth")  # second child of first

    (read_vm,) = [v for v in read(sim).vms if v.name == "DC0_C0_RP0_VM0"]
    tree = [(s.name, s.parent_id) for s in read_vm.snapshots]
    ids = {s.name: s.id for s in read_vm.snapshots}
    assert tree == [
        ("first", None),
        ("second", ids["first"]),
        ("third", ids["second"]),
        ("fourth", ids["first"]),
    ]
    assert ids["first"] == first._moId and ids["fourth"] == fourth._moId
    by_name = {s.name: s for s in read_vm.snapshots}
    assert by_name["first"].quiesced is True and by_name["second"].quiesced is False
    assert by_name["third"].description == f"third: {description}"
    for s in read_vm.snapshots:
        assert s.created_at.tzinfo is not None
        assert started <= s.created_at <= datetime.now(UTC) + timedelta(seconds=5)

    # Removing the middle of the tree re-parents its child; the VM's disk stays.
    WaitForTask(second.RemoveSnapshot_Task(removeChildren=False))
    (read_vm,) = [v for v in read(sim).vms if v.name == "DC0_C0_RP0_VM0"]
    assert [(s.name, s.parent_id) for s in read_vm.snapshots] == [
        ("first", None), ("third", ids["first"]), ("fourth", ids["first"]),
    ]
    WaitForTask(vm.RemoveAllSnapshots_Task())
    (read_vm,) = [v for v in read(sim).vms if v.name == "DC0_C0_RP0_VM0"]
    assert read_vm.snapshots == ()
    assert [d.file for d in read_vm.disks] == ["[LocalDS_0] DC0_C0_RP0_VM0/disk1.vmdk"]
    datastore = next(Path(sim.info["dataDir"]).glob("*/DC0_C0_RP0_VM0"))
    assert {"disk1.vmdk", "disk1-flat.vmdk"} <= set(os.listdir(datastore))


def test_custom_attributes_come_by_name_and_tags_as_category_slash_name(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim(vms=3)
    content = sim.admin()
    fields = content.customFieldsManager
    owner = fields.AddCustomFieldDef(name="owner", moType=vim.VirtualMachine)
    tier = fields.AddCustomFieldDef(name="backup-tier", moType=vim.VirtualMachine)
    vm = sim.vm("DC0_C0_RP0_VM1")
    fields.SetField(entity=vm, key=owner.key, value="team-a")
    fields.SetField(entity=vm, key=owner.key, value="team-b")  # the last value counts
    fields.SetField(entity=vm, key=tier.key, value="gold")

    category = sim.rest("POST", "/com/vmware/cis/tagging/category", {"create_spec": {
        "name": "backup", "description": "", "cardinality": "MULTIPLE",
        "associable_types": ["VirtualMachine"]}})
    tags = [
        sim.rest("POST", "/com/vmware/cis/tagging/tag", {"create_spec": {
            "name": name, "description": "", "category_id": category}})
        for name in ("gold", "daily")
    ]
    for tag in tags:
        sim.rest("POST", f"/com/vmware/cis/tagging/tag-association/id:{tag}?~action=attach",
                 {"object_id": {"id": vm._moId, "type": "VirtualMachine"}})

    inventory = read(sim)
    by_name = {v.name: v for v in inventory.vms}
    assert inventory.tags_available is True
    assert by_name["DC0_C0_RP0_VM1"].attributes == {"backup-tier": "gold", "owner": "team-b"}
    assert by_name["DC0_C0_RP0_VM1"].tags == ("backup/daily", "backup/gold")
    assert by_name["DC0_C0_RP0_VM0"].attributes == {}
    assert by_name["DC0_C0_RP0_VM0"].tags == ()

    without_tags = read(sim, tags=False)
    assert without_tags.tags_available is False
    assert {v.tags for v in without_tags.vms} == {()}


def test_power_state_and_change_tracking_follow_the_vm(start_vcsim: StartVcsim) -> None:
    sim = start_vcsim(vms=2)
    vm = sim.vm("DC0_C0_RP0_VM0")
    WaitForTask(vm.PowerOffVM_Task())
    WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=True)))

    by_name = {v.name: v for v in read(sim).vms}
    assert by_name["DC0_C0_RP0_VM0"].power_state is PowerState.OFF
    assert by_name["DC0_C0_RP0_VM0"].change_tracking is True
    assert by_name["DC0_C0_RP0_VM1"].power_state is PowerState.ON
    assert by_name["DC0_C0_RP0_VM1"].change_tracking is False

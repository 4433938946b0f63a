"""The fast inventory reader (SOAP bytes → model) gives what pyVmomi's reader gives.

Random estates on real simulators: VMs renamed (XML-special and non-ASCII text), snapshot
trees grown and pruned with random descriptions, power changes, custom attributes, change
tracking, VMs moved between folders, disks added; each read by both readers with random
page sizes and compared whole.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyVim.task import WaitForTask
from pyVmomi import vim

from reconciler.adapters.vsphere import VSphereClient
from reconciler.model import Inventory

from .conftest import Simulator, StartVcsim

pytestmark = pytest.mark.vcsim

RENAMES = itertools.count()
EXAMPLES = int(os.environ.get("VMKEEP_FAST_INVENTORY_EXAMPLES", "4"))
#: XML-special characters, quotes, spaces and non-ASCII letters.
TEXT = st.text(alphabet=st.sampled_from("ab Z09_-.<&>\"'éü中🙂"), min_size=1, max_size=12)


def read(sim: Simulator, *, fast: bool, page_size: int) -> Inventory:
    with VSphereClient(sim.config(), sim.password, fast_inventory=fast,
                       page_size=page_size) as client:
        return client.inventory()


def vms_of(sim: Simulator) -> list[Any]:
    content = sim.admin()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return sorted(view.view, key=lambda vm: vm._moId)
    finally:
        view.DestroyView()


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["rename", "snapshot", "remove-snapshot", "revert", "power", "suspend",
                         "attribute", "cbt", "move", "disk"]),
        st.integers(0, 1000),
        TEXT,
        st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


def apply(sim: Simulator, operation: tuple[str, int, str, bool]) -> None:
    kind, pick, text, flag = operation
    vms = vms_of(sim)
    vm = vms[pick % len(vms)]
    content = sim.admin()
    if kind == "rename":
        # Unique: a folder refuses a name it holds already (the VM's own included).
        WaitForTask(vm.Rename_Task(f"{text}-{vm._moId}-{next(RENAMES)}"))
    elif kind == "snapshot":
        WaitForTask(vm.CreateSnapshot_Task(text, f"{text}\n{text}", False, flag))
    elif kind in {"remove-snapshot", "revert"}:
        snapshots: list[Any] = []
        stack = list(vm.snapshot.rootSnapshotList) if vm.snapshot else []
        while stack:
            tree = stack.pop()
            snapshots.append(tree.snapshot)
            stack.extend(tree.childSnapshotList)
        if snapshots:
            snapshot = snapshots[pick % len(snapshots)]
            if kind == "revert":
                WaitForTask(snapshot.RevertToSnapshot_Task())
            else:
                task = snapshot.RemoveSnapshot_Task(removeChildren=flag)
                wait_done(task)
    elif kind in {"power", "suspend"}:
        state = vm.runtime.powerState
        if state == "poweredOn":
            WaitForTask(vm.SuspendVM_Task() if kind == "suspend" else vm.PowerOffVM_Task())
        else:
            WaitForTask(vm.PowerOnVM_Task())
    elif kind == "attribute":
        fields = content.customFieldsManager
        name = f"attr-{pick % 3}"
        existing = [f for f in fields.field if f.name == name]
        field = existing[0] if existing else fields.AddCustomFieldDef(
            name=name, moType=vim.VirtualMachine)
        fields.SetField(entity=vm, key=field.key, value=text)
    elif kind == "cbt":
        WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=flag)))
    elif kind == "move":
        folders = [f for f in folders_of(sim) if "VirtualMachine" in f.childType]
        WaitForTask(folders[pick % len(folders)].MoveIntoFolder_Task([vm]))
    elif kind == "disk":
        controller = next(d for d in vm.config.hardware.device
                          if isinstance(d, vim.vm.device.VirtualSCSIController))
        used = {d.unitNumber for d in vm.config.hardware.device
                if getattr(d, "controllerKey", None) == controller.key}
        unit = next(u for u in range(16) if u != 7 and u not in used)
        disk = vim.vm.device.VirtualDisk(
            controllerKey=controller.key, unitNumber=unit, capacityInKB=1024 * (1 + pick % 4),
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                diskMode="persistent", thinProvisioned=True),
        )
        change = vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create",
                                                 device=disk)
        # The simulator's second datacenter lacks some VM directories: no disk added there.
        with contextlib.suppress(vim.fault.FileNotFound):
            WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))


def wait_done(task: Any) -> None:
    """Snapshot-level tasks cannot be waited for with WaitForTask (vsphere-simulator.md)."""
    for _ in range(500):
        if task.info.state in {"success", "error"}:
            return
    raise AssertionError("task did not finish")


def folders_of(sim: Simulator) -> list[Any]:
    content = sim.admin()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.Folder], True)
    try:
        return sorted(view.view, key=lambda f: f._moId)
    finally:
        view.DestroyView()


@pytest.mark.parametrize("shape", [
    (),
    ("--datacenters", "2", "--clusters", "0", "--hosts", "2", "--folders", "a,a/b&c,ü"),
], ids=["one-datacenter-cluster", "two-datacenters-standalone-hosts"])
def test_the_fast_reader_and_pyvmomi_read_random_estates_alike(
    start_vcsim: StartVcsim, shape: tuple[str, ...]
) -> None:
    sim = start_vcsim(*shape, vms=6)

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(operations=OPERATIONS, page_size=st.integers(1, 8))
    def check(operations: list[tuple[str, int, str, bool]], page_size: int) -> None:
        for operation in operations:
            apply(sim, operation)
        fast = read(sim, fast=True, page_size=page_size)
        slow = read(sim, fast=False, page_size=page_size)
        assert fast == slow
        assert len(fast.vms) == 6

    check()


def test_an_estate_read_fast_has_every_field_set_as_pyvmomi_reads_it(
    start_vcsim: StartVcsim,
) -> None:
    """A fixed estate using every field, so the property test cannot pass on empty values."""
    sim = start_vcsim(vms=2)
    for operation in [("rename", 0, "<a&b> \"ü\"", False), ("snapshot", 0, "one", True),
                      ("snapshot", 0, "two", False), ("attribute", 0, "gold & <x>", False),
                      ("cbt", 0, "", True), ("power", 1, "", False), ("disk", 1, "", False)]:
        apply(sim, operation)
    fast = read(sim, fast=True, page_size=1)
    assert fast == read(sim, fast=False, page_size=1000)
    renamed, other = fast.vms if fast.vms[0].snapshots else reversed(fast.vms)
    assert renamed.name.startswith('<a&b> "ü"-vm-')
    assert [s.name for s in renamed.snapshots] == ["one", "two"]
    assert renamed.snapshots[0].quiesced is True and renamed.snapshots[0].description == "one\none"
    assert renamed.snapshots[1].parent_id == renamed.snapshots[0].id
    assert renamed.attributes == {"attr-0": "gold & <x>"}
    assert renamed.change_tracking is True
    assert other.power_state.value == "poweredOff"
    assert len(other.disks) == 2 and other.disks[1].capacity_bytes == 2 * 1024 * 1024

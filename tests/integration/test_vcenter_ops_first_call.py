"""Contract: every `VCenterOps` method works as the first call on a fresh client.

Issue 9 A: `remove_snapshot` built its snapshot reference on the client's stub before any call
had opened the session; on a fresh client (crash recovery of an exports-only policy, where no
`find_vm` came first) that was None and every later apply died with
`AttributeError: 'NoneType' object has no attribute 'InvokeMethod'`. The session is now opened
wherever a call needs it (`VSphereClient.stub`/`content`/`ref`); this table calls each method
of the port first on a fresh client against the simulator, and fails when the port grows a
method the table does not cover.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.vsphere import VSphereClient, VSphereOperations
from reconciler.model import VM, PowerState
from reconciler.ports import VCenterOps

from .apply_world import wait
from .conftest import Simulator, module_simulator

pytestmark = pytest.mark.vcsim


sim = module_simulator("vcsim-first-call", vms=12)


def fresh(sim: Simulator) -> VSphereOperations:
    return VSphereOperations(VSphereClient(sim.config(), sim.password))


def a_vm(sim: Simulator, index: int) -> VM:
    with VSphereClient(sim.config(), sim.password) as client:
        vms = sorted(client.inventory().vms, key=lambda vm: vm.name)
    return vms[index]


def a_snapshot(sim: Simulator, vm: VM) -> str:
    result = wait(sim.vm(vm.name).CreateSnapshot_Task(
        name="setup", description="made by the test", memory=False, quiesce=False))
    return str(result._moId)


def current(sim: Simulator, vm: VM) -> VM:
    with VSphereClient(sim.config(), sim.password) as client:
        return next(v for v in client.inventory().vms if v.instance_uuid == vm.instance_uuid)


def check_find_vm(sim: Simulator, ops: VSphereOperations, vm: VM) -> None:
    found = ops.find_vm(vm.instance_uuid)
    assert found is not None and found.moref == vm.moref
    assert found.cluster == vm.cluster != "", (found.cluster, vm.cluster)  # host → cluster


def check_create_snapshot(sim: Simulator, ops: VSphereOperations, vm: VM) -> None:
    sid = ops.create_snapshot(vm, "first", "first call", memory=False, quiesce=False)
    assert sid in {s.id for s in current(sim, vm).snapshots}


def check_remove_snapshot(sim: Simulator, ops: VSphereOperations, vm: VM) -> None:
    sid = a_snapshot(sim, vm)
    ops.remove_snapshot(vm, sid)
    assert current(sim, vm).snapshots == ()


def check_shutdown_guest(sim: Simulator, ops: VSphereOperations, vm: VM) -> None:
    ops.shutdown_guest(vm)
    assert current(sim, vm).power_state is PowerState.OFF


def check_power_off(sim: Simulator, ops: VSphereOperations, vm: VM) -> None:
    ops.power_off(vm)
    assert current(sim, vm).power_state is PowerState.OFF


def check_power_on(sim: Simulator, ops: VSphereOperations, vm: VM) -> None:
    wait(sim.vm(vm.name).PowerOffVM_Task())
    ops.power_on(vm)
    assert current(sim, vm).power_state is PowerState.ON


def check_snapshot_disks(sim: Simulator, ops: VSphereOperations, vm: VM) -> None:
    sid = a_snapshot(sim, vm)
    disks = ops.snapshot_disks(vm, sid)
    assert [d.key for d in disks] == [d.key for d in vm.disks]


def check_open_disk(sim: Simulator, ops: VSphereOperations, vm: VM) -> None:
    sid = a_snapshot(sim, vm)
    stream = ops.open_disk(vm, sid, vm.disks[0])
    try:
        assert len(stream.read(4096)) == 4096
    finally:
        stream.close()


def check_changed_extents(sim: Simulator, ops: VSphereOperations, vm: VM) -> None:
    sid = a_snapshot(sim, vm)
    extents = ops.changed_extents(vm, sid, vm.disks[0], "*")
    assert extents is None or all(length >= 0 for _, length in extents)


def check_vm_files(sim: Simulator, ops: VSphereOperations, vm: VM) -> None:
    files = ops.vm_files(vm)
    assert any(name.endswith(".vmx") for name in files)


def check_wait_for_tasks(sim: Simulator, ops: VSphereOperations, vm: VM) -> None:
    assert ops.wait_for_tasks(vm, timeout=30) == ()


def check_abort_lease(sim: Simulator, ops: VSphereOperations, vm: VM) -> None:
    sid = a_snapshot(sim, vm)
    admin = sim.vm(vm.name)

    def tree(nodes: Any) -> Iterator[Any]:
        for node in nodes or ():
            yield node.snapshot
            yield from tree(node.childSnapshotList)

    snapshot = next(s for s in tree(admin.snapshot.rootSnapshotList) if s._moId == sid)
    lease = snapshot.ExportSnapshot()
    assert str(lease.state) == "ready"
    assert ops.abort_lease(lease._moId) is True
    [seen] = [x for x in sim.control("leases") if x["lease"] == lease._moId]
    assert seen["ended"] == "aborted"
    assert ops.abort_lease(lease._moId) is False  # already ended


CHECKS: dict[str, Callable[[Simulator, VSphereOperations, VM], None]] = {
    "find_vm": check_find_vm,
    "create_snapshot": check_create_snapshot,
    "remove_snapshot": check_remove_snapshot,
    "shutdown_guest": check_shutdown_guest,
    "power_off": check_power_off,
    "power_on": check_power_on,
    "snapshot_disks": check_snapshot_disks,
    "open_disk": check_open_disk,
    "abort_lease": check_abort_lease,
    "changed_extents": check_changed_extents,
    "vm_files": check_vm_files,
    "wait_for_tasks": check_wait_for_tasks,
}


def port_methods() -> set[str]:
    return {name for name, member in inspect.getmembers(VCenterOps, inspect.isfunction)
            if not name.startswith("_")}


def test_the_contract_table_covers_every_method_of_the_port() -> None:
    assert set(CHECKS) == port_methods()


@pytest.mark.parametrize("method", sorted(CHECKS))
def test_each_vcenter_operation_works_as_the_first_call_on_a_fresh_client(
    sim: Simulator, method: str, tmp_path: Path
) -> None:
    vm = a_vm(sim, sorted(CHECKS).index(method))
    ops = fresh(sim)
    try:
        CHECKS[method](sim, ops, vm)
    finally:
        ops.client.close()


def test_a_reference_built_before_the_session_is_opened_works(sim: Simulator) -> None:
    ops: Any = fresh(sim)
    vm = a_vm(sim, 11)
    ref = ops._vm_ref(vm)  # the first thing: opens the session for the reference
    try:
        assert ref.name == vm.name
    finally:
        ops.client.close()

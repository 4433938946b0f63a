"""The `VCenterOps` port: one set of cases against `FakeVCenter` and the simulator.

The simulator side reuses `test_vcenter_ops_first_call.py`'s set-up (the project's patched
govmomi simulator, `VSphereOperations` on a fresh client). Each case gets its own VM, so the
order of the cases does not matter. What a case must arrange outside the port (a VM removed
behind vmkeep's back, an export lease a crashed run left, a task still running) each side
does its own way: the fake through its attributes, the simulator through an admin session
and its fault knobs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from reconciler.adapters.vsphere import VSphereClient, VSphereOperations
from reconciler.errors import VCenterError
from reconciler.model import VM, PowerState
from reconciler.ports import VCenterOps
from reconciler.vmconfig import CONFIG_FILE, VMConfig
from tests.integration.apply_world import wait
from tests.integration.conftest import Simulator, module_simulator
from tests.unit.fakes import FakeVCenter

#: The name vCenter gives a snapshot's creation task (the simulator's, patch 2).
SNAPSHOT_TASK = "CreateSnapshot_Task"


@dataclass
class Subject:
    """One side of the contract: the port, a fresh powered-on VM per call, and the ways to
    change the world behind vmkeep's back."""

    ops: VCenterOps
    a_vm: Callable[[], VM]
    remove: Callable[[VM], None]  # the VM is deleted from the vCenter
    leave_lease: Callable[[VM], str]  # an export lease of the VM stays open; its id
    start_snapshot_task: Callable[[VM], None]  # a snapshot task on the VM is still running


sim = module_simulator("vcsim-contract", vms=24)


def _fake() -> Subject:
    fake = FakeVCenter()
    names = iter(range(100))
    leases = iter(range(100))

    def remove(vm: VM) -> None:
        del fake.vms[vm.instance_uuid]

    def leave_lease(vm: VM) -> str:
        return f"session[{next(leases)}]lease-{vm.name}"

    def start_snapshot_task(vm: VM) -> None:
        def complete() -> None:
            fake.create_snapshot(vm, "late", "", memory=False, quiesce=False)

        fake.in_flight.setdefault(vm.instance_uuid, []).append((SNAPSHOT_TASK, complete))

    return Subject(fake, lambda: fake.vm(fake.add(f"vm{next(names)}")), remove, leave_lease,
                   start_snapshot_task)


def _simulator(simulator: Simulator, ops: VSphereOperations) -> Subject:
    with VSphereClient(simulator.config(), simulator.password) as client:
        untouched = [vm for vm in sorted(client.inventory().vms, key=lambda vm: vm.name)
                     if vm.power_state is PowerState.ON and not vm.snapshots]
    vms = iter(untouched)

    def remove(vm: VM) -> None:
        ref = simulator.vm(vm.name)
        wait(ref.PowerOffVM_Task())
        wait(ref.Destroy_Task())

    def leave_lease(vm: VM) -> str:
        ref = simulator.vm(vm.name)
        wait(ref.PowerOffVM_Task())  # ExportVm leases a powered-off VM only
        lease = ref.ExportVm()
        assert str(lease.state) == "ready"
        return str(lease._moId)

    def start_snapshot_task(vm: VM) -> None:
        simulator.faults(taskDelayMs=1000, taskDelayMatch=SNAPSHOT_TASK)
        try:
            simulator.vm(vm.name).CreateSnapshot_Task(name="late", description="",
                                                      memory=False, quiesce=False)
        finally:
            simulator.faults(taskDelayMs=0, taskDelayMatch="")  # the task started keeps it

    return Subject(ops, lambda: next(vms), remove, leave_lease, start_snapshot_task)


@pytest.fixture(params=["fake", pytest.param("simulator", marks=pytest.mark.vcsim)])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "fake":
        yield _fake()
        return
    simulator: Simulator = request.getfixturevalue("sim")
    ops = VSphereOperations(VSphereClient(simulator.config(), simulator.password))
    try:
        yield _simulator(simulator, ops)
    finally:
        ops.client.close()


def _read(subject: Subject, vm: VM) -> VM:
    found = subject.ops.find_vm(vm.instance_uuid)
    assert found is not None
    return found


def test_an_unknown_instance_uuid_is_not_found(subject: Subject) -> None:
    assert subject.ops.find_vm("00000000-0000-0000-0000-00000000dead") is None


def test_a_vm_is_found_again_by_its_instance_uuid(subject: Subject) -> None:
    vm = subject.a_vm()
    found = subject.ops.find_vm(vm.instance_uuid)
    assert found is not None
    assert (found.name, found.moref, found.power_state) == (vm.name, vm.moref, PowerState.ON)


def test_a_vm_removed_from_the_vcenter_is_not_found(subject: Subject) -> None:
    vm = subject.a_vm()
    subject.remove(vm)
    assert subject.ops.find_vm(vm.instance_uuid) is None


#: Changes of a VM, each as the executor makes it.
CHANGES: dict[str, Callable[[VCenterOps, VM], object]] = {
    "create_snapshot": lambda ops, vm: ops.create_snapshot(vm, "late", "", memory=False,
                                                           quiesce=False),
    "power_off": lambda ops, vm: ops.power_off(vm),
    "power_on": lambda ops, vm: ops.power_on(vm),
    "shutdown_guest": lambda ops, vm: ops.shutdown_guest(vm),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_changing_a_vm_removed_meanwhile_is_a_vcenter_error(subject: Subject,
                                                            change: str) -> None:
    vm = subject.a_vm()
    subject.remove(vm)
    with pytest.raises(VCenterError):
        CHANGES[change](subject.ops, vm)


def test_removing_a_snapshot_of_a_vm_removed_meanwhile_is_not_an_error(
    subject: Subject,
) -> None:
    ops, vm = subject.ops, subject.a_vm()
    sid = ops.create_snapshot(vm, "orphan", "made by the contract", memory=False,
                              quiesce=False)
    subject.remove(vm)
    ops.remove_snapshot(vm, sid)  # recovery cleans up after a VM that is gone
    assert ops.find_vm(vm.instance_uuid) is None


def test_a_created_snapshot_is_listed_and_removing_it_removes_only_that_one(
    subject: Subject,
) -> None:
    ops, vm = subject.ops, subject.a_vm()
    first = ops.create_snapshot(vm, "first", "made by the contract", memory=False, quiesce=False)
    second = ops.create_snapshot(vm, "second", "made by the contract", memory=False,
                                 quiesce=False)
    found = _read(subject, vm)
    assert [(s.id, s.name) for s in found.snapshots] == [(first, "first"), (second, "second")]
    ops.remove_snapshot(found, first)
    assert [s.id for s in _read(subject, vm).snapshots] == [second]


def test_power_off_and_power_on_are_seen_by_the_next_read(subject: Subject) -> None:
    ops, vm = subject.ops, subject.a_vm()
    ops.power_off(vm)
    off = _read(subject, vm)
    assert off.power_state is PowerState.OFF
    ops.power_on(off)
    assert _read(subject, vm).power_state is PowerState.ON


def test_powering_off_a_vm_that_is_already_off_is_not_an_error(subject: Subject) -> None:
    ops, vm = subject.ops, subject.a_vm()
    ops.power_off(vm)
    ops.power_off(vm)  # recovery repeats what a crashed run may have done
    assert _read(subject, vm).power_state is PowerState.OFF


def test_powering_on_a_vm_that_is_already_on_is_not_an_error(subject: Subject) -> None:
    ops, vm = subject.ops, subject.a_vm()
    ops.power_on(vm)
    assert _read(subject, vm).power_state is PowerState.ON


def test_shutting_down_the_guest_leaves_the_vm_powered_off(subject: Subject) -> None:
    ops, vm = subject.ops, subject.a_vm()
    ops.shutdown_guest(vm)
    assert _read(subject, vm).power_state is PowerState.OFF


def test_the_disks_of_a_snapshot_are_the_disks_of_the_vm(subject: Subject) -> None:
    ops, vm = subject.ops, subject.a_vm()
    sid = ops.create_snapshot(vm, "frozen", "made by the contract", memory=False, quiesce=False)
    frozen = ops.snapshot_disks(vm, sid)
    assert [(d.key, d.capacity_bytes) for d in frozen] == [
        (d.key, d.capacity_bytes) for d in vm.disks]


def test_an_opened_disk_reads_as_exactly_its_capacity_from_any_offset(
    subject: Subject,
) -> None:
    ops, vm = subject.ops, subject.a_vm()
    sid = ops.create_snapshot(vm, "read", "made by the contract", memory=False, quiesce=False)
    disk = vm.disks[0]
    stream = ops.open_disk(vm, sid, disk)
    try:
        whole = stream.read()
        assert len(whole) == disk.capacity_bytes
        stream.seek(disk.capacity_bytes - 100)
        assert stream.read() == whole[-100:]
    finally:
        stream.close()


def test_the_changed_extents_of_a_disk_without_change_tracking_are_unknown(
    subject: Subject,
) -> None:
    ops, vm = subject.ops, subject.a_vm()
    sid = ops.create_snapshot(vm, "cbt", "made by the contract", memory=False, quiesce=False)
    assert ops.changed_extents(vm, sid, vm.disks[0], "*") is None


def test_the_files_kept_with_an_export_are_the_vmx_and_the_vms_configuration(
    subject: Subject,
) -> None:
    vm = subject.a_vm()
    files = subject.ops.vm_files(vm)
    assert f"{vm.name}.vmx" in files
    config = VMConfig.decode(files[CONFIG_FILE], "contract")
    assert (config.name, config.instance_uuid) == (vm.name, vm.instance_uuid)
    assert [(d.key, d.capacity_bytes) for d in config.disks] == [
        (d.key, d.capacity_bytes) for d in vm.disks]
    assert json.loads(files[CONFIG_FILE])["format"] == 1


def test_an_open_export_lease_is_aborted_once_and_then_reported_as_ended(
    subject: Subject,
) -> None:
    vm = subject.a_vm()
    lease = subject.leave_lease(vm)
    assert subject.ops.abort_lease(lease) is True
    assert subject.ops.abort_lease(lease) is False


def test_waiting_for_the_tasks_of_an_idle_vm_waits_for_none(subject: Subject) -> None:
    assert subject.ops.wait_for_tasks(subject.a_vm(), timeout=60) == ()


def test_waiting_for_a_running_snapshot_task_returns_once_it_finished_and_names_it(
    subject: Subject,
) -> None:
    vm = subject.a_vm()
    subject.start_snapshot_task(vm)
    assert subject.ops.wait_for_tasks(vm, timeout=60) == (SNAPSHOT_TASK,)
    assert [s.name for s in _read(subject, vm).snapshots] == ["late"]


def test_removing_a_snapshot_that_is_already_gone_is_not_an_error(subject: Subject) -> None:
    ops, vm = subject.ops, subject.a_vm()
    sid = ops.create_snapshot(vm, "gone", "made by the contract", memory=False, quiesce=False)
    ops.remove_snapshot(vm, sid)
    ops.remove_snapshot(vm, sid)  # recovery repeats a removal a crashed run may have done
    assert _read(subject, vm).snapshots == ()

"""The `VCenterOps` port: one set of cases against `FakeVCenter` and the simulator.

The simulator side reuses `test_vcenter_ops_first_call.py`'s set-up (the project's patched
govmomi simulator, `VSphereOperations` on a fresh client). Each case gets its own VM, so the
order of the cases does not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from reconciler.adapters.vsphere import VSphereClient, VSphereOperations
from reconciler.model import VM, PowerState
from reconciler.ports import VCenterOps
from tests.integration.conftest import Simulator, run_vcsim, start_simulator
from tests.unit.fakes import FakeVCenter

#: A fresh VCenterOps and a fresh, powered-on VM of it for each case.
Subject = tuple[VCenterOps, Callable[[], VM]]


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    run_vcsim("build", timeout=900)
    simulator = start_simulator(tmp_path_factory.mktemp("vcsim-contract"), vms=8)
    yield simulator
    simulator.stop()


@pytest.fixture(params=["fake", pytest.param("simulator", marks=pytest.mark.vcsim)])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "fake":
        fake = FakeVCenter()
        names = iter(range(100))
        yield fake, lambda: fake.vm(fake.add(f"vm{next(names)}"))
        return
    simulator: Simulator = request.getfixturevalue("sim")
    client = VSphereClient(simulator.config(), simulator.password)
    with client:
        untouched = [vm for vm in sorted(client.inventory().vms, key=lambda vm: vm.name)
                     if vm.power_state is PowerState.ON and not vm.snapshots]
    vms = iter(untouched)
    ops = VSphereOperations(VSphereClient(simulator.config(), simulator.password))
    try:
        yield ops, lambda: next(vms)
    finally:
        ops.client.close()


def test_an_unknown_instance_uuid_is_not_found(subject: Subject) -> None:
    ops, _ = subject
    assert ops.find_vm("00000000-0000-0000-0000-00000000dead") is None


def test_a_vm_is_found_again_by_its_instance_uuid(subject: Subject) -> None:
    ops, a_vm = subject
    vm = a_vm()
    found = ops.find_vm(vm.instance_uuid)
    assert found is not None
    assert (found.name, found.moref, found.power_state) == (vm.name, vm.moref, PowerState.ON)


def test_a_created_snapshot_is_listed_and_removing_it_removes_only_that_one(
    subject: Subject,
) -> None:
    ops, a_vm = subject
    vm = a_vm()
    first = ops.create_snapshot(vm, "first", "made by the contract", memory=False, quiesce=False)
    second = ops.create_snapshot(vm, "second", "made by the contract", memory=False,
                                 quiesce=False)
    found = ops.find_vm(vm.instance_uuid)
    assert found is not None
    assert [(s.id, s.name) for s in found.snapshots] == [(first, "first"), (second, "second")]
    ops.remove_snapshot(found, first)
    after = ops.find_vm(vm.instance_uuid)
    assert after is not None and [s.id for s in after.snapshots] == [second]


def test_power_off_and_power_on_are_seen_by_the_next_read(subject: Subject) -> None:
    ops, a_vm = subject
    vm = a_vm()
    ops.power_off(vm)
    off = ops.find_vm(vm.instance_uuid)
    assert off is not None and off.power_state is PowerState.OFF
    ops.power_on(off)
    on = ops.find_vm(vm.instance_uuid)
    assert on is not None and on.power_state is PowerState.ON


def test_the_disks_of_a_snapshot_are_the_disks_of_the_vm(subject: Subject) -> None:
    ops, a_vm = subject
    vm = a_vm()
    sid = ops.create_snapshot(vm, "frozen", "made by the contract", memory=False, quiesce=False)
    frozen = ops.snapshot_disks(vm, sid)
    assert [(d.key, d.capacity_bytes) for d in frozen] == [
        (d.key, d.capacity_bytes) for d in vm.disks]


def test_removing_a_snapshot_that_is_already_gone_is_not_an_error(subject: Subject) -> None:
    ops, a_vm = subject
    vm = a_vm()
    sid = ops.create_snapshot(vm, "gone", "made by the contract", memory=False, quiesce=False)
    ops.remove_snapshot(vm, sid)
    ops.remove_snapshot(vm, sid)  # recovery repeats a removal a crashed run may have done
    after = ops.find_vm(vm.instance_uuid)
    assert after is not None and after.snapshots == ()

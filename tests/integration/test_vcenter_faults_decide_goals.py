"""A vCenter fault reaches the caller by its class name (`VCenterError.fault`), and the
operations whose goal already holds decide on that name, not on the message text."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler.adapters.vsphere import VSphereClient, VSphereRestore
from reconciler.errors import VCenterError
from reconciler.model import VM, PowerState

from .apply_world import wait
from .conftest import Simulator, module_simulator

pytestmark = pytest.mark.vcsim


sim = module_simulator("vcsim-faults", vms=3)


@pytest.fixture
def ops(sim: Simulator) -> Iterator[VSphereRestore]:
    restore = VSphereRestore(VSphereClient(sim.config(), sim.password))
    yield restore
    restore.client.close()


def vms(ops: VSphereRestore) -> list[VM]:
    return sorted(ops.client.inventory().vms, key=lambda vm: vm.name)


def test_a_refused_task_carries_the_fault_class_name(ops: VSphereRestore) -> None:
    vm = vms(ops)[0]
    with pytest.raises(VCenterError) as caught:
        ops.revert(vm.moref, "snapshot-404")
    assert caught.value.fault == "ManagedObjectNotFound"
    assert not caught.value.transient


def test_operations_whose_goal_already_holds_succeed_on_the_fault_vcenter_names(
    sim: Simulator, ops: VSphereRestore,
) -> None:
    vm = next(v for v in vms(ops) if v.power_state is PowerState.ON)
    ops.power_on(vm)  # InvalidPowerState: already on
    sid = ops.create_snapshot(vm, "gone", "removed twice", memory=False, quiesce=False)
    ops.remove_snapshot(vm, sid)
    ops.remove_snapshot(vm, sid)  # ManagedObjectNotFound: already gone
    assert ops.delete_directory("DC0", "[LocalDS_0] no-such-directory") is False
    victim = vms(ops)[-1]
    wait(sim.vm(victim.name).PowerOffVM_Task())
    ops.destroy(victim.moref)
    ops.destroy(victim.moref)  # ManagedObjectNotFound: already removed
    assert victim.moref not in {v.moref for v in vms(ops)}

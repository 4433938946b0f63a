"""Reading one VM again (each action does, before it snapshots or exports) asks for the VM,
the folders and datacenter found above it last time, its host and cluster of last time and
the custom attributes' names in one call after finding it by UUID, names fresh; a VM moved
to another folder or host is followed by reading those again. Against the simulator."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from pyVmomi import vim

from reconciler.adapters.vsphere import VSphereClient, VSphereOperations
from reconciler.model import VM as VMModel

from .apply_world import wait
from .conftest import Simulator, StartVcsim

pytestmark = pytest.mark.vcsim

VM = "DC0_C0_RP0_VM0"


def calls_of(http_requests: Counter[str], read: object) -> int:
    before = http_requests["POST /sdk"]
    assert callable(read)
    read()
    return http_requests["POST /sdk"] - before


def test_a_vm_read_again_comes_with_its_folders_in_one_call_and_as_a_full_read_sees_it(
    start_vcsim: StartVcsim, http_requests: Counter[str],
) -> None:
    sim = start_vcsim(vms=2)
    ops = VSphereOperations(VSphereClient(sim.config(), sim.password))
    listed = next(v for v in ops.client.inventory().vms if v.name == VM)

    first = calls_of(http_requests, lambda: ops.find_vm(listed.instance_uuid))
    again = calls_of(http_requests, lambda: ops.find_vm(listed.instance_uuid))
    found = ops.find_vm(listed.instance_uuid)
    ops.client.close()

    assert found is not None and found.folder == listed.folder == "/DC0/vm"
    # as the inventory saw it (which also tells each disk's datastore type)
    assert replace(found, disks=()) == replace(listed, disks=())
    assert again < first  # the walk up (one call per level) is not made again
    assert again == 2  # finding it by UUID, then everything else at once


def read_once(sim: Simulator) -> tuple[VSphereOperations, str, VMModel]:
    """Operations on the simulator, the UUID of `VM`, and a first read of it."""
    ops = VSphereOperations(VSphereClient(sim.config(), sim.password))
    uuid = next(v.instance_uuid for v in ops.client.inventory().vms if v.name == VM)
    before = ops.find_vm(uuid)
    assert before is not None
    return ops, uuid, before


def test_a_vm_moved_or_with_a_renamed_folder_is_read_where_it_is_now(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim(vms=2)
    ops, uuid, before = read_once(sim)
    vm_folder = sim.vm(VM).parent
    assert before.folder == "/DC0/vm"

    team = vm_folder.CreateFolder("team")
    nested = team.CreateFolder("web")
    wait(nested.MoveIntoFolder_Task([sim.vm(VM)]))
    moved = ops.find_vm(uuid)
    wait(team.Rename_Task(newName="squad"))
    renamed = ops.find_vm(uuid)
    datacenter = ops._datacenter_of(renamed) if renamed is not None else ""
    wait(vm_folder.MoveIntoFolder_Task([sim.vm(VM)]))
    back = ops.find_vm(uuid)
    full = next(v for v in ops.client.inventory().vms if v.name == VM)
    ops.client.close()

    assert moved is not None and moved.folder == "/DC0/vm/team/web"
    assert renamed is not None and renamed.folder == "/DC0/vm/squad/web"
    assert datacenter == "DC0"  # found above the folders it was moved into
    assert back is not None and back.folder == "/DC0/vm"
    assert replace(back, disks=()) == replace(full, disks=())


def test_a_vm_moved_to_another_host_or_given_an_attribute_is_read_as_it_is_now(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim(vms=2)
    ops, uuid, before = read_once(sim)
    assert before.host

    managed = sim.vm(VM)
    other = next(h for h in managed.runtime.host.parent.host if h.name != before.host)
    wait(managed.RelocateVM_Task(spec=vim.vm.RelocateSpec(host=other)))
    fields = sim.admin().customFieldsManager
    owner = fields.AddCustomFieldDef(name="owner", moType=vim.VirtualMachine)
    fields.SetField(entity=managed, key=owner.key, value="team-a")
    after = ops.find_vm(uuid)
    full = next(v for v in ops.client.inventory().vms if v.name == VM)
    ops.client.close()

    assert after is not None and after.host == other.name != before.host
    assert after.cluster == before.cluster and dict(after.attributes) == {"owner": "team-a"}
    assert replace(after, disks=()) == replace(full, disks=())

"""Where a VM's files are: the datastore file interface names the datacenter (`dcPath`), which
vmkeep finds by walking up from the VM's folder — once per folder, not once per read — and
whose name it still reads fresh (a datacenter can be renamed while the controller runs), once
for the files and the configuration saved with them."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from reconciler.adapters.vsphere import VSphereClient, VSphereOperations

from .apply_world import wait
from .conftest import StartVcsim

pytestmark = pytest.mark.vcsim

VM = "DC0_C0_RP0_VM0"


def test_a_vms_files_are_found_again_after_its_datacenter_is_renamed_with_fewer_calls(
    start_vcsim: StartVcsim, http_requests: Counter[str],
) -> None:
    sim = start_vcsim(vms=2)
    ops = VSphereOperations(VSphereClient(sim.config(), sim.password))
    vm = next(v for v in ops.client.inventory().vms if v.name == VM)

    before = http_requests["POST /sdk"]
    first = ops.vm_files(vm)
    first_calls = http_requests["POST /sdk"] - before

    datacenter = sim.vm(VM).parent.parent
    wait(datacenter.Rename_Task(newName="DC renamed"))
    before = http_requests["POST /sdk"]
    again = ops.vm_files(vm)
    again_calls = http_requests["POST /sdk"] - before
    ops.client.close()

    assert again.keys() == first.keys() and any(name.endswith(".vmx") for name in again)
    assert again_calls < first_calls  # the folders above the VM are not read again
    # the saved configuration names the datacenter the files were just read from
    assert json.loads(first["vm-config.json"])["datacenter"] == "DC0"
    assert json.loads(again["vm-config.json"])["datacenter"] == "DC renamed"

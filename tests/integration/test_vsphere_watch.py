"""The controller's watch cache (WaitForUpdatesEx) equals a fresh full read after changes.

Random changes on a real simulator — renames, power changes, snapshots created, removed and
reverted, custom attributes set, change tracking, moves, disks added, VMs cloned and
destroyed — then the watch cache's inventory (kept across the examples: only changes are
read after the first) is compared whole with a full read. Tags come over REST and are read
again every tick, so they need no watch.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyVim.task import WaitForTask
from pyVmomi import vim

from reconciler.adapters.vsphere import VSphereClient, VSphereWatch
from reconciler.model import Inventory
from reconciler.wiring import WatchCaches

from .conftest import Simulator, StartVcsim, no_sleep
from .test_vsphere_fast_inventory import TEXT, apply, read, vms_of

pytestmark = pytest.mark.vcsim

EXAMPLES = int(os.environ.get("VMKEEP_WATCH_EXAMPLES", "4"))
CLONES = itertools.count()

OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["rename", "snapshot", "remove-snapshot", "revert", "power",
                         "attribute", "cbt", "move", "disk", "add", "destroy"]),
        st.integers(0, 1000),
        TEXT,
        st.booleans(),
    ),
    min_size=1,
    max_size=8,
)


def change(sim: Simulator, operation: tuple[str, int, str, bool]) -> None:
    kind, pick, _text, _flag = operation
    vms = vms_of(sim)
    vm = vms[pick % len(vms)]
    if kind == "add":
        WaitForTask(vm.CloneVM_Task(vm.parent, f"clone-{next(CLONES)}",
                                    vim.vm.CloneSpec(location=vim.vm.RelocateSpec())))
    elif kind == "destroy":
        if len(vms) > 2:
            if vm.runtime.powerState != "poweredOff":
                WaitForTask(vm.PowerOffVM_Task())
            WaitForTask(vm.Destroy_Task())
    else:
        apply(sim, operation)


def by_moref(inventory: Inventory) -> Inventory:
    """The order of VMs is the server's in a full read and the cache's own in a watch."""
    return replace(inventory, vms=tuple(sorted(inventory.vms, key=lambda vm: vm.moref)))


def full_read(sim: Simulator) -> Inventory:
    return by_moref(read(sim, fast=True, page_size=100))


@pytest.mark.parametrize("fast", [True, False], ids=["read by vsphere_fast", "read by pyvmomi"])
def test_the_watch_cache_equals_a_full_read_after_random_changes(
    start_vcsim: StartVcsim, fast: bool,
) -> None:
    sim = start_vcsim(vms=4)
    watch = VSphereWatch(VSphereClient(sim.config(), sim.password, fast_inventory=fast))

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(operations=OPERATIONS)
    def check(operations: list[tuple[str, int, str, bool]]) -> None:
        for operation in operations:
            change(sim, operation)
        assert by_moref(watch.inventory()) == full_read(sim)

    try:
        assert by_moref(watch.inventory()) == full_read(sim)
        check()
        assert watch.full_reads == 1  # after the first tick, only changes were read
    finally:
        watch.close()


def test_the_watch_cache_reads_everything_again_after_a_session_loss(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim(vms=3)
    watch = VSphereWatch(VSphereClient(sim.config(), sim.password, sleep=no_sleep))
    try:
        watch.inventory()
        change(sim, ("rename", 0, "before", False))
        assert by_moref(watch.inventory()) == full_read(sim)
        change(sim, ("rename", 1, "lost", False))  # reported to the session ended next
        change(sim, ("destroy", 2, "", False))
        assert sim.terminate_sessions() >= 1
        assert by_moref(watch.inventory()) == full_read(sim)
        assert watch.full_reads == 2
    finally:
        watch.close()


def test_the_controllers_observe_keeps_one_watch_per_vcenter_across_ticks(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim(vms=3)
    caches = WatchCaches()
    try:
        caches.read("sim", sim.config(), sim.password)
        change(sim, ("power", 0, "", False))
        assert by_moref(caches.read("sim", sim.config(), sim.password)) == full_read(sim)
        assert sim.stats()["methods"]["CreatePropertyCollector"] == 1
        caches.read("sim", sim.config(transport="nfc"), sim.password)  # configuration changed
        assert sim.stats()["methods"]["CreatePropertyCollector"] == 2
    finally:
        caches.close()

"""The simulator harness itself: `scripts/vcsim` start/stop, fault knobs, the patched bugs.

These use pyVmomi directly (as a test would set things up), not the adapter.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pyVim.task import WaitForTask
from pyVmomi import vim

from .conftest import (
    REPO,
    StartVcsim,
    process_alive,
    run_vcsim,
    start_simulator,
    wait_until,
)

pytestmark = pytest.mark.vcsim



def wait_task(task: Any) -> Any:
    """Wait for a task by polling (WaitForTask raises on error; here errors are expected)."""
    wait_until(lambda: task.info.state in ("success", "error"))
    return task.info


def test_start_prints_one_json_line_and_stop_removes_the_datastores(
    vcsim_built: None, tmp_path: Path
) -> None:
    sim = start_simulator(tmp_path / "state", vms=3)

    assert {"url", "caFile", "pid", "stateDir", "username", "password", "thumbprint",
            "controlUrl"} <= set(sim.info)
    assert sim.url.startswith("https://127.0.0.2:") and sim.url.endswith("/sdk")
    assert sim.state_dir == tmp_path / "state"
    assert sim.info["vms"] == 3 and process_alive(sim.info["pid"])
    data = Path(sim.info["dataDir"])
    assert data.is_relative_to(sim.state_dir) and any(data.rglob("*.vmdk"))
    # The thumbprint is the one of the certificate served.
    host, port = sim.url.split("/")[2].split(":")
    pem = ssl.get_server_certificate((host, int(port)))
    der = ssl.PEM_cert_to_DER_cert(pem)
    sha1 = hashlib.sha1(der).hexdigest().upper()
    assert sim.info["thumbprint"].replace(":", "") == sha1

    sim.stop()
    wait_until(lambda: not process_alive(sim.info["pid"]))
    assert not data.exists()
    assert not (sim.state_dir / "tmp").exists()


def test_start_lays_out_the_hosts_clusters_and_vms_asked_for(
    vcsim_built: None, tmp_path: Path
) -> None:
    sim = start_simulator(tmp_path / "state", "--hosts", "2", "--clusters", "2", vms=8)
    try:
        # --hosts is per cluster: the JSON line reports the totals
        assert (sim.info["vms"], sim.info["hosts"], sim.info["clusters"]) == (8, 4, 2)
        content = sim.admin()
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.HostSystem, vim.ClusterComputeResource, vim.VirtualMachine],
            True)
        kinds = Counter(type(obj).__name__.rsplit(".", 1)[-1] for obj in view.view)
        assert kinds == {"HostSystem": 4, "ClusterComputeResource": 2, "VirtualMachine": 8}
    finally:
        sim.stop()


def test_without_a_state_dir_start_makes_one_that_stop_removes(vcsim_built: None) -> None:
    info = json.loads(run_vcsim("start", "--vms", "1"))
    state = Path(info["stateDir"])
    assert state.is_relative_to(REPO / ".cache" / "vcsim" / "runs")
    assert info["credentialsEnforced"] is False  # no --password: any credentials work
    run_vcsim("stop", "--state-dir", str(state))
    assert not state.exists()
    wait_until(lambda: not process_alive(info["pid"]))


def test_stop_is_harmless_when_nothing_runs(vcsim_built: None, tmp_path: Path) -> None:
    run_vcsim("stop", "--state-dir", str(tmp_path))
    run_vcsim("stop", "--state-dir", str(tmp_path / "never-made"))


def test_create_snapshot_fails_for_matching_vms_and_the_fault_can_change_at_run_time(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim("--fail-snapshot", "VM1$", vms=3)
    failing, fine = sim.vm("DC0_C0_RP0_VM1"), sim.vm("DC0_C0_RP0_VM0")

    info = wait_task(failing.CreateSnapshot_Task("s", "", False, False))
    assert info.state == "error" and isinstance(info.error, vim.fault.FileFault)
    assert wait_task(fine.CreateSnapshot_Task("s", "", False, False)).state == "success"

    sim.faults(failSnapshot="VM0$", failSnapshotFault="ApplicationQuiesceFault",
               failSnapshotQuiescedOnly=True)
    info = wait_task(fine.CreateSnapshot_Task("q", "", False, True))
    assert info.state == "error" and isinstance(info.error, vim.fault.ApplicationQuiesceFault)
    assert wait_task(fine.CreateSnapshot_Task("crash", "", False, False)).state == "success"
    assert wait_task(failing.CreateSnapshot_Task("s", "", False, True)).state == "success"


def test_bad_fault_settings_are_refused(start_vcsim: StartVcsim) -> None:
    sim = start_vcsim(vms=1)
    with pytest.raises(Exception, match="400"):
        sim.faults(failSnapshotFault="NoSuchFault")
    with pytest.raises(Exception, match="400"):
        sim.faults(failSnapshot="(unclosed")
    assert sim.faults()["failSnapshotFault"] == "FileFault"


def test_slow_tasks_stay_running_for_the_delay(start_vcsim: StartVcsim) -> None:
    sim = start_vcsim("--task-delay", "400", "--task-delay-match", "Snapshot", vms=1)
    vm = sim.vm("DC0_C0_RP0_VM0")
    started = time.monotonic()
    task = vm.CreateSnapshot_Task("slow", "", False, False)
    assert task.info.state == "running"
    WaitForTask(task)
    assert time.monotonic() - started >= 0.4
    assert vm.snapshot.currentSnapshot._moId == task.info.result._moId
    # Other tasks are not delayed.
    started = time.monotonic()
    WaitForTask(vm.PowerOffVM_Task())
    assert time.monotonic() - started < 0.4


def test_the_patched_snapshot_bugs_stay_fixed(start_vcsim: StartVcsim) -> None:
    sim = start_vcsim(vms=1)
    vm = sim.vm("DC0_C0_RP0_VM0")
    vm_dir = next(Path(sim.info["dataDir"]).glob("*/DC0_C0_RP0_VM0"))
    disk_files = {"disk1.vmdk", "disk1-flat.vmdk"}

    def take(name: str) -> Any:
        task = vm.CreateSnapshot_Task(name, "", False, False)
        WaitForTask(task)
        return task.info.result

    first = take("first")
    second = take("second")
    take("third")
    assert len(list(vm_dir.glob("*.vmsn"))) == 3
    # Patch 2: a snapshot-level task names the VM, so pyVim's WaitForTask works.
    task = second.RemoveSnapshot_Task(removeChildren=True)
    WaitForTask(task)
    assert task.info.entity._moId == vm._moId
    # Patch 3: the subtree's files go, the VM's disk stays, file names keep the VM dir.
    assert len(list(vm_dir.glob("*.vmsn"))) == 1
    assert disk_files <= set(os.listdir(vm_dir))
    names = [f.name for f in vm.layoutEx.file]
    assert all(n.startswith("[LocalDS_0] DC0_C0_RP0_VM0/") for n in names), names
    WaitForTask(first.RemoveSnapshot_Task(removeChildren=False))
    assert disk_files <= set(os.listdir(vm_dir)) and not list(vm_dir.glob("*.vmsn"))
    # Patch 1: reading an unset property through a lazy accessor gives None, not a crash.
    assert vm.snapshot is None
    assert vm.name == "DC0_C0_RP0_VM0"

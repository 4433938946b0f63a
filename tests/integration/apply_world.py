"""A small estate for apply tests: a fresh simulator, a host config, a policy directory,
an export target directory and an SQLite state file — all real, all under tmp_path."""

from __future__ import annotations

import io
import json
import os
import textwrap
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyVmomi import vim

from reconciler.adapters.datastore import (
    DatastoreFile,
    RangeReader,
    parse_datastore_path,
    upload,
)
from reconciler.adapters.repository import Repository
from reconciler.adapters.vsphere import VSphereClient
from reconciler.adapters.vsphere_tls import endpoint_of, pin_of, pinned_connection, ssl_context
from reconciler.cli import main
from reconciler.model import VM, ExportPoint

from .conftest import Simulator

POLICY = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata:
  name: {name}
spec:
  vcenter: sim
  selector:
    include:
      names: {names}
  schedule:
    cron: "0 1 * * *"
    timezone: UTC
  consistency:
    mode: {mode}
  snapshots:
    keep: {{last: {snapshots}}}
  exports:
    target: local
    keep: {{daily: {daily}}}
"""


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Estate:
    def __init__(self, sim: Simulator, root: Path, *, max_deletes: int = 50) -> None:
        self.sim = sim
        self.root = root
        self.policies = root / "policies"
        self.policies.mkdir(parents=True)
        self.target = root / "target"
        self.config = root / "vmkeep.yaml"
        self.write_config(max_deletes)
        self.set_policy()

    def write_config(self, max_deletes: int) -> None:
        self.config.write_text(textwrap.dedent(f"""\
            vcenters:
              sim:
                url: "{self.sim.url}"
                username: {self.sim.username}
                passwordEnv: VMKEEP_SIM_PASSWORD
                caFile: "{self.sim.ca_file}"
            targets:
              local: {{type: directory, path: "{self.target}"}}
            state: "{self.root / 'state.db'}"
            limits: {{maxDeletesPerRun: {max_deletes}, concurrentExports: 2,
                      concurrentSnapshotsPerHost: 2}}
            hooks: {{}}
            """))

    def set_policy(self, *, name: str = "gold", names: Sequence[str] = ("*",),
                   mode: str = "crash", snapshots: int = 2, daily: int = 7) -> None:
        for old in self.policies.glob("*.yaml"):
            old.unlink()
        (self.policies / f"{name}.yaml").write_text(POLICY.format(
            name=name, names=json.dumps(list(names)), mode=mode, snapshots=snapshots,
            daily=daily))

    # ------------------------------------------------------------------ commands

    def vmkeep(self, *args: str) -> Run:
        out, err = io.StringIO(), io.StringIO()
        os.environ["VMKEEP_SIM_PASSWORD"] = self.sim.password
        with redirect_stdout(out), redirect_stderr(err):
            code = main([*args, "--config", str(self.config)])
        return Run(code, out.getvalue(), err.getvalue())

    def apply(self, now: str, *extra: str) -> Run:
        return self.vmkeep("apply", "--policies", str(self.policies), "--now", now,
                           "--auto-approve", *extra)

    def plan(self, now: str, *extra: str) -> Run:
        return self.vmkeep("plan", "--policies", str(self.policies), "--now", now, "-o", "json",
                           *extra)

    # ------------------------------------------------------------------ reality

    def client(self) -> VSphereClient:
        return VSphereClient(self.sim.config(), self.sim.password)

    def vms(self) -> dict[str, VM]:
        with self.client() as client:
            return {vm.name: vm for vm in client.inventory().vms}

    def points(self) -> list[ExportPoint]:
        if not self.target.exists():
            return []
        with Repository.open(self.target, create=False) as repo:
            return sorted(repo.points(), key=lambda p: p.id)

    def read_point_disk(self, point_id: str, disk: str) -> bytes:
        with Repository.open(self.target, create=False) as repo:
            out = io.BytesIO()
            repo.open_disk(point_id, disk).read_into(out)
            return out.getvalue()

    def flat_file(self, vm: VM) -> tuple[DatastoreFile, Any, str]:
        """The VM's first disk's data file, a connection factory and a session cookie."""
        config = self.sim.config()
        endpoint = endpoint_of(config)
        connect = pinned_connection(ssl_context(config), pin_of(config), connect_timeout=10,
                                    read_timeout=60)
        datastore, path = parse_datastore_path(vm.disks[0].file)
        extent = path[: -len(".vmdk")] + "-flat.vmdk"
        file = DatastoreFile("sim", endpoint.host, endpoint.port, "DC0", datastore, extent)
        return file, connect, str(self.sim.admin().sessionManager._stub.cookie)

    def fill_disk(self, vm: VM, data: bytes) -> None:
        """Write `data` into the VM's first disk through the datastore HTTP interface."""
        file, connect, cookie = self.flat_file(vm)
        step = 1 << 20
        upload(file, connect, cookie,
               (data[i : i + step] for i in range(0, len(data), step)), len(data))

    def disk_bytes(self, vm: VM) -> bytes:
        """The VM's first disk's data, read back over the datastore HTTP interface."""
        file, connect, cookie = self.flat_file(vm)
        with RangeReader(file, connect, cookie) as reader:
            return reader.read()

    def grow_disk(self, vm: VM, size: int) -> None:
        """Set the VM's first disk capacity (the simulator does not resize files)."""
        ref = self.sim.vm(vm.name)
        disk: Any = next(d for d in ref.config.hardware.device
                    if isinstance(d, vim.vm.device.VirtualDisk))
        disk.capacityInKB = size // 1024
        disk.capacityInBytes = size
        spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=disk)])
        wait(ref.ReconfigVM_Task(spec=spec))

    def add_user_snapshot(self, vm: VM, name: str = "before-upgrade") -> None:
        wait(self.sim.vm(vm.name).CreateSnapshot_Task(name=name, description="mine",
                                                      memory=False, quiesce=False))

    def make_delta_disk(self, vm: VM, parent: str) -> None:
        """Give the VM's first disk a parent backing, as a snapshot chain below it would."""
        ref = self.sim.vm(vm.name)
        disk: Any = next(d for d in ref.config.hardware.device
                         if isinstance(d, vim.vm.device.VirtualDisk))
        disk.backing.parent = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=parent, diskMode="persistent")
        spec = vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=disk)])
        wait(ref.ReconfigVM_Task(spec=spec))

    def power_off(self, vm: VM) -> None:
        wait(self.sim.vm(vm.name).PowerOffVM_Task())

    def enable_change_tracking(self, vm: VM) -> None:
        wait(self.sim.vm(vm.name).ReconfigVM_Task(
            spec=vim.vm.ConfigSpec(changeTrackingEnabled=True)))

    def rename(self, vm: VM, new: str) -> None:
        wait(self.sim.vm(vm.name).Rename_Task(newName=new))


def wait(task: Any) -> Any:
    import time

    for _ in range(500):
        state = task.info.state
        if state == "success":
            return task.info.result
        if state == "error":
            raise RuntimeError(task.info.error)
        time.sleep(0.02)
    raise TimeoutError(task)

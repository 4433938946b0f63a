"""`vmkeep restore --vcenter` killed with SIGKILL at each stage, then `restore` or `apply` again.

A trial starts a restore of the same export under a new name and kills it when the journal
(the real state DB, read-only) shows the stage the trial aims at: the intent written, the VM
created (its moref journaled), the VM built (every disk in), or a temporary VM seen in the
simulator. The next run — a restore (even trials) or an apply (odd ones) — must leave no
temporary VM, no directory without a VM and no open restore in the journal; the restore is
then run to its end and its disk compared.

Trials: $VMKEEP_RESTORE_KILL_TRIALS (default 10).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pyVmomi import vim

from .apply_world import Estate
from .conftest import REPO, StartVcsim
from .test_restore_vcenter import read_disk, vm_names

pytestmark = pytest.mark.vcsim

TRIALS = int(os.environ.get("VMKEEP_RESTORE_KILL_TRIALS", "10"))
DAY1 = "2026-11-25T01:30:00Z"
MiB = 1 << 20
VM0 = "DC0_C0_RP0_VM0"


def journal(estate: Estate) -> dict[str, object] | None:
    """The newest restore's journal details, read-only (None before there is one)."""
    db = estate.root / "state.db"
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT details, status, error FROM actions WHERE "
                               "kind='restore.vcenter' ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        return None  # the schema is being made
    return None if row is None else {**json.loads(row[0]), "status": row[1], "note": row[2]}


def open_restores(estate: Estate) -> int:
    with sqlite3.connect(f"file:{estate.root / 'state.db'}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM actions WHERE kind='restore.vcenter' AND "
                                "status='started'").fetchone()[0])


def vm_directories(estate: Estate) -> tuple[set[str], set[str]]:
    """(directories on LocalDS_0, directories some VM's .vmx is in)."""
    content = estate.sim.admin()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        used = {vm.config.files.vmPathName.split("] ", 1)[1].split("/")[0] for vm in view.view}
        ds = view.view[0].datastore[0]
    finally:
        view.DestroyView()
    root = Path(ds.info.url)
    return {p.name for p in root.iterdir() if p.is_dir()}, used


def spawn(estate: Estate, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VMKEEP_SIM_PASSWORD": estate.sim.password}
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler", *args, "--config", str(estate.config)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


STAGES: list[tuple[str, Callable[[Estate, str], bool]]] = [
    ("intent journaled", lambda e, name: (journal(e) or {}).get("final") == name),
    ("VM created", lambda e, name: "moref" in (journal(e) or {})
     and (journal(e) or {}).get("final") == name),
    ("temporary VM seen", lambda e, name: any(n.startswith(f"{name}.vmkeep-restore-")
                                              for n in vm_names(e))),
    ("every disk in", lambda e, name: bool((journal(e) or {}).get("built"))
     and (journal(e) or {}).get("final") == name),
]


def test_a_killed_restore_leaves_nothing_once_the_next_restore_or_apply_ran(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = Estate(start_vcsim(vms=2), tmp_path)
    estate.set_policy(names=[VM0])
    vm = estate.vms()[VM0]
    estate.grow_disk(vm, 24 * MiB)
    data = os.urandom(8 * MiB) + bytes(8 * MiB) + os.urandom(8 * MiB)
    estate.fill_disk(vm, data)
    assert estate.apply(DAY1).code == 0
    killed = 0
    for trial in range(TRIALS):
        name = f"copy{trial}"
        stage, reached = STAGES[trial % len(STAGES)]
        proc = spawn(estate, "restore", "--vm", VM0, "--vcenter", "sim", "--name", name)
        while proc.poll() is None and not reached(estate, name):
            time.sleep(0.002)  # leave the restore the CPU
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        if trial % 2:
            run = estate.apply(DAY1)
            assert run.code == 0, run.err
        else:
            run = estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim", "--name", name)
            assert run.code == 0, (stage, run.err)
        assert not [n for n in vm_names(estate) if "vmkeep-restore" in n], stage
        assert open_restores(estate) == 0, stage
        if trial % 2:
            assert estate.vmkeep("restore", "--vm", VM0, "--vcenter", "sim", "--name",
                                 name).code == 0
        directories, used = vm_directories(estate)
        assert directories == used, stage
        assert read_disk(estate, name) == data, stage
    assert killed >= TRIALS // 2  # most trials were really interrupted


def test_a_restore_killed_while_replacing_gives_the_old_vm_back_its_name_and_power(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = Estate(start_vcsim(vms=2), tmp_path)
    estate.set_policy(names=[VM0])
    vm = estate.vms()[VM0]
    estate.grow_disk(vm, 8 * MiB)
    estate.fill_disk(vm, os.urandom(8 * MiB))
    assert estate.apply(DAY1).code == 0
    killed = 0
    for _ in range(2):
        before = (journal(estate) or {}).get("temporary")
        proc = spawn(estate, "restore", "--vm", VM0, "--vcenter", "sim", "--replace",
                     "--now", "2026-11-25T09:00:00Z")
        while proc.poll() is None and not (
                (now := journal(estate) or {}).get("temporary") != before and "aside" in now):
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        run = estate.apply(DAY1)
        assert run.code == 0, run.err
        assert not [n for n in vm_names(estate) if "vmkeep-restore" in n]
        assert open_restores(estate) == 0
        note = str((journal(estate) or {}).get("note"))
        if "back to" in note:  # killed between the move aside and the new VM's rename
            original = estate.sim.vm(VM0)
            assert original.config.instanceUuid == vm.instance_uuid
            assert original.runtime.powerState == "poweredOn"
            assert f"{VM0}.replaced-20261125T090000Z" not in vm_names(estate)
        else:  # killed before the move, or after the new VM had the name
            assert VM0 in vm_names(estate)
    assert killed

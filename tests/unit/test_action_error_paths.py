"""Error paths of one action that backup scripts always got wrong, against the unit fakes.

Each test pins one failure: a VM left off after a retried power-on, a temporary export
snapshot left behind, a post hook skipped, a consistency recorded wrongly (powered-off VM
under quiesce, suspended VM under poweroff), a refused guest shutdown not named, a busy
vCenter fault not retried, a run's report lost to a garbage collection that cannot run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from reconciler.adapters.vsphere import VSphereClient, VSphereOperations
from reconciler.errors import RepositoryLockedError, TransientError, VCenterError
from reconciler.executor import execute
from reconciler.markers import MarkerKind, parse_marker
from reconciler.model import (
    VM,
    ActionKind,
    ConsistencyMode,
    Duration,
    Fallback,
    Limits,
    Plan,
    PowerState,
    VCenterConfig,
)

from .fakes import T0
from .test_executor import lose_first_snapshot_answer, world

# --------------------------------------------------------------------------- hooks


def test_every_post_hook_runs_even_when_an_earlier_post_hook_fails(tmp_path: Path) -> None:
    w = world(tmp_path, post_hooks=("thaw", "notify"))
    w.hooks.failing.add("thaw")
    w.vc.add("db")
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "db"))
    assert outcome.status == "failed"
    assert "post hook 'thaw' failed" in outcome.message
    assert w.hooks.ran == [("thaw", "post"), ("notify", "post")]


def test_post_hooks_run_when_a_later_pre_hook_fails_after_an_earlier_one_ran(
    tmp_path: Path,
) -> None:
    # freeze-db ran (the database is frozen); freeze-app failed: thaw must still run.
    w = world(tmp_path, pre_hooks=("freeze-db", "freeze-app"), post_hooks=("thaw",))
    w.hooks.failing.add("freeze-app")
    w.vc.add("db")
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "db"))
    assert outcome.status == "failed"
    assert "pre hook 'freeze-app' failed" in outcome.message
    assert w.vc.calls == []  # the VM was not touched
    assert w.hooks.ran == [("freeze-db", "pre"), ("freeze-app", "pre"), ("thaw", "post")]


# --------------------------------------------------------------------------- temporary snapshots


def test_a_failing_post_hook_does_not_leave_the_exports_temporary_snapshot(tmp_path: Path) -> None:
    w = world(tmp_path, post_hooks=("thaw",))
    w.hooks.failing.add("thaw")
    w.vc.add("web")
    outcome = w.runner.run(w.action(ActionKind.EXPORT_CREATE, "web"))
    assert outcome.status == "failed"
    assert "post hook 'thaw' failed" in outcome.message
    assert w.vc.vms["uuid-web"].snapshots == []
    assert w.store.committed == {}


def test_an_export_retried_after_a_lost_snapshot_answer_leaves_no_temporary_snapshot(
    tmp_path: Path,
) -> None:
    w = world(tmp_path)
    w.vc.add("web")
    lose_first_snapshot_answer(w)
    outcome = w.runner.run(w.action(ActionKind.EXPORT_CREATE, "web"))
    assert outcome.status == "done", outcome.message
    assert w.vc.vms["uuid-web"].snapshots == []


def test_an_export_retried_after_its_snapshot_removal_failed_removes_the_snapshot(
    tmp_path: Path,
) -> None:
    w = world(tmp_path)
    w.vc.add("web")
    real_remove = w.vc.remove_snapshot
    calls: list[str] = []

    def flaky(vm: VM, snapshot_id: str) -> None:
        calls.append(snapshot_id)
        if len(calls) == 1:  # refused before vCenter did anything
            raise TransientError("sim", "connection refused")
        real_remove(vm, snapshot_id)

    w.vc.remove_snapshot = flaky  # type: ignore[method-assign]
    outcome = w.runner.run(w.action(ActionKind.EXPORT_CREATE, "web"))
    assert outcome.status in ("done", "noop"), outcome.message
    assert "gold/uuid-web/20261125T010000Z" in w.store.committed
    assert w.vc.vms["uuid-web"].snapshots == []


# --------------------------------------------------------------------------- power


@pytest.mark.parametrize("kind", [ActionKind.SNAPSHOT_CREATE, ActionKind.EXPORT_CREATE])
def test_a_vm_is_powered_back_on_when_its_power_on_failed_and_the_action_was_retried(
    tmp_path: Path, kind: ActionKind
) -> None:
    w = world(tmp_path, mode=ConsistencyMode.POWEROFF)
    w.vc.add("app")
    real_power_on = w.vc.power_on
    calls: list[str] = []

    def flaky(vm: VM) -> None:
        calls.append(vm.name)
        if len(calls) == 1:  # refused before vCenter did anything
            raise TransientError("sim", "connection refused")
        real_power_on(vm)

    w.vc.power_on = flaky  # type: ignore[method-assign]
    outcome = w.runner.run(w.action(kind, "app"))
    assert w.vc.vms["uuid-app"].power is PowerState.ON
    assert outcome.status in ("done", "noop"), outcome.message
    kinds = [parse_marker(s.name, s.description) for s in w.vc.vms["uuid-app"].snapshots]
    assert all(m is not None and m.kind is MarkerKind.POINT for m in kinds)


# --------------------------------------------------------------------------- consistency


@pytest.mark.parametrize("fallback", [Fallback.FAIL, Fallback.CRASH])
def test_quiescing_a_powered_off_vm_is_not_needed_and_records_poweroff(
    tmp_path: Path, fallback: Fallback
) -> None:
    # Tools never run in a powered-off VM, and vSphere ignores quiescing for one: its
    # snapshot is as consistent as it gets, not a failure nor a crash-consistent fallback.
    w = world(tmp_path, mode=ConsistencyMode.QUIESCE, fallback=fallback)
    w.vc.add("cold", power=PowerState.OFF, tools=False)
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "cold"))
    assert outcome.status == "done", outcome.message
    assert outcome.consistency == "poweroff"
    assert w.vc.vms["uuid-cold"].power is PowerState.OFF


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("fault", [vim.fault.TaskInProgress, vim.fault.ConcurrentAccess])
def test_a_busy_fault_raised_by_a_mutating_call_is_transient(fault: Any) -> None:
    client = VSphereClient(
        VCenterConfig(name="vc", url="https://vc.example.com/sdk", username="u"), "pw"
    )
    client._ensure_session = lambda: None  # type: ignore[method-assign]
    ops = VSphereOperations(client)

    def busy() -> None:
        raise fault(msg="another task is in progress")

    with pytest.raises(TransientError, match=fault.__name__.rsplit(".", 1)[-1]):
        ops._mutate("power on VM 'app'", busy)


def test_poweroff_mode_records_a_suspended_vm_as_crash_consistent_and_leaves_it_suspended(
    tmp_path: Path,
) -> None:
    # A suspended guest's unwritten data is in its memory image, which an export does not
    # read: its disks are crash-consistent, not those of a guest that shut down.
    w = world(tmp_path, mode=ConsistencyMode.POWEROFF)
    w.vc.add("sleepy", power=PowerState.SUSPENDED)
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "sleepy"))
    assert outcome.status == "done", outcome.message
    assert outcome.consistency == "crash"
    assert [c[0] for c in w.vc.calls] == ["create_snapshot"]
    assert w.vc.vms["uuid-sleepy"].power is PowerState.SUSPENDED


def test_a_refused_guest_shutdown_is_named_in_the_failure(tmp_path: Path) -> None:
    w = world(tmp_path, mode=ConsistencyMode.POWEROFF,
              shutdown_timeout=Duration(minutes=1, text="1m"))
    w.vc.add("app", tools=False)

    def refused(vm: VM) -> None:
        raise VCenterError("sim", f"shut down the guest of VM {vm.name!r}: ToolsUnavailable")

    w.vc.shutdown_guest = refused  # type: ignore[method-assign]
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "app"))
    assert outcome.status == "failed"
    assert "ToolsUnavailable" in outcome.message
    assert w.vc.vms["uuid-app"].power is PowerState.ON


# --------------------------------------------------------------------------- the run


def test_a_garbage_collection_that_cannot_run_does_not_lose_the_runs_report(tmp_path: Path) -> None:
    # The actions are done (a point deleted): gc finding the target locked by a `vmkeep gc`
    # elsewhere leaves garbage for later, not a run that reports an error before any action.
    w = world(tmp_path)
    w.vc.add("web")
    w.runner.run(w.action(ActionKind.EXPORT_CREATE, "web"))

    def locked() -> None:
        raise RepositoryLockedError("repository '/nas' is locked by host-2/4242 (gc)")

    w.store.gc = locked  # type: ignore[method-assign]
    plan = Plan(1, "rev-1", "digest", T0, (w.action(ActionKind.EXPORT_DELETE, "web"),))
    report = execute(plan, w.runner, Limits())
    assert [o.status for o in report.outcomes] == ["done"]
    assert w.store.committed == {}

"""Taking a consistent snapshot: hooks, quiescing with fallback, power-off and power-on.

This is the part of the old backup scripts that needed the most error handling, done once:

* `crash`    — snapshot the running VM, no memory, no quiescing.
* `quiesce`  — snapshot with VMware Tools quiescing. When Tools are not running, or the
  quiesced snapshot fails, `fallback: crash` takes a crash-consistent one instead (and says
  so); `fallback: fail` fails the action. A powered-off VM needs no quiescing: its snapshot
  is recorded as `poweroff`.
* `poweroff` — shut the guest down, wait up to `shutdownTimeout`, power off hard only when
  `hardPowerOff` allows it, snapshot, and **power the VM back on only if it was on** — also
  when anything in between failed. The intent to power on is journaled *before* the
  shutdown, so a crash of vmkeep itself is repaired by the next run. A suspended VM is left
  suspended: its disks lack what its memory image holds, so its snapshot is recorded `crash`.

Pre hooks run first; a failing pre hook stops the action before the VM is touched. Post hooks
run after, whenever the pre hooks ran (also when a later pre hook failed after an earlier one
ran), each of them even when another fails. The snapshot is all that happens while the VM is
off: an export reads from it after the VM is back up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from reconciler.errors import HookError, ShutdownTimedOut, VCenterError
from reconciler.model import VM, ConsistencyMode, Fallback, Policy, PowerState
from reconciler.ports import HookRunner, VCenterOps

__all__ = ["ShutdownTimedOut", "SnapshotRequest", "SnapshotTaken", "take_consistent_snapshot"]

#: How often the power state is polled while waiting for a guest shutdown (seconds).
POLL_SECONDS = 2.0


@dataclass(frozen=True)
class SnapshotRequest:
    """A snapshot to take: `describe(consistency)` gives its marker description."""

    name: str
    describe: Callable[[str], str]


@dataclass(frozen=True)
class SnapshotTaken:
    snapshot_id: str
    consistency: str  # what was achieved: "crash", "quiesce", "poweroff"
    note: str = ""  # e.g. why a quiesced snapshot fell back to crash-consistent


def _duration_seconds(policy: Policy) -> float:
    d = policy.consistency.shutdown_timeout
    days = d.years * 365 + d.months * 30 + d.weeks * 7 + d.days
    return float(((days * 24 + d.hours) * 60 + d.minutes) * 60)


def _hook_environment(policy: Policy, vm: VM, phase: str, point_id: str,
                      consistency: str = "") -> dict[str, str]:
    """`VMKEEP_CONSISTENCY` is the level asked for in a pre hook and the level achieved in a
    post hook (a quiesce that fell back says `crash`); a post hook after a failed snapshot
    gets the level that was asked for."""
    return {
        "VMKEEP_PHASE": phase,
        "VMKEEP_POLICY": policy.name,
        "VMKEEP_VM_NAME": vm.name,
        "VMKEEP_VM_INSTANCE_UUID": vm.instance_uuid,
        "VMKEEP_POINT_ID": point_id,
        "VMKEEP_CONSISTENCY": consistency or policy.consistency.mode.value,
    }


def take_consistent_snapshot(
    vc: VCenterOps,
    vm: VM,
    policy: Policy,
    request: SnapshotRequest,
    *,
    point_id: str,
    hooks: HookRunner,
    note_power_off: Callable[[bool], None],
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> SnapshotTaken:
    """Run hooks and the policy's consistency mode around one snapshot of `vm`.

    `note_power_off(True)` is called before vmkeep powers the VM off and
    `note_power_off(False)` once it is back on, so the journal knows what to repair.
    """
    for index, name in enumerate(policy.consistency.pre_hooks):
        try:
            hooks.run(name, _hook_environment(policy, vm, "pre", point_id))
        except HookError as exc:
            if index:  # earlier pre hooks did their part (froze something): undo it
                _run_post_hooks(hooks, policy, vm, point_id, quiet=True)
            raise HookError(f"pre hook {name!r} failed, VM left untouched: {exc}") from None
    try:
        mode = policy.consistency.mode
        if mode is ConsistencyMode.POWEROFF:
            taken = _with_power_off(vc, vm, policy, request, note_power_off, sleep, clock)
        elif mode is ConsistencyMode.QUIESCE:
            taken = _quiesced(vc, vm, policy, request)
        else:
            sid = vc.create_snapshot(vm, request.name, request.describe("crash"), memory=False,
                                     quiesce=False)
            taken = SnapshotTaken(sid, "crash")
    except BaseException:
        _run_post_hooks(hooks, policy, vm, point_id, quiet=True)
        raise
    _run_post_hooks(hooks, policy, vm, point_id, quiet=False, consistency=taken.consistency)
    return taken


def _run_post_hooks(hooks: HookRunner, policy: Policy, vm: VM, point_id: str, *,
                    quiet: bool, consistency: str = "") -> None:
    """Post hooks always run once the pre hooks did, every one of them even when one fails;
    the first failure is raised after the last ran, unless `quiet` keeps an earlier error in
    front."""
    failure: HookError | None = None
    for name in policy.consistency.post_hooks:
        try:
            hooks.run(name, _hook_environment(policy, vm, "post", point_id, consistency))
        except HookError as exc:
            failure = failure or HookError(f"post hook {name!r} failed: {exc}")
    if failure is not None and not quiet:
        raise failure


def _quiesced(vc: VCenterOps, vm: VM, policy: Policy, request: SnapshotRequest) -> SnapshotTaken:
    fallback = policy.consistency.fallback
    if vm.power_state is PowerState.OFF:  # nothing to quiesce: vSphere ignores it then too
        sid = vc.create_snapshot(vm, request.name, request.describe("poweroff"), memory=False,
                                 quiesce=False)
        return SnapshotTaken(sid, "poweroff", "VM is powered off")
    if not vm.tools_running:
        why = ("VMware Tools are not installed" if vm.tools_status == "notInstalled"
               else "VMware Tools are not running")
        if fallback is Fallback.CRASH:
            sid = vc.create_snapshot(vm, request.name, request.describe("crash"), memory=False,
                                     quiesce=False)
            return SnapshotTaken(sid, "crash", f"{why}: fell back to crash")
        raise VCenterError(
            vc.name,
            f"VM {vm.name!r}: {why}, cannot quiesce "
            "(set consistency.fallback: crash to accept a crash-consistent snapshot)",
        )
    try:
        sid = vc.create_snapshot(vm, request.name, request.describe("quiesce"), memory=False,
                                 quiesce=True)
        return SnapshotTaken(sid, "quiesce")
    except VCenterError as exc:
        if exc.transient or fallback is not Fallback.CRASH:
            raise
        sid = vc.create_snapshot(vm, request.name, request.describe("crash"), memory=False,
                                 quiesce=False)
        return SnapshotTaken(sid, "crash", f"quiescing failed ({exc.message}): fell back to crash")


def _with_power_off(
    vc: VCenterOps,
    vm: VM,
    policy: Policy,
    request: SnapshotRequest,
    note_power_off: Callable[[bool], None],
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> SnapshotTaken:
    was_on = vm.power_state is PowerState.ON
    if vm.power_state is PowerState.SUSPENDED:  # left so; its disks lack what memory holds
        sid = vc.create_snapshot(vm, request.name, request.describe("crash"), memory=False,
                                 quiesce=False)
        return SnapshotTaken(sid, "crash", "VM is suspended: its disks are crash-consistent")
    if not was_on:
        sid = vc.create_snapshot(vm, request.name, request.describe("poweroff"), memory=False,
                                 quiesce=False)
        return SnapshotTaken(sid, "poweroff", "VM was already powered off")
    note_power_off(True)
    still_going_down = False
    try:
        _shut_down(vc, vm, policy, sleep, clock)
        sid = vc.create_snapshot(vm, request.name, request.describe("poweroff"), memory=False,
                                 quiesce=False)
        return SnapshotTaken(sid, "poweroff")
    except ShutdownTimedOut as exc:
        still_going_down = exc.requested
        raise
    finally:
        _power_back_on(vc, vm)
        if not still_going_down:
            # A guest that accepted the shutdown and was not off by the timeout may still go
            # down later: the journal keeps our intent, and the next run's repair powers the
            # VM on if it finds it off.
            note_power_off(False)


def _shut_down(
    vc: VCenterOps,
    vm: VM,
    policy: Policy,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> None:
    timeout = _duration_seconds(policy)
    refused = ""
    try:
        vc.shutdown_guest(vm)
    except VCenterError as exc:  # e.g. Tools not running: fall through to waiting / hard off
        if exc.transient:
            raise
        refused = f"; the guest shutdown was refused: {exc.message}"
    deadline = clock() + timeout
    while True:
        current = vc.find_vm(vm.instance_uuid)
        if current is None:
            raise VCenterError(vc.name, f"VM {vm.name!r} disappeared while shutting down")
        if current.power_state is PowerState.OFF:
            return
        if clock() >= deadline:
            break
        sleep(min(POLL_SECONDS, max(0.0, deadline - clock())))
    if not policy.consistency.hard_power_off:
        raise ShutdownTimedOut(
            vc.name,
            not refused,
            f"VM {vm.name!r} did not shut down within {policy.consistency.shutdown_timeout}"
            f"{refused} (set consistency.hardPowerOff: true to power it off hard after the "
            "timeout)",
        )
    vc.power_off(vm)


def _power_back_on(vc: VCenterOps, vm: VM) -> None:
    current = vc.find_vm(vm.instance_uuid)
    if current is not None and current.power_state is not PowerState.ON:
        vc.power_on(vm)


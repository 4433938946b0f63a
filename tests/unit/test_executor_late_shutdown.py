"""A guest that accepted the shutdown but was not off by `shutdownTimeout` (no hard power-off)
may still go down after the action gave up: the next run's repair powers it back on."""

from __future__ import annotations

from pathlib import Path

from reconciler.adapters.statedb import ActionStatus
from reconciler.executor import OutcomeStatus
from reconciler.model import ActionKind, ConsistencyMode, Duration, PowerState
from reconciler.recovery import Recovery

from .test_executor import World, world


def late(tmp_path: Path) -> World:
    w = world(tmp_path, mode=ConsistencyMode.POWEROFF,
              shutdown_timeout=Duration(minutes=1, text="1m"))
    w.vc.add("slow", shuts_down=False)
    return w


def repair(w: World) -> list[str]:
    return Recovery(w.db, {"sim": w.vc}, {}, lambda: 2.0).run(
        w.db.unfinished_actions(), {"sim": []}, w.db.failed_with_vm_shut_down())


def test_a_guest_that_goes_down_after_the_timeout_is_powered_on_by_the_next_run(
    tmp_path: Path,
) -> None:
    w = late(tmp_path)
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "slow"))
    assert outcome.status == OutcomeStatus.FAILED
    assert "did not shut down within 1m" in outcome.message
    [record] = w.db.failed_with_vm_shut_down()  # the intent is kept: it may still go down
    assert record.vm_name == "slow"

    w.vc.vms["uuid-slow"].power = PowerState.OFF  # the guest finishes its shutdown later
    notes = repair(w)
    assert w.vc.vms["uuid-slow"].power is PowerState.ON
    assert notes == ["powered VM 'slow' back on (its guest finished a shutdown vmkeep had "
                     "asked for after the action gave up waiting)"]
    assert w.db.failed_with_vm_shut_down() == []  # settled: never powered on twice
    assert [a.status for a in w.db.actions()] == [ActionStatus.FAILED]  # still a failure


def test_a_guest_that_stayed_up_is_left_alone_and_the_intent_settled(tmp_path: Path) -> None:
    w = late(tmp_path)
    w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "slow"))
    assert repair(w) == []
    assert w.vc.vms["uuid-slow"].power is PowerState.ON
    assert ("power_on", "slow") not in w.vc.calls
    assert w.db.failed_with_vm_shut_down() == []
    w.vc.vms["uuid-slow"].power = PowerState.OFF  # switched off later, by someone else
    assert repair(w) == [] and w.vc.vms["uuid-slow"].power is PowerState.OFF


def test_a_refused_shutdown_leaves_nothing_to_repair(tmp_path: Path) -> None:
    w = late(tmp_path)

    def refuse(vm: object) -> None:
        from reconciler.errors import VCenterError

        raise VCenterError("sim", "ToolsUnavailable: VMware Tools are not running")

    w.vc.shutdown_guest = refuse  # type: ignore[method-assign]
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "slow"))
    assert outcome.status == OutcomeStatus.FAILED and "ToolsUnavailable" in outcome.message
    assert w.db.failed_with_vm_shut_down() == []

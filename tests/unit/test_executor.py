"""The executor's decisions, against in-memory fakes of vCenter, target and hooks.

End-to-end behaviour against the simulator lives in tests/integration; here each test pins
one rule: consistency fallbacks, power-on-if-it-was-on, ownership, idempotence, ordering.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.adapters.statedb import StateDB
from reconciler.errors import TransientError, VCenterError
from reconciler.executor import ActionRunner, OutcomeStatus, execute
from reconciler.markers import Marker, MarkerKind, format_description, format_name, point_id
from reconciler.model import (
    Action,
    ActionKind,
    Consistency,
    ConsistencyMode,
    Duration,
    Fallback,
    Limits,
    Plan,
    Policy,
    PowerState,
    Snapshot,
)
from reconciler.recovery import Recovery

from .fakes import T0, FakeClock, FakeHooks, FakeStore, FakeVCenter, make_policy


class World:
    def __init__(self, tmp_path: Path, policy: Policy, vc: FakeVCenter | None = None) -> None:
        self.vc = vc or FakeVCenter()
        self.store = FakeStore()
        self.hooks = FakeHooks()
        self.clock = FakeClock()
        self.db = StateDB(tmp_path / "state.db")
        self.db.start_run("run-1", "test", 0.0)
        self.policy = policy
        self.runner = ActionRunner(
            run_id="run-1",
            policies={policy.name: policy},
            vcenters={"sim": self.vc},
            targets={"local": self.store},
            hooks=self.hooks,
            journal=self.db,
            clock=self.clock,
            sleep=self.clock.sleep,
            policy_revision="rev-1",
        )

    def action(self, kind: ActionKind, vm: str, snapshot_id: str | None = None,
               slot=T0) -> Action:
        state = self.vc.vms[f"uuid-{vm}"]
        return Action(
            kind=kind,
            policy=self.policy.name,
            vcenter="sim",
            vm=self.vc.vm(state).ref,
            point_id=point_id(self.policy.name, state.uuid, slot),
            slot=slot,
            reason="test",
            target="local" if kind.value.startswith("export") else None,
            snapshot_id=snapshot_id,
        )


def world(tmp_path: Path, **consistency: object) -> World:
    return World(tmp_path, make_policy(consistency=Consistency(**consistency)))  # type: ignore[arg-type]


def marked(sid: str, policy: str, uuid: str, kind: MarkerKind = MarkerKind.POINT,
           slot=T0, installation: str | None = None) -> Snapshot:
    marker = Marker(policy, point_id(policy, uuid, slot), slot, kind, installation=installation)
    return Snapshot(sid, format_name(marker), format_description(marker), slot, False)


YESTERDAY = T0 - timedelta(days=1)


def test_a_crash_consistent_snapshot_carries_the_marker_and_its_consistency(tmp_path):
    w = world(tmp_path)
    w.vc.add("web")
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "web"))
    assert outcome.status == OutcomeStatus.DONE
    [snap] = w.vc.vms["uuid-web"].snapshots
    assert snap.name.startswith("vmkeep:gold:")
    assert json.loads(snap.description)["consistency"] == "crash"
    assert json.loads(snap.description)["pointId"] == "gold/uuid-web/20261125T010000Z"


def test_creating_a_snapshot_point_that_exists_is_a_no_op(tmp_path):
    w = world(tmp_path)
    w.vc.add("web")
    action = w.action(ActionKind.SNAPSHOT_CREATE, "web")
    w.runner.run(action)
    again = w.runner.run(action)
    assert again.status == OutcomeStatus.NOOP
    assert len(w.vc.vms["uuid-web"].snapshots) == 1


@pytest.mark.parametrize(
    ("tools", "quiesce_fails", "fallback", "status", "achieved"),
    [
        (True, False, Fallback.FAIL, OutcomeStatus.DONE, "quiesce"),
        (False, False, Fallback.CRASH, OutcomeStatus.DONE, "crash"),
        (False, False, Fallback.FAIL, OutcomeStatus.FAILED, ""),
        (True, True, Fallback.CRASH, OutcomeStatus.DONE, "crash"),
        (True, True, Fallback.FAIL, OutcomeStatus.FAILED, ""),
    ],
    ids=[
        "tools running: quiesced",
        "no tools, fallback crash: crash-consistent",
        "no tools, fallback fail: fails",
        "quiesce fault, fallback crash: crash-consistent",
        "quiesce fault, fallback fail: fails",
    ],
)
def test_quiesce_mode_falls_back_only_when_the_policy_allows(
    tmp_path, tools, quiesce_fails, fallback, status, achieved
):
    w = world(tmp_path, mode=ConsistencyMode.QUIESCE, fallback=fallback)
    w.vc.add("db", tools=tools)
    w.vc.fail_quiesce = quiesce_fails
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "db"))
    assert outcome.status == status
    assert outcome.consistency == achieved
    if status == OutcomeStatus.FAILED:
        assert w.vc.vms["uuid-db"].snapshots == []


@pytest.mark.parametrize(
    ("tools_status", "said"),
    [("notInstalled", "VMware Tools are not installed"),
     ("current", "VMware Tools are not running")],
)
def test_a_quiesce_failure_says_whether_tools_are_missing_or_stopped(tmp_path, tools_status,
                                                                      said):
    w = world(tmp_path, mode=ConsistencyMode.QUIESCE, fallback=Fallback.FAIL)
    w.vc.add("db", tools=False, tools_status=tools_status)
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "db"))
    assert outcome.status == OutcomeStatus.FAILED
    assert f"{said}, cannot quiesce" in outcome.message


def test_poweroff_mode_shuts_down_snapshots_and_powers_back_on(tmp_path):
    w = world(tmp_path, mode=ConsistencyMode.POWEROFF)
    w.vc.add("app")
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "app"))
    assert outcome.status == OutcomeStatus.DONE
    assert outcome.consistency == "poweroff"
    names = [c[0] for c in w.vc.calls]
    assert names == ["shutdown_guest", "create_snapshot", "power_on"]
    assert w.vc.vms["uuid-app"].power is PowerState.ON


def test_poweroff_mode_leaves_a_powered_off_vm_off(tmp_path):
    w = world(tmp_path, mode=ConsistencyMode.POWEROFF)
    w.vc.add("cold", power=PowerState.OFF)
    w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "cold"))
    assert ("power_on", "cold") not in w.vc.calls
    assert w.vc.vms["uuid-cold"].power is PowerState.OFF


def test_poweroff_mode_powers_the_vm_back_on_when_the_snapshot_fails(tmp_path):
    w = world(tmp_path, mode=ConsistencyMode.POWEROFF)
    w.vc.add("app")
    w.vc.fail_snapshot_for.add("app")
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "app"))
    assert outcome.status == OutcomeStatus.FAILED
    assert "FileFault" in outcome.message
    assert w.vc.vms["uuid-app"].power is PowerState.ON


def test_a_guest_that_does_not_shut_down_fails_without_hard_power_off(tmp_path):
    w = world(tmp_path, mode=ConsistencyMode.POWEROFF,
              shutdown_timeout=Duration(minutes=1, text="1m"))
    w.vc.add("stuck", shuts_down=False)
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "stuck"))
    assert outcome.status == OutcomeStatus.FAILED
    assert "did not shut down within 1m" in outcome.message
    assert ("power_off", "stuck") not in w.vc.calls
    assert w.vc.vms["uuid-stuck"].snapshots == []


def test_hard_power_off_after_the_timeout_when_the_policy_allows_it(tmp_path):
    w = world(tmp_path, mode=ConsistencyMode.POWEROFF, hard_power_off=True,
              shutdown_timeout=Duration(minutes=1, text="1m"))
    w.vc.add("stuck", shuts_down=False)
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "stuck"))
    assert outcome.status == OutcomeStatus.DONE
    assert [c[0] for c in w.vc.calls][-3:] == ["power_off", "create_snapshot", "power_on"]
    assert w.vc.vms["uuid-stuck"].power is PowerState.ON


def test_a_failing_pre_hook_stops_the_action_before_the_vm_is_touched(tmp_path):
    w = world(tmp_path, mode=ConsistencyMode.POWEROFF, pre_hooks=("flush",),
              post_hooks=("thaw",))
    w.hooks.failing.add("flush")
    w.vc.add("app")
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "app"))
    assert outcome.status == OutcomeStatus.FAILED
    assert "pre hook 'flush' failed" in outcome.message
    assert w.vc.calls == []
    assert w.hooks.ran == [("flush", "pre")]


def test_post_hooks_run_after_the_snapshot(tmp_path):
    w = world(tmp_path, pre_hooks=("flush",), post_hooks=("thaw",))
    w.vc.add("app")
    w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "app"))
    assert w.hooks.ran == [("flush", "pre"), ("thaw", "post")]


def test_an_export_reads_a_temporary_snapshot_and_removes_it_after_commit(tmp_path):
    w = world(tmp_path)
    w.vc.add("web", disks={2000: b"x" * 1000, 2001: b"y" * 10})
    outcome = w.runner.run(w.action(ActionKind.EXPORT_CREATE, "web"))
    assert outcome.status == OutcomeStatus.DONE, outcome.message
    point, disks, meta = w.store.committed["gold/uuid-web/20261125T010000Z"]
    assert disks == {"disk-2000": b"x" * 1000, "disk-2001": b"y" * 10}
    assert point.consistency == "crash"
    assert w.vc.vms["uuid-web"].snapshots == []
    assert meta["vcenter"] == "sim"


def test_an_export_reuses_the_snapshot_point_of_the_same_slot_and_keeps_it(tmp_path):
    w = world(tmp_path)
    w.vc.add("web")
    w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "web"))
    w.runner.run(w.action(ActionKind.EXPORT_CREATE, "web"))
    assert len(w.vc.vms["uuid-web"].snapshots) == 1
    assert sum(1 for c in w.vc.calls if c[0] == "create_snapshot") == 1


def test_a_failed_export_aborts_the_write_and_removes_its_temporary_snapshot(tmp_path):
    w = world(tmp_path)
    w.vc.add("web")
    w.vc.fail_read = True
    outcome = w.runner.run(w.action(ActionKind.EXPORT_CREATE, "web"))
    assert outcome.status == OutcomeStatus.FAILED
    assert "503" in outcome.message
    assert w.store.committed == {}
    assert w.store.aborted == ["gold/uuid-web/20261125T010000Z"]
    assert w.vc.vms["uuid-web"].snapshots == []


def test_an_existing_export_is_not_written_again(tmp_path):
    w = world(tmp_path)
    w.vc.add("web")
    action = w.action(ActionKind.EXPORT_CREATE, "web")
    w.runner.run(action)
    assert w.runner.run(action).status == OutcomeStatus.NOOP


def test_a_snapshot_without_our_marker_is_never_deleted(tmp_path):
    w = world(tmp_path)
    state = w.vc.add("web")
    state.snapshots.append(Snapshot("snapshot-99", "before upgrade", "", T0, False))
    action = w.action(ActionKind.SNAPSHOT_DELETE, "web", snapshot_id="snapshot-99")
    outcome = w.runner.run(action)
    assert outcome.status == OutcomeStatus.FAILED
    assert "does not carry vmkeep's marker" in outcome.message
    assert len(state.snapshots) == 1


def test_deleting_a_marked_snapshot_removes_it_and_a_second_time_is_a_no_op(tmp_path):
    w = world(tmp_path)
    state = w.vc.add("web")
    state.snapshots.append(marked("snapshot-5", "gold", "uuid-web"))
    action = w.action(ActionKind.SNAPSHOT_DELETE, "web", snapshot_id="snapshot-5")
    assert w.runner.run(action).status == OutcomeStatus.DONE
    assert w.runner.run(action).status == OutcomeStatus.NOOP


def test_every_action_is_journaled_with_its_outcome(tmp_path):
    w = world(tmp_path)
    w.vc.add("web")
    w.vc.fail_snapshot_for.add("web")
    w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "web"))
    [record] = w.db.actions("run-1")
    assert record.status == "failed"
    assert "FileFault" in (record.error or "")
    assert w.db.unfinished_actions() == []


def plan_of(*actions: Action) -> Plan:
    return Plan(1, "rev-1", "digest", T0, tuple(actions))


def test_one_vm_failing_does_not_stop_the_others_and_its_prunes_are_skipped(tmp_path):
    w = world(tmp_path)
    for name in ("a", "b", "c"):
        state = w.vc.add(name)
        state.snapshots.append(marked(f"old-{name}", "gold", f"uuid-{name}", slot=YESTERDAY))
    w.vc.fail_snapshot_for.add("b")
    actions = []
    for name in ("a", "b", "c"):
        actions.append(w.action(ActionKind.SNAPSHOT_CREATE, name))
        old = w.action(ActionKind.SNAPSHOT_DELETE, name, snapshot_id=f"old-{name}",
                       slot=YESTERDAY)
        actions.append(old)
    report = execute(plan_of(*actions), w.runner, Limits())
    by = {(o.action.vm.name, o.action.kind): o.status for o in report.outcomes}
    assert by[("a", ActionKind.SNAPSHOT_CREATE)] == OutcomeStatus.DONE
    assert by[("b", ActionKind.SNAPSHOT_CREATE)] == OutcomeStatus.FAILED
    assert by[("b", ActionKind.SNAPSHOT_DELETE)] == OutcomeStatus.SKIPPED
    assert by[("c", ActionKind.SNAPSHOT_DELETE)] == OutcomeStatus.DONE
    assert [s.id for s in w.vc.vms["uuid-b"].snapshots] == ["old-b"]


def test_export_deletions_are_followed_by_garbage_collection(tmp_path):
    w = world(tmp_path)
    w.vc.add("web")
    w.runner.run(w.action(ActionKind.EXPORT_CREATE, "web"))
    execute(plan_of(w.action(ActionKind.EXPORT_DELETE, "web")), w.runner, Limits())
    assert w.store.committed == {}
    assert w.store.gc_runs == 1


def test_recovery_leaves_a_partial_export_another_writer_is_at_work_on_alone(tmp_path):
    w = world(tmp_path)
    w.store.partial.update({"gold/uuid-app/20261125T010000Z", "gold/uuid-web/20261125T010000Z"})
    w.store.live_partials.add("gold/uuid-web/20261125T010000Z")  # a worker exports it now
    notes = Recovery(w.db, {"sim": w.vc}, {"local": w.store}, lambda: 2.0).run([], {})
    assert w.store.partial == {"gold/uuid-web/20261125T010000Z"}
    assert notes == ["discarded partial export gold/uuid-app/20261125T010000Z in target 'local'"]


def test_recovery_powers_on_what_a_crashed_run_shut_down_and_removes_its_leftovers(tmp_path):
    w = world(tmp_path)
    state = w.vc.add("app", power=PowerState.OFF)
    state.snapshots.append(marked("snapshot-7", "gold", "uuid-app", MarkerKind.EXPORT_TEMP,
                                  installation="inst-a"))
    state.snapshots.append(marked("snapshot-8", "gold", "uuid-app", MarkerKind.POINT))
    w.store.partial.add("gold/uuid-app/20261125T010000Z")
    aid = w.db.record_intent("run-1", kind="export.create", point_id="p", vm_uuid="uuid-app",
                             vm_name="app", vcenter="sim", now=1.0)
    w.db.update_details(aid, {"poweredOffByUs": True})
    notes = Recovery(w.db, {"sim": w.vc}, {"local": w.store}, lambda: 2.0,
                     installation="inst-a").run(w.db.unfinished_actions(),
                                                {"sim": [w.vc.vm(state)]})
    assert state.power is PowerState.ON
    assert [s.id for s in state.snapshots] == ["snapshot-8"]
    assert w.store.partial == set()
    assert len(notes) == 3
    assert w.db.unfinished_actions() == []


def test_recovery_leaves_a_vm_alone_that_vmkeep_did_not_power_off(tmp_path):
    w = world(tmp_path)
    state = w.vc.add("off", power=PowerState.OFF)
    w.db.record_intent("run-1", kind="snapshot.create", point_id="p", vm_uuid="uuid-off",
                       vm_name="off", vcenter="sim", now=1.0)
    Recovery(w.db, {"sim": w.vc}, {}, lambda: 2.0).run(w.db.unfinished_actions(),
                                                       {"sim": [w.vc.vm(state)]})
    assert state.power is PowerState.OFF


def lose_first_snapshot_answer(w: World) -> list[str]:
    """The first CreateSnapshot runs, but its answer is lost on the way back (a transient
    error); returns the names of the snapshots asked for."""
    real_create = w.vc.create_snapshot
    calls: list[str] = []

    def flaky(vm, name, description, *, memory, quiesce):
        calls.append(name)
        sid = real_create(vm, name, description, memory=memory, quiesce=quiesce)
        if len(calls) == 1:
            raise TransientError("sim", "connection reset")
        return sid

    w.vc.create_snapshot = flaky  # type: ignore[method-assign]
    return calls


def test_a_transient_failure_is_retried_and_the_retry_re_reads_reality(tmp_path):
    w = world(tmp_path)
    w.vc.add("web")
    calls = lose_first_snapshot_answer(w)
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "web"))
    assert outcome.status == OutcomeStatus.NOOP
    assert len(calls) == 1
    assert len(w.vc.vms["uuid-web"].snapshots) == 1
    assert w.clock.now > 1_000.0  # it waited before the retry


def test_a_transient_failure_that_persists_fails_the_action(tmp_path):
    w = world(tmp_path)
    w.vc.add("web")

    def down(vm, name, description, *, memory, quiesce):
        raise TransientError("sim", "connection refused")

    w.vc.create_snapshot = down  # type: ignore[method-assign]
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "web"))
    assert outcome.status == OutcomeStatus.FAILED
    assert "connection refused" in outcome.message


def test_deleting_an_incomplete_export_discards_what_it_left(tmp_path):
    w = world(tmp_path)
    w.vc.add("web")
    action = w.action(ActionKind.EXPORT_DELETE, "web")
    w.store.partial.add(action.point_id)
    assert w.runner.run(action).status == OutcomeStatus.DONE
    assert w.store.partial == set()
    assert w.runner.run(action).status == OutcomeStatus.NOOP


class LeasingVCenter(FakeVCenter):
    """Opens disks as an NFC export would: says a lease is asked for, then (unless
    `refuse`) names it and hands out a stream carrying its id."""

    refuse = False

    def open_disk(self, vm, snapshot_id, disk, on_lease=None):
        assert on_lease is not None
        on_lease("")
        if self.refuse:
            raise VCenterError(self.name, "ExportSnapshot timed out")
        on_lease("session[3]lease-1")
        stream = super().open_disk(vm, snapshot_id, disk)
        stream.lease_id = "session[3]lease-1"  # type: ignore[attr-defined]
        return stream


@pytest.mark.parametrize(("refuse", "left"), [
    (True, {"nfcLeaseRequested": True}),  # a kill here would leave a lease nobody can name
    (False, {"nfcLease": None, "nfcLeaseRequested": None}),  # named, then ended and cleared
])
def test_the_journal_says_an_nfc_lease_was_asked_for_before_it_names_it(
    tmp_path, refuse, left,
):
    vc = LeasingVCenter()
    vc.refuse = refuse
    w = World(tmp_path, make_policy(), vc)
    vc.add("web")
    w.runner.run(w.action(ActionKind.EXPORT_CREATE, "web"))
    [record] = w.db.actions("run-1")
    assert {k: v for k, v in record.details.items() if k.startswith("nfcLease")} == left

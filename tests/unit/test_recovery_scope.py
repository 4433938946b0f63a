"""Crash recovery repairs this installation's work only, waits for tasks a killed run left
running, and journals what it did (issue 9 B, F, K), against in-memory fakes of vCenter and
target and a real SQLite journal."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.adapters.statedb import ActionStatus, StateDB
from reconciler.executor import OutcomeStatus
from reconciler.findings import temporary_findings
from reconciler.markers import MarkerKind, parse_marker
from reconciler.model import ActionKind, ObservedState, PowerState
from reconciler.recovery import JournaledRecovery, Recovery, RecoveryError

from .fakes import T0, FakeStore, FakeVCenter
from .test_executor import marked, world

UUID = "uuid-app"


def run_recover(vc: FakeVCenter, db: StateDB, installation: str,
                left: list[str] | None = None) -> list[str]:
    return Recovery(
        db, {"sim": vc}, {}, lambda: 2.0, installation=installation,
        left_alone=(left if left is not None else []).append,
    ).run(db.unfinished_actions(), {"sim": [vc.vm(s) for s in vc.vms.values()]})


def test_recovery_removes_its_own_temporaries_and_leaves_another_installations_alone(
    tmp_path: Path,
) -> None:
    vc, db = FakeVCenter(), StateDB(tmp_path / "state.db")
    state = vc.add("app")
    state.snapshots += [
        marked("snap-mine", "gold", UUID, MarkerKind.EXPORT_TEMP, installation="inst-a"),
        marked("snap-theirs", "gold", UUID, MarkerKind.EXPORT_TEMP, installation="inst-b"),
    ]
    left: list[str] = []
    notes = run_recover(vc, db, "inst-a", left)
    assert [s.id for s in state.snapshots] == ["snap-theirs"]
    assert notes == ["removed leftover export snapshot snap-mine of VM 'app' (sim)"]
    assert len(left) == 1 and "snap-theirs" in left[0] and "installation inst-b" in left[0]


def test_a_temporary_without_an_installation_id_is_removed_only_when_the_journal_knows_it(
    tmp_path: Path,
) -> None:
    vc, db = FakeVCenter(), StateDB(tmp_path / "state.db")
    state = vc.add("app")
    legacy = marked("snap-old", "gold", UUID, MarkerKind.EXPORT_TEMP)
    state.snapshots.append(legacy)
    left: list[str] = []
    assert run_recover(vc, db, "inst-a", left) == []
    assert [s.id for s in state.snapshots] == ["snap-old"]
    assert "unknown installation" in left[0]

    marker = parse_marker(legacy.name, legacy.description)
    assert marker is not None and marker.installation is None  # older markers still parse
    db.start_run("run-1", "test", 0.0)
    aid = db.record_intent("run-1", kind="export.create", point_id=marker.point_id,
                           vm_uuid=UUID, vm_name="app", vcenter="sim", now=1.0)
    db.record_outcome(aid, ActionStatus.DONE, 2.0)
    assert run_recover(vc, db, "inst-a") == [
        "removed leftover export snapshot snap-old of VM 'app' (sim)"]
    assert state.snapshots == []


def test_a_temporary_whose_create_task_was_still_running_is_waited_for_and_removed(
    tmp_path: Path,
) -> None:
    vc, db = FakeVCenter(), StateDB(tmp_path / "state.db")
    state = vc.add("app")
    db.start_run("run-1", "test", 0.0)
    db.record_intent("run-1", kind="export.create", point_id="p", vm_uuid=UUID,
                     vm_name="app", vcenter="sim", now=1.0)
    # The killed run's CreateSnapshot lands only after the inventory was read.
    inventory = [vc.vm(state)]
    vc.in_flight[UUID] = [("CreateSnapshot_Task", lambda: state.snapshots.append(
        marked("snap-late", "gold", UUID, MarkerKind.EXPORT_TEMP, installation="inst-a")))]
    notes = Recovery(db, {"sim": vc}, {}, lambda: 2.0, installation="inst-a").run(
        db.unfinished_actions(), {"sim": inventory})
    assert state.snapshots == []
    assert notes == [
        "waited for CreateSnapshot_Task on VM 'app' (sim), still running from an interrupted run",
        "removed leftover export snapshot snap-late of VM 'app' (sim)",
    ]


def test_a_vm_shut_down_for_a_snapshot_still_being_taken_is_powered_on_after_the_task(
    tmp_path: Path,
) -> None:
    vc, db = FakeVCenter(), StateDB(tmp_path / "state.db")
    state = vc.add("db", power=PowerState.OFF)
    db.start_run("run-1", "test", 0.0)
    aid = db.record_intent("run-1", kind="snapshot.create", point_id="p", vm_uuid="uuid-db",
                           vm_name="db", vcenter="sim", now=1.0)
    db.update_details(aid, {"poweredOffByUs": True})
    order: list[str] = []
    vc.in_flight["uuid-db"] = [("CreateSnapshot_Task", lambda: order.append("snapshot"))]
    real_power_on = vc.power_on
    vc.power_on = lambda vm: (order.append("power on"), real_power_on(vm))  # type: ignore
    run_recover(vc, db, "inst-a")
    assert order == ["snapshot", "power on"]
    assert state.power is PowerState.ON


def test_one_failed_repair_does_not_stop_the_others_and_fails_the_recovery(
    tmp_path: Path,
) -> None:
    vc, db = FakeVCenter(), StateDB(tmp_path / "state.db")
    for name in ("a", "b"):
        vc.add(name).snapshots.append(marked(f"snap-{name}", "gold", f"uuid-{name}",
                                             MarkerKind.EXPORT_TEMP, installation="inst-a"))
    real_remove = vc.remove_snapshot

    def remove(vm, sid):
        if sid == "snap-a":
            from reconciler.errors import VCenterError
            raise VCenterError("sim", "remove snapshot: FileFault")
        real_remove(vm, sid)

    vc.remove_snapshot = remove  # type: ignore[method-assign]
    with pytest.raises(RecoveryError, match="FileFault"):
        run_recover(vc, db, "inst-a")
    assert vc.vms["uuid-b"].snapshots == []


def test_the_journaled_recovery_records_repairs_settles_the_killed_run_and_keeps_failures(
    tmp_path: Path,
) -> None:
    vc, db = FakeVCenter(), StateDB(tmp_path / "state.db")
    store = FakeStore()
    state = vc.add("app")
    db.start_run("killed", "host/1/killed", 0.0)
    done = db.record_intent("killed", kind="snapshot.create", point_id="p1", vm_uuid=UUID,
                            vm_name="app", vcenter="sim", now=1.0)
    db.record_outcome(done, ActionStatus.DONE, 2.0)
    for point in ("p2", "p3"):
        db.record_intent("killed", kind="export.create", point_id=point, vm_uuid=UUID,
                         vm_name="app", vcenter="sim", now=3.0)
    me = db.installation_id()
    state.snapshots.append(marked("snap-t", "gold", UUID, MarkerKind.EXPORT_TEMP,
                                  installation=me))
    observed = ObservedState(captured_at=T0, vcenters={"sim": (vc.vm(state),)}, targets={})
    said: list[str] = []
    notes = JournaledRecovery(db, {"sim": vc}, {"local": store}, lambda: 10.0,
                              said.append).run("host/2/next", "next", observed)
    assert notes == said == [
        "run killed was interrupted: 2 action(s) without an outcome checked for what they left",
        "removed leftover export snapshot snap-t of VM 'app' (sim)",
    ]
    last = db.last_recovery()
    assert last is not None and last.error is None and last.repairs == tuple(notes)
    assert db.interrupted_runs() == []
    assert db.action_counts("killed") == {"done": 1, "reconciled": 2}
    assert db.runs()[0]["repaired_by"] == "next"

    vc.add("b").snapshots.append(marked("snap-b", "gold", "uuid-b", MarkerKind.EXPORT_TEMP,
                                        installation=me))
    vc.remove_snapshot = lambda vm, sid: (_ for _ in ()).throw(  # type: ignore
        __import__("reconciler.errors").errors.VCenterError("sim", "NoPermission"))
    observed = ObservedState(captured_at=T0, vcenters={"sim": tuple(
        vc.vm(s) for s in vc.vms.values())}, targets={})
    with pytest.raises(RecoveryError):
        JournaledRecovery(db, {"sim": vc}, {}, lambda: 20.0).run("host/3/again", "again",
                                                                 observed)
    failed = db.last_recovery()
    assert failed is not None and failed.error is not None and "NoPermission" in failed.error


def test_the_installation_id_is_created_once_and_kept(tmp_path: Path) -> None:
    with StateDB(tmp_path / "state.db") as db:
        first = db.installation_id()
    with StateDB(tmp_path / "state.db") as db:
        assert db.installation_id() == first
    with StateDB(tmp_path / "other.db") as other:
        assert other.installation_id() != first


def test_an_exports_temporary_snapshot_carries_the_installation_and_foreign_ones_are_spared(
    tmp_path: Path,
) -> None:
    w = world(tmp_path)
    w.runner.installation = "inst-a"
    state = w.vc.add("web")
    theirs = marked("snap-theirs", "gold", "uuid-web", MarkerKind.EXPORT_TEMP,
                    installation="inst-b")
    state.snapshots.append(theirs)
    created: list[str] = []
    real_create = w.vc.create_snapshot

    def create(vm, name, description, *, memory, quiesce):
        created.append(description)
        return real_create(vm, name, description, memory=memory, quiesce=quiesce)

    w.vc.create_snapshot = create  # type: ignore[method-assign]
    outcome = w.runner.run(w.action(ActionKind.EXPORT_CREATE, "web"))
    assert outcome.status == OutcomeStatus.DONE
    [description] = created
    assert '"installation":"inst-a"' in description
    assert [s.id for s in state.snapshots] == ["snap-theirs"]  # another's, untouched

    refused = w.runner.run(w.action(ActionKind.SNAPSHOT_DELETE, "web", "snap-theirs"))
    assert refused.status == OutcomeStatus.FAILED and "installation inst-b" in refused.message
    assert [s.id for s in state.snapshots] == ["snap-theirs"]


def test_a_plan_reports_temporaries_with_an_installation_instead_of_deleting_them() -> None:
    vc = FakeVCenter()
    state = vc.add("app")
    state.snapshots += [
        marked("snap-new", "gold", UUID, MarkerKind.EXPORT_TEMP, installation="inst-b"),
        marked("snap-old", "gold", UUID, MarkerKind.EXPORT_TEMP),
    ]
    observed = ObservedState(captured_at=T0, vcenters={"sim": (vc.vm(state),)}, targets={})
    warnings, owned = temporary_findings(observed, T0)
    assert owned == {"snap-new"}
    [warning] = warnings
    assert warning.code == "temporary-snapshot" and "installation inst-b" in warning.message


def test_a_retry_waits_for_the_task_whose_answer_was_lost_and_takes_no_second_snapshot(
    tmp_path: Path,
) -> None:
    # The first CreateSnapshot's answer is lost while vCenter still runs the task: the retry
    # must not re-read the VM before the snapshot lands.
    from reconciler.errors import TransientError

    w = world(tmp_path)
    state = w.vc.add("web")
    names: list[str] = []

    def slow(vm, name, description, *, memory, quiesce):
        names.append(name)
        snapshot = marked("snap-late", "gold", "uuid-web", MarkerKind.POINT)
        w.vc.in_flight["uuid-web"] = [("CreateSnapshot_Task",
                                       lambda: state.snapshots.append(snapshot))]
        raise TransientError("sim", "connection reset")

    w.vc.create_snapshot = slow  # type: ignore[method-assign]
    outcome = w.runner.run(w.action(ActionKind.SNAPSHOT_CREATE, "web"))
    assert outcome.status == OutcomeStatus.NOOP
    assert names == ["vmkeep:gold:20261125T010000Z"]
    assert [s.id for s in state.snapshots] == ["snap-late"]


def test_a_vm_still_on_after_a_killed_shutdown_is_checked_again_by_the_next_run(
    tmp_path: Path,
) -> None:
    # The killed run asked the guest to shut down; at recovery it is still on (going down).
    vc, db = FakeVCenter(), StateDB(tmp_path / "state.db")
    state = vc.add("db")
    db.start_run("run-1", "test", 0.0)
    aid = db.record_intent("run-1", kind="snapshot.create", point_id="p", vm_uuid="uuid-db",
                           vm_name="db", vcenter="sim", now=1.0)
    db.update_details(aid, {"poweredOffByUs": True})

    def again() -> list[str]:
        return Recovery(db, {"sim": vc}, {}, lambda: 2.0, installation="inst-a").run(
            db.unfinished_actions(), {"sim": [vc.vm(state)]}, db.failed_with_vm_shut_down())

    assert again() == []
    assert [a.id for a in db.failed_with_vm_shut_down()] == [aid]  # the intent is kept
    state.power = PowerState.OFF  # the guest finished going down
    assert again() == ["powered VM 'db' back on (its guest finished a shutdown vmkeep had "
                       "asked for after the action gave up waiting)"]
    assert state.power is PowerState.ON and db.failed_with_vm_shut_down() == []


def test_a_vm_powered_back_on_by_recovery_settles_its_intent(tmp_path: Path) -> None:
    vc, db = FakeVCenter(), StateDB(tmp_path / "state.db")
    state = vc.add("db", power=PowerState.OFF)
    db.start_run("run-1", "test", 0.0)
    aid = db.record_intent("run-1", kind="snapshot.create", point_id="p", vm_uuid="uuid-db",
                           vm_name="db", vcenter="sim", now=1.0)
    db.update_details(aid, {"poweredOffByUs": True})
    Recovery(db, {"sim": vc}, {}, lambda: 2.0).run(
        db.unfinished_actions(), {"sim": [vc.vm(state)]}, db.failed_with_vm_shut_down())
    assert state.power is PowerState.ON
    assert db.failed_with_vm_shut_down() == []


def test_what_concerns_a_vcenter_that_cannot_be_read_now_waits_for_a_later_run(
    tmp_path: Path,
) -> None:
    vc, db = FakeVCenter(), StateDB(tmp_path / "state.db")
    vc.add("app")
    db.start_run("killed", "host/1/killed", 0.0)
    db.record_intent("killed", kind="export.create", point_id="p", vm_uuid=UUID,
                     vm_name="app", vcenter="sim", now=1.0)
    observed = ObservedState(captured_at=T0, vcenters={}, targets={})  # "sim" not read
    JournaledRecovery(db, {"sim": vc}, {}, lambda: 5.0).run("host/2/next", "next", observed)
    assert [a.vm_name for a in db.unfinished_actions()] == ["app"]
    assert db.interrupted_runs() == ["killed"]
    assert ("wait_for_tasks", "app") not in vc.calls

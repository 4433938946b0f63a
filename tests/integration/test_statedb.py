"""The state DB against real SQLite files: journal, lease, and survival across processes."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from reconciler.adapters.statedb import ActionStatus, LeaseHeldError, StateDB
from reconciler.errors import VmkeepError


@pytest.fixture
def db(tmp_path: Path) -> StateDB:
    return StateDB(tmp_path / "state" / "vmkeep.db")


def start(db: StateDB, run: str = "run-1", now: float = 100.0) -> None:
    db.start_run(run, holder="host-a/1", now=now, policy_revision="abc123")


def intent(db: StateDB, run: str = "run-1", point: str = "p/uuid-1/20261125T010000Z") -> int:
    return db.record_intent(
        run,
        kind="export.create",
        point_id=point,
        vm_uuid="uuid-1",
        vm_name="vm-1",
        vcenter="sim",
        now=101.0,
        details={"snapshot": None},
    )


def test_a_new_state_file_is_created_with_its_directory_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "vmkeep.db"
    StateDB(path).close()
    assert path.is_file()
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_an_intent_without_outcome_is_reported_as_unfinished(db: StateDB) -> None:
    start(db)
    action = intent(db)
    [open_action] = db.unfinished_actions()
    assert open_action.id == action
    assert open_action.kind == "export.create"
    assert open_action.status == ActionStatus.STARTED


def test_a_recorded_outcome_closes_the_action(db: StateDB) -> None:
    start(db)
    action = intent(db)
    db.record_outcome(action, ActionStatus.FAILED, now=102.0, error="FileFault: disk busy")
    assert db.unfinished_actions() == []
    [closed] = db.actions("run-1")
    assert (closed.status, closed.error) == ("failed", "FileFault: disk busy")
    assert closed.finished_at == 102.0


def test_progress_details_are_merged_into_the_open_action(db: StateDB) -> None:
    start(db)
    action = intent(db)
    db.update_details(action, {"snapshot": "snapshot-7", "poweredOff": True})
    [record] = db.actions()
    assert record.details == {"snapshot": "snapshot-7", "poweredOff": True}


def test_the_journal_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "vmkeep.db"
    with StateDB(path) as first:
        start(first)
        intent(first)
    with StateDB(path) as second:
        assert len(second.unfinished_actions()) == 1
        assert second.runs()[0]["policy_revision"] == "abc123"


def test_a_finished_run_keeps_its_summary(db: StateDB) -> None:
    start(db)
    db.finish_run("run-1", now=200.0, summary={"done": 3, "failed": 1})
    [run] = db.runs()
    assert run["summary"] == {"done": 3, "failed": 1}
    assert run["finished_at"] == 200.0


def test_a_held_lease_is_refused_to_another_holder_with_who_and_until_when(db: StateDB) -> None:
    db.acquire_lease("apply", "host-a/1", now=0.0, ttl=60.0)
    with pytest.raises(LeaseHeldError) as err:
        db.acquire_lease("apply", "host-b/2", now=30.0, ttl=60.0)
    assert "host-a/1" in str(err.value)
    assert "until 1970-01-01 00:01:00 UTC" in str(err.value)
    assert err.value.expires_at == 60.0


def test_a_dead_holders_lease_can_be_taken_over_before_it_expires(db: StateDB) -> None:
    db.acquire_lease("apply", "host-a/1", now=0.0, ttl=60.0)
    with pytest.raises(LeaseHeldError):
        db.acquire_lease("apply", "host-b/2", now=1.0, ttl=60.0, take_over="host-c/3")
    db.acquire_lease("apply", "host-b/2", now=1.0, ttl=60.0, take_over="host-a/1")
    assert db.lease_holder("apply", now=2.0) == "host-b/2"


def test_an_expired_lease_can_be_taken_over(db: StateDB) -> None:
    db.acquire_lease("apply", "host-a/1", now=0.0, ttl=60.0)
    db.acquire_lease("apply", "host-b/2", now=61.0, ttl=60.0)
    assert db.lease_holder("apply", now=62.0) == "host-b/2"


def test_the_holder_renews_its_own_lease(db: StateDB) -> None:
    db.acquire_lease("apply", "host-a/1", now=0.0, ttl=60.0)
    db.acquire_lease("apply", "host-a/1", now=50.0, ttl=60.0)
    with pytest.raises(LeaseHeldError):
        db.acquire_lease("apply", "host-b/2", now=100.0, ttl=60.0)


def test_a_released_lease_is_free_at_once(db: StateDB) -> None:
    db.acquire_lease("apply", "host-a/1", now=0.0, ttl=60.0)
    db.release_lease("apply", "host-a/1")
    assert db.lease_holder("apply", now=1.0) is None
    db.acquire_lease("apply", "host-b/2", now=1.0, ttl=60.0)


def _take_lease(path: str, holder: str, queue: multiprocessing.Queue) -> None:
    db = StateDB(path)
    try:
        db.acquire_lease("apply", holder, now=10.0, ttl=60.0)
        queue.put("acquired")
    except LeaseHeldError:
        queue.put("refused")
    finally:
        db.close()


def test_only_one_of_several_processes_gets_the_lease(tmp_path: Path) -> None:
    path = str(tmp_path / "vmkeep.db")
    StateDB(path).close()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_take_lease, args=(path, f"p{i}", queue)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    results = sorted(queue.get(timeout=5) for _ in procs)
    assert results == ["acquired", "refused", "refused", "refused"]


def test_a_state_file_from_a_newer_vmkeep_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vmkeep.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(VmkeepError, match="newer than this vmkeep understands"):
        StateDB(path)

"""The `Journal` port: what the executor writes (intent, details, outcome) and reads back.

No fake Journal exists (the unit tests drive a real `StateDB` on a temporary file), so the
cases run against `StateDB` as written and against the same file reopened by a new
`StateDB`, the way the next run or `vmkeep recover` reads it after a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.adapters.statedb import StateDB
from reconciler.model import ActionStatus
from reconciler.ports import Journal

Reader = Callable[[], StateDB]


@pytest.fixture(params=["same-connection", "reopened"])
def journal(request: pytest.FixtureRequest,
            tmp_path: Path) -> Iterator[tuple[Journal, Reader]]:
    path = tmp_path / "state.db"
    db = StateDB(path)
    opened: list[StateDB] = []

    def reader() -> StateDB:
        if request.param == "same-connection":
            return db
        opened.append(StateDB(path))
        return opened[-1]

    db.start_run("run-1", "contract-test", 100.0)
    try:
        yield db, reader
    finally:
        for other in opened:
            other.close()
        db.close()


def _intent(journal: Journal, **details: object) -> int:
    return journal.record_intent("run-1", kind="export", point_id="p/1", vm_uuid="u-1",
                                 vm_name="vm1", vcenter="vc", now=101.0, details=details)


def test_an_intent_without_an_outcome_is_an_unfinished_action(
    journal: tuple[Journal, Reader],
) -> None:
    writer, reader = journal
    action_id = _intent(writer, snapshot="snap-1")
    [record] = reader().unfinished_actions()
    assert (record.id, record.kind, record.point_id, record.vm_name, record.status) == (
        action_id, "export", "p/1", "vm1", ActionStatus.STARTED)
    assert dict(record.details) == {"snapshot": "snap-1"}


def test_details_are_merged_into_the_open_action_not_replaced(
    journal: tuple[Journal, Reader],
) -> None:
    writer, reader = journal
    action_id = _intent(writer, snapshot="snap-1")
    writer.update_details(action_id, {"poweredOffByUs": True})
    [record] = reader().unfinished_actions()
    assert dict(record.details) == {"snapshot": "snap-1", "poweredOffByUs": True}


def test_an_outcome_finishes_the_action_with_its_status_time_and_error(
    journal: tuple[Journal, Reader],
) -> None:
    writer, reader = journal
    action_id = _intent(writer)
    writer.record_outcome(action_id, ActionStatus.FAILED, 105.0, error="disk went away")
    db = reader()
    assert db.unfinished_actions() == []
    [record] = db.actions("run-1")
    assert (record.status, record.finished_at, record.error) == (
        ActionStatus.FAILED, 105.0, "disk went away")

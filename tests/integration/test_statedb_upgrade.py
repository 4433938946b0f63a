"""A state file of schema version 1 (before installation ids and journaled recoveries) is read
as it is, read-only, and upgraded in place by the first writer — against real SQLite files."""

from __future__ import annotations

import hashlib
import sqlite3
from contextlib import closing
from pathlib import Path

from reconciler.adapters.statedb import SCHEMA_VERSION, StateDB, holds_journal

#: The version 1 schema, as vmkeep wrote it.
SCHEMA_1 = """
CREATE TABLE runs (run_id TEXT PRIMARY KEY, holder TEXT NOT NULL, started_at REAL NOT NULL,
    finished_at REAL, policy_revision TEXT, summary TEXT);
CREATE TABLE actions (id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id), kind TEXT NOT NULL, point_id TEXT NOT NULL,
    vm_uuid TEXT NOT NULL, vm_name TEXT NOT NULL, vcenter TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}', started_at REAL NOT NULL, finished_at REAL,
    status TEXT NOT NULL DEFAULT 'started', error TEXT);
CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL);
INSERT INTO runs VALUES ('killed', 'host/1/killed', 10.0, NULL, 'abc', NULL);
INSERT INTO actions(run_id, kind, point_id, vm_uuid, vm_name, vcenter, started_at, status)
    VALUES ('killed', 'export.create', 'gold/u/20260101T010000Z', 'u', 'web', 'sim', 11.0,
            'started');
PRAGMA user_version=1;
"""


def version_1(path: Path) -> Path:
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(SCHEMA_1)
    return path


def test_a_version_1_file_is_read_read_only_without_a_change(tmp_path: Path) -> None:
    path = version_1(tmp_path / "state.db")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    assert holds_journal(path)
    with StateDB(path, read_only=True) as db:
        assert db.installation() is None
        assert db.last_recovery() is None
        assert db.action_counts("killed") == {"started": 1}
        assert db.runs()[0]["run_id"] == "killed"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_version_1_file_is_upgraded_by_the_first_writer_and_keeps_its_journal(
    tmp_path: Path,
) -> None:
    path = version_1(tmp_path / "state.db")
    with StateDB(path) as db:
        assert [a.point_id for a in db.unfinished_actions()] == ["gold/u/20260101T010000Z"]
        assert db.interrupted_runs() == ["killed"]
        assert db.knows_point("gold/u/20260101T010000Z")
        installation = db.installation_id()
        db.settle_interrupted_run("killed", "next")
        assert db.interrupted_runs() == []
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    with StateDB(path, read_only=True) as db:
        assert db.installation() == installation

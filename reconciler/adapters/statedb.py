"""The local state DB: one SQLite file (WAL) holding the apply journal and the applier lease.

It is a cache plus a journal, never the only copy of a fact: restore points are rebuilt from
snapshot markers and manifests. What only the journal knows is *intent*: which action a run
started and whether it finished, so that the next run can reconcile what a crash left
(a marked snapshot, a partial export, a VM it powered off).

Tables (schema version in `PRAGMA user_version`; version 1 files are upgraded in place,
and read as they are by `StateDB(read_only=True)`):

    runs       (run_id, holder, started_at, finished_at, policy_revision, summary,
                repaired_by)
    actions    (id, run_id, kind, point_id, vm_uuid, vm_name, vcenter, details JSON,
                started_at, finished_at, status, error)
    leases     (name, holder, acquired_at, expires_at)
    meta       (key, value)                    -- "installation": this installation's id
    recoveries (id, holder, started_at, finished_at, error)
    repairs    (id, recovery_id, at, note)

The **installation id** is a random id created once, with the file: the markers of the
temporary snapshots this installation makes carry it, so crash recovery touches only its own.
A **recovery** is the repair an apply does before planning; each repair it made is a row of
`repairs`, a recovery that failed keeps its error, one that was killed has no finish.
A killed run keeps `finished_at` NULL; the recovery that settled it sets `repaired_by`.

Every time comes in from the caller (seconds since the epoch); this module never reads
the clock.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import LeaseHeldError, VmkeepError, mask
from reconciler.model import ActionStatus

__all__ = [
    "ActionRecord",
    "ActionStatus",
    "LeaseHeldError",
    "RecoveryRecord",
    "StateDB",
    "holds_journal",
]

SCHEMA_VERSION = 2
#: How many recoveries that found nothing to do are kept (the newest ones).
KEEP_EMPTY_RECOVERIES = 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id          TEXT PRIMARY KEY,
    holder          TEXT NOT NULL,
    started_at      REAL NOT NULL,
    finished_at     REAL,
    policy_revision TEXT,
    summary         TEXT,
    repaired_by     TEXT
);
CREATE TABLE IF NOT EXISTS actions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    kind        TEXT NOT NULL,
    point_id    TEXT NOT NULL,
    vm_uuid     TEXT NOT NULL,
    vm_name     TEXT NOT NULL,
    vcenter     TEXT NOT NULL,
    details     TEXT NOT NULL DEFAULT '{}',
    started_at  REAL NOT NULL,
    finished_at REAL,
    status      TEXT NOT NULL DEFAULT 'started',
    error       TEXT
);
CREATE INDEX IF NOT EXISTS actions_open ON actions(status) WHERE status = 'started';
CREATE INDEX IF NOT EXISTS actions_point ON actions(point_id);
CREATE TABLE IF NOT EXISTS leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at REAL NOT NULL,
    expires_at  REAL NOT NULL
);
"""

#: Added by schema version 2 (a version 1 file also gets `runs.repaired_by`).
_SCHEMA_2 = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recoveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    holder      TEXT NOT NULL,
    started_at  REAL NOT NULL,
    finished_at REAL,
    error       TEXT
);
CREATE TABLE IF NOT EXISTS repairs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    recovery_id INTEGER NOT NULL REFERENCES recoveries(id),
    at          REAL NOT NULL,
    note        TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class ActionRecord:
    id: int
    run_id: str
    kind: str
    point_id: str
    vm_uuid: str
    vm_name: str
    vcenter: str
    details: Mapping[str, Any]
    started_at: float
    finished_at: float | None
    status: str
    error: str | None


@dataclass(frozen=True)
class RecoveryRecord:
    """One recovery (the repairs an apply made before planning)."""

    id: int
    holder: str
    started_at: float
    finished_at: float | None  # None: running now, or killed
    error: str | None  # why it failed; None when it did not
    repairs: tuple[str, ...]


def holds_journal(path: Path) -> bool:
    """Whether the existing file `path` holds vmkeep's journal, found out read-only (an
    empty file holds none yet); any other file raises `VmkeepError` before a `StateDB`
    could set it up as one."""
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.Error as exc:
        raise VmkeepError(f"cannot read the state DB {path}: {exc}") from None
    if version == 0 and tables == 0:
        return False
    if not 1 <= version <= SCHEMA_VERSION:
        raise VmkeepError(f"{path} is not a vmkeep state DB this vmkeep reads (schema version "
                          f"{version}, expected {SCHEMA_VERSION}); check `state` in the host "
                          "config, or upgrade vmkeep")
    return True


def _open_failure(path: Path, exc: sqlite3.Error) -> str:
    """One line saying why the state DB at `path` could not be opened, and what to do."""
    text = str(exc)
    if "not a database" in text:
        return (f"{str(path)!r} is not a vmkeep state DB (not an SQLite file); check `state` in "
                "the host config")
    if "full" in text:
        return (f"cannot set up the state DB {str(path)!r}: its file system is full; free some "
                "space there")
    if "readonly" in text or "read-only" in text:
        return (f"cannot write the state DB {str(path)!r}: it (or its directory) is read-only; "
                "check `state` in the host config and the permissions")
    return f"cannot open the state DB {str(path)!r}: {text}; check `state` in the host config"


class StateDB:
    """A connection to the state file; create it (and its directory) on first use.

    `read_only`: open an existing journal without writing to it (no set-up, no upgrade):
    what `vmkeep status` reads; the writing methods then fail."""

    def __init__(self, path: str | Path, *, timeout: float = 10.0,
                 read_only: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()  # one connection, shared by the executor's threads
        try:
            if self.path.is_dir():
                raise VmkeepError(f"the state DB {str(self.path)!r} is a directory; set "
                                  "`state` in the host config to a file path")
            if read_only:
                self._conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro",
                                             uri=True, timeout=timeout, isolation_level=None,
                                             check_same_thread=False)
                self._conn.row_factory = sqlite3.Row
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except OSError as exc:
            raise VmkeepError(f"cannot open the state DB {str(self.path)!r}: "
                              f"{exc.strerror or exc}; check `state` in the host config") \
                from None
        except sqlite3.Error as exc:
            raise VmkeepError(_open_failure(self.path, exc)) from None
        try:
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, sqlite3.Error):
                raise VmkeepError(_open_failure(self.path, exc)) from None
            raise

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise VmkeepError(
                f"state DB {str(self.path)!r} has schema version {version}, newer than this "
                f"vmkeep understands ({SCHEMA_VERSION}); upgrade vmkeep"
            )
        if version < SCHEMA_VERSION:
            with self._transaction() as conn:  # two processes racing here: one upgrades
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version < SCHEMA_VERSION:
                    for statement in f"{_SCHEMA}{_SCHEMA_2}".split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    columns = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
                    if "repaired_by" not in columns:  # a version 1 file
                        conn.execute("ALTER TABLE runs ADD COLUMN repaired_by TEXT")
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _has_table(self, name: str) -> bool:
        """Whether the file has the table (a version 1 file read read-only lacks newer ones)."""
        return bool(self._query("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                                (name,)))

    # ------------------------------------------------------------------ installation

    def installation_id(self) -> str:
        """This installation's id: random, created once with the journal, never changed."""
        with self._transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('installation', ?)",
                         (secrets.token_hex(8),))
            row = conn.execute("SELECT value FROM meta WHERE key='installation'").fetchone()
        return str(row["value"])

    def installation(self) -> str | None:
        """The installation id if one was created (read-only use)."""
        if not self._has_table("meta"):
            return None
        rows = self._query("SELECT value FROM meta WHERE key='installation'")
        return str(rows[0]["value"]) if rows else None

    # ------------------------------------------------------------------ lease

    def acquire_lease(
        self, name: str, holder: str, now: float, ttl: float, *, take_over: str | None = None
    ) -> None:
        """Take the named lease, or renew it if `holder` has it; a lease past expiry is free.

        `take_over` names a holder known to be dead (its process is gone): its unexpired
        lease is taken too — but only if that holder still has it.
        """
        with self._transaction() as conn:
            row = conn.execute("SELECT holder, expires_at FROM leases WHERE name=?", (name,))
            current = row.fetchone()
            if (current and current["holder"] not in (holder, take_over)
                    and current["expires_at"] > now):
                raise LeaseHeldError(name, current["holder"], current["expires_at"])
            conn.execute(
                "INSERT INTO leases(name, holder, acquired_at, expires_at) VALUES(?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET holder=excluded.holder, "
                "acquired_at=excluded.acquired_at, expires_at=excluded.expires_at",
                (name, holder, now, now + ttl),
            )

    def release_lease(self, name: str, holder: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM leases WHERE name=? AND holder=?", (name, holder))

    def lease_holder(self, name: str, now: float) -> str | None:
        rows = self._query("SELECT holder FROM leases WHERE name=? AND expires_at>?", (name, now))
        return str(rows[0]["holder"]) if rows else None

    # ------------------------------------------------------------------ journal

    def start_run(
        self, run_id: str, holder: str, now: float, policy_revision: str | None = None
    ) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO runs(run_id, holder, started_at, policy_revision) VALUES(?,?,?,?)",
                (run_id, holder, now, policy_revision),
            )

    def finish_run(self, run_id: str, now: float, summary: Mapping[str, Any]) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE runs SET finished_at=?, summary=? WHERE run_id=?",
                (now, json.dumps(dict(summary), sort_keys=True), run_id),
            )

    def record_intent(
        self,
        run_id: str,
        *,
        kind: str,
        point_id: str,
        vm_uuid: str,
        vm_name: str,
        vcenter: str,
        now: float,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Write down what is about to happen, before it happens; returns the action id."""
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO actions(run_id, kind, point_id, vm_uuid, vm_name, vcenter, "
                "details, started_at) VALUES(?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    kind,
                    point_id,
                    vm_uuid,
                    vm_name,
                    vcenter,
                    json.dumps(dict(details or {}), sort_keys=True),
                    now,
                ),
            )
            return int(cur.lastrowid or 0)

    def update_details(self, action_id: int, details: Mapping[str, Any]) -> None:
        """Merge progress facts (e.g. the temporary snapshot's id) into an open action."""
        with self._transaction() as conn:
            row = conn.execute("SELECT details FROM actions WHERE id=?", (action_id,)).fetchone()
            merged = {**json.loads(row["details"]), **details} if row else dict(details)
            conn.execute(
                "UPDATE actions SET details=? WHERE id=?",
                (json.dumps(merged, sort_keys=True), action_id),
            )

    def record_outcome(
        self, action_id: int, status: str, now: float, error: str | None = None
    ) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE actions SET status=?, finished_at=?, error=? WHERE id=?",
                (status, now, None if error is None else mask(error), action_id),
            )

    def unfinished_actions(self) -> list[ActionRecord]:
        """Actions whose run died between intent and outcome, oldest first."""
        rows = self._query(
            "SELECT * FROM actions WHERE status=? ORDER BY id", (ActionStatus.STARTED,)
        )
        return [_record(r) for r in rows]

    def failed_with_vm_shut_down(self) -> list[ActionRecord]:
        """Failed (or, killed, reconciled) actions whose VM vmkeep asked to shut down and
        never saw back on (a guest shutdown may complete later), oldest first."""
        rows = self._query(
            "SELECT * FROM actions WHERE status IN (?, ?) AND "
            "json_extract(details, '$.poweredOffByUs') = 1 ORDER BY id",
            (ActionStatus.FAILED, ActionStatus.RECONCILED),
        )
        return [_record(r) for r in rows]

    def knows_point(self, point_id: str) -> bool:
        """Whether any run of this installation worked on the restore point."""
        return bool(self._query("SELECT 1 FROM actions WHERE point_id=? LIMIT 1", (point_id,)))

    def action_counts(self, run_id: str) -> dict[str, int]:
        """A run's actions by journal status (what a killed run really did)."""
        rows = self._query("SELECT status, count(*) AS n FROM actions WHERE run_id=? "
                           "GROUP BY status", (run_id,))
        return {str(r["status"]): int(r["n"]) for r in rows}

    # ------------------------------------------------------------------ recoveries

    def begin_recovery(self, holder: str, now: float) -> int:
        with self._transaction() as conn:
            cur = conn.execute("INSERT INTO recoveries(holder, started_at) VALUES(?, ?)",
                               (holder, now))
            return int(cur.lastrowid or 0)

    def record_repair(self, recovery_id: int, note: str, now: float) -> None:
        with self._transaction() as conn:
            conn.execute("INSERT INTO repairs(recovery_id, at, note) VALUES(?,?,?)",
                         (recovery_id, now, note))

    def end_recovery(self, recovery_id: int, now: float, error: str | None = None) -> None:
        """Close a recovery; old ones that found nothing to do are dropped."""
        with self._transaction() as conn:
            conn.execute("UPDATE recoveries SET finished_at=?, error=? WHERE id=?",
                         (now, error, recovery_id))
            conn.execute(
                "DELETE FROM recoveries WHERE id < ? AND error IS NULL AND finished_at IS NOT "
                "NULL AND NOT EXISTS (SELECT 1 FROM repairs WHERE recovery_id=recoveries.id)",
                (recovery_id - KEEP_EMPTY_RECOVERIES,),
            )

    def last_recovery(self) -> RecoveryRecord | None:
        if not self._has_table("recoveries"):
            return None
        rows = self._query("SELECT * FROM recoveries ORDER BY id DESC LIMIT 1")
        if not rows:
            return None
        r = rows[0]
        notes = self._query("SELECT note FROM repairs WHERE recovery_id=? ORDER BY id",
                            (r["id"],))
        return RecoveryRecord(int(r["id"]), str(r["holder"]), float(r["started_at"]),
                              r["finished_at"], r["error"], tuple(n["note"] for n in notes))

    def interrupted_runs(self) -> list[str]:
        """Runs that never finished and no recovery settled yet, oldest first."""
        rows = self._query("SELECT run_id FROM runs WHERE finished_at IS NULL AND "
                           "repaired_by IS NULL ORDER BY started_at")
        return [str(r["run_id"]) for r in rows]

    def settle_interrupted_run(self, run_id: str, repaired_by: str) -> None:
        """Note that a recovery checked what the killed run `run_id` left."""
        with self._transaction() as conn:
            conn.execute("UPDATE runs SET repaired_by=? WHERE run_id=?", (repaired_by, run_id))

    def actions(self, run_id: str | None = None) -> list[ActionRecord]:
        if run_id is None:
            rows = self._query("SELECT * FROM actions ORDER BY id")
        else:
            rows = self._query("SELECT * FROM actions WHERE run_id=? ORDER BY id", (run_id,))
        return [_record(r) for r in rows]

    def runs(self) -> list[dict[str, Any]]:
        rows = self._query("SELECT * FROM runs ORDER BY started_at")
        return [
            {**dict(r), "summary": json.loads(r["summary"]) if r["summary"] else None}
            for r in rows
        ]


def _record(row: sqlite3.Row) -> ActionRecord:
    return ActionRecord(
        id=row["id"],
        run_id=row["run_id"],
        kind=row["kind"],
        point_id=row["point_id"],
        vm_uuid=row["vm_uuid"],
        vm_name=row["vm_name"],
        vcenter=row["vcenter"],
        details=json.loads(row["details"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        status=row["status"],
        error=row["error"],
    )

"""The verification log: when each export point was last verified and how it went.

A table of its own in the state DB (`verifications`), created next to the journal's tables
once the journal exists (`StateDB` sets the file up first, so the schema version stays the
journal's). Like the rest of the state DB it is a cache: losing it only means the points
are verified again.

    verifications (target, point_id, verified_at, ok, message, bytes)
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from reconciler.errors import VmkeepError
from reconciler.model import VerifyEntry

__all__ = ["VerifyEntry", "read_entries", "record_entries"]

_TABLE = """
CREATE TABLE IF NOT EXISTS verifications (
    target      TEXT NOT NULL,
    point_id    TEXT NOT NULL,
    verified_at REAL NOT NULL,
    ok          INTEGER NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    bytes       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (target, point_id)
)
"""


def record_entries(state: str | Path, entries: list[VerifyEntry]) -> None:
    """Store the outcome of verifications (the newest per point replaces the older)."""
    from reconciler.adapters.statedb import StateDB

    StateDB(state).close()  # the journal's schema first: the file is vmkeep's
    try:
        with closing(sqlite3.connect(state, timeout=10.0)) as conn, conn:
            conn.execute(_TABLE)
            conn.executemany(
                "INSERT OR REPLACE INTO verifications VALUES (?, ?, ?, ?, ?, ?)",
                [(e.target, e.point_id, e.verified_at, int(e.ok), e.message, e.bytes)
                 for e in entries],
            )
    except sqlite3.Error as exc:
        raise VmkeepError(f"cannot record verifications in the state DB {state}: {exc}") from None


def read_entries(state: str | Path) -> list[VerifyEntry]:
    """Every recorded verification, read-only; none when the state DB or table is missing."""
    path = Path(state)
    if not path.is_file():
        return []
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            found = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' "
                                 "AND name = 'verifications'").fetchone()[0]
            if not found:
                return []
            rows = conn.execute("SELECT target, point_id, verified_at, ok, message, bytes "
                                "FROM verifications ORDER BY target, point_id").fetchall()
    except sqlite3.Error as exc:
        raise VmkeepError(f"cannot read the state DB {state}: {exc}") from None
    return [VerifyEntry(t, p, float(v), bool(ok), m or "", int(b or 0))
            for t, p, v, ok, m, b in rows]

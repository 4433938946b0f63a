"""Retention agrees with real restic 0.18 `forget --dry-run --json` (tests/data/restic/)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.model import Duration, KeepRules
from reconciler.retention import apply_rules
from reconciler.schedule import zone_of

DATA = Path(__file__).resolve().parent.parent / "data" / "restic"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # after every fixture timestamp

_FLAG_FIELDS = {
    "--keep-last": "last",
    "--keep-hourly": "hourly",
    "--keep-daily": "daily",
    "--keep-weekly": "weekly",
    "--keep-monthly": "monthly",
    "--keep-yearly": "yearly",
    "--keep-within": "within",
    "--keep-within-hourly": "within_hourly",
    "--keep-within-daily": "within_daily",
    "--keep-within-weekly": "within_weekly",
    "--keep-within-monthly": "within_monthly",
    "--keep-within-yearly": "within_yearly",
}


def restic_duration(text: str) -> Duration:
    """restic's duration syntax: NyNmNdNh, where `m` means months."""
    units = dict.fromkeys("ymdh", 0)
    for number, unit in re.findall(r"(\d+)([ymdh])", text):
        units[unit] = int(number)
    return Duration(
        years=units["y"], months=units["m"], days=units["d"], hours=units["h"], text=text
    )


def rules_from_flags(flags: list[str]) -> KeepRules:
    values: dict[str, Any] = {}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        field = _FLAG_FIELDS[flag]
        if field.startswith("within"):
            values[field] = restic_duration(value)
        else:
            values[field] = -1 if value == "unlimited" else int(value)
    return KeepRules(**values)


def cases() -> list[Any]:
    found = []
    for path in sorted(DATA.glob("*.json")):
        fixture = json.loads(path.read_text())
        for case in fixture["cases"]:
            found.append(pytest.param(fixture, case, id=f"{path.stem}:{' '.join(case['flags'])}"))
    return found


def test_fixtures_were_made_by_restic_0_18() -> None:
    versions = {json.loads(p.read_text())["generatedBy"] for p in DATA.glob("*.json")}
    assert versions == {"restic 0.18.0"}


@pytest.mark.parametrize(("fixture", "case"), cases())
def test_retention_keeps_and_removes_what_restic_forget_does(
    fixture: dict[str, Any], case: dict[str, Any]
) -> None:
    zone = zone_of(fixture["zone"])
    times = [datetime.fromisoformat(t) for t in fixture["snapshots"]]
    result = apply_rules([(t, t) for t in times], rules_from_flags(case["flags"]), zone, NOW)

    kept = [(d.time.isoformat(), list(d.reasons)) for d in result.decisions if d.keep]
    expected_kept = [
        (datetime.fromisoformat(k["time"]).isoformat(), k["reasons"]) for k in case["keep"]
    ]
    assert kept == expected_kept
    removed = sorted(t.isoformat() for t in result.remove)
    assert removed == sorted(datetime.fromisoformat(t).isoformat() for t in case["remove"])

"""Retention tables (restic `forget` rules) and a golden file of decisions with reasons.

Regenerate the golden file with `VMKEEP_UPDATE_GOLDEN=1 pytest tests/unit/test_retention.py`.
The authoritative comparison with real restic is `test_retention_restic.py`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.model import Duration, KeepRules
from reconciler.retention import apply_rules, subtract_duration
from reconciler.schedule import zone_of

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "retention"
UPDATE = os.environ.get("VMKEEP_UPDATE_GOLDEN") == "1"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
BERLIN = zone_of("Europe/Berlin")


def daily(days: int, hour: int = 1) -> list[tuple[str, datetime]]:
    """One point per day at `hour` UTC, newest yesterday, named by date."""
    out = []
    for d in range(1, days + 1):
        moment = datetime(2026, 11, 25, hour, tzinfo=UTC) - timedelta(days=d)
        out.append((moment.strftime("%m-%d"), moment))
    return out


def kept(points, rules, zone=BERLIN, now=NOW) -> list[str]:
    return sorted(apply_rules(points, rules, zone, now).keep)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (KeepRules(last=3), ["11-22", "11-23", "11-24"]),
        (KeepRules(daily=2), ["11-23", "11-24"]),
        # 2026-11-23 is a Monday: ISO week 48 holds 11-23 and 11-24, week 47 ends 11-22
        (KeepRules(weekly=2), ["11-22", "11-24"]),
        (KeepRules(monthly=2), ["10-31", "11-24"]),
        # count left over at the end of the walk keeps the oldest point too
        (KeepRules(monthly=5), ["10-16", "10-31", "11-24"]),
        (KeepRules(yearly=1), ["11-24"]),
        (
            KeepRules(daily=-1),
            [f"{d:%m-%d}" for d in (NOW - timedelta(days=i) for i in range(1, 41))],
        ),
        (KeepRules(within=Duration(days=3, text="3d")), ["11-22", "11-23", "11-24"]),
        (KeepRules(within=Duration(weeks=1, text="1w")), [f"11-{d}" for d in range(18, 25)]),
        (KeepRules(within_weekly=Duration(days=10, text="10d")), ["11-15", "11-22", "11-24"]),
        (KeepRules(), [f"{d:%m-%d}" for d in (NOW - timedelta(days=i) for i in range(1, 41))]),
    ],
)
def test_rules_keep_what_restic_would(rules: KeepRules, expected: list[str]) -> None:
    assert kept(daily(40), rules) == sorted(expected)


def test_buckets_use_the_policy_time_zone() -> None:
    # 23:30 UTC is already the next day in Berlin: two points, two Berlin days
    points = [
        ("a", datetime(2026, 11, 24, 22, 30, tzinfo=UTC)),
        ("b", datetime(2026, 11, 24, 23, 30, tzinfo=UTC)),
    ]
    assert kept(points, KeepRules(daily=2), BERLIN) == ["a", "b"]
    assert kept(points, KeepRules(daily=1), zone_of("UTC")) == ["b"]
    assert apply_rules(points, KeepRules(daily=2), zone_of("UTC"), NOW).decisions[1].reasons == (
        "oldest daily snapshot",
    )


def test_within_is_measured_from_the_newest_point_not_from_now() -> None:
    old = [(k, t - timedelta(days=365)) for k, t in daily(5)]
    assert len(kept(old, KeepRules(within=Duration(days=2, text="2d")))) == 2


def test_a_point_in_the_future_does_not_move_the_within_window() -> None:
    points = [*daily(5), ("future", NOW + timedelta(days=30))]
    assert kept(points, KeepRules(within=Duration(days=2, text="2d"))) == [
        "11-23",
        "11-24",
        "future",
    ]


@pytest.mark.parametrize(
    ("moment", "duration", "expected"),
    [
        # 14 calendar days across the Berlin fall-back change are 14 x 24 h + 1 h
        ("2024-11-03T12:00:00+00:00", Duration(days=14), "2024-10-20T11:00:00+00:00"),
        ("2024-04-07T12:00:00+00:00", Duration(days=14), "2024-03-24T13:00:00+00:00"),
        # Go AddDate normalisation: 31 March minus one month is 3 March (31 Feb)
        ("2025-03-31T10:00:00+00:00", Duration(months=1), "2025-03-03T11:00:00+00:00"),
        ("2024-02-29T10:00:00+00:00", Duration(years=1), "2023-03-01T10:00:00+00:00"),
        ("2026-11-25T12:00:00+00:00", Duration(hours=36), "2026-11-24T00:00:00+00:00"),
        ("2026-11-25T12:00:00+00:00", Duration(weeks=1, minutes=30), "2026-11-18T11:30:00+00:00"),
    ],
)
def test_durations_use_calendar_arithmetic_on_the_zone_wall_clock(moment, duration, expected):
    result = subtract_duration(datetime.fromisoformat(moment), duration, BERLIN)
    assert result == datetime.fromisoformat(expected)


def test_reasons_match_the_golden_file() -> None:
    points = [(t.strftime("%Y-%m-%d"), t) for _, t in daily(400)]
    rules = KeepRules(
        last=2,
        daily=7,
        weekly=4,
        monthly=6,
        yearly=2,
        within_daily=Duration(days=10, text="10d"),
    )
    result = apply_rules(points, rules, BERLIN, NOW)
    lines = [
        f"{d.key} {'keep  ' if d.keep else 'remove'} {', '.join(d.reasons)}".rstrip()
        for d in result.decisions
    ]
    text = "\n".join(lines) + "\n"
    path = GOLDEN / "mixed-rules.txt"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"{path} differs; rerun with VMKEEP_UPDATE_GOLDEN=1"

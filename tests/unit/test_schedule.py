"""Schedules: slots in the policy's zone across DST changes, windows, lateness thresholds."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from reconciler.model import Schedule, Window
from reconciler.schedule import (
    ScheduleError,
    compact,
    in_window,
    lateness_threshold,
    latest_slot,
    next_slot,
    zone_of,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("cron", "zone", "now", "slot"),
    [
        # ordinary days
        ("0 1 * * *", "UTC", "2026-11-25 12:00", "2026-11-25 01:00"),
        ("0 1 * * *", "UTC", "2026-11-25 01:00", "2026-11-25 01:00"),  # at the fire time
        ("0 1 * * *", "UTC", "2026-11-25 00:59", "2026-11-24 01:00"),
        ("0 1 * * *", "Europe/Berlin", "2026-11-25 12:00", "2026-11-25 00:00"),  # CET
        ("0 1 * * *", "Europe/Berlin", "2026-07-01 12:00", "2026-06-30 23:00"),  # CEST
        ("0 3 * * 0", "UTC", "2026-11-25 12:00", "2026-11-22 03:00"),  # weekly, Sunday
        # Europe/Berlin spring forward 2024-03-31: 02:00 CET -> 03:00 CEST (01:00 UTC)
        ("30 2 * * *", "Europe/Berlin", "2024-03-31 05:00", "2024-03-31 01:30"),  # 03:30 CEST
        ("30 2 * * *", "Europe/Berlin", "2024-03-31 01:29", "2024-03-30 01:30"),
        ("30 2 * * *", "Europe/Berlin", "2024-04-01 05:00", "2024-04-01 00:30"),
        ("0 * * * *", "Europe/Berlin", "2024-03-31 01:30", "2024-03-31 01:00"),  # 03:00 CEST
        ("0 * * * *", "Europe/Berlin", "2024-03-31 00:59", "2024-03-31 00:00"),  # 01:00 CET
        # Europe/Berlin fall back 2024-10-27: 03:00 CEST -> 02:00 CET (01:00 UTC)
        ("30 2 * * *", "Europe/Berlin", "2024-10-27 05:00", "2024-10-27 00:30"),  # first 02:30
        ("30 * * * *", "Europe/Berlin", "2024-10-27 01:45", "2024-10-27 01:30"),  # second 02:30
        ("30 * * * *", "Europe/Berlin", "2024-10-27 01:15", "2024-10-27 00:30"),  # first 02:30
        # America/New_York spring forward 2024-03-10: 02:00 EST -> 03:00 EDT (07:00 UTC)
        ("30 2 * * *", "America/New_York", "2024-03-10 12:00", "2024-03-10 07:30"),  # 03:30 EDT
        ("0 3 * * *", "America/New_York", "2024-03-10 12:00", "2024-03-10 07:00"),
        # America/New_York fall back 2024-11-03: 02:00 EDT -> 01:00 EST (06:00 UTC)
        ("30 1 * * *", "America/New_York", "2024-11-03 12:00", "2024-11-03 05:30"),  # EDT once
        ("30 * * * *", "America/New_York", "2024-11-03 06:45", "2024-11-03 06:30"),  # EST 01:30
        ("0 0 1 1 *", "America/New_York", "2026-01-01 04:59", "2025-01-01 05:00"),  # year
    ],
)
def test_the_slot_is_the_latest_fire_time_at_or_before_now(cron, zone, now, slot) -> None:
    assert latest_slot(Schedule(cron, zone), utc(now)) == utc(slot)


@pytest.mark.parametrize(
    ("cron", "zone", "after", "expected"),
    [
        ("30 2 * * *", "Europe/Berlin", "2024-03-30 12:00", "2024-03-31 01:30"),
        ("30 1 * * *", "America/New_York", "2024-11-02 12:00", "2024-11-03 05:30"),
        ("30 1 * * *", "America/New_York", "2024-11-03 05:30", "2024-11-04 06:30"),
        ("30 * * * *", "America/New_York", "2024-11-03 05:30", "2024-11-03 06:30"),
    ],
)
def test_the_next_slot_is_the_first_fire_time_after(cron, zone, after, expected) -> None:
    assert next_slot(Schedule(cron, zone), utc(after)) == utc(expected)


def test_an_hourly_schedule_fires_every_real_hour_through_a_fall_back() -> None:
    schedule = Schedule("30 * * * *", "America/New_York")
    fires, moment = [], utc("2024-11-03 03:00")
    for _ in range(5):
        moment = next_slot(schedule, moment)
        fires.append(moment)
    assert [f - fires[0] for f in fires] == [timedelta(hours=h) for h in range(5)]


def test_a_daily_schedule_fires_once_on_a_day_with_a_repeated_hour() -> None:
    schedule = Schedule("30 1 * * *", "America/New_York")
    first = next_slot(schedule, utc("2024-11-02 12:00"))
    second = next_slot(schedule, first)
    assert second - first == timedelta(hours=25)


@pytest.mark.parametrize(
    ("cron", "zone", "slot", "threshold"),
    [
        ("0 1 * * *", "UTC", "2026-11-25 01:00", timedelta(hours=12)),
        ("0 * * * *", "UTC", "2026-11-25 01:00", timedelta(minutes=30)),
        ("0 3 * * 0", "UTC", "2026-11-22 03:00", timedelta(days=3, hours=12)),
        ("0 1 * * *", "Europe/Berlin", "2024-10-26 23:00", timedelta(hours=12, minutes=30)),
        ("0 1 * * *", "Europe/Berlin", "2024-03-31 00:00", timedelta(hours=11, minutes=30)),
    ],
)
def test_lateness_threshold_is_half_the_time_to_the_next_slot(cron, zone, slot, threshold) -> None:
    assert lateness_threshold(Schedule(cron, zone), utc(slot)) == threshold


@pytest.mark.parametrize(
    ("start", "end", "zone", "now", "inside"),
    [
        (time(22), time(5), "UTC", "2026-11-25 23:00", True),
        (time(22), time(5), "UTC", "2026-11-25 04:59", True),
        (time(22), time(5), "UTC", "2026-11-25 05:00", False),
        (time(22), time(5), "UTC", "2026-11-25 21:59", False),
        (time(1), time(4), "UTC", "2026-11-25 01:00", True),
        (time(1), time(4), "UTC", "2026-11-25 04:00", False),
        (time(22), time(5), "Europe/Berlin", "2026-11-25 21:30", True),  # 22:30 CET
        (time(22), time(5), "America/New_York", "2026-11-25 04:00", True),  # 23:00 EST
        (time(3), time(3), "UTC", "2026-11-25 12:00", True),  # whole day
    ],
)
def test_windows_are_checked_on_the_zone_wall_clock_and_may_wrap_midnight(
    start, end, zone, now, inside
) -> None:
    assert in_window(Window(start, end), zone_of(zone), utc(now)) is inside


def test_no_window_means_always_open() -> None:
    assert in_window(None, zone_of("UTC"), utc("2026-11-25 12:00"))


def test_point_ids_use_the_compact_utc_slot() -> None:
    berlin = datetime(2026, 11, 25, 2, 0, tzinfo=zone_of("Europe/Berlin"))
    assert compact(berlin) == "20261125T010000Z"


@pytest.mark.parametrize(
    ("cron", "zone", "message"),
    [
        ("0 1 * *", "UTC", "invalid cron expression"),
        ("0 1 * * *", "Mars/Olympus", "unknown time zone"),
        ("0 0 30 2 *", "UTC", "never fired"),
    ],
)
def test_impossible_schedules_raise_a_schedule_error(cron, zone, message) -> None:
    with pytest.raises(ScheduleError, match=message):
        latest_slot(Schedule(cron, zone), utc("2026-11-25 12:00"))

"""Schedules: cron fire times in a policy's time zone, slots, windows and lateness.

A *slot* is the latest fire time at or before `now`. Cron expressions are evaluated on the
wall clock of the policy's zone (croniter on naive local times) and each wall time is then
turned into an instant:

* a wall time that does not exist (inside a spring-forward gap) fires once, shifted forward
  by the gap: `30 2 * * *` in Europe/Berlin on 2024-03-31 fires at 03:30 CEST;
* a wall time that exists twice (in a fall-back overlap) fires once, at its first
  occurrence, unless the expression fires every hour (hour field `*` or covering all 24
  hours): then both occurrences fire, as an hourly job would in the real elapsed hours.

Several wall times that land on the same instant fire once. Everything here is pure: `now`
is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from reconciler.errors import ScheduleError
from reconciler.model import Schedule, Window

__all__ = [
    "ScheduleError",
    "SlotInfo",
    "compact",
    "in_window",
    "lateness_threshold",
    "latest_slot",
    "next_slot",
    "slot_info",
    "zone_of",
]

UTC = ZoneInfo("UTC")
# How far the wall-clock order of fire times can differ from their order in real time:
# larger than any DST shift in use (2 h), so nothing is missed around a transition.
_SHIFT = timedelta(hours=3)
_MAX_STEPS = 5000


@lru_cache(maxsize=256)
def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {name!r}") from exc


def compact(slot: datetime) -> str:
    """A slot as compact UTC ISO 8601, as used in restore point ids: 20261125T010000Z."""
    return slot.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


@lru_cache(maxsize=256)
def _fires_every_hour(cron: str) -> bool:
    try:
        hours = croniter(cron).expanded[1]
    except (ValueError, KeyError) as exc:
        raise ScheduleError(f"invalid cron expression {cron!r}: {exc}") from exc
    return "*" in hours or len(set(hours)) >= 24


def _instants(wall: datetime, zone: ZoneInfo, every_hour: bool) -> tuple[datetime, ...]:
    """The instants at which a naive wall time in `zone` fires (see the module docstring)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    exists = first.astimezone(zone).replace(tzinfo=None) == wall
    if not exists:  # in a gap: fold=0 applies the offset before the jump, i.e. shifts forward
        return (first,)
    return (first, second) if every_hour else (first,)


def _walker(cron: str, start: datetime) -> croniter:
    try:
        return croniter(cron, start)
    except (ValueError, KeyError) as exc:
        raise ScheduleError(f"invalid cron expression {cron!r}: {exc}") from exc


def latest_slot(schedule: Schedule, now: datetime) -> datetime:
    """The latest fire time at or before `now`, in UTC."""
    zone = zone_of(schedule.timezone)
    every_hour = _fires_every_hour(schedule.cron)
    local_now = now.astimezone(zone).replace(tzinfo=None)
    walker = _walker(schedule.cron, local_now + _SHIFT)
    best: datetime | None = None
    best_wall: datetime | None = None
    for _ in range(_MAX_STEPS):
        try:
            wall: datetime = walker.get_prev(datetime)
        except CroniterBadDateError:
            break
        if best_wall is not None and wall < best_wall - _SHIFT:
            break
        for instant in _instants(wall, zone, every_hour):
            if instant <= now and (best is None or instant > best):
                best, best_wall = instant, wall
    if best is None:
        raise ScheduleError(f"cron expression {schedule.cron!r} never fired before {now}")
    return best


def next_slot(schedule: Schedule, after: datetime) -> datetime:
    """The first fire time strictly after `after`, in UTC."""
    zone = zone_of(schedule.timezone)
    every_hour = _fires_every_hour(schedule.cron)
    local = after.astimezone(zone).replace(tzinfo=None)
    walker = _walker(schedule.cron, local - _SHIFT)
    best: datetime | None = None
    best_wall: datetime | None = None
    for _ in range(_MAX_STEPS):
        try:
            wall: datetime = walker.get_next(datetime)
        except CroniterBadDateError:
            break
        if best_wall is not None and wall > best_wall + _SHIFT:
            break
        for instant in _instants(wall, zone, every_hour):
            if instant > after and (best is None or instant < best):
                best, best_wall = instant, wall
    if best is None:
        raise ScheduleError(f"cron expression {schedule.cron!r} never fires after {after}")
    return best


def lateness_threshold(schedule: Schedule, slot: datetime) -> timedelta:
    """How long after its slot a missing point counts as late: half the way to the next slot.

    A daily schedule is late after 12 hours, an hourly one after 30 minutes; the next slot
    always arrives before the threshold could be passed twice.
    """
    interval = next_slot(schedule, slot) - slot
    return timedelta(seconds=int(interval.total_seconds()) // 2)


def in_window(window: Window | None, zone: ZoneInfo, now: datetime) -> bool:
    """True when `now` (wall clock in `zone`) is inside the window; no window = always open.

    `start <= t < end`; a window whose end is before its start wraps midnight; equal start
    and end mean the whole day.
    """
    if window is None or window.start == window.end:
        return True
    local: time = now.astimezone(zone).time().replace(tzinfo=None)
    if window.start < window.end:
        return window.start <= local < window.end
    return local >= window.start or local < window.end


@dataclass(frozen=True)
class SlotInfo:
    """Everything the planner needs about one policy's schedule at one `now`, computed once."""

    slot: datetime
    threshold: timedelta
    window_open: bool
    zone: ZoneInfo


def slot_info(schedule: Schedule, now: datetime) -> SlotInfo:
    zone = zone_of(schedule.timezone)
    slot = latest_slot(schedule, now)
    return SlotInfo(
        slot=slot,
        threshold=lateness_threshold(schedule, slot),
        window_open=in_window(schedule.window, zone, now),
        zone=zone,
    )

"""Retention: which restore points of one group to keep, with restic 0.18 `forget` semantics.

The rules and their order follow restic's `ApplyPolicy`:

* points are walked newest first; every rule is evaluated independently and a point is kept
  when any rule keeps it;
* `last N` keeps the N newest points;
* counted bucket rules (`hourly` YYYYMMDDHH, `daily` YYYYMMDD, `weekly` ISO year + week,
  `monthly` YYYYMM, `yearly` YYYY) keep a point when its bucket differs from the bucket of
  the last point that rule kept, and then spend one count; empty periods cost nothing;
  `-1` means unlimited;
* when the walk reaches the oldest point and a counted rule still has count left, the oldest
  point is kept as well ("oldest daily snapshot");
* `within D` keeps points strictly newer than `latest - D`, where `latest` is the newest
  point that is not in the future (relative to `now`); `within-<bucket> D` keeps the newest
  point of each bucket inside that window, and the oldest point too when it is inside;
* `D` is subtracted with calendar arithmetic on the wall clock of the policy's zone (years,
  months and days as Go's `AddDate`, then hours and minutes as elapsed time);
* an empty rule set keeps everything ("policy is empty").

Buckets are computed on the slot time seen in the policy's zone. Everything is pure: `now`
is an argument, nothing reads the clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from operator import itemgetter
from typing import Generic, TypeVar
from zoneinfo import ZoneInfo

from reconciler.model import Duration, KeepRules

__all__ = [
    "Decision",
    "RetentionResult",
    "apply_rules",
    "bucket_keys",
    "subtract_duration",
]

K = TypeVar("K", bound=Hashable)

UTC = ZoneInfo("UTC")

# (KeepRules field, reason) for the counted bucket rules, in restic's order.
_COUNTED: tuple[tuple[str, str, int], ...] = (
    ("hourly", "hourly snapshot", 0),
    ("daily", "daily snapshot", 1),
    ("weekly", "weekly snapshot", 2),
    ("monthly", "monthly snapshot", 3),
    ("yearly", "yearly snapshot", 4),
)
_WITHIN: tuple[tuple[str, str, int], ...] = (
    ("within_hourly", "hourly within", 0),
    ("within_daily", "daily within", 1),
    ("within_weekly", "weekly within", 2),
    ("within_monthly", "monthly within", 3),
    ("within_yearly", "yearly within", 4),
)


@dataclass(frozen=True)
class Decision(Generic[K]):
    """The verdict on one point: `reasons` is empty exactly when it is removed."""

    key: K
    time: datetime
    keep: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RetentionResult(Generic[K]):
    """Decisions newest first; `keep` and `remove` partition the input."""

    decisions: tuple[Decision[K], ...]

    @property
    def keep(self) -> tuple[K, ...]:
        return tuple(d.key for d in self.decisions if d.keep)

    @property
    def remove(self) -> tuple[K, ...]:
        return tuple(d.key for d in self.decisions if not d.keep)


@lru_cache(maxsize=65536)
def bucket_keys(moment: datetime, zone: ZoneInfo) -> tuple[int, int, int, int, int]:
    """(hour, day, ISO week, month, year) bucket numbers of `moment` on the zone's wall clock.

    Cached: every VM of a policy shares the same slot times, so the cache makes bucketing a
    dictionary lookup on large estates.
    """
    local = moment.astimezone(zone)
    day = local.year * 10000 + local.month * 100 + local.day
    iso = local.isocalendar()
    return (
        day * 100 + local.hour,
        day,
        iso.year * 100 + iso.week,
        local.year * 100 + local.month,
        local.year,
    )


def _resolve_wall(wall: datetime, zone: ZoneInfo) -> datetime:
    """Turn a naive wall-clock time in `zone` into an instant the way Go's `time.Date` does.

    Go looks up the offset in effect at the wall time read as UTC, then re-checks it at the
    resulting instant. This picks the same instant as Go for times in a DST gap and in a
    repeated hour, which Python's `fold` alone does not.
    """
    as_utc = wall.replace(tzinfo=UTC)
    first = as_utc.astimezone(zone).utcoffset() or timedelta()
    guess = as_utc - first
    second = guess.astimezone(zone).utcoffset() or timedelta()
    return guess if second == first else as_utc - second


def _add_date(local: datetime, years: int, months: int, days: int) -> datetime:
    """Go `AddDate` on a naive wall time: overflowing days roll into the next month."""
    month_index = local.year * 12 + (local.month - 1) + months
    year, month = divmod(month_index, 12)
    year += years
    first = date(year, month + 1, 1)
    day = first + timedelta(days=local.day - 1 + days)
    return local.replace(year=day.year, month=day.month, day=day.day)


def subtract_duration(moment: datetime, duration: Duration, zone: ZoneInfo) -> datetime:
    """`moment - duration`: calendar units on the zone's wall clock, then elapsed time."""
    local = moment.astimezone(zone).replace(tzinfo=None)
    shifted = _add_date(
        local, -duration.years, -duration.months, -(duration.weeks * 7 + duration.days)
    )
    instant = _resolve_wall(shifted, zone)
    return instant - timedelta(hours=duration.hours, minutes=duration.minutes)


def _latest(times: Sequence[datetime], now: datetime) -> datetime | None:
    """The newest time that is not in the future (None: restic's zero time)."""
    candidates = [t for t in times if t < now]
    return max(candidates) if candidates else None


_BEGINNING = datetime(1, 1, 1, tzinfo=UTC)


def _cut(latest: datetime | None, duration: Duration | None, zone: ZoneInfo) -> datetime | None:
    """Start of a `within` window; None when the rule is not set (or zero, as in restic)."""
    if duration is None or _is_zero(duration):
        return None
    if latest is None:  # restic: zero time minus D; every point is after it
        return _BEGINNING
    return subtract_duration(latest, duration, zone)


def _is_zero(duration: Duration) -> bool:
    return not any(
        (
            duration.years,
            duration.months,
            duration.weeks,
            duration.days,
            duration.hours,
            duration.minutes,
        )
    )


def _is_empty(rules: KeepRules) -> bool:
    """restic's `ExpirePolicy.Empty`: no count given and every duration zero."""
    for name in KeepRules.__dataclass_fields__:
        value = getattr(rules, name)
        if isinstance(value, Duration):
            if not _is_zero(value):
                return False
        elif value is not None and value != 0:
            return False
    return True


def apply_rules(
    points: Sequence[tuple[K, datetime]],
    rules: KeepRules,
    zone: ZoneInfo,
    now: datetime,
) -> RetentionResult[K]:
    """Decide keep/remove for one group of complete points (key, slot time).

    Ties on time keep the input order (restic sorts stably); callers pass a stable order.
    """
    ordered = _stable_newest_first(points)
    if _is_empty(rules):
        return RetentionResult(
            tuple(Decision(k, t, True, ("policy is empty",)) for k, t in ordered)
        )
    if not ordered:
        return RetentionResult(())

    counts: list[int] = [_count(getattr(rules, name)) for name, _, _ in _COUNTED]
    last_bucket: list[int | None] = [None] * len(_COUNTED)
    latest = _latest([t for _, t in ordered], now)
    within_cut = _cut(latest, rules.within, zone)
    within_cuts: list[datetime | None] = [
        _cut(latest, getattr(rules, name), zone) for name, _, _ in _WITHIN
    ]
    within_last: list[int | None] = [None] * len(_WITHIN)
    last_count = _count(rules.last)
    oldest = len(ordered) - 1

    decisions: list[Decision[K]] = []
    for nr, (key, moment) in enumerate(ordered):
        reasons: list[str] = []
        if within_cut is not None and moment > within_cut:
            reasons.append(f"within {rules.within}")
        if last_count == -1 or nr < last_count:
            reasons.append("last snapshot")
        buckets = bucket_keys(moment, zone)
        for i, (_, reason, index) in enumerate(_COUNTED):
            if counts[i] == 0:
                continue
            value = buckets[index]
            if value != last_bucket[i] or nr == oldest:
                reasons.append(reason if value != last_bucket[i] else "oldest " + reason)
                last_bucket[i] = value
                if counts[i] > 0:
                    counts[i] -= 1
        for i, (name, reason, index) in enumerate(_WITHIN):
            cut = within_cuts[i]
            if cut is None or moment <= cut:
                continue
            value = buckets[index]
            if value != within_last[i] or nr == oldest:
                label = f"{reason} {getattr(rules, name)}"
                reasons.append(label if value != within_last[i] else "oldest " + label)
                within_last[i] = value
        decisions.append(Decision(key, moment, bool(reasons), tuple(reasons)))
    return RetentionResult(tuple(decisions))


def _count(value: int | None) -> int:
    return 0 if value is None else value


def _stable_newest_first(points: Sequence[tuple[K, datetime]]) -> list[tuple[K, datetime]]:
    """Newest first; equal times keep their input order (Python's sort is stable)."""
    return sorted(points, key=itemgetter(1), reverse=True)

"""Durations as policies write them: `48h`, `14d`, `1y6mo`, `2w3d12h30m`.

A duration is one or more `<number><unit>` parts, units from largest to smallest, each unit
at most once:

    y   years     (calendar)
    mo  months    (calendar)
    w   weeks
    d   days
    h   hours
    m   minutes

Years and months are calendar units (as in restic's `--keep-within`), so they stay separate
fields of `model.Duration`; only durations without them have a fixed length
(`to_timedelta`). Pure: no I/O, no clock.

This module is the one place durations are parsed: policies use `parse`, `vmkeep gc --grace`
uses `fixed_length` (a fixed-length duration, or zero) and `vmkeep run --interval/--poll` use
`seconds` (one `<number>[s|m|h|d]`, fractions allowed, a bare number is seconds).
"""

from __future__ import annotations

import re
from datetime import timedelta

from reconciler.errors import DurationError
from reconciler.model import Duration

__all__ = ["HINT", "UNITS", "DurationError", "fixed_length", "parse", "seconds", "to_timedelta"]

#: Units, largest first, with the `Duration` field each one fills.
UNITS: tuple[tuple[str, str], ...] = (
    ("y", "years"),
    ("mo", "months"),
    ("w", "weeks"),
    ("d", "days"),
    ("h", "hours"),
    ("m", "minutes"),
)

#: Upper bound of a single number, far beyond any sensible retention (keeps date maths safe).
MAX_NUMBER = 100_000

_PART = re.compile(r"(\d+)(mo|y|w|d|h|m)")
_ORDER = {unit: rank for rank, (unit, _field) in enumerate(UNITS)}
_FIELD = dict(UNITS)

#: How to write a duration: the accepted units and examples (the hint of every parse error).
HINT = DurationError.HINT


def parse(text: str) -> Duration:
    """Parse `text` into a `Duration`; raise `DurationError` with a readable reason."""
    if not isinstance(text, str):
        raise DurationError("a duration must be a string")
    stripped = text.strip()
    if not stripped:
        raise DurationError("a duration must not be empty")
    values: dict[str, int] = {}
    position = 0
    last_rank = -1
    while position < len(stripped):
        match = _PART.match(stripped, position)
        if match is None:
            rest = stripped[position:]
            raise DurationError(f"cannot read {rest!r} in duration {stripped!r}")
        number, unit = int(match.group(1)), match.group(2)
        rank = _ORDER[unit]
        if unit in values:
            raise DurationError(f"unit {unit!r} appears twice in duration {stripped!r}")
        if rank < last_rank:
            raise DurationError(f"units in duration {stripped!r} must go from largest to smallest")
        if number > MAX_NUMBER:
            raise DurationError(f"{number}{unit} is too large (at most {MAX_NUMBER} per unit)")
        values[unit] = number
        last_rank = rank
        position = match.end()
    if not any(values.values()):
        raise DurationError(f"duration {stripped!r} is zero; give a positive length")
    fields = {_FIELD[unit]: number for unit, number in values.items()}
    return Duration(text=stripped, **fields)


def to_timedelta(duration: Duration) -> timedelta:
    """The fixed length of a duration without calendar units (years, months)."""
    if duration.years or duration.months:
        raise DurationError(
            f"duration {duration} uses calendar units (y, mo); use w, d, h or m here", hint=""
        )
    return timedelta(
        weeks=duration.weeks,
        days=duration.days,
        hours=duration.hours,
        minutes=duration.minutes,
    )


#: Texts `fixed_length(..., allow_zero=True)` reads as no time at all.
ZERO = frozenset({"0", "0s", "0m"})


def fixed_length(text: str, *, allow_zero: bool = False) -> timedelta:
    """A duration without calendar units as a `timedelta`; `0`, `0s`, `0m` give zero if
    `allow_zero`. Raises `DurationError`."""
    if allow_zero and isinstance(text, str) and text.strip() in ZERO:
        return timedelta(0)
    return to_timedelta(parse(text))


_SECONDS = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d)?")
_SECONDS_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

#: The shortest length `seconds` accepts.
MIN_SECONDS = 0.1


def seconds(text: str) -> float:
    """`90`, `30s`, `5m`, `1h`, `1d` (fractions allowed) as seconds; at least 0.1.

    Raises `DurationError` whose `reason` is the whole message (no hint)."""
    match = _SECONDS.fullmatch(text.strip())
    if not match:
        raise DurationError(f"{text!r} is not a duration like 30s, 5m, 1h or 1d", hint="")
    value = float(match.group(1)) * _SECONDS_UNITS[match.group(2) or "s"]
    if value < MIN_SECONDS:
        raise DurationError(f"{text!r} is too short (at least {MIN_SECONDS} s)", hint="")
    return value

"""Durations: `48h`, `14d`, `1y6mo` and friends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler import durations
from reconciler.durations import UNITS, DurationError, parse, to_timedelta
from reconciler.model import Duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("48h", Duration(hours=48, text="48h")),
        ("14d", Duration(days=14, text="14d")),
        ("1y6mo", Duration(years=1, months=6, text="1y6mo")),
        ("2w3d12h30m", Duration(weeks=2, days=3, hours=12, minutes=30, text="2w3d12h30m")),
        ("10m", Duration(minutes=10, text="10m")),
        ("3mo", Duration(months=3, text="3mo")),
    ],
)
def test_valid_durations_are_read_into_their_units(text: str, expected: Duration) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "must not be empty"),
        ("48", "cannot read '48'"),
        ("h", "cannot read 'h'"),
        ("2 days", "cannot read"),
        ("1d1y", "largest to smallest"),
        ("1h1h", "appears twice"),
        ("0d", "is zero"),
        ("1s", "cannot read '1s'"),
        ("-1d", "cannot read"),
        ("999999d", "too large"),
    ],
)
def test_invalid_durations_say_why(text: str, fragment: str) -> None:
    with pytest.raises(DurationError, match=fragment):
        parse(text)


@pytest.mark.parametrize("text", ["", "48", "1d1y", "1h1h", "0d", "1s", "999999d"])
def test_every_invalid_duration_comes_with_the_units_and_an_example(text: str) -> None:
    with pytest.raises(DurationError) as caught:
        parse(text)
    assert "y, mo, w, d, h and m for minutes" in caught.value.hint
    assert "e.g. 48h" in caught.value.hint
    assert caught.value.hint not in caught.value.reason
    assert str(caught.value) == f"{caught.value.reason} ({caught.value.hint})"


@given(st.lists(st.integers(0, 500), min_size=len(UNITS), max_size=len(UNITS)))
def test_writing_a_duration_and_reading_it_back_gives_the_same_value(numbers) -> None:
    text = "".join(f"{n}{unit}" for n, (unit, _) in zip(numbers, UNITS, strict=True) if n)
    if not text:
        return
    duration = parse(text)
    assert str(duration) == text
    assert str(Duration(**{f: getattr(duration, f) for _, f in UNITS})) == text


def test_only_durations_without_calendar_units_have_a_fixed_length() -> None:
    assert to_timedelta(parse("1w1d2h3m")) == timedelta(days=8, hours=2, minutes=3)
    with pytest.raises(DurationError, match="calendar units"):
        to_timedelta(parse("1mo"))


def test_a_fixed_length_reads_zero_only_when_zero_is_allowed() -> None:
    assert durations.fixed_length("0s", allow_zero=True) == timedelta(0)
    assert durations.fixed_length("1d12h") == timedelta(days=1, hours=12)
    with pytest.raises(durations.DurationError):
        durations.fixed_length("0s")
    with pytest.raises(durations.DurationError, match="calendar units"):
        durations.fixed_length("1mo", allow_zero=True)


def test_seconds_take_fractions_and_bare_numbers_but_not_weeks_or_tiny_lengths() -> None:
    assert durations.seconds("1.5h") == 5400
    assert durations.seconds("90") == 90
    with pytest.raises(durations.DurationError, match="not a duration like 30s"):
        durations.seconds("1w")
    with pytest.raises(durations.DurationError, match="too short"):
        durations.seconds("0.01s")

"""Apply's progress display: bars on a terminal, throttled log lines otherwise."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from reconciler.cli.progress import ProgressDisplay, format_bar, format_duration
from reconciler.executor import Progress
from reconciler.model import Action, ActionKind, VMRef

MiB = 1 << 20
ACTION = Action(
    kind=ActionKind.EXPORT_CREATE,
    policy="gold",
    vcenter="prod",
    vm=VMRef("web-01", "5001"),
    point_id="gold/5001/20261125T010000Z",
    slot=datetime(2026, 11, 25, 1, tzinfo=UTC),
    reason="daily",
    target="nas",
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0:00"), (59.6, "1:00"), (75, "1:15"), (3725, "1:02:05")],
)
def test_durations_read_like_a_clock(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_a_bar_shows_share_bytes_rate_and_eta() -> None:
    bar = format_bar("web-01 disk-2000", 64 * MiB, 256 * MiB, 2.0, width=8)
    assert bar == "  web-01 disk-2000 [##......]  25 % 64/256 MiB 32 MiB/s ETA 0:06"
    assert format_bar("d", 256 * MiB, 256 * MiB, 4.0, width=4).endswith("64 MiB/s done")
    assert "ETA --:--" in format_bar("d", 0, MiB, 0.0)


def test_without_a_terminal_each_disk_logs_at_most_every_ten_seconds_and_at_its_end() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, terminal=False, clock=clock)
    display(Progress(ACTION, "start"))
    for step in range(1, 5):
        clock.now += 4
        display(Progress(ACTION, "bytes", "disk-2000", step * 8 * MiB, 32 * MiB))
    clock.now += 1
    display(Progress(ACTION, "end", message="done"))
    lines = out.getvalue().splitlines()
    assert lines == [
        "  … web-01: export.create (gold/5001/20261125T010000Z)",
        "  web-01 disk-2000  75 % 24/32 MiB 2 MiB/s ETA 0:04",
        "  web-01 disk-2000 100 % 32/32 MiB 2 MiB/s done",
        "  ✓ web-01: export.create done (0:17)",
    ]
    assert "\x1b" not in out.getvalue()


def test_on_a_terminal_bars_stay_below_the_log_and_vanish_when_the_action_ends() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, terminal=True, clock=clock)
    display(Progress(ACTION, "start"))
    clock.now += 1
    display(Progress(ACTION, "bytes", "disk-2000", 8 * MiB, 32 * MiB))
    clock.now += 0.01  # too soon to redraw
    display(Progress(ACTION, "bytes", "disk-2000", 9 * MiB, 32 * MiB))
    clock.now += 1
    display(Progress(ACTION, "end", message="failed"))
    display.close()
    text = out.getvalue()
    assert text.count("disk-2000 [") == 1  # one bar drawn, the throttled one not
    assert "web-01 disk-2000 [######" in text
    erase = "\x1b[1A\x1b[2K"
    assert text.endswith(erase + "  ✗ web-01: export.create failed (0:02)\n")

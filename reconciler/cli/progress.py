"""What `vmkeep apply` shows while it works: bars on a terminal, log lines otherwise.

On a terminal every disk being exported gets a bar (bytes done of the total, rate, ETA) kept
at the bottom of the screen and redrawn at most ten times a second; actions starting and
ending scroll above the bars. Without a terminal (CI, the controller's log) the same events
are plain lines: one when an action starts, one per disk at most every `LOG_EVERY` seconds
and at its end, one when the action ends.

Progress goes to stderr, so `-o json` keeps stdout clean.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from reconciler.executor import Progress

__all__ = ["ProgressDisplay", "format_bar", "format_duration"]

MiB = 1 << 20
#: Seconds between redraws of the bars on a terminal.
REDRAW_EVERY = 0.1
#: Seconds between log lines for one disk without a terminal.
LOG_EVERY = 10.0
BAR_WIDTH = 24


def format_duration(seconds: float) -> str:
    """`75` → `1:15`, `3725` → `1:02:05`."""
    whole = max(0, int(seconds + 0.5))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _rate_and_eta(done: int, total: int, elapsed: float) -> tuple[float, str]:
    rate = done / elapsed if elapsed > 0 else 0.0
    if done >= total:
        return rate, "done"
    if rate <= 0:
        return rate, "ETA --:--"
    return rate, f"ETA {format_duration((total - done) / rate)}"


def format_bar(label: str, done: int, total: int, elapsed: float,
               width: int = BAR_WIDTH) -> str:
    """One bar: `  web-01 disk-2000 [#######.........]  42 % 120/286 MiB 95 MiB/s ETA 0:02`;
    `width=0` leaves the bar out (for log lines)."""
    share = min(1.0, done / total) if total > 0 else 0.0
    filled = int(share * width)
    bar = f"[{'#' * filled}{'.' * (width - filled)}] " if width else ""
    rate, eta = _rate_and_eta(done, total, elapsed)
    return (f"  {label} {bar}{share * 100:3.0f} % "
            f"{done / MiB:,.0f}/{total / MiB:,.0f} MiB {rate / MiB:,.0f} MiB/s {eta}")


@dataclass
class _Bar:
    label: str
    started: float
    done: int = 0
    total: int = 0
    logged: float = 0.0


class ProgressDisplay:
    """A `Progress` callback for the executor; thread-safe (VMs run in parallel)."""

    def __init__(self, out: TextIO, *, terminal: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._out = out
        self._terminal = terminal
        self._clock = clock
        self._lock = threading.Lock()
        self._bars: dict[tuple[str, str, str], _Bar] = {}
        self._started: dict[tuple[str, str], float] = {}
        self._drawn = 0  # bar lines on screen below the log
        self._last_draw = float("-inf")

    def __call__(self, event: Progress) -> None:
        action = event.action
        key = (action.kind.value, action.point_id)
        now = self._clock()
        with self._lock:
            if event.phase == "start":
                self._started[key] = now
                self._log(f"  … {action.vm.name}: {action.kind.value} ({action.point_id})")
            elif event.phase == "retry":
                self._log(f"  ↻ {action.vm.name}: {action.kind.value} retried: {event.message}")
            elif event.phase == "bytes" and event.total:
                self._bytes((*key, event.disk), f"{action.vm.name} {event.disk}", event, now)
            elif event.phase == "end":
                seconds = now - self._started.pop(key, now)
                for bar_key in [k for k in self._bars if k[:2] == key]:
                    del self._bars[bar_key]
                self._log(f"  {'✗' if event.message == 'failed' else '✓'} {action.vm.name}: "
                          f"{action.kind.value} {event.message} ({format_duration(seconds)})")

    def close(self) -> None:
        with self._lock:
            self._bars.clear()
            self._redraw()

    # ------------------------------------------------------------------ internals

    def _bytes(self, key: tuple[str, str, str], label: str, event: Progress,
               now: float) -> None:
        bar = self._bars.get(key)
        if bar is None:
            started = self._started.get(key[:2], now)
            bar = self._bars[key] = _Bar(label, started, logged=started)
        bar.done, bar.total = event.done, event.total
        if self._terminal:
            if now - self._last_draw >= REDRAW_EVERY or bar.done >= bar.total:
                self._redraw()
        elif now - bar.logged >= LOG_EVERY or bar.done >= bar.total:
            bar.logged = now
            self._write(format_bar(bar.label, bar.done, bar.total, now - bar.started,
                                   width=0) + "\n")

    def _log(self, line: str) -> None:
        if self._terminal:
            self._erase()
            self._write(line + "\n")
            self._draw()
        else:
            self._write(line + "\n")

    def _redraw(self) -> None:
        if self._terminal:
            self._erase()
            self._draw()

    def _erase(self) -> None:
        self._write("\x1b[1A\x1b[2K" * self._drawn)
        self._drawn = 0

    def _draw(self) -> None:
        now = self._clock()
        lines = [format_bar(b.label, b.done, b.total, now - b.started)
                 for _, b in sorted(self._bars.items())]
        if lines:
            self._write("\n".join(lines) + "\n")
        self._drawn = len(lines)
        self._last_draw = now

    def _write(self, text: str) -> None:
        if text:
            self._out.write(text)
            self._out.flush()

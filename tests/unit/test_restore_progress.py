"""Progress of a restore into vCenter: per disk on a terminal (bytes, rate, ETA), one line
per disk otherwise, nothing with -o json."""

from __future__ import annotations

import io

import pytest

from reconciler.cli import restore_vcenter

MiB = 1 << 20


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def feed(monkeypatch: pytest.MonkeyPatch, stream: io.StringIO, text: bool = True) -> str:
    ticks = iter([100.0, 102.0, 104.0])
    monkeypatch.setattr(restore_vcenter.time, "monotonic", lambda: next(ticks))
    monkeypatch.setattr(restore_vcenter.sys, "stderr", stream)
    progress = restore_vcenter._Progress(text)
    for done in (0, 50 * MiB, 100 * MiB):
        progress("disk-2000", done, 100 * MiB)
    return stream.getvalue()


def test_on_a_terminal_each_disk_shows_bytes_rate_and_eta_on_one_line(monkeypatch):
    out = feed(monkeypatch, Terminal())
    assert "\r  disk-2000: 50.0/100.0 MiB, 25 MiB/s, ETA 2 s" in out
    assert out.endswith("\r  disk-2000: 100.0/100.0 MiB, 25 MiB/s, ETA 0 s   \n")


def test_without_a_terminal_a_line_per_finished_disk(monkeypatch):
    assert feed(monkeypatch, io.StringIO()) == "  disk-2000: 100.0 MiB in 4.0 s\n"


def test_json_output_prints_no_progress(monkeypatch):
    assert feed(monkeypatch, Terminal(), text=False) == ""

"""A partial export tells whether a writer may still be at work on it (`live`), so recovery
in a repository many writers share discards leftovers, never another process's export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from reconciler.adapters.repository import Repository

from .disks import SLOT, VM
from .session_worker import open_shared

ROOT = Path(__file__).resolve().parents[2]
POINT = f"shared/{VM.instance_uuid}/20260101T020000Z"
#: No writer session is that old.
DAY = 86400
WRITER = f"""
import sys
from pathlib import Path
from tests.repository.disks import SLOT, VM
from tests.repository.session_worker import open_shared
repo = open_shared(Path(sys.argv[1]))
writer = repo.begin_point({POINT!r}, "shared", VM, SLOT)
print("writing", flush=True)
sys.stdin.read()  # until the test closes it
"""


def start_writer(repo: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(repo)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
    return proc


def live(repo: Repository) -> dict[str, bool]:
    return {p.id: p.live for p in repo.partials()}


def test_an_export_of_a_running_process_is_live_and_its_leftover_after_a_kill_is_not(
        tmp_path: Path) -> None:
    open_shared(tmp_path).close()
    proc = start_writer(tmp_path)
    repo = open_shared(tmp_path)
    try:
        assert live(repo) == {POINT: True}
    finally:
        proc.kill()
        proc.wait()
    assert live(repo) == {POINT: False}


def test_an_export_written_from_another_host_is_live_while_touched_within_the_writer_lease(
        tmp_path: Path) -> None:
    open_shared(tmp_path).close()
    proc = start_writer(tmp_path)
    proc.kill()
    proc.wait()
    repo = open_shared(tmp_path)
    [marker] = repo.layout.partial.glob("*.json")
    body = json.loads(marker.read_bytes())
    marker.write_text(json.dumps(dict(body, host="proxy-on-another-host", pid=1)))
    assert live(repo) == {POINT: True}  # just touched: another host's live session
    stale = time.time() - DAY
    os.utime(marker, (stale, stale))
    assert live(repo) == {POINT: False}


def test_an_export_this_process_is_writing_is_live(tmp_path: Path) -> None:
    repo = open_shared(tmp_path)
    writer = repo.begin_point(POINT, "shared", VM, SLOT)
    assert live(repo) == {POINT: True}
    writer.abort()
    assert live(repo) == {}

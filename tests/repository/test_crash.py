"""Crash safety: writers and GC killed with SIGKILL at random file-system steps.

Each trial runs an export or a GC in a subprocess that kills itself (SIGKILL) at a random
step among its writes, fsyncs, renames and unlinks. After every trial: each point committed
before is still listed and reads back byte-exact and verifies, no partial point is listed,
and from time to time a new write succeeds and GC leaves no garbage-heavy pack behind.

`VMKEEP_KILL_TRIALS` sets the number of trials (default 50), `VMKEEP_KILL_SEED` the seed.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

from reconciler.adapters.repository.format import Layout

from .crash_worker import crash_disk
from .disks import assert_garbage_reclaimed, export, open_repo, read_disk

ROOT = Path(__file__).resolve().parents[2]
TRIALS = int(os.environ.get("VMKEEP_KILL_TRIALS", "50"))
SEED = int(os.environ.get("VMKEEP_KILL_SEED", "20260101"))


def run_worker(repo: Path, mode: str, point: str, seed: str, kill_at: int) -> int:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.repository.crash_worker",
            str(repo),
            mode,
            point,
            seed,
            str(kill_at),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, -9):
        raise AssertionError(f"worker failed: {proc.stderr}")
    return int(proc.stdout) if proc.returncode == 0 else -1


def pid_of(n: int) -> str:
    return f"crash/5003aaaa-0000-0000-0000-000000000001/trial{n:04d}"


def check(repo_path: Path, expected: dict[str, bytes]) -> None:
    repo = open_repo(repo_path)
    assert sorted(p.id for p in repo.points()) == sorted(expected)
    report = repo.verify()
    assert report.ok, report.damaged
    for pid, data in expected.items():
        assert read_disk(repo, pid, "d0") == data
    repo.close()


def test_sigkilled_writers_and_gc_never_lose_or_expose_a_point(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "repo"
    repo = open_repo(path)
    expected: dict[str, bytes] = {}
    for n in range(3):
        expected[pid_of(n)] = crash_disk(str(n))
        export(repo, pid_of(n), {"d0": expected[pid_of(n)]})
    repo.close()

    # how many steps a complete run takes, measured on a copy
    scratch = tmp_path / "scratch"
    shutil.copytree(path, scratch)
    steps = {"write": run_worker(scratch, "write", pid_of(999), "x", 0)}
    steps["gc"] = run_worker(scratch, "gc", pid_of(999), "-", 0)
    assert min(steps.values()) > 5

    killed = 0
    for trial in range(TRIALS):
        n = 100 + trial
        mode = "write" if trial % 2 == 0 or len(expected) < 3 else "gc"
        kill_at = rng.randint(1, steps[mode] + 3)
        if mode == "write":
            outcome = run_worker(path, "write", pid_of(n), str(n), kill_at)
            listed = {p.id for p in open_repo(path).points()}
            if pid_of(n) in listed:
                expected[pid_of(n)] = crash_disk(str(n))
        else:
            victim = rng.choice(sorted(expected))
            outcome = run_worker(path, "gc", victim, "-", kill_at)
            if victim not in {p.id for p in open_repo(path).points()}:
                del expected[victim]
        killed += outcome < 0
        check(path, expected)
        if trial % 10 == 9 or trial == TRIALS - 1:
            repo = open_repo(path)
            fresh = pid_of(5000 + trial)
            expected[fresh] = crash_disk(f"fresh{trial}")
            export(repo, fresh, {"d0": expected[fresh]})
            repo.gc()
            assert_garbage_reclaimed(repo)
            layout = Layout(path)
            assert list(layout.tmp.iterdir()) == []
            assert list(layout.partial.iterdir()) == []
            repo.close()
            check(path, expected)
    assert killed >= TRIALS // 2  # most trials really died mid-operation

"""Crash safety: writers and GC killed with SIGKILL at random file-system steps.

Trials alternate between an export and a GC (after deleting a random point). Each trial
first *rehearses* its operation: it runs it to completion, in a subprocess, on a copy of the
repository as it is at that moment, which counts the steps (writes, fsyncs, renames,
unlinks) the run takes from exactly this state. The real run, in a subprocess that SIGKILLs
itself, then dies at a step drawn from the whole run (or a few steps past its end, so some
runs complete), stratified: successive trials of a kind draw from successive quarters of
the run, so late steps are killed as often as early ones. Measuring per trial matters for
GC: its length grows with the garbage that killed exports leave behind (here from about 30
to over 100 steps), and a bound measured once on a clean repository would almost never
reach its late steps (rewrite, sweep, tidy-up).

After every trial: each point committed before is still listed, reads back byte-exact and
verifies, and no partial point is listed. The rehearsal checks, on its copy and so on every
trial, that from the state the previous crash left the operation succeeds, a fresh export
succeeds and GC then reclaims the garbage (no pack under half live, at most one small pack,
nothing left in `tmp/` or `partial/`). Doing that on a copy keeps the trial repository full
of the killed exports' garbage for the GC trials to meet.

`VMKEEP_KILL_TRIALS` sets the number of trials (default 50), `VMKEEP_REPO_KILL_SEED` the
seed (a variable of its own: `VMKEEP_KILL_SEED` is tests/integration/test_apply_kill.py's).
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
SEED = int(os.environ.get("VMKEEP_REPO_KILL_SEED", "20260101"))


def run_worker(repo: Path, mode: str, point: str, seed: str, kill_at: int) -> int:
    """Steps the run took, or -1 when it was killed."""
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


def listed(repo_path: Path) -> set[str]:
    repo = open_repo(repo_path)
    ids = {p.id for p in repo.points()}
    repo.close()
    return ids


def rehearse(
    path: Path, scratch: Path, mode: str, point: str, seed: str, expected: dict[str, bytes]
) -> int:
    """Run the trial's operation to completion on a copy of the repository and return its
    step count, after checking that the copy is then sound, takes a fresh export, and that
    GC leaves no garbage."""
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(path, scratch)
    steps = run_worker(scratch, mode, point, seed, 0)
    after = dict(expected)
    if mode == "write":
        after[point] = crash_disk(seed)
    else:
        del after[point]
    repo = open_repo(scratch)
    fresh = pid_of(9999)
    after[fresh] = crash_disk("fresh")
    export(repo, fresh, {"d0": after[fresh]})
    repo.gc()
    assert_garbage_reclaimed(repo)
    layout = Layout(scratch)
    assert list(layout.tmp.iterdir()) == []
    assert list(layout.partial.iterdir()) == []
    repo.close()
    check(scratch, after)
    return steps


def kill_step(rng: random.Random, steps: int, quarter: int) -> int:
    """A step in the given quarter (0–3) of a run of `steps` steps plus 3 past its end."""
    total = steps + 3
    return rng.randint(1 + total * quarter // 4, total * (quarter + 1) // 4)


def test_sigkilled_writers_and_gc_never_lose_or_expose_a_point(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "repo"
    scratch = tmp_path / "rehearsal"
    expected: dict[str, bytes] = {}
    killed = 0
    kills: dict[str, list[tuple[int, int]]] = {"write": [], "gc": []}  # (kill step, steps)
    for trial in range(TRIALS):
        n = 100 + trial
        if len(expected) < 3:  # uncrashed exports keep points around for GC to delete
            repo = open_repo(path)
            for k in range(3 - len(expected)):
                top_up = pid_of(10 * n + k)
                expected[top_up] = crash_disk(str(10 * n + k))
                export(repo, top_up, {"d0": expected[top_up]})
            repo.close()
        if trial % 2 == 0:
            mode, point, seed = "write", pid_of(n), str(n)
        else:
            mode, point, seed = "gc", rng.choice(sorted(expected)), "-"
        steps = rehearse(path, scratch, mode, point, seed, expected)
        assert steps > 5
        kill_at = kill_step(rng, steps, len(kills[mode]) % 4)
        kills[mode].append((kill_at, steps))
        outcome = run_worker(path, mode, point, seed, kill_at)
        if mode == "write" and point in listed(path):
            expected[point] = crash_disk(seed)
        if mode == "gc" and point not in listed(path):
            del expected[point]
        killed += outcome < 0
        check(path, expected)
    assert killed >= TRIALS // 2  # most trials really died mid-operation

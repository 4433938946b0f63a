"""A repository many writers share: several processes export into one directory at once,
GC excludes them, a killed writer's session is resumed from its checkpoint, and GC never
deletes what a live (or resumable) writer may reference."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.adapters.repository.store import PointExistsError

from .disks import SLOT, VM, read_disk
from .session_worker import open_shared as open_repo
from .session_worker import session_disk

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
#: Eight of the writer's 8 MiB blocks. It reads up to 2 × threads blocks ahead of what it
#: has stored (threads=2 here), so a checkpoint trails the reads by at most 32 + 8 MiB.
SIZE = 64 * MiB
KILL = 60 * MiB
TRIALS = int(os.environ.get("VMKEEP_SHARED_TRIALS", "4"))
SEED = int(os.environ.get("VMKEEP_SHARED_SEED", "20261207"))


def start(repo: Path, point: str, seed: str, kill_after: int, *extra: str,
          size: int = SIZE) -> subprocess.Popen[str]:
    env = dict(os.environ, VMKEEP_CHECKPOINT_MIB="8")
    return subprocess.Popen(
        [sys.executable, "-m", "tests.repository.session_worker", str(repo), point, seed,
         str(size), str(kill_after), *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> int:
    """Bytes the writer read, or -1 when it was killed."""
    out, err = proc.communicate(timeout=300)
    if proc.returncode == -9:
        return -1
    assert proc.returncode == 0, err
    return int(out)


def pid(n: int) -> str:
    return f"shared/{VM.instance_uuid}/20260101T{n // 60:02d}{n % 60:02d}00Z"


def test_a_killed_writer_is_resumed_from_its_checkpoint_rereading_only_what_followed_it(
        tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    open_repo(repo_path).close()
    assert finish(start(repo_path, pid(1), "one", KILL)) == -1
    repo = open_repo(repo_path)
    [partial] = repo.partials()
    assert partial.id == pid(1)
    read = finish(start(repo_path, pid(1), "one", 0, "resume"))
    assert 0 < read <= SIZE - (KILL - 40 * MiB)  # from the last checkpoint on
    repo = open_repo(repo_path)
    assert read_disk(repo, pid(1), "d0") == session_disk("one", SIZE)
    assert repo.verify().ok
    assert repo.partials() == []


def test_a_resume_from_another_snapshot_starts_over(tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    open_repo(repo_path).close()
    assert finish(start(repo_path, pid(2), "two", KILL)) == -1
    repo = open_repo(repo_path)
    data = session_disk("two", SIZE)
    import io

    with repo.begin_point(pid(2), "shared", VM, SLOT, resume=True,
                          snapshotId="another-snapshot") as writer:
        result = writer.add_disk("d0", io.BytesIO(data), size=SIZE)
        writer.commit("crash")
    assert result.read_bytes == SIZE
    assert read_disk(repo, pid(2), "d0") == data


def test_a_point_is_committed_once_when_two_writers_finish_it(tmp_path: Path) -> None:
    import io

    repo_path = tmp_path / "repo"
    first, second = open_repo(repo_path), open_repo(repo_path)
    data = session_disk("twice", 3 * 4096)
    a = first.begin_point(pid(3), "shared", VM, SLOT)
    b = second.begin_point(pid(3), "shared", VM, SLOT)
    for writer in (a, b):
        writer.add_disk("d0", io.BytesIO(data), size=len(data))
    a.commit("crash")
    with pytest.raises(PointExistsError, match="committed by another writer"):
        b.commit("crash")
    b.abort()
    assert [p.id for p in first.points()] == [pid(3)]
    assert read_disk(first, pid(3), "d0") == data


def test_gc_keeps_what_a_resumable_writer_stored_until_its_lease_ends(tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    open_repo(repo_path).close()
    assert finish(start(repo_path, pid(4), "four", KILL)) == -1
    repo = open_repo(repo_path)
    report = repo.gc()
    assert report.partials_removed == 0 and report.packs_deleted == 0
    read = finish(start(repo_path, pid(4), "four", 0, "resume"))
    assert read < SIZE
    repo = open_repo(repo_path)
    assert read_disk(repo, pid(4), "d0") == session_disk("four", SIZE)
    os.environ["VMKEEP_WRITER_LEASE_SECONDS"] = "0"
    try:
        assert finish(start(repo_path, pid(5), "five", KILL)) == -1
        expired = open_repo(repo_path)
        report = expired.gc()  # the killed writer's lease is over: its data is garbage
        assert report.partials_removed == 1 and report.packs_deleted >= 1
        assert expired.verify().ok
    finally:
        del os.environ["VMKEEP_WRITER_LEASE_SECONDS"]


def test_three_writers_with_random_kills_and_a_concurrent_gc_lose_no_committed_point(
        tmp_path: Path) -> None:
    rng = random.Random(SEED)
    repo_path = tmp_path / "repo"
    open_repo(repo_path).close()
    committed: dict[str, bytes] = {}
    size = 12 * MiB
    kills = 0
    for trial in range(TRIALS):
        writers = []
        for k in range(3):
            n = 10 + trial * 3 + k
            kill_after = rng.choice([0, rng.randint(1, size)])
            writers.append((pid(n), f"seed-{n}", start(repo_path, pid(n), f"seed-{n}",
                                                       kill_after, size=size)))
        time.sleep(rng.random() * 0.5)
        gc = subprocess.Popen(
            [sys.executable, "-c",
             "import sys; from tests.repository.session_worker import open_shared; "
             "from pathlib import Path; open_shared(Path(sys.argv[1]), lock_timeout=120).gc()",
             str(repo_path)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        for point, seed, proc in writers:
            if finish(proc) >= 0:
                committed[point] = session_disk(seed, size)
            else:
                kills += 1
        _, err = gc.communicate(timeout=300)
        assert gc.returncode == 0, err
        repo = open_repo(repo_path)
        assert sorted(p.id for p in repo.points()) == sorted(committed)
        report = repo.verify()
        assert report.ok, report.damaged
        for point, data in committed.items():
            assert read_disk(repo, point, "d0") == data
        repo.close()
    assert kills >= 1 and committed

"""The catalog, manifests, the format descriptor and the writer lock, on real directories."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.repository import Repository
from reconciler.adapters.repository.format import Layout, quote_id
from reconciler.errors import CorruptionError, RepositoryError, RepositoryLockedError

from .disks import CHUNK, SLOT, VM, export, noise, open_repo, point_id, read_disk


def test_a_committed_point_is_listed_with_its_vm_policy_slot_and_size(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    point = export(repo, point_id(1), {"d0": noise(1, 3 * CHUNK)}, {"vm.vmx": b"x"})
    assert repo.points() == [point]
    assert (point.policy, point.vm, point.slot) == ("nightly", VM, SLOT)
    assert point.complete and point.consistency == "crash"
    assert point.size_bytes == 3 * CHUNK + 1
    manifest = repo.manifest(point.id)
    assert manifest.policy_revision == "0123abc"
    assert manifest.metadata == {"source": "test"}
    assert "write_seconds" in manifest.timings


def test_point_ids_with_slashes_map_to_single_file_names(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    pid = "weird policy/../uuid/20260101T020000Z"
    export(repo, pid, {"d0": b"abc"})
    names = [p.name for p in Layout(tmp_path).points.iterdir()]
    assert names == [f"{quote_id(pid)}.json"] and "/" not in names[0]
    assert [p.id for p in repo.points()] == [pid]


def test_an_export_in_progress_is_not_a_point_but_a_partial(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    writer = repo.begin_point(point_id(1), "nightly", VM, SLOT)
    writer.add_disk("d0", io.BytesIO(noise(2, 10 * CHUNK)))
    assert repo.points() == []
    assert [p.id for p in repo.partials()] == [point_id(1)]
    writer.commit("crash")
    assert repo.partials() == []
    assert [p.id for p in repo.points()] == [point_id(1)]


def test_an_exception_inside_the_writer_block_aborts_the_export(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    with pytest.raises(ValueError), repo.begin_point(point_id(1), "nightly", VM, SLOT) as w:
        w.add_disk("d0", io.BytesIO(noise(3, 10 * CHUNK)))
        raise ValueError("source went away")
    assert repo.points() == [] and repo.partials() == []
    assert not repo.lock.held
    export(repo, point_id(1), {"d0": b"retry"})  # the same id can be exported again


def test_an_existing_point_cannot_be_written_twice(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"d0": b"x"})
    with pytest.raises(RepositoryError, match="already exists"):
        repo.begin_point(point_id(1), "nightly", VM, SLOT)


def test_deleting_a_point_removes_only_its_manifest(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"d0": noise(4, 8 * CHUNK)})
    packs = repo.pack_ids()
    repo.delete_point(point_id(1))
    assert repo.points() == [] and repo.pack_ids() == packs
    with pytest.raises(RepositoryError, match="no restore point"):
        repo.delete_point(point_id(1))


def test_a_damaged_manifest_is_detected_not_trusted(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"d0": b"data"})
    path = Layout(tmp_path).point(point_id(1))
    path.write_bytes(path.read_bytes().replace(b'"nightly"', b'"nightlx"', 1))
    with pytest.raises(CorruptionError, match="checksum mismatch"):
        repo.manifest(point_id(1))
    assert repo.points() == []
    assert repo.damaged_manifests() == [point_id(1)]
    assert [d.point for d in repo.verify().damaged] == [point_id(1)]


def test_a_newer_format_version_is_refused_with_advice(tmp_path: Path) -> None:
    open_repo(tmp_path)
    desc = Layout(tmp_path).descriptor
    desc.write_text(desc.read_text().replace('"format": 1', '"format": 99'))
    with pytest.raises(RepositoryError, match=r"format 99 is not supported.*upgrade"):
        Repository.open(tmp_path)


@pytest.mark.parametrize("size", [1000, 3 * 4096, 128 * 1024 * 1024])
def test_invalid_chunk_sizes_are_refused(tmp_path: Path, size: int) -> None:
    with pytest.raises(RepositoryError, match="power of two"):
        Repository.open(tmp_path, chunk_size=size)


def test_opening_a_missing_repository_without_create_fails(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="no vmkeep repository"):
        Repository.open(tmp_path / "nowhere", create=False)


# --------------------------------------------------------------------------- lock

HOLDER = """
import sys, time
from reconciler.adapters.repository import Repository
from datetime import UTC, datetime
from reconciler.model import VMRef
repo = Repository.open(sys.argv[1])
w = repo.begin_point("p/u/20260101T000000Z", "p", VMRef("a", "u"), datetime.now(UTC))
print("locked", flush=True)
time.sleep(60)
"""


def _hold_lock(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_shares_the_repository_while_gc_is_refused_naming_the_writer(
        tmp_path: Path) -> None:
    open_repo(tmp_path)
    proc = _hold_lock(tmp_path)
    try:
        repo = open_repo(tmp_path, lock_timeout=0.2)
        export(repo, point_id(1), {"d0": b"written beside another writer"})
        with pytest.raises(RepositoryLockedError, match=f"pid {proc.pid} on .*export"):
            repo.gc()
        assert [p.id for p in repo.points()] == [point_id(1)]
        assert read_disk(repo, point_id(1), "d0") == b"written beside another writer"
    finally:
        proc.kill()
        proc.wait()


def test_a_crashed_writer_leaves_a_stale_lock_that_the_next_writer_takes_over(
    tmp_path: Path,
) -> None:
    open_repo(tmp_path)
    proc = _hold_lock(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    repo = open_repo(tmp_path, lock_timeout=0.0)
    assert [p.id for p in repo.partials()] == ["p/u/20260101T000000Z"]
    export(repo, point_id(1), {"d0": b"after the crash"})
    assert repo.lock.stale_holder is not None and repo.lock.stale_holder.pid == proc.pid
    assert read_disk(repo, point_id(1), "d0") == b"after the crash"


def test_a_holder_that_stopped_renewing_its_lease_is_reported_as_maybe_hung(
    tmp_path: Path,
) -> None:
    from reconciler.adapters.repository.lock import Holder

    now = datetime.now(UTC).timestamp()
    holder = Holder("host1", 4242, "export x", now - 900, now - 600, 60.0)
    assert "no heartbeat for 600 s: it may be hung" in holder.describe(now)
    assert "hung" not in Holder("h", 1, "gc", now, now - 5, 60.0).describe(now)


def test_the_writer_lock_is_reentrant_for_concurrent_exports_in_one_process(
    tmp_path: Path,
) -> None:
    repo = open_repo(tmp_path)
    a = repo.begin_point(point_id(1), "nightly", VM, SLOT)
    b = repo.begin_point(point_id(2), "nightly", VM, SLOT)
    a.add_disk("d0", io.BytesIO(noise("a", 20 * CHUNK)))
    b.add_disk("d0", io.BytesIO(noise("a", 20 * CHUNK)))
    a.commit("crash")
    assert repo.lock.held
    b.commit("crash")
    assert not repo.lock.held
    assert read_disk(repo, point_id(2), "d0") == noise("a", 20 * CHUNK)
    assert os.listdir(Layout(tmp_path).partial) == []


def test_a_non_empty_directory_is_not_turned_into_a_repository(tmp_path: Path) -> None:
    (tmp_path / "family-photos").mkdir()
    with pytest.raises(RepositoryError, match="not empty and is not a vmkeep repository"):
        Repository.open(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["family-photos"]


def test_a_source_that_fails_mid_disk_aborts_the_export_and_frees_the_lock(
    tmp_path: Path,
) -> None:
    class Failing(io.RawIOBase):
        """A source that dies after 20 chunks, as an NFC download can."""

        def __init__(self) -> None:
            self.sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            if self.sent >= 20 * CHUNK:
                raise OSError("connection reset by vCenter")
            n = min(len(buffer), CHUNK)
            buffer[:n] = noise(self.sent, n)
            self.sent += n
            return n

    repo = open_repo(tmp_path)
    with (
        pytest.raises(OSError, match="connection reset"),
        repo.begin_point(point_id(1), "nightly", VM, SLOT) as writer,
    ):
        writer.add_disk("d0", Failing(), size=40 * CHUNK)
    assert repo.points() == [] and repo.partials() == [] and not repo.lock.held
    assert list(Layout(tmp_path).tmp.iterdir()) == []
    export(repo, point_id(1), {"d0": b"second try"})


def test_a_waiting_gc_gets_the_lock_when_the_last_writer_finishes(tmp_path: Path) -> None:
    open_repo(tmp_path)
    proc = _hold_lock(tmp_path)
    waiter = open_repo(tmp_path, lock_timeout=30.0)
    import threading

    threading.Timer(0.5, proc.kill).start()
    try:
        report = waiter.gc()
    finally:
        proc.wait()
    assert report.partials_removed == 1

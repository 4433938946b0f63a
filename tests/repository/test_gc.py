"""Garbage collection and verification on real directories."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.adapters.repository import GcReport, Repository
from reconciler.adapters.repository import gc as gc_module
from reconciler.adapters.repository.core import RepositoryCore
from reconciler.adapters.repository.format import Layout
from reconciler.adapters.repository.gc import SMALL_BELOW, live_chunks
from reconciler.errors import RepositoryError, RepositoryLockedError

from .disks import (
    CHUNK,
    PACK,
    SLOT,
    VM,
    assert_garbage_reclaimed,
    export,
    live_bytes,
    noise,
    open_repo,
    point_id,
    read_disk,
)


def stored_chunks(repo: Repository) -> set[bytes]:
    return {cid for s in repo.pack_summaries() for cid, _ in s.entries}


def test_gc_reclaims_the_data_of_deleted_points_and_keeps_the_rest(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    shared = noise("shared", 30 * CHUNK)
    export(repo, point_id(1), {"d0": shared + noise("one", 30 * CHUNK)})
    export(repo, point_id(2), {"d0": shared + noise("two", 30 * CHUNK)})
    repo.delete_point(point_id(1))
    report = repo.gc()
    assert report.points == 1 and report.bytes_freed > 0
    assert_garbage_reclaimed(repo)
    assert read_disk(repo, point_id(2), "d0") == shared + noise("two", 30 * CHUNK)
    assert repo.verify().ok


def test_gc_rewrites_packs_with_little_live_data(tmp_path: Path) -> None:
    repo = open_repo(tmp_path, pack_size=1024 * 1024)  # one big pack per export
    keep = noise("keep", 4 * CHUNK)
    export(repo, point_id(1), {"d0": keep + noise("drop", 60 * CHUNK)})
    export(repo, point_id(2), {"d0": keep})
    repo.delete_point(point_id(1))
    big = repo.pack_ids()[0]
    report = repo.gc()
    # the mostly-dead pack, and the second export's small pack merged along with it
    assert report.packs_rewritten == 2 and report.bytes_copied >= 4 * CHUNK
    assert big not in repo.pack_ids() and len(repo.pack_ids()) == 1
    _, live = live_chunks(repo._core)
    assert stored_chunks(repo) == live
    assert read_disk(repo, point_id(2), "d0") == keep


def test_gc_removes_aborted_exports_partial_markers_and_temporary_files(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"d0": noise(1, 5 * CHUNK)})
    with pytest.raises(KeyError), repo.begin_point(point_id(2), "nightly", VM, SLOT) as w:
        w.add_disk("d0", io.BytesIO(noise(2, 50 * CHUNK)))
        raise KeyError("boom")
    layout = Layout(tmp_path)
    (layout.partial / "crashed.json").write_text("{}")
    (layout.tmp / "orphan.pack").write_bytes(b"junk")
    report = repo.gc()
    assert report.partials_removed == 1 and report.temporary_removed == 1
    assert_garbage_reclaimed(repo)
    assert list(layout.tmp.iterdir()) == []


def test_gc_leaves_files_younger_than_the_grace_period(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"d0": noise(1, 5 * CHUNK)})
    repo.delete_point(point_id(1))
    report = repo.gc(grace=timedelta(hours=1))
    assert report.packs_deleted == 0
    assert repo.gc().packs_deleted > 0


def test_gc_refuses_to_run_while_this_process_is_exporting(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    writer = repo.begin_point(point_id(1), "nightly", VM, SLOT)
    with pytest.raises(RepositoryLockedError, match="while this process is exporting"):
        repo.gc()
    writer.abort()


@dataclass
class PausedGc:
    """A GC running in another thread, held inside its marking phase until `resume`."""

    repo: Repository
    thread: threading.Thread
    release: threading.Event
    reports: list[GcReport]

    def resume(self) -> None:
        self.release.set()
        self.thread.join(10)
        assert not self.thread.is_alive() and len(self.reports) == 1


@pytest.fixture
def paused_gc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PausedGc]:
    repo = open_repo(tmp_path, lock_timeout=0.3)
    export(repo, point_id(1), {"d0": noise("before gc", 10 * CHUNK)})
    inside, release = threading.Event(), threading.Event()
    marking = gc_module.live_chunks

    def paused(r: RepositoryCore) -> tuple[int, set[bytes]]:
        inside.set()
        release.wait(10)
        return marking(r)

    monkeypatch.setattr(gc_module, "live_chunks", paused)
    reports: list[GcReport] = []
    thread = threading.Thread(target=lambda: reports.append(repo.gc()))
    thread.start()
    assert inside.wait(5)
    gc = PausedGc(repo, thread, release, reports)
    yield gc
    release.set()
    thread.join(10)


def test_an_export_in_another_thread_waits_for_a_gc_of_this_process(
    paused_gc: PausedGc,
) -> None:
    repo = paused_gc.repo
    repo._core.lock_timeout = 10
    began, waiting = threading.Event(), threading.Event()
    data = noise("during gc", 30 * CHUNK)
    real_wait = repo._gc_done.wait

    def wait(timeout: float | None = None) -> bool:
        waiting.set()  # the writer found the GC running and waits for it
        return real_wait(timeout)

    repo._gc_done.wait = wait  # type: ignore[method-assign]

    def write() -> None:
        with repo.begin_point(point_id(2), "nightly", VM, SLOT) as w:
            began.set()
            w.add_disk("d0", io.BytesIO(data), size=len(data))
            w.commit("crash")

    writer = threading.Thread(target=write)
    writer.start()
    # Either the writer waits for the GC, or (a broken lock) it slips through: whichever
    # comes first decides; the GC stays paused meanwhile, so the outcome is not timing.
    deadline = time.monotonic() + 30
    while not (waiting.is_set() or began.is_set()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert waiting.is_set() and not began.is_set()
    paused_gc.resume()
    writer.join(10)
    assert began.is_set()
    assert read_disk(repo, point_id(2), "d0") == data
    assert repo.verify().ok


def test_an_export_that_waits_too_long_for_a_gc_of_this_process_fails_clearly(
    paused_gc: PausedGc,
) -> None:
    repo = paused_gc.repo
    started = time.monotonic()
    with pytest.raises(RepositoryLockedError, match=r"waited 0\.3 s for a garbage collection"):
        repo.begin_point(point_id(2), "nightly", VM, SLOT)
    assert time.monotonic() - started >= 0.3
    assert repo.partials() == []
    paused_gc.resume()
    assert not repo.lock.held


def test_a_second_gc_in_the_same_process_is_refused_while_one_runs(
    paused_gc: PausedGc,
) -> None:
    with pytest.raises(RepositoryLockedError, match="already running in this process"):
        paused_gc.repo.gc()
    paused_gc.resume()
    assert paused_gc.repo.gc().points == 1


def test_gc_deletes_nothing_when_a_manifest_is_damaged(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"d0": noise(1, 5 * CHUNK)})
    export(repo, point_id(2), {"d0": noise(2, 5 * CHUNK)})
    repo.delete_point(point_id(2))
    path = Layout(tmp_path).point(point_id(1))
    path.write_bytes(path.read_bytes()[:-20])
    packs = repo.pack_ids()
    with pytest.raises(RepositoryError, match="deleted nothing"):
        repo.gc()
    assert repo.pack_ids() == packs


def test_a_lost_index_is_rebuilt_from_its_pack(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    data = noise("idx", 40 * CHUNK)
    export(repo, point_id(1), {"d0": data})
    layout = Layout(tmp_path)
    for index_file in layout.index.iterdir():
        index_file.unlink()
    fresh = open_repo(tmp_path)
    assert read_disk(fresh, point_id(1), "d0") == data
    fresh.gc()
    assert len(list(layout.index.iterdir())) == len(fresh.pack_ids())
    assert fresh.verify().ok


def test_a_damaged_index_is_ignored_and_rebuilt(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    data = noise("idx2", 40 * CHUNK)
    export(repo, point_id(1), {"d0": data})
    for index_file in Layout(tmp_path).index.iterdir():
        raw = bytearray(index_file.read_bytes())
        raw[20] ^= 0xFF
        index_file.write_bytes(bytes(raw))
    fresh = open_repo(tmp_path)
    assert read_disk(fresh, point_id(1), "d0") == data


def test_a_reader_opened_before_another_process_gc_still_reads_moved_chunks(
    tmp_path: Path,
) -> None:
    repo = open_repo(tmp_path, pack_size=1024 * 1024)
    keep = noise("moved", 6 * CHUNK)
    export(repo, point_id(1), {"d0": keep + noise("garbage", 60 * CHUNK)})
    export(repo, point_id(2), {"d0": keep})
    reader = open_repo(tmp_path)
    reader.index  # loaded now: still names the packs GC is about to rewrite  # noqa: B018
    repo.delete_point(point_id(1))
    assert repo.gc().packs_rewritten == 2  # the chunk table moved as well
    assert read_disk(reader, point_id(2), "d0") == keep


def test_metadata_that_is_not_json_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    repo = open_repo(tmp_path)
    with pytest.raises(RepositoryError, match="not JSON"):
        repo.begin_point(point_id(1), "nightly", VM, SLOT, when=object())
    assert not repo.lock.held and repo.partials() == []


def small_packs(repo: Repository) -> list[str]:
    return [s.pack for s in repo.pack_summaries() if s.size < SMALL_BELOW * repo._core.pack_size]


def test_gc_merges_the_small_last_packs_of_many_exports(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    disks = {n: noise(("small", n), 3 * CHUNK) for n in range(10)}
    for n, data in disks.items():
        export(repo, point_id(n), {"d0": data})
    assert len(small_packs(repo)) == 10  # each export ends with a small pack
    report = repo.gc()
    assert report.packs_rewritten == 10 and report.bytes_freed == report.bytes_before
    assert len(small_packs(repo)) <= 1
    assert len(repo.pack_ids()) == 2  # 10 × 3 chunks of 4 KiB fill a 64 KiB pack and a half
    for n, data in disks.items():
        assert read_disk(repo, point_id(n), "d0") == data
    assert repo.verify().ok


def test_gc_leaves_a_lone_small_pack_alone_so_a_second_run_copies_nothing(
    tmp_path: Path,
) -> None:
    repo = open_repo(tmp_path)
    for n in range(7):
        export(repo, point_id(n), {"d0": noise(("lone", n), 3 * CHUNK)})
    repo.gc()
    again = repo.gc()
    assert (again.packs_rewritten, again.bytes_copied, again.packs_deleted) == (0, 0, 0)


def test_the_pack_count_stays_within_the_documented_bound_however_many_exports_run(
    tmp_path: Path,
) -> None:
    repo = open_repo(tmp_path)
    shared = noise("shared", 8 * CHUNK)
    counts: list[int] = []
    for n in range(40):
        export(repo, point_id(n), {"d0": shared + noise(("daily", n), 2 * CHUNK + 100)})
        if n >= 6:
            repo.delete_point(point_id(n - 6))  # keep the last six
        repo.gc()  # as apply does after its prunes
        counts.append(len(repo.pack_ids()))
        assert len(small_packs(repo)) <= 1
        assert counts[-1] <= 1 + 8 * live_bytes(repo) / PACK  # docs/repository-format.md
    assert max(counts) == max(counts[:10])  # it stops growing once retention is reached
    assert read_disk(repo, point_id(39), "d0") == shared + noise(("daily", 39), 2 * CHUNK + 100)

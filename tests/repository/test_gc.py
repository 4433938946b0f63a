"""Garbage collection and verification on real directories."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.adapters.repository import Repository
from reconciler.adapters.repository.format import Layout
from reconciler.adapters.repository.gc import live_chunks
from reconciler.errors import RepositoryError, RepositoryLockedError

from .disks import (
    CHUNK,
    SLOT,
    VM,
    assert_garbage_reclaimed,
    export,
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
    report = repo.gc()
    assert report.packs_rewritten == 1 and report.bytes_copied >= 4 * CHUNK
    _, live = live_chunks(repo)
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
    assert repo.gc().packs_rewritten == 1
    assert read_disk(reader, point_id(2), "d0") == keep


def test_metadata_that_is_not_json_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    repo = open_repo(tmp_path)
    with pytest.raises(RepositoryError, match="not JSON"):
        repo.begin_point(point_id(1), "nightly", VM, SLOT, when=object())
    assert not repo.lock.held and repo.partials() == []

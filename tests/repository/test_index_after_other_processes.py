"""A writer that takes the repository's lock again (after holding none) makes its index true
without reading every index file each time: what other processes published is added; a GC or
a quarantine in another process means reading them all again. Real directories; each
`Repository` opened on the same path stands for another process."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from reconciler.adapters.repository import core as core_module

from .disks import CHUNK, SLOT, VM, export, flip_chunk, noise, open_repo, point_id, read_disk


@pytest.fixture
def index_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The packs whose index files are read, in order."""
    reads: list[str] = []
    real = core_module.read_index_file

    def counted(path: Path, pack: str) -> object:
        reads.append(pack)
        return real(path, pack)

    monkeypatch.setattr(core_module, "read_index_file", counted)
    return reads


def test_a_writer_taking_the_lock_again_reads_only_the_indexes_published_since(
    tmp_path: Path, index_reads: list[str]
) -> None:
    mine, other = open_repo(tmp_path), open_repo(tmp_path)
    export(mine, point_id(1), {"d0": noise("one", 40 * CHUNK)})
    shared = noise("theirs", 40 * CHUNK)
    before = set(mine.pack_ids())
    export(other, point_id(2), {"d0": shared})
    theirs = set(mine.pack_ids()) - before
    assert theirs
    index_reads.clear()

    with mine.begin_point(point_id(3), "nightly", VM, SLOT) as w:
        result = w.add_disk("d0", io.BytesIO(shared), size=len(shared))
        w.commit("crash")

    assert sorted(index_reads) == sorted(theirs)
    assert result.new_chunks == 0  # the other process's chunks are known
    assert read_disk(mine, point_id(3), "d0") == shared
    assert mine.verify().ok


def test_a_writer_after_another_process_gc_reads_every_index_and_uses_no_deleted_pack(
    tmp_path: Path, index_reads: list[str]
) -> None:
    mine, other = open_repo(tmp_path, pack_size=256 * 1024), open_repo(tmp_path)
    keep, garbage = noise("keep", 8 * CHUNK), noise("garbage", 60 * CHUNK)
    export(mine, point_id(1), {"d0": keep + garbage})
    export(mine, point_id(2), {"d0": keep})
    other.delete_point(point_id(1))
    assert other.gc().bytes_freed  # `garbage` is gone; `keep` was copied to a new pack
    index_reads.clear()
    listed = mine.pack_ids()

    export(mine, point_id(3), {"d0": garbage + keep})  # the same bytes again: stored anew

    assert sorted(index_reads) == listed  # all of them, read again
    assert read_disk(open_repo(tmp_path), point_id(3), "d0") == garbage + keep
    assert open_repo(tmp_path).verify().ok


def test_a_copy_another_process_quarantined_is_not_deduplicated_against(
    tmp_path: Path,
) -> None:
    mine = open_repo(tmp_path)
    disk = noise("victim", 20 * CHUNK)
    export(mine, point_id(1), {"d0": disk})
    victim = mine.open_disk(point_id(1), "d0").ids[3]
    bad_pack = flip_chunk(mine, victim)
    assert not open_repo(tmp_path).verify().ok  # another process quarantines the copy

    with mine.begin_point(point_id(2), "nightly", VM, SLOT) as w:
        result = w.add_disk("d0", io.BytesIO(disk), size=len(disk))
        w.commit("crash")

    assert result.new_chunks == 1  # stored again, not referenced in the damaged pack
    loc = mine._core.index.get(victim)
    assert loc is not None and loc.pack != bad_pack
    assert read_disk(open_repo(tmp_path), point_id(2), "d0") == disk

"""Damaged pack data: verify names it, restores of other points work, the next export heals."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from reconciler.errors import CorruptionError

from .disks import (
    CHUNK,
    SLOT,
    VM,
    ForwardOnly,
    export,
    export_changed,
    flip_chunk,
    noise,
    open_repo,
    point_id,
    read_disk,
)


def test_flipped_bytes_in_a_pack_are_named_by_point_and_chunk(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    damaged_disk = noise("victim", 20 * CHUNK)
    other_disk = noise("bystander", 20 * CHUNK)
    export(repo, point_id(1), {"d0": damaged_disk})
    export(repo, point_id(2), {"d0": other_disk})
    victim = repo.open_disk(point_id(1), "d0").ids[7]
    flip_chunk(repo, victim)

    fresh = open_repo(tmp_path)
    report = fresh.verify()
    assert not report.ok
    assert [d.point for d in report.damaged] == [point_id(1)]
    (chunk,) = report.damaged[0].chunks
    assert (chunk.item, chunk.chunk, chunk.offset) == ("disk d0", 7, 7 * CHUNK)
    assert chunk.chunk_id == victim.hex() and chunk.reason == "hash mismatch"
    assert json.dumps(report.to_json())  # the CLI's -o json view

    assert read_disk(fresh, point_id(2), "d0") == other_disk  # undamaged point restores
    with pytest.raises(CorruptionError, match=rf"chunk 7 at offset {7 * CHUNK}"):
        read_disk(fresh, point_id(1), "d0")
    assert fresh.open_disk(point_id(1), "d0").read(0, CHUNK) == damaged_disk[:CHUNK]


def test_the_next_export_of_the_same_disk_stores_the_damaged_chunk_again(
    tmp_path: Path,
) -> None:
    repo = open_repo(tmp_path)
    disk = noise("victim", 20 * CHUNK)
    export(repo, point_id(1), {"d0": disk})
    victim = repo.open_disk(point_id(1), "d0").ids[3]
    bad_pack = flip_chunk(repo, victim)
    assert not open_repo(tmp_path).verify().ok  # verify quarantines the damaged copy

    later = open_repo(tmp_path)  # a new process: the quarantine is on disk
    with later.begin_point(point_id(2), "nightly", VM, SLOT) as w:
        result = w.add_disk("d0", io.BytesIO(disk), size=len(disk))
        w.commit("crash")
    assert result.new_chunks == 1
    loc = later._core.load_index(repair=False).get(victim)
    assert loc is not None and loc.pack != bad_pack
    assert read_disk(later, point_id(2), "d0") == disk
    # points reference content, so the fresh copy heals the damaged point too
    assert read_disk(later, point_id(1), "d0") == disk
    assert later.verify().ok
    later.gc()
    assert later.verify().ok and read_disk(later, point_id(1), "d0") == disk


def test_a_changed_extent_export_does_not_reference_a_damaged_chunk(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    disk = noise("cbt-victim", 20 * CHUNK)
    export(repo, point_id(1), {"d0": disk})
    victim = repo.open_disk(point_id(1), "d0").ids[12]
    flip_chunk(repo, victim)
    assert not open_repo(tmp_path).verify().ok
    later = open_repo(tmp_path)
    result = export_changed(later, point_id(2), io.BytesIO(disk), len(disk), [], point_id(1))
    assert result.read_bytes == CHUNK and result.new_chunks == 1
    assert later.verify(point_id(2)).ok


def test_a_damaged_chunk_table_makes_the_point_damaged(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"d0": noise("t", 5 * CHUNK)})
    table = bytes.fromhex(repo.manifest(point_id(1)).disk("d0").tables[0])
    flip_chunk(repo, table)
    report = open_repo(tmp_path).verify(point_id(1))
    assert [d.point for d in report.damaged] == [point_id(1)]
    assert "chunk table" in report.damaged[0].message


def test_a_missing_pack_is_reported_as_missing_chunks(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"d0": noise("m", 5 * CHUNK)})
    cid = repo.open_disk(point_id(1), "d0").ids[0]
    loc = repo.index.get(cid)
    assert loc is not None
    repo.layout.pack(loc.pack).unlink()
    report = open_repo(tmp_path).verify()
    assert not report.ok


def changed(disk: bytes, offset: int, data: bytes) -> bytes:
    new = bytearray(disk)
    new[offset : offset + len(data)] = data
    return bytes(new)


def test_a_changed_extent_export_reads_a_chunk_whole_when_the_copy_it_patches_is_damaged(
    tmp_path: Path,
) -> None:
    repo = open_repo(tmp_path)
    disk = noise("patch-victim", 20 * CHUNK)
    export(repo, point_id(1), {"d0": disk})
    victim = repo.open_disk(point_id(1), "d0").ids[12]
    bad_pack = flip_chunk(repo, victim)  # not verified: nothing knows about the damage yet
    new = changed(disk, 12 * CHUNK + 100, b"x" * 10)

    later = open_repo(tmp_path)
    # found before the source passed the chunk: no seeking back
    result = export_changed(
        later, point_id(2), ForwardOnly(new), len(new), [(12 * CHUNK + 100, 10)], point_id(1)
    )
    assert result.read_bytes == CHUNK  # the whole chunk instead of the 10 changed bytes
    assert result.new_chunks == 1
    assert (bad_pack, victim) in later.quarantined()  # as verify would have done
    assert read_disk(later, point_id(2), "d0") == new
    assert later.verify(point_id(2)).ok
    assert [d.point for d in later.verify().damaged] == [point_id(1)]


def test_a_patched_chunk_that_did_not_really_change_heals_its_damaged_copy(
    tmp_path: Path,
) -> None:
    repo = open_repo(tmp_path)
    disk = noise("same-victim", 20 * CHUNK)
    export(repo, point_id(1), {"d0": disk})
    victim = repo.open_disk(point_id(1), "d0").ids[5]
    flip_chunk(repo, victim)
    later = open_repo(tmp_path)
    # CBT reports an extent whose bytes were rewritten with the same contents
    result = export_changed(later, point_id(2), ForwardOnly(disk), len(disk), [(5 * CHUNK, 8)],
                            point_id(1))
    assert result.new_chunks == 1  # the same chunk id, stored again
    assert read_disk(later, point_id(1), "d0") == disk  # the fresh copy heals the old point
    assert later.verify().ok

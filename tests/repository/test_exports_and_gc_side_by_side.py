"""Concurrency and crash-safety audit: exports side by side, readers and verify beside a GC."""

from __future__ import annotations

import errno
import io
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.repository import GcReport
from reconciler.adapters.repository import core as core_module
from reconciler.adapters.repository import packs as packs_module

from .disks import CHUNK, SLOT, VM, export, noise, open_repo, point_id, read_disk


def test_a_pack_whose_write_failed_is_never_published_to_concurrent_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two exports in one process (as `apply` runs them): the disk fills up under the
    second one's first pack. That pack must not become visible, or the first export
    deduplicates against chunks that were never written and commits a damaged point."""
    repo = open_repo(tmp_path)
    data = noise("enospc", 40 * CHUNK)
    first = repo.begin_point(point_id(1), "nightly", VM, SLOT)
    real_write = packs_module._write_all
    calls = [0]

    def full_once(fd: int, buffer: list[bytes | bytearray]) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, buffer)

    monkeypatch.setattr(packs_module, "_write_all", full_once)
    second = repo.begin_point(point_id(2), "nightly", VM, SLOT)
    with pytest.raises(OSError, match="No space"), second:
        second.add_disk("d0", io.BytesIO(data), size=len(data))
        second.commit("crash")
    monkeypatch.setattr(packs_module, "_write_all", real_write)
    with first:
        first.add_disk("d0", io.BytesIO(data), size=len(data))
        first.commit("crash")
    assert read_disk(repo, point_id(1), "d0") == data
    assert read_disk(open_repo(tmp_path), point_id(1), "d0") == data
    repo.close()


def test_a_reader_reloading_its_index_while_gc_deletes_a_pack_still_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GC deletes a pack's index, then the pack. A reader in another process that reloads
    its index in between finds no index, sees the pack, and scans it — after GC removed it.
    The pack is garbage: the reader must skip it, not fail the restore."""
    writer = open_repo(tmp_path)
    export(writer, point_id(1), {"d0": noise("garbage", 20 * CHUNK)})
    doomed = set(writer.pack_ids())  # point 1's packs: garbage once it is deleted
    reader = open_repo(tmp_path)
    reader.index  # loaded before the next point exists  # noqa: B018
    kept = noise("kept", 20 * CHUNK)
    export(writer, point_id(2), {"d0": kept})
    writer.delete_point(point_id(1))
    for pack in doomed:
        writer.layout.index_file(pack).unlink()  # GC's first step for each doomed pack
    real_scan = core_module.scan_pack

    def gc_deletes_first(path: Path, pack: str) -> packs_module.PackSummary:
        if pack in doomed:
            path.unlink()  # GC's second step lands between the reader's stat and its scan
        return real_scan(path, pack)

    monkeypatch.setattr(core_module, "scan_pack", gc_deletes_first)
    assert read_disk(reader, point_id(2), "d0") == kept
    writer.close()
    reader.close()


def test_verify_does_not_report_chunks_a_concurrent_gc_moved_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vmkeep verify` takes no lock, so `vmkeep run` may collect garbage meanwhile: GC
    merges the small packs of two points into a new one and deletes them after verify read
    its index. Those chunks moved, they are not lost: the points are intact."""
    repo = open_repo(tmp_path)
    data = {n: noise(("small", n), 2 * CHUNK) for n in (1, 2)}
    for n, disk in data.items():
        export(repo, point_id(n), {"d0": disk})
    other = open_repo(tmp_path)  # `vmkeep run`, collecting garbage in another process
    load_table = repo._core.load_table
    reports: list[GcReport] = []

    def gc_after_marking(*args: Any) -> list[bytes]:
        ids = load_table(*args)
        if not reports:
            reports.append(other.gc())  # lands between verify's index and its pack reads
        return ids

    monkeypatch.setattr(repo._core, "load_table", gc_after_marking)
    report = repo.verify(point_id(2))
    assert reports[0].packs_rewritten == 2
    assert report.ok, report.damaged
    assert not repo.quarantined()
    monkeypatch.undo()
    assert read_disk(repo, point_id(1), "d0") == data[1]
    assert open_repo(tmp_path).verify().ok
    repo.close()
    other.close()

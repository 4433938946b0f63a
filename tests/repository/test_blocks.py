"""Disks larger than one read block: the multi-block paths of the writer and the reader.

The writer reads the source in 8 MiB blocks (into a ring of reused buffers), encodes them in
the pool a few blocks ahead, takes the results in order and short-cuts all-zero blocks; the
reader decodes 8 MiB batches ahead. Test disks of a few hundred KiB never reach a second
block, so here the sizes are shrunk to a few chunks — a 1 MiB disk then spans dozens of
blocks and batches — and one disk at the real sizes crosses the 8 MiB boundaries too.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.repository import DEFAULT_CHUNK_SIZE, Repository
from reconciler.adapters.repository import reader as reader_module
from reconciler.adapters.repository import writer as writer_module
from reconciler.adapters.repository.writer import BlockResult, ChunkEncoder

from .disks import (
    CHUNK,
    SLOT,
    VM,
    ForwardOnly,
    export,
    export_changed,
    noise,
    open_repo,
    point_id,
    read_disk,
    text,
)

BLOCK = 4 * CHUNK  # writer block: 4 chunks
BATCH = 3 * CHUNK  # reader batch: 3 chunks, so batches and blocks do not line up


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "BLOCK_SIZE", BLOCK)
    monkeypatch.setattr(reader_module, "BATCH_BYTES", BATCH)


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, bool, int]]:
    """What the pool was given: (first chunk, block length, all zero, buffer identity)."""
    seen: list[tuple[int, int, bool, int]] = []
    encode = ChunkEncoder.encode

    def spy(self: ChunkEncoder, first: int, block: bytes | bytearray) -> BlockResult:
        seen.append((first, len(block), not any(block), id(block)))
        return encode(self, first, block)

    monkeypatch.setattr(ChunkEncoder, "encode", spy)
    return seen


def layered_disk(blocks: int, block: int, tail: int) -> bytes:
    """Block-sized stretches of every kind: zeros, noise, text, repeats, half-zero blocks."""
    parts: list[bytes] = []
    for n in range(blocks):
        kind = n % 5
        if kind == 0:
            parts.append(bytes(block))
        elif kind == 1:
            parts.append(noise(("noise", n), block))
        elif kind == 2:
            parts.append(text(("text", n), block))
        elif kind == 3:
            parts.append(parts[n // 2])  # the same data again, elsewhere: deduplicated
        else:
            parts.append(noise(("half", n), block // 2 - 7) + bytes(block // 2 + 7))
    parts.append(noise("tail", tail))
    return b"".join(parts)


class ReadOnly:
    """A stream with `read` only (no `readinto`), answering at most 3000 bytes per call."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def read(self, size: int = -1, /) -> bytes:
        return self._inner.read(min(size, 3000) if size >= 0 else 3000)

    def seek(self, offset: int, whence: int = 0, /) -> int:
        return self._inner.seek(offset, whence)


class ShortReadinto(io.BytesIO):
    """`readinto` that fills at most 5000 bytes per call, as pipes and sockets do."""

    def readinto(self, buffer: Any, /) -> int:
        view = memoryview(buffer)
        return super().readinto(view[: min(len(view), 5000)])


STREAMS: dict[str, Callable[[bytes], Any]] = {
    "readinto": io.BytesIO,
    "short readinto": ShortReadinto,
    "read only, short reads": ReadOnly,
}


def assert_reads_back(repo: Repository, pid: str, data: bytes, tmp_path: Path) -> None:
    disk = repo.open_disk(pid, "d0")
    blocks = list(disk)
    assert len(blocks) > 2 * repo._core.threads  # more batches than the reader keeps in flight
    assert b"".join(blocks) == data
    out = tmp_path / f"{len(list(tmp_path.iterdir()))}.img"
    with open(out, "wb") as f:
        assert disk.read_into(f) == len(data)
    assert out.read_bytes() == data
    for offset in (0, BLOCK - 1, BATCH - 5, 7 * BLOCK + 3, len(data) - 10):
        assert disk.read(offset, BLOCK + BATCH) == data[offset : offset + BLOCK + BATCH]


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_a_disk_of_many_blocks_round_trips_through_every_kind_of_stream(
    tmp_path: Path, stream: str, encoded: list[tuple[int, int, bool, int]]
) -> None:
    data = layered_disk(60, BLOCK, 1234)
    repo = open_repo(tmp_path / "repo")
    with repo.begin_point(point_id(1), "nightly", VM, SLOT) as w:
        result = w.add_disk("d0", STREAMS[stream](data), size=len(data))
        w.commit("crash")
    assert_reads_back(repo, point_id(1), data, tmp_path)

    firsts = [first for first, *_ in encoded]
    assert firsts == [n * (BLOCK // CHUNK) for n in range(61)]  # every block, in order
    assert sum(1 for _, length, zero, _ in encoded if zero and length == BLOCK) == 12
    zero_chunks = sum(1 for i in range(0, len(data), CHUNK) if not data[i : i + CHUNK].strip(b"\0"))
    assert result.zero_chunks == zero_chunks  # zero blocks, and the zero halves of others
    if stream != "read only, short reads":
        # full blocks were read into a small ring of reused buffers, not fresh memory
        buffers = {buffer for _, length, _, buffer in encoded if length == BLOCK}
        assert len(buffers) <= 2 * repo._core.threads + 2
    # the same contents read the simplest way give the same disk digest and chunk tables
    export(repo, point_id(2), {"d0": data})
    by_stream, plain = (repo.manifest(p).disk("d0") for p in (point_id(1), point_id(2)))
    assert (by_stream.digest, by_stream.tables) == (plain.digest, plain.tables)


@pytest.mark.usefixtures("small_blocks")
def test_changed_extents_across_many_blocks_give_the_same_disk_as_a_full_read(
    tmp_path: Path,
) -> None:
    base = layered_disk(60, BLOCK, 1234)
    new = bytearray(base)
    extents = [
        (BLOCK - 10, 20),  # across a block boundary: two patched chunks in two blocks
        (10 * BLOCK + CHUNK, 9 * CHUNK),  # a long run: whole chunks over three blocks
        (25 * BLOCK + 100, 50),  # inside a zero block
        (len(base) - 1300, 600),  # in the partial tail chunk
    ]
    extents += [(40 * BLOCK + k * 3 * CHUNK + 17, 9) for k in range(12)]  # scattered
    for n, (offset, length) in enumerate(extents):
        new[offset : offset + length] = noise(("change", n), length)
    repo = open_repo(tmp_path / "repo")
    export(repo, point_id(1), {"d0": base})
    export(repo, point_id(2), {"d0": bytes(new)})
    result = export_changed(repo, point_id(3), ForwardOnly(bytes(new)), len(new), extents,
                            point_id(1))
    by_full, by_cbt = (repo.manifest(p).disk("d0") for p in (point_id(2), point_id(3)))
    assert (by_cbt.digest, by_cbt.tables) == (by_full.digest, by_full.tables)
    assert result.read_bytes < sum(n for _, n in extents) + 2 * 9 * CHUNK
    assert_reads_back(repo, point_id(3), bytes(new), tmp_path)


def real_size_disk() -> bytes:
    """~20 MiB of 1 MiB regions; MiB 8–15 are zero, so one whole 8 MiB block is all zero."""
    mib = 1024 * 1024
    regions = []
    for n in range(20):
        if 8 <= n < 16 or n % 4 == 3:
            regions.append(bytes(mib))
        elif n % 2:
            regions.append(text(("region", n), mib))
        else:
            regions.append(noise(("region", n), mib))
    return b"".join(regions) + noise("odd tail", 12345)


def test_a_20_mib_disk_crosses_the_real_block_and_batch_sizes(
    tmp_path: Path, encoded: list[tuple[int, int, bool, int]]
) -> None:
    data = real_size_disk()
    repo = Repository.open(tmp_path / "repo", chunk_size=DEFAULT_CHUNK_SIZE, threads=2)
    export(repo, point_id(1), {"d0": data})
    per_block = writer_module.BLOCK_SIZE // DEFAULT_CHUNK_SIZE
    assert [first for first, *_ in encoded] == [0, per_block, 2 * per_block]
    assert [zero for _, _, zero, _ in encoded] == [False, True, False]
    disk = repo.open_disk(point_id(1), "d0")
    assert [len(block) for block in disk] == [8 << 20, 8 << 20, len(data) - (16 << 20)]
    assert read_disk(repo, point_id(1), "d0") == data

    new = bytearray(data)
    extents = [((8 << 20) - 4096, 8192), ((16 << 20) + 70000, 4096), (len(data) - 100, 50)]
    for offset, length in extents:
        new[offset : offset + length] = b"\xa5" * length
    result = export_changed(repo, point_id(2), ForwardOnly(bytes(new)), len(new), extents,
                            point_id(1))
    assert result.read_bytes <= 2 * DEFAULT_CHUNK_SIZE + 4096 + 50
    with open(tmp_path / "restored.img", "wb") as f:
        repo.open_disk(point_id(2), "d0").read_into(f)
    assert (tmp_path / "restored.img").read_bytes() == bytes(new)
    repo.close()



def test_a_chunk_that_only_begins_with_zeros_is_stored_not_taken_for_a_zero_chunk(
    tmp_path: Path,
) -> None:
    """The writer compares each chunk of a block with zeros in place, up to its last byte."""
    data = b"".join(bytes(CHUNK - k) + noise(("end", k), k) for k in (1, 100, CHUNK // 2))
    data += bytes(CHUNK) + bytes(CHUNK // 4)  # a zero chunk, then a short zero tail
    repo = open_repo(tmp_path)
    with repo.begin_point(point_id(1), "nightly", VM, SLOT) as w:
        result = w.add_disk("d0", io.BytesIO(data), size=len(data))
        w.commit("crash")
    assert (result.chunks, result.zero_chunks, result.new_chunks) == (5, 2, 3)
    assert read_disk(repo, point_id(1), "d0") == data
    repo.close()


@pytest.mark.usefixtures("small_blocks")
def test_the_next_disk_is_read_into_the_buffers_of_the_disk_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fresh buffers are zero-filled, page by page: a repository keeps a few read rings."""
    blocks: list[bytes | bytearray] = []  # kept alive: no buffer's identity is reused
    encode = ChunkEncoder.encode

    def spy(self: ChunkEncoder, first: int, block: bytes | bytearray) -> BlockResult:
        blocks.append(block)
        return encode(self, first, block)

    monkeypatch.setattr(ChunkEncoder, "encode", spy)
    first, second = layered_disk(20, BLOCK, 0), layered_disk(20, BLOCK, 99)[::-1]
    repo = open_repo(tmp_path / "repo")
    export(repo, point_id(1), {"d0": first})
    ring = {id(b) for b in blocks if isinstance(b, bytearray)}
    assert len(ring) == 2 * repo._core.threads + 2
    kept, blocks[:] = blocks[:], []  # the first export's buffers stay alive either way
    export(repo, point_id(2), {"d0": second, "d1": first})
    assert {id(b) for b in blocks if isinstance(b, bytearray)} == ring
    assert read_disk(repo, point_id(2), "d0") == second
    assert read_disk(repo, point_id(2), "d1") == first
    assert kept
    repo.close()

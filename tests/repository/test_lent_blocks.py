"""A source that lends its blocks where they already are (a disk reader process's shared ring)
is stored exactly as one read into buffers: the same chunks, every lent block released once,
as soon as it is encoded, and what the source cannot lend (the tail here) read as before."""

from __future__ import annotations

import mmap
import threading
from pathlib import Path

from reconciler.adapters.repository.writer import BLOCK_SIZE
from reconciler.ports import Lent

from .disks import SLOT, VM, export, noise, open_repo, point_id, read_disk


class LendingSource:
    """Lends whole blocks out of an mmap up to `lend_until`, then reads, like a helper."""

    def __init__(self, data: bytes, lend_until: int) -> None:
        self.ring = mmap.mmap(-1, len(data))
        self.ring[:] = data
        self.size = len(data)
        self.lend_until = lend_until
        self.pos = 0
        self.lent = 0
        self.released: list[int] = []
        self.out = 0  # lent and not released yet
        self.most_out = 0
        self._lock = threading.Lock()

    def lend(self, n: int) -> Lent | None:
        if self.pos + n > self.lend_until:
            return None
        at = self.pos
        self.pos += n
        self.lent += 1
        with self._lock:
            self.out += 1
            self.most_out = max(self.most_out, self.out)

        def release() -> None:
            with self._lock:
                self.released.append(at)
                self.out -= 1

        return Lent(self.ring, at, n, release)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.size - self.pos)
        view[:n] = self.ring[self.pos : self.pos + n]
        self.pos += n
        return n

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        data = self.ring[self.pos : self.pos + n]
        self.pos += n
        return data


def disk_image() -> bytes:
    """Two and a half blocks: noise, zeros (a whole zero block too), text-like runs."""
    return (noise("a", BLOCK_SIZE // 2) + bytes(BLOCK_SIZE + BLOCK_SIZE // 4)
            + noise("b", BLOCK_SIZE // 2) + b"vmkeep " * (BLOCK_SIZE // 28) + b"\x01")


def test_blocks_lent_in_place_are_stored_as_blocks_read_and_each_released_once(
    tmp_path: Path,
) -> None:
    data = disk_image()
    read_repo = open_repo(tmp_path / "read")
    export(read_repo, point_id(1), {"d0": data})
    lent_repo = open_repo(tmp_path / "lent")
    source = LendingSource(data, lend_until=2 * BLOCK_SIZE)  # the tail is read

    with lent_repo.begin_point(point_id(1), "nightly", VM, SLOT) as w:
        result = w.add_disk("d0", source, size=len(data))  # type: ignore[arg-type]
        w.commit("crash")

    assert source.lent == 2 and sorted(source.released) == [0, BLOCK_SIZE]
    assert source.out == 0
    assert result.size == len(data)
    assert lent_repo.open_disk(point_id(1), "d0").ids == \
        read_repo.open_disk(point_id(1), "d0").ids
    assert read_disk(lent_repo, point_id(1), "d0") == data
    assert lent_repo.verify().ok


def test_a_disk_lent_whole_needs_no_buffer_of_the_writer(tmp_path: Path) -> None:
    data = noise("whole", 2 * BLOCK_SIZE)
    repo = open_repo(tmp_path)
    source = LendingSource(data, lend_until=len(data))
    taken: list[int] = []
    real = repo._core.take_buffers

    def take(count: int, size: int) -> list[bytearray]:
        taken.append(count)
        return real(count, size)

    repo._core.take_buffers = take  # type: ignore[method-assign]

    with repo.begin_point(point_id(1), "nightly", VM, SLOT) as w:
        w.add_disk("d0", source, size=len(data))  # type: ignore[arg-type]
        w.commit("crash")

    assert taken == [] and source.lent == 2 and source.out == 0
    assert read_disk(repo, point_id(1), "d0") == data

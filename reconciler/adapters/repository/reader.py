"""The read path: stream a disk back, or read any byte range, verifying every chunk.

Readers take no lock. A reader loads the disk's chunk table (itself stored as verified
chunks), checks it against the manifest's whole-disk digest, then fetches chunks with
`pread` in a thread pool; each chunk is decompressed and re-hashed before its bytes are
handed out, so damaged data surfaces as `CorruptionError` naming the point, disk, chunk
and offset — never as silently wrong bytes.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator
from concurrent.futures import Future
from typing import BinaryIO

from reconciler.errors import CorruptionError

from .core import RepositoryCore
from .format import ZERO_ID, DiskRecord, Manifest, disk_digest

__all__ = ["DiskReader"]

BATCH_BYTES = 8 * 1024 * 1024


class DiskReader:
    """One disk of one restore point, readable sequentially or by offset."""

    def __init__(self, core: RepositoryCore, manifest: Manifest, record: DiskRecord) -> None:
        self.core = core
        self.point_id = manifest.id
        self.name = record.name
        self.size = record.size
        self.chunk_size = manifest.chunk_size
        self.ids = core.load_table(manifest, record)
        if disk_digest(record.size, self.ids) != record.digest:
            raise CorruptionError(
                f"restore point {self.point_id!r} disk {self.name!r}: chunk table does not "
                "match the disk digest"
            )

    def _chunk(self, i: int) -> bytes | None:
        """The bytes of chunk `i`, or None for an all-zero chunk."""
        cid = self.ids[i]
        if cid == ZERO_ID:
            return None
        try:
            return self.core.read_chunk(cid)
        except CorruptionError as exc:
            raise CorruptionError(
                f"restore point {self.point_id!r} disk {self.name!r}: chunk {i} at offset "
                f"{i * self.chunk_size} ({cid.hex()}) is damaged: {exc}"
            ) from None

    def _chunk_len(self, i: int) -> int:
        return min(self.chunk_size, self.size - i * self.chunk_size)

    def _batch(self, first: int, last: int) -> list[bytes | None]:
        return [self._chunk(i) for i in range(first, last)]

    def _batches(self, first: int = 0) -> Iterator[tuple[int, list[bytes | None]]]:
        """Decoded chunks from `first` on, in batches, decoded ahead in the thread pool."""
        per = max(1, BATCH_BYTES // self.chunk_size)
        window: collections.deque[tuple[int, Future[list[bytes | None]]]] = collections.deque()
        depth = 2 * self.core.threads
        for start in range(first, len(self.ids), per):
            end = min(len(self.ids), start + per)
            window.append((start, self.core.pool.submit(self._batch, start, end)))
            if len(window) >= depth:
                begin, future = window.popleft()
                yield begin, future.result()
        while window:
            begin, future = window.popleft()
            yield begin, future.result()

    def __iter__(self) -> Iterator[bytes]:
        return self.blocks()

    def blocks(self) -> Iterator[bytes]:
        """The disk's bytes as `bytes` blocks of up to 8 MiB, in order, adding up to `size`
        (zero chunks as zero bytes): an HTTP upload body with Content-Length `size`.

        Hand an HTTP client this iterator rather than the reader itself: the reader has a
        `read(offset, length)` method, and `http.client` takes anything with `read` for a
        file object. Every call starts again at offset 0, so a retried upload can call it
        again; a damaged chunk raises `CorruptionError` from the iterator, cutting the body
        short of its Content-Length, so the receiver never gets a whole file of wrong bytes.
        """
        for start, chunks in self._batches():
            parts = [
                data if data is not None else bytes(self._chunk_len(start + k))
                for k, data in enumerate(chunks)
            ]
            yield b"".join(parts)

    def read_into(self, out: BinaryIO) -> int:
        """Write the whole disk to `out`; zero chunks become holes when `out` can seek."""
        sparse = out.seekable()
        position = out.tell() if sparse else 0
        written = 0
        pending_hole = 0
        for start, chunks in self._batches():
            for k, data in enumerate(chunks):
                length = self._chunk_len(start + k)
                if data is None and sparse:
                    pending_hole += length
                    continue
                if pending_hole:
                    out.seek(pending_hole, os.SEEK_CUR)
                    written += pending_hole
                    pending_hole = 0
                out.write(data if data is not None else bytes(length))
                written += length
        if pending_hole:
            out.seek(pending_hole - 1, os.SEEK_CUR)
            out.write(b"\0")
        written += pending_hole
        if sparse:
            out.flush()
            assert out.tell() == position + self.size
        return written

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (fewer at the end of the disk)."""
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        cs = self.chunk_size
        parts: list[bytes] = []
        for i in range(offset // cs, (end + cs - 1) // cs):
            data = self._chunk(i)
            chunk = data if data is not None else bytes(self._chunk_len(i))
            lo = max(offset, i * cs) - i * cs
            hi = min(end, (i + 1) * cs) - i * cs
            parts.append(chunk[lo:hi])
        return b"".join(parts)

"""Pack files and their indexes: where chunks live on disk.

A pack is a header followed by entries; each entry is a fixed header (chunk id, flags,
kind, raw length, stored length) and the stored bytes. Because every entry describes
itself, the index of a pack can always be rebuilt by scanning the pack alone. A pack is
written under `tmp/`, fsynced and renamed into `packs/` only when complete, so a pack file
in `packs/` is never truncated by a crash; its index is written after it, the same way.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import blake3
import zstandard

from reconciler.errors import CorruptionError, PackMissingError

from .direct import StagedFile, open_pack_file, stage_buffer
from .format import Layout, atomic_write, chunk_id, fsync_dir, new_pack_id

__all__ = [
    "FLAG_RAW",
    "FLAG_ZSTD",
    "KIND_DATA",
    "KIND_TABLE",
    "ChunkIndex",
    "Location",
    "PackMissingError",
    "PackReader",
    "PackWriter",
    "decode_chunk",
    "read_index_file",
    "scan_pack",
]

PACK_MAGIC = b"VMKPACK\x01"
INDEX_MAGIC = b"VMKIDX\x00\x01"
ENTRY = struct.Struct("<32sBBxxII")  # id, flags, kind, raw length, stored length
INDEX_HEADER = struct.Struct("<8sQI")  # magic, pack size, entry count
INDEX_ENTRY = struct.Struct(
    "<32sQIIBB"
)  # id, offset of data, stored length, raw length, flags, kind
FLAG_RAW = 0
FLAG_ZSTD = 1
KIND_DATA = 0
KIND_TABLE = 1
WRITE_BUFFER = 4 * 1024 * 1024
MAX_PENDING_WRITES = 8  # buffers queued for the I/O thread (32 MiB)
IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 16


class Location(NamedTuple):
    """Where one stored copy of a chunk is: pack, offset of its data, lengths, flags."""

    pack: str
    offset: int
    stored: int
    raw: int
    flags: int
    kind: int


@dataclass(frozen=True)
class PackSummary:
    pack: str
    size: int
    entries: tuple[tuple[bytes, Location], ...]


_local = threading.local()  # one zstd decompressor per thread


def decode_chunk(cid: bytes, loc: Location, stored: bytes) -> bytes:
    """Decompress and check one stored chunk; raise CorruptionError when it does not match."""
    if len(stored) != loc.stored:
        raise CorruptionError(f"chunk {cid.hex()} in pack {loc.pack} is truncated")
    if loc.flags == FLAG_ZSTD:
        decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "d", None)
        if decompressor is None:
            decompressor = _local.d = zstandard.ZstdDecompressor()
        try:
            raw = decompressor.decompress(stored, max_output_size=loc.raw)
        except zstandard.ZstdError as exc:
            raise CorruptionError(
                f"chunk {cid.hex()} in pack {loc.pack} does not decompress ({exc})"
            ) from None
    else:
        raw = stored
    if len(raw) != loc.raw or chunk_id(raw) != cid:
        raise CorruptionError(f"chunk {cid.hex()} in pack {loc.pack} does not match its hash")
    return raw


# --------------------------------------------------------------------------- index files


def encode_index(pack_size: int, entries: Iterable[tuple[bytes, Location]]) -> bytes:
    items = list(entries)
    parts = [INDEX_HEADER.pack(INDEX_MAGIC, pack_size, len(items))]
    parts.extend(
        INDEX_ENTRY.pack(cid, loc.offset, loc.stored, loc.raw, loc.flags, loc.kind)
        for cid, loc in items
    )
    body = b"".join(parts)
    return body + blake3.blake3(body).digest()


def read_index_file(path: Path, pack: str) -> PackSummary | None:
    """Parse one index file; None when it is damaged (the caller rebuilds it from the pack)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    body, trailer = data[:-32], data[-32:]
    if len(data) < INDEX_HEADER.size + 32 or blake3.blake3(body).digest() != trailer:
        return None
    magic, pack_size, count = INDEX_HEADER.unpack_from(body, 0)
    if magic != INDEX_MAGIC or len(body) != INDEX_HEADER.size + count * INDEX_ENTRY.size:
        return None
    entries = tuple(
        (cid, Location(pack, off, stored, raw, flags, kind))
        for cid, off, stored, raw, flags, kind in INDEX_ENTRY.iter_unpack(body[INDEX_HEADER.size :])
    )
    return PackSummary(pack, pack_size, entries)


def scan_pack(path: Path, pack: str) -> PackSummary:
    """Rebuild a pack's index from the pack itself; stops at the first unreadable entry."""
    entries: list[tuple[bytes, Location]] = []
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(len(PACK_MAGIC)) != PACK_MAGIC:
            return PackSummary(pack, size, ())
        pos = len(PACK_MAGIC)
        while pos + ENTRY.size <= size:
            header = f.read(ENTRY.size)
            cid, flags, kind, raw, stored = ENTRY.unpack(header)
            data_at = pos + ENTRY.size
            if flags not in (FLAG_RAW, FLAG_ZSTD) or data_at + stored > size:
                break
            entries.append((cid, Location(pack, data_at, stored, raw, flags, kind)))
            pos = data_at + stored
            f.seek(pos)
    return PackSummary(pack, size, tuple(entries))


# --------------------------------------------------------------------------- chunk index


class ChunkIndex:
    """Chunk id → one good stored copy, for every published pack.

    When a chunk is stored more than once (concurrent writers, a GC rewrite interrupted by a
    crash, a fresh copy after damage) the copy in the newest pack wins; copies listed in the
    quarantine are never used. Each location is one packed int (pack number, offset,
    lengths, flags, kind) to keep the per-chunk memory down; per-pack entry lists are not
    kept (`Repository.pack_summaries` reads them again when GC needs them).
    """

    def __init__(self, quarantine: set[tuple[str, bytes]] | None = None) -> None:
        self._locations: dict[bytes, int] = {}
        self._names: list[str] = []
        self.packs: dict[str, int] = {}  # pack id → pack size
        self.quarantine: set[tuple[str, bytes]] = quarantine if quarantine is not None else set()
        self._lock = threading.Lock()

    def __contains__(self, cid: bytes) -> bool:
        return cid in self._locations

    def __len__(self) -> int:
        return len(self._locations)

    def get(self, cid: bytes) -> Location | None:
        value = self._locations.get(cid)
        if value is None:
            return None
        return Location(
            self._names[value >> 106],
            (value >> 66) & _M40,
            (value >> 34) & _M32,
            (value >> 2) & _M32,
            (value >> 1) & 1,
            value & 1,
        )

    def add_pack(self, summary: PackSummary) -> None:
        with self._lock:
            number = len(self._names)
            self._names.append(summary.pack)
            self.packs[summary.pack] = summary.size
            base = number << 106
            for cid, loc in summary.entries:
                if (loc.pack, cid) in self.quarantine:
                    continue
                old = self._locations.get(cid)
                if old is None or self._names[old >> 106] < loc.pack:
                    self._locations[cid] = (
                        base
                        | loc.offset << 66
                        | loc.stored << 34
                        | loc.raw << 2
                        | loc.flags << 1
                        | loc.kind
                    )

    def mark_bad(self, cid: bytes, pack: str) -> bool:
        """Forget a damaged copy; True when it was the copy in use (the chunk is then
        missing until the index is reloaded or a fresh copy is written)."""
        with self._lock:
            self.quarantine.add((pack, cid))
            value = self._locations.get(cid)
            if value is None or self._names[value >> 106] != pack:
                return False
            del self._locations[cid]
            return True


_M32 = (1 << 32) - 1
_M40 = (1 << 40) - 1


# --------------------------------------------------------------------------- writing


class PackWriter:
    """Appends chunks to a pack under `tmp/`; publishes it (pack, then index) when full.

    Writing, fsync and publishing run on one background I/O thread, in order, so the
    caller goes on hashing and compressing meanwhile; `flush` waits for all of it.
    `publish` is called with each finished pack's summary after the pack and its index
    are durable, so the caller can make its chunks visible for deduplication.
    """

    def __init__(
        self, layout: Layout, target_size: int, publish: Callable[[PackSummary], None],
        direct: bool = False,
    ) -> None:
        self.layout = layout
        self.target_size = target_size
        self.publish = publish
        #: Write packs around the page cache (`direct.py`); off once the filesystem refuses.
        self.direct = direct
        self.published: list[str] = []
        self._stage: mmap.mmap | None = None  # direct writes' buffer, kept until a flush
        self._staged: StagedFile | None = None  # the current pack's direct writes
        self._fd: int | None = None
        self._pack = ""
        self._tmp = Path()
        self._size = 0
        self._parts: list[bytes | bytearray] = []  # queued for one writev: headers, payloads
        self._buffered = 0
        self._entries: list[tuple[bytes, Location]] = []
        self._io: ThreadPoolExecutor | None = None
        self._pending: collections.deque[Future[None]] = collections.deque()
        self.bytes_written = 0

    def add(
        self, cid: bytes, kind: int, flags: int, raw_len: int, payload: bytes | bytearray
    ) -> None:
        if self._fd is None:
            self._open()
        header = ENTRY.pack(cid, flags, kind, raw_len, len(payload))
        data_at = self._size + len(header)
        self._parts += (header, payload)  # no copy: the I/O thread writes them with writev
        self._buffered += len(header) + len(payload)
        self._entries.append(
            (cid, Location(self._pack, data_at, len(payload), raw_len, flags, kind))
        )
        self._size = data_at + len(payload)
        self.bytes_written += len(payload)
        if self._buffered >= WRITE_BUFFER:
            self._drain()
        if self._size >= self.target_size:
            self.finish()

    def _open(self) -> None:
        self._pack = new_pack_id()
        self._tmp = self.layout.tmp / f"{self._pack}.pack"
        self._fd, direct = open_pack_file(self._tmp, self.direct)
        self.direct = direct
        self._staged = None
        if direct:
            if self._stage is None:
                self._stage = stage_buffer()
            self._staged = StagedFile(self._fd, self._stage, _write_all)
        self._parts = [PACK_MAGIC]
        self._buffered = len(PACK_MAGIC)
        self._size = len(PACK_MAGIC)
        self._entries = []

    def _submit(self, fn: Callable[..., None], *args: object) -> None:
        if self._io is None:
            self._io = ThreadPoolExecutor(1, thread_name_prefix="vmkeep-pack-io")
        self._pending.append(self._io.submit(fn, *args))
        while len(self._pending) > MAX_PENDING_WRITES:
            self._pending.popleft().result()  # back-pressure; re-raises I/O errors

    def _drain(self) -> None:
        assert self._fd is not None
        parts, self._parts, self._buffered = self._parts, [], 0
        if self._staged is not None:
            self._submit(self._staged.write, parts)
        else:
            self._submit(_write_all, self._fd, parts)

    def finish(self) -> None:
        """Close the current pack; it is sealed and published in the background."""
        if self._fd is None:
            return
        self._drain()
        summary = PackSummary(self._pack, self._size, tuple(self._entries))
        self._submit(self._seal, self._fd, self._tmp, summary, self._staged)
        self._fd = None
        self._staged = None
        self._entries = []

    def flush(self) -> None:
        """Finish the current pack and wait until every pack is durable and published."""
        self.finish()
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._shutdown()

    def _seal(self, fd: int, tmp: Path, summary: PackSummary,
              staged: StagedFile | None = None) -> None:
        """Make a pack durable and visible: fsync, rename, fsync dir, then its index.

        A pack one of whose writes failed (disk full, I/O error) is dropped, not published:
        its summary lists entries the file does not hold, and another export of this
        process would deduplicate against them."""
        if staged is not None:
            try:
                staged.finish()  # the tail, through the page cache
            except OSError:
                os.close(fd)
                tmp.unlink(missing_ok=True)
                raise
            if staged.refused:
                self.direct = False  # nor for the next packs
        if os.fstat(fd).st_size != summary.size:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise OSError(f"pack {summary.pack} is incomplete (a write failed); not published")
        os.fsync(fd)
        _drop_cached(fd)
        os.close(fd)
        final = self.layout.pack(summary.pack)
        self.layout.make_dir(final.parent)  # a new packs/<xx>/ is made durable in packs/
        os.replace(tmp, final)
        fsync_dir(final.parent)
        index = self.layout.index_file(summary.pack)
        atomic_write(
            index, encode_index(summary.size, summary.entries), self.layout.tmp, sync_dir=False
        )
        self.published.append(summary.pack)
        self.publish(summary)

    def discard(self) -> None:
        """Drop the unfinished pack (abort); published packs stay for GC to judge."""
        for future in self._pending:
            future.exception()  # wait; the error no longer matters
        self._pending.clear()
        self._shutdown()
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        self._tmp.unlink(missing_ok=True)
        self._entries = []
        self._parts, self._buffered = [], 0

    def _shutdown(self) -> None:
        if self._io is not None:
            self._io.shutdown()
            self._io = None
        if self._staged is not None:  # an unfinished pack, discarded
            self._staged.close()
            self._staged = None
        if self._stage is not None:  # a later pack maps a new one
            with contextlib.suppress(BufferError):  # still viewed: the collector frees it
                self._stage.close()
            self._stage = None


def _drop_cached(fd: int) -> None:
    """Let the kernel drop a durable pack's pages from the page cache (as borg does for its
    segments): an export writes far more than anyone reads back soon, and the next pack's
    pages are then the ones just freed, not fresh memory to map and clear (in
    `bench/apply.py` the kernel's copying of packs fell from 26 % to 11 % of apply's CPU
    samples: docs/benchmarks.md)."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _write_all(fd: int, parts: Sequence[bytes | bytearray | memoryview]) -> None:
    """Write `parts` in order with as few `writev` calls as the kernel allows."""
    pending: collections.deque[memoryview] = collections.deque(
        memoryview(p) for p in parts if len(p))
    while pending:
        written = os.writev(fd, list(itertools.islice(pending, IOV_MAX)))
        while written:
            head = pending[0]
            if written >= len(head):
                written -= len(head)
                pending.popleft()
            else:
                pending[0] = head[written:]
                written = 0


# --------------------------------------------------------------------------- reading


class _OpenPack:
    """An open pack file and how many reads are using it right now."""

    __slots__ = ("fd", "retired", "users")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.users = 0
        self.retired = False  # closed as soon as its last read is done


class PackReader:
    """Reads stored chunks with `pread`, keeping a few pack files open. Thread-safe.

    A file is closed only when no read is using it: closing a descriptor another thread is
    about to `pread` would let the next `open` reuse its number, and that read would get
    another pack's bytes (a chunk wrongly reported damaged). Evicting (past `max_open`)
    and `close` therefore retire files, and the last read of a retired file closes it.
    """

    def __init__(self, layout: Layout, max_open: int = 64) -> None:
        self.layout = layout
        self.max_open = max_open
        self._open: dict[str, _OpenPack] = {}
        self._lock = threading.Lock()

    def _acquire(self, pack: str) -> _OpenPack:
        with self._lock:
            entry = self._open.get(pack)
            if entry is None:
                try:
                    fd = os.open(self.layout.pack(pack), os.O_RDONLY)
                except FileNotFoundError:
                    raise PackMissingError(f"pack {pack} is missing") from None
                self._evict_idle()
                entry = self._open[pack] = _OpenPack(fd)
            entry.users += 1
            return entry

    def _evict_idle(self) -> None:
        """Close the oldest idle files until there is room (busy ones stay open)."""
        excess = len(self._open) + 1 - self.max_open
        for pack in [p for p, e in self._open.items() if not e.users][: max(0, excess)]:
            os.close(self._open.pop(pack).fd)

    def _release(self, entry: _OpenPack) -> None:
        with self._lock:
            entry.users -= 1
            if entry.retired and not entry.users:
                os.close(entry.fd)

    def read_stored(self, loc: Location) -> bytes:
        entry = self._acquire(loc.pack)
        try:
            return os.pread(entry.fd, loc.stored, loc.offset)
        finally:
            self._release(entry)

    def read(self, cid: bytes, loc: Location) -> bytes:
        """The raw bytes of a chunk, checked against its id."""
        return decode_chunk(cid, loc, self.read_stored(loc))

    def close(self) -> None:
        """Close every file; one a read is using is closed when that read is done."""
        with self._lock:
            for entry in self._open.values():
                if entry.users:
                    entry.retired = True
                else:
                    os.close(entry.fd)
            self._open.clear()

    def iter_pack(self, summary: PackSummary) -> Iterator[tuple[bytes, Location, bytes]]:
        """Every entry of a pack with its stored bytes, read sequentially in large blocks."""
        path = self.layout.pack(summary.pack)
        with open(path, "rb", buffering=8 * 1024 * 1024) as f:
            for cid, loc in sorted(summary.entries, key=lambda e: e[1].offset):
                f.seek(loc.offset)
                yield cid, loc, f.read(loc.stored)


"""The write path: cut disks into chunks, hash and compress them in threads, store new ones.

A disk is read in large blocks (`BLOCK_SIZE`, chunk-aligned); each block is one unit of
work for the thread pool, which checks every chunk for zeros, hashes it and compresses it
only when the repository does not already hold it. BLAKE3 and zstd release the GIL, so the
threads really run in parallel while the main thread reads the next block and appends new
chunks to the pack in large writes. With a changed-extent list (vSphere CBT) only the chunks
touched by an extent are read; every other chunk id is taken from the previous manifest.
The source stream is only ever read on the caller's thread, and only forward: the pool gets
bytes, never the stream, so a caller's stream need be neither thread-safe nor able to seek
back.

A writer session survives its process: every `RepositoryCore.checkpoint_bytes` of a fully read
disk it publishes what it has stored (the open pack and the disk's chunk table so far) and
writes a checkpoint beside its partial marker (`partial/<id>.ckpt`: finished disk records,
the current disk's table ids, chunk count and byte offset, the source snapshot). A later
`begin_point(..., resume=True)` of the same point from the same snapshot takes the finished
disks as they are and continues the current one at the checkpoint's offset, so a retried
export re-reads at most `checkpoint_bytes` of what it had read.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO, Protocol, TypeVar

import zstandard

from reconciler.errors import CorruptionError, RepositoryError
from reconciler.model import ExportPoint, VMRef
from reconciler.ports import Lent, lend_from

from .core import RepositoryCore
from .extents import ChunkPlan, Piece, plan_chunks, read_planned
from .format import (
    ID_SIZE,
    TABLE_ENTRIES,
    ZERO_ID,
    DiskRecord,
    FileRecord,
    Manifest,
    chunk_id,
    disk_digest,
)
from .packs import FLAG_RAW, FLAG_ZSTD, KIND_DATA, KIND_TABLE, PackWriter

__all__ = ["Checkpoint", "DiskResult", "PointWriter", "SeekableStream"]

BLOCK_SIZE = 8 * 1024 * 1024
T = TypeVar("T")


class SeekableStream(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...


@dataclass(frozen=True)
class DiskResult:
    """What one `add_disk` did: sizes, how much was read and how much was new."""

    name: str
    size: int
    chunks: int
    zero_chunks: int
    new_chunks: int
    stored_bytes: int
    read_bytes: int
    digest: str
    incremental: bool  # True when a changed-extent list was used


@dataclass(frozen=True)
class Checkpoint:
    """Where an unfinished export stands (see the module docstring)."""

    point_id: str
    snapshot_id: str
    chunk_size: int
    disks: tuple[DiskRecord, ...]
    current: str = ""  # the disk being read
    current_size: int = 0
    offset: int = 0  # bytes of the current disk stored and listed in `tables`
    chunks: int = 0
    tables: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        body = asdict(self)
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Checkpoint:
        body = json.loads(data)
        body["disks"] = tuple(DiskRecord(**{**d, "tables": tuple(d["tables"])})
                              for d in body["disks"])
        body["tables"] = tuple(body["tables"])
        return cls(**body)


# One block's worth of work: (first chunk index, data) in; (first chunk index, block
# length, chunk ids, flags, payloads) out. A payload is None for zero and known chunks.
BlockResult = tuple[int, int, list[bytes], list[int], list[bytes | bytearray | None]]


class ChunkEncoder:
    """The per-block work done in the pool: zero check, hash, compress if unknown."""

    def __init__(self, chunk_size: int, level: int, known: Callable[[bytes], bool]) -> None:
        self.chunk_size = chunk_size
        self.level = level
        self.known = known
        self.zero = bytes(chunk_size)
        self.zero_block = bytes(BLOCK_SIZE)
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        c: zstandard.ZstdCompressor | None = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=self.level)
        return c

    def compress(self, raw: bytes | bytearray | memoryview) -> tuple[int, bytes | bytearray]:
        """(flag, payload); a chunk stored raw is copied out (`raw` may view a reused buffer)."""
        packed = self._compressor().compress(raw)
        if len(packed) > len(raw) - (len(raw) >> 5):  # saves under 3 %: store raw
            return FLAG_RAW, raw if isinstance(raw, bytes | bytearray) else raw.tobytes()
        return FLAG_ZSTD, packed

    def encode(self, first: int, block: bytes | bytearray | Lent) -> BlockResult:
        """Chunks are hashed and compressed as views of `block`, not copies; only chunks
        stored raw are copied out, so nothing returned refers to `block` (a reused buffer,
        or a block lent in place by the source: released here once encoded)."""
        if isinstance(block, Lent):
            try:
                return self._encode_in(first, block.buffer, block.offset, block.length)
            finally:
                block.release()
        return self._encode_in(first, block, 0, len(block))

    def _encode_in(self, first: int, buf: Any, start: int, length: int) -> BlockResult:
        """`encode` of `length` bytes of `buf` (bytes, bytearray or an mmap) at `start`."""
        cs = self.chunk_size
        n = (length + cs - 1) // cs
        # zeros are found in place: a find over exactly the bytes compared is a memcmp that
        # stops at the first non-zero byte, with no copy
        if length == len(self.zero_block) and buf.find(self.zero_block, start,
                                                       start + length) == start:
            return first, length, [ZERO_ID] * n, [FLAG_RAW] * n, [None] * n
        ids: list[bytes] = []
        flags: list[int] = []
        payloads: list[bytes | bytearray | None] = []
        zero, known = self.zero, self.known
        view = memoryview(buf)[start : start + length]
        for pos in range(0, length, cs):
            raw = view[pos : pos + cs]
            at = start + pos
            if buf.find(zero if len(raw) == cs else zero[: len(raw)], at, at + len(raw)) == at:
                ids.append(ZERO_ID)
                flags.append(FLAG_RAW)
                payloads.append(None)
                continue
            cid = chunk_id(raw)
            ids.append(cid)
            if known(cid):
                flags.append(FLAG_RAW)
                payloads.append(None)
            else:
                flag, payload = self.compress(raw)
                flags.append(flag)
                payloads.append(payload)
        return first, length, ids, flags, payloads

    def encode_pieces(self, first: int, pieces: list[Piece]) -> BlockResult:
        """Like `encode`, for changed-extent input: patches are laid over the previous
        chunks (already fetched and verified) before the block is encoded."""
        chunks: list[bytes] = []
        for piece in pieces:
            if isinstance(piece, bytes):
                chunks.append(piece)
                continue
            previous, patches = piece
            buf = bytearray(previous)
            for offset, data in patches:
                buf[offset : offset + len(data)] = data
            chunks.append(bytes(buf))
        return self.encode(first, b"".join(chunks))


class PreviousChunks:
    """The previous copies of the chunks a changed-extent export patches, fetched and
    verified in the pool ahead of the (strictly forward) source reads, handed out in order.

    `fetch` returns None for a copy that is damaged or gone; the reader then reads that
    chunk whole, at the place in the source it has reached anyway.
    """

    def __init__(
        self,
        pool: Executor,
        fetch: Callable[[bytes], bytes | None],
        wanted: list[tuple[int, bytes]],
        ahead: int,
        zero: bytes,
    ) -> None:
        self._pool = pool
        self._fetch = fetch
        self._wanted = iter(wanted)  # (chunk index, previous id), in plan order
        self._ahead = ahead
        self._zero = zero
        self._window: collections.deque[tuple[int, Future[bytes | None]]] = collections.deque()

    def _fill(self) -> None:
        while len(self._window) < self._ahead:
            item = next(self._wanted, None)
            if item is None:
                return
            index, cid = item
            self._window.append((index, self._pool.submit(self._get, cid)))

    def _get(self, cid: bytes) -> bytes | None:
        return self._zero if cid == ZERO_ID else self._fetch(cid)

    def __call__(self, index: int) -> bytes | None:
        self._fill()
        expected, future = self._window.popleft()
        assert expected == index, f"previous chunk {index} asked out of order"
        return future.result()


def read_full(
    stream: BinaryIO | SeekableStream, size: int | None, ring: Sequence[bytearray] = ()
) -> Iterator[bytes | bytearray]:
    """Blocks of exactly BLOCK_SIZE bytes (the last may be shorter), tolerating short reads.

    With a `ring` of BLOCK_SIZE buffers and a stream that has `readinto`, full blocks are
    read into those buffers in turn (no fresh memory to fault in per block); a consumer must
    be done with a block before `len(ring)` more have been yielded.
    """
    readinto = getattr(stream, "readinto", None) if ring else None
    remaining = size
    k = 0
    while remaining is None or remaining > 0:
        want = BLOCK_SIZE if remaining is None else min(BLOCK_SIZE, remaining)
        got = 0
        if readinto is not None:
            buf = ring[k % len(ring)]
            k += 1
            view = memoryview(buf)
            while got < want:
                n = readinto(view[got:want])
                if not n:
                    break
                got += n
            view.release()
            block: bytes | bytearray = buf if got == BLOCK_SIZE else bytes(buf[:got])
        else:
            parts: list[bytes] = []
            while got < want:
                data = stream.read(want - got)
                if not data:
                    break
                parts.append(data)
                got += len(data)
            block = parts[0] if len(parts) == 1 else b"".join(parts)
        if got:
            yield block
            if remaining is not None:
                remaining -= got
        if got < want:
            if remaining is not None and remaining > 0:
                raise RepositoryError(f"disk stream ended {remaining} bytes before its size")
            return


class PointWriter:
    """Writes one restore point; it becomes visible only when `commit` writes its manifest.

    Use it as a context manager: leaving the block with an exception aborts the export.
    """

    def __init__(
        self,
        core: RepositoryCore,
        point_id: str,
        policy: str,
        vm: VMRef,
        slot: object,
        metadata: dict[str, object],
    ) -> None:
        self.core = core
        self.point_id = point_id
        self.policy = policy
        self.vm = vm
        self.slot = slot
        self.metadata = metadata
        self.started = time.monotonic()
        self.disks: list[DiskRecord] = []
        self.files: list[FileRecord] = []
        self.results: list[DiskResult] = []
        self.packs = PackWriter(core.layout, core.pack_size, core.publish_pack,
                                core.direct_writes)
        self._session: set[bytes] = set()
        self._done = False
        self.encoder = ChunkEncoder(core.chunk_size, core.compression_level, self._known)
        self.resumed: Checkpoint | None = None
        self._resumed_ids: list[bytes] = []

    def resume_from(self, checkpoint: Checkpoint) -> bool:
        """Continue an earlier session of this point; False (start over) when what it
        stored is not all in the repository any more."""
        try:
            ids: list[bytes] = []
            for tid in checkpoint.tables:
                blob = self.core.read_chunk(bytes.fromhex(tid))
                ids.extend(blob[i : i + ID_SIZE] for i in range(0, len(blob), ID_SIZE))
            for record in checkpoint.disks:
                for tid in record.tables:
                    if bytes.fromhex(tid) not in self.core.index:
                        return False
        except (CorruptionError, RepositoryError, OSError, ValueError):
            return False
        if len(ids) != checkpoint.chunks or any(
                cid != ZERO_ID and cid not in self.core.index for cid in ids):
            return False
        self.resumed = checkpoint
        self._resumed_ids = ids
        return True

    def __enter__(self) -> PointWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._done:
            self.abort()

    def _usable(self, cid: bytes) -> bool:
        """A previous chunk can be referenced: a good copy is indexed (not quarantined)."""
        return cid in self.core.index

    def _known(self, cid: bytes) -> bool:
        return cid in self.core.index or cid in self._session

    def _previous_chunk(self, cid: bytes) -> bytes | None:
        """A previous chunk to patch, verified; None when its copy is damaged or gone.

        Damage found here is quarantined exactly as `verify` does, so neither this export
        nor a later one deduplicates against it, and the chunk is read whole from the
        source instead: a damaged old copy costs a chunk of reading, not the export.
        """
        loc = self.core.index.get(cid)
        try:
            return self.core.read_chunk(cid)
        except CorruptionError:
            if loc is not None:
                self.core.quarantine(loc.pack, cid)
            return None

    def _store(
        self, cid: bytes, kind: int, flag: int, raw_len: int, payload: bytes | bytearray
    ) -> int:
        if cid in self._session or cid in self.core.index:
            return 0
        self._session.add(cid)
        self.packs.add(cid, kind, flag, raw_len, payload)
        return len(payload)

    def _check_open(self, name: str, names: Sequence[str]) -> None:
        if self._done:
            raise RepositoryError(f"restore point {self.point_id!r} is already finished")
        if name in names:
            raise RepositoryError(f"restore point {self.point_id!r} already has {name!r}")

    # ------------------------------------------------------------------ disks

    def add_disk(
        self,
        name: str,
        stream: BinaryIO | SeekableStream,
        *,
        size: int | None = None,
        changed_extents: Iterable[tuple[int, int]] | None = None,
        previous: tuple[str, str] | None = None,
    ) -> DiskResult:
        """Store one disk image read from `stream`.

        With `changed_extents` (byte offset, length) and `previous` (point id, disk name),
        and a seekable stream of known `size`, only chunks touched by an extent are read;
        the others are referenced from the previous point.
        """
        self._check_open(name, [d.name for d in self.disks])
        cs = self.core.chunk_size
        done = self._resumed_disk(name, size)
        if done is not None:
            return done
        base: list[bytes] | None = None
        if changed_extents is not None:
            if size is None or previous is None:
                raise RepositoryError("changed extents need the disk size and a previous point")
            base = self.core.previous_table(*previous)
        ids: list[bytes] = []
        stats = {"zero": 0, "new": 0, "stored": 0, "read": 0}
        offset = 0
        current = self.resumed
        if base is None and current is not None and current.current == name \
                and size is not None and current.current_size == size:
            offset = current.offset
            ids = list(self._resumed_ids)
            stream.seek(offset)
        since = 0
        ring: list[bytearray] = []  # taken when blocks are read, not lent (`_blocks`)
        if base is None:
            results = self._encode(self.encoder.encode,
                                   self._blocks(stream, size, stats, offset, ring))
        else:
            assert size is not None
            chunks = (size + cs - 1) // cs
            ids = base[:chunks] + [ZERO_ID] * (chunks - len(base))
            plans = plan_chunks(changed_extents or (), size, cs, base, self._usable)
            counter = [0]
            results = self._patched(stream, plans, base, size, counter)
        for first, length, block_ids, flags, payloads in results:
            if base is None:
                ids.extend(block_ids)
            else:
                ids[first : first + len(block_ids)] = block_ids
            for k, (cid, flag, payload) in enumerate(zip(block_ids, flags, payloads, strict=True)):
                if payload is None:
                    continue
                raw_len = min(cs, length - k * cs)
                added = self._store(cid, KIND_DATA, flag, raw_len, payload)
                if added:
                    stats["new"] += 1
                    stats["stored"] += added
            if base is None and size is not None:
                since += length
                if since >= self.core.checkpoint_bytes and len(ids) * cs < size:
                    since = 0
                    self._checkpoint(name, size, ids, stats)
        self.core.give_buffers(ring)  # every block is encoded: none is read from any more
        if base is not None:
            stats["read"] = counter[0]
        total = size if size is not None else stats["read"]
        stats["zero"] = sum(1 for cid in ids if cid == ZERO_ID)
        tables = self._store_tables(ids, stats)
        record = DiskRecord(
            name=name,
            size=total,
            digest=disk_digest(total, ids),
            chunks=len(ids),
            zero_chunks=stats["zero"],
            tables=tables,
            stored_bytes=stats["stored"],
            read_bytes=stats["read"],
        )
        self.disks.append(record)
        if base is None and size is not None and size >= self.core.checkpoint_bytes:
            self._checkpoint("", 0, [], stats)  # a finished disk is never read again
        result = DiskResult(
            name,
            total,
            len(ids),
            stats["zero"],
            stats["new"],
            stats["stored"],
            stats["read"],
            record.digest,
            base is not None,
        )
        self.results.append(result)
        return result

    def _blocks(
        self, stream: BinaryIO | SeekableStream, size: int | None, stats: dict[str, int],
        offset: int, ring: list[bytearray],
    ) -> Iterator[tuple[int, bytes | bytearray | Lent]]:
        """The source's blocks from `offset`: lent where they already are while the stream
        can lend them (a disk read by a helper process: its shared ring, no copy), then
        read — into `ring`, buffers taken for the rest of the disk when the stream has
        `readinto` (a block is free again once its result is consumed: the window holds
        2*threads)."""
        cs = self.core.chunk_size
        first = offset // cs
        left = None if size is None else size - offset
        while left is None or left > 0:
            lent = lend_from(stream, BLOCK_SIZE if left is None else min(BLOCK_SIZE, left))
            if lent is None:
                break
            stats["read"] += lent.length
            yield first, lent
            first += lent.length // cs
            if left is not None:
                left -= lent.length
        if left is not None and left <= 0:
            return
        if hasattr(stream, "readinto"):
            ring.extend(self.core.take_buffers(2 * self.core.threads + 2, BLOCK_SIZE))
        for block in read_full(stream, left, ring):
            stats["read"] += len(block)
            yield first, block
            first += len(block) // cs

    def _patched(
        self,
        stream: BinaryIO | SeekableStream,
        plans: list[ChunkPlan],
        base: list[bytes],
        size: int,
        counter: list[int],
    ) -> Iterator[BlockResult]:
        """Encoded blocks of changed-extent input: previous chunks are fetched a block ahead
        of the source reads, blocks are encoded in the pool."""
        cs = self.core.chunk_size
        per_block = BLOCK_SIZE // cs
        wanted = [(p.index, base[p.index]) for p in plans if p.patches is not None]
        previous = PreviousChunks(
            self.core.pool, self._previous_chunk, wanted, per_block, self.encoder.zero
        )
        blocks = read_planned(stream, plans, previous, size, cs, per_block, counter)
        return self._encode(self.encoder.encode_pieces, blocks)

    def _encode(
        self, work: Callable[[int, T], BlockResult], blocks: Iterator[tuple[int, T]]
    ) -> Iterator[BlockResult]:
        """Run `work` over the blocks in the pool, a few blocks ahead, results in order."""
        pool = self.core.pool
        window: collections.deque[Future[BlockResult]] = collections.deque()
        depth = 2 * self.core.threads
        for first, block in blocks:
            window.append(pool.submit(work, first, block))
            if len(window) >= depth:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def _resumed_disk(self, name: str, size: int | None) -> DiskResult | None:
        """A disk an earlier session of this point finished: taken as it was, not read."""
        previous = self.resumed
        record = next((d for d in previous.disks if d.name == name), None) if previous \
            else None
        if record is None or (size is not None and record.size != size):
            return None
        record = DiskRecord(record.name, record.size, record.digest, record.chunks,
                            record.zero_chunks, record.tables, 0, 0)
        self.disks.append(record)
        result = DiskResult(name, record.size, record.chunks, record.zero_chunks, 0, 0, 0,
                            record.digest, False)
        self.results.append(result)
        return result

    def _checkpoint(self, name: str, size: int, ids: list[bytes],
                    stats: dict[str, int]) -> None:
        """Publish what is stored so far and record where this disk stands."""
        tables = self._store_tables(ids, stats)
        self.packs.flush()
        snapshot = self.metadata.get("snapshotId")
        checkpoint = Checkpoint(
            self.point_id, str(snapshot or ""), self.core.chunk_size, tuple(self.disks),
            name, size, len(ids) * self.core.chunk_size, len(ids), tables)
        self.core.write_checkpoint(self.point_id, checkpoint.to_json())

    def _store_tables(self, ids: list[bytes], stats: dict[str, int]) -> tuple[str, ...]:
        tables: list[str] = []
        for i in range(0, len(ids), TABLE_ENTRIES):
            blob = b"".join(ids[i : i + TABLE_ENTRIES])
            tid = chunk_id(blob)
            if not self._known(tid):
                flag, payload = self.encoder.compress(blob)
                stats["stored"] += self._store(tid, KIND_TABLE, flag, len(blob), payload)
            tables.append(tid.hex())
        return tuple(tables)

    # ------------------------------------------------------------------ files

    def add_file(self, name: str, data: bytes) -> FileRecord:
        """Store a small file (the VM's .vmx, .nvram, a JSON description)."""
        self._check_open(name, [f.name for f in self.files])
        cs = self.core.chunk_size
        chunks: list[str] = []
        for pos in range(0, len(data), cs):
            piece = data[pos : pos + cs]
            cid = chunk_id(piece)
            if not self._known(cid):
                flag, payload = self.encoder.compress(piece)
                self._store(cid, KIND_DATA, flag, len(piece), payload)
            chunks.append(cid.hex())
        record = FileRecord(name, len(data), chunk_id(data).hex(), tuple(chunks))
        self.files.append(record)
        return record

    # ------------------------------------------------------------------ finish

    def commit(
        self,
        consistency: str,
        policy_revision: str | None = None,
        timings: dict[str, float] | None = None,
    ) -> ExportPoint:
        """Make the point durable and visible: packs and indexes first, the manifest last."""
        if self._done:
            raise RepositoryError(f"restore point {self.point_id!r} is already finished")
        self.packs.flush()
        all_timings = dict(timings or {})
        all_timings["write_seconds"] = round(time.monotonic() - self.started, 3)
        manifest = Manifest(
            id=self.point_id,
            policy=self.policy,
            vm_name=self.vm.name,
            vm_instance_uuid=self.vm.instance_uuid,
            slot=self.slot,  # type: ignore[arg-type]
            created_at=self.core.clock(),
            chunk_size=self.core.chunk_size,
            consistency=consistency,
            policy_revision=policy_revision,
            timings=all_timings,
            metadata=self.metadata,
            disks=tuple(self.disks),
            files=tuple(self.files),
        )
        point = self.core.publish_manifest(manifest)
        self._done = True
        self.core.end_point(self.point_id)
        return point

    def abort(self) -> None:
        """Give up: drop the unfinished pack; written packs become garbage for GC."""
        if self._done:
            return
        self._done = True
        self.packs.discard()
        self.core.end_point(self.point_id)

"""`RepositoryCore`: what the write, read, verify and GC paths of one open repository share.

It holds the settings (chunk and pack size, threads, timeouts, the clock), the directory
layout, the writer lock, the chunk index (cached, reloaded after another process's GC), the
pack reader, the thread pool, the quarantine, and the bookkeeping of this process's writer
sessions (partial markers, checkpoints, the commit of a manifest). `writer`, `reader`,
`verification` and `gc` depend on it and never on `store.Repository`, which composes a core
and keeps the catalog and the coordination of exports with GC in this process.

    store ──▶ gc, reader, verification, writer ──▶ core ──▶ format, lock, packs
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from reconciler.errors import CorruptionError, PointExistsError, RepositoryError
from reconciler.model import ExportPoint, VMRef

from .format import (
    ID_SIZE,
    Descriptor,
    DiskRecord,
    Layout,
    Manifest,
    atomic_write,
    decode_manifest,
    encode_manifest,
    fsync_dir,
    unquote_id,
)
from .lock import WriterLock
from .packs import (
    ChunkIndex,
    PackMissingError,
    PackReader,
    PackSummary,
    encode_index,
    read_index_file,
    scan_pack,
)

__all__ = ["PartialMarker", "PointExistsError", "RepositoryCore"]


@dataclass(frozen=True)
class PartialMarker:
    """A writer session's marker (`partial/<quoted id>.json`): the point, when the session
    started, the host and process writing it, and when the marker was last touched (at the
    start and at every checkpoint). One that cannot be read names only its point (from the
    file's name)."""

    path: Path
    point_id: str
    started: datetime | None
    host: str
    pid: int
    touched: float

    @property
    def checkpoint(self) -> Path:
        """The session's checkpoint beside it (`partial/<quoted id>.ckpt`)."""
        return self.path.with_suffix(".ckpt")

    @classmethod
    def read(cls, path: Path) -> PartialMarker | None:
        """None when the marker is gone (its session ended meanwhile)."""
        try:
            touched = path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            body = json.loads(path.read_bytes())
            return cls(path, str(body["id"]), datetime.fromisoformat(body["startedAt"]),
                       str(body.get("host", "")), int(body.get("pid", 0)), touched)
        except (OSError, ValueError, KeyError, TypeError):
            return cls(path, unquote_id(path.stem), None, "", 0, touched)


class RepositoryCore:
    """One open repository directory: settings, layout, lock, index, packs, pool, quarantine
    and this process's writer sessions (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        descriptor: Descriptor,
        *,
        target: str,
        threads: int | None,
        compression_level: int,
        pack_size: int,
        lock_timeout: float,
        clock: Callable[[], datetime],
        direct_writes: bool = False,
    ) -> None:
        self.root = root
        self.layout = Layout(root)
        self.descriptor = descriptor
        self.chunk_size = descriptor.chunk_size
        self.target = target
        self.threads = threads or os.cpu_count() or 2
        self.compression_level = compression_level
        self.pack_size = pack_size
        #: Packs are written around the page cache (`direct.py`).
        self.direct_writes = direct_writes
        self.lock_timeout = lock_timeout
        self.clock = clock
        self.lock = WriterLock(self.layout.locks)
        #: A writer session checkpoints after this many bytes of a disk (see writer.py);
        #: `$VMKEEP_CHECKPOINT_MIB` changes it.
        self.checkpoint_bytes = int(float(os.environ.get("VMKEEP_CHECKPOINT_MIB", "256"))
                                    * 1024 * 1024) or 1
        #: A partial export whose marker was touched within this many seconds belongs to a
        #: live writer (or one about to resume): GC spares what it may reference.
        self.writer_lease = float(os.environ.get("VMKEEP_WRITER_LEASE_SECONDS", "900"))
        self.packs = PackReader(self.layout)
        #: Guards the index, the pool and `writers`; `Repository` waits on it for its GC.
        self.mutex = threading.RLock()
        #: The points this process is writing now.
        self.writers: set[str] = set()
        self._index: ChunkIndex | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._free_buffers: dict[int, list[bytearray]] = {}  # by size, for `take_buffers`
        self._buffers_lock = threading.Lock()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self.packs.close()

    @property
    def pool(self) -> ThreadPoolExecutor:
        with self.mutex:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="vmkeep-chunk")
            return self._pool

    def take_buffers(self, count: int, size: int) -> list[bytearray]:
        """`count` buffers of `size` bytes for a writer's read ring, reused from disks read
        before when there are some: a fresh bytearray is zero-filled, every page of it
        faulted in and cleared, which costs about as much CPU as reading into it."""
        with self._buffers_lock:
            free = self._free_buffers.setdefault(size, [])
            taken = [free.pop() for _ in range(min(count, len(free)))]
        return taken + [bytearray(size) for _ in range(count - len(taken))]

    def give_buffers(self, buffers: list[bytearray]) -> None:
        """Buffers no task reads from any more, for the next disk. Two rings are kept at most
        (two exports at a time; with 2 threads 96 MiB stays allocated between exports)."""
        with self._buffers_lock:
            for buffer in buffers:
                free = self._free_buffers.setdefault(len(buffer), [])
                if len(free) < 2 * (2 * self.threads + 2):
                    free.append(buffer)

    @property
    def active_writers(self) -> frozenset[str]:
        return frozenset(self.writers)

    # ------------------------------------------------------------------ index

    @property
    def index(self) -> ChunkIndex:
        with self.mutex:
            if self._index is None:
                self._index = self.load_index(repair=False)
            return self._index

    def refresh_index(self, *, repair: bool = False) -> ChunkIndex:
        """Forget the cached index and read it again from disk (after another process's
        GC, or before deciding what is garbage)."""
        with self.mutex:
            self.packs.close()
            self._index = self.load_index(repair=repair)
            return self._index

    def load_index(self, *, repair: bool) -> ChunkIndex:
        """Read every pack's index; packs without a good index are scanned (and, with
        `repair`, get their index file rewritten). Indexes without a pack are ignored."""
        index = ChunkIndex(self.quarantined())
        for pack in self.pack_ids():
            self._add_pack(index, pack, repair=repair)
        return index

    def _add_pack(self, index: ChunkIndex, pack: str, *, repair: bool) -> None:
        path = self.layout.pack(pack)
        summary = read_index_file(self.layout.index_file(pack), pack)
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            return
        if summary is None or summary.size != actual:
            try:
                summary = scan_pack(path, pack)
            except FileNotFoundError:
                return  # deleted by a GC since the stat: its chunks live elsewhere
            if repair:
                atomic_write(
                    self.layout.index_file(pack),
                    encode_index(summary.size, summary.entries),
                    self.layout.tmp,
                )
        index.add_pack(summary)

    def catch_up_index(self, *, repair: bool = False) -> None:
        """Add packs other processes published since the index was read (nothing is
        removed: GC cannot run while this process writes)."""
        with self.mutex:
            index = self.index
            for pack in self.pack_ids():
                if pack not in index.packs:
                    self._add_pack(index, pack, repair=repair)

    def revalidate_index(self) -> ChunkIndex:
        """The index made true again when this process takes the repository's lock after
        holding none, so other processes may have changed the repository meanwhile.

        New packs (other writers') are added. A pack the index knows that is gone, or a
        copy quarantined that the index still uses, means a GC or a repair ran: then every
        index is read again. Reading them all costs CPU in proportion to the repository
        (about 1.6 µs per chunk here), so it is done only then, not before every export."""
        with self.mutex:
            if self._index is None:
                return self.refresh_index(repair=True)
            present = set(self.pack_ids())
            if not present.issuperset(self._index.packs) \
                    or self.quarantined() != self._index.quarantine:
                return self.refresh_index(repair=True)
            for pack in sorted(present.difference(self._index.packs)):
                self._add_pack(self._index, pack, repair=True)
            return self._index

    def publish_pack(self, summary: PackSummary) -> None:
        """Make a sealed pack's chunks visible (called by pack writers)."""
        self.index.add_pack(summary)

    # ------------------------------------------------------------------ quarantine

    def quarantined(self) -> set[tuple[str, bytes]]:
        bad: set[tuple[str, bytes]] = set()
        for entry in os.scandir(self.layout.quarantine):
            pack, _, cid = entry.name.partition("-")
            if len(cid) == 2 * ID_SIZE:
                bad.add((pack, bytes.fromhex(cid)))
        return bad

    def quarantine(self, pack: str, cid: bytes) -> None:
        """Record a damaged copy so no later export deduplicates against it."""
        marker = self.layout.quarantine / f"{pack}-{cid.hex()}"
        if not marker.exists():
            atomic_write(marker, b"", self.layout.tmp)
        with self.mutex:
            if self.index.mark_bad(cid, pack) and not self.writers:
                self.refresh_index()  # another good copy, if any, takes its place

    # ------------------------------------------------------------------ packs and chunks

    def pack_ids(self) -> list[str]:
        ids: list[str] = []
        for sub in os.scandir(self.layout.packs):
            if sub.is_dir():
                ids.extend(e.name[:-5] for e in os.scandir(sub.path) if e.name.endswith(".pack"))
        return sorted(ids)

    def pack_summary(self, pack: str) -> PackSummary:
        """A pack's entries, from its index file, or by scanning the pack."""
        summary = read_index_file(self.layout.index_file(pack), pack)
        path = self.layout.pack(pack)
        if summary is None or summary.size != path.stat().st_size:
            summary = scan_pack(path, pack)
        return summary

    def pack_summaries(self) -> Iterator[PackSummary]:
        for pack in self.pack_ids():
            try:
                yield self.pack_summary(pack)
            except FileNotFoundError:
                continue

    def read_chunk(self, cid: bytes) -> bytes:
        """A chunk's bytes, verified. If its pack vanished (a GC in another process moved
        it), the index is reloaded once and the chunk looked up again."""
        loc = self.index.get(cid)
        if loc is not None:
            try:
                return self.packs.read(cid, loc)
            except PackMissingError:
                pass
        with self.mutex:
            if not self.writers:
                self.refresh_index()
        loc = self.index.get(cid)
        if loc is None:
            raise CorruptionError(f"chunk {cid.hex()} is missing from the repository")
        return self.packs.read(cid, loc)

    # ------------------------------------------------------------------ manifests

    def manifest(self, point_id: str) -> Manifest:
        path = self.layout.point(point_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RepositoryError(f"no restore point {point_id!r} in {str(self.root)!r}") from None
        return decode_manifest(data, str(path))

    def export_point(self, m: Manifest) -> ExportPoint:
        """The catalog entry of a committed manifest."""
        return ExportPoint(
            id=m.id,
            policy=m.policy,
            vm=VMRef(m.vm_name, m.vm_instance_uuid),
            slot=m.slot,
            created_at=m.created_at,
            complete=True,
            target=self.target,
            consistency=m.consistency,
            size_bytes=m.size_bytes,
        )

    def load_table(self, manifest: Manifest, record: DiskRecord) -> list[bytes]:
        ids: list[bytes] = []
        for tid in record.tables:
            try:
                blob = self.read_chunk(bytes.fromhex(tid))
            except CorruptionError as exc:
                raise CorruptionError(
                    f"restore point {manifest.id!r} disk {record.name!r}: chunk table "
                    f"{tid} is damaged: {exc}"
                ) from None
            ids.extend(blob[i : i + ID_SIZE] for i in range(0, len(blob), ID_SIZE))
        if len(ids) != record.chunks:
            raise CorruptionError(
                f"restore point {manifest.id!r} disk {record.name!r}: chunk table lists "
                f"{len(ids)} chunks, the manifest says {record.chunks}"
            )
        return ids

    def previous_table(self, point_id: str, disk: str) -> list[bytes] | None:
        """The chunk ids of a disk of an earlier point, or None if it cannot be used."""
        try:
            m = self.manifest(point_id)
            if m.chunk_size != self.chunk_size:
                return None
            return self.load_table(m, m.disk(disk))
        except (RepositoryError, OSError):
            return None

    # ------------------------------------------------------------------ writer sessions

    def checkpoint_path(self, point_id: str) -> Path:
        return self.layout.partial_marker(point_id).with_suffix(".ckpt")

    def partial_markers(self) -> list[PartialMarker]:
        """The markers of every writer session that has not ended (in progress, or
        crashed), in the order of their file names."""
        found = (PartialMarker.read(p) for p in sorted(self.layout.partial.glob("*.json")))
        return [m for m in found if m is not None]

    def write_checkpoint(self, point_id: str, body: bytes) -> None:
        """Record a writer session's progress; touching the marker says it is alive. A
        session whose point another writer committed meanwhile stops here."""
        if self.layout.point(point_id).exists():
            raise PointExistsError(
                f"restore point {point_id!r} was committed by another writer "
                "meanwhile; this copy was dropped")
        atomic_write(self.checkpoint_path(point_id), body, self.layout.tmp)
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.layout.partial_marker(point_id))

    def publish_manifest(self, manifest: Manifest) -> ExportPoint:
        """Commit: pack and index renames made durable, then the manifest, linked last.

        The manifest is linked, not renamed, into place: a point another writer committed
        meanwhile (a retried export whose first try was only paused) is never replaced —
        this commit fails instead, so a point is committed once."""
        fsync_dir(self.layout.index)
        path = self.layout.point(manifest.id)
        tmp = self.layout.tmp / f"{path.name}.{secrets.token_hex(6)}.tmp"
        atomic_write(tmp, encode_manifest(manifest), self.layout.tmp, sync_dir=False)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise PointExistsError(
                f"restore point {manifest.id!r} was committed by another writer meanwhile; "
                "this copy was dropped") from None
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
        return self.export_point(manifest)

    def end_point(self, point_id: str) -> None:
        """A writer session ends (committed or aborted): its files go, the lock is let go."""
        with self.mutex:
            self.checkpoint_path(point_id).unlink(missing_ok=True)
            self.layout.partial_marker(point_id).unlink(missing_ok=True)
            self.writers.discard(point_id)
            self.lock.release()

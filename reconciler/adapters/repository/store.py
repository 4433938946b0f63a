"""`Repository`: a directory holding restore points as chunks, packs and manifests.

The catalog (`points`) reads manifests only. Writing goes through `begin_point`, which
takes the writer lock; reading (`open_disk`, `read_file`, `verify`) takes none.

The writer lock excludes other processes. Within one process it is shared by concurrent
exports, so it cannot keep an export out of a GC run by another thread: `Repository` does
that itself — `gc` refuses to start while this process exports, and `begin_point` waits
(up to `lock_timeout`, as for another process's lock) while this process collects garbage.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.errors import (
    CorruptionError,
    PointExistsError,
    RepositoryError,
    RepositoryLockedError,
)
from reconciler.model import ExportPoint, VMRef

from .format import (
    DEFAULT_CHUNK_SIZE,
    ID_SIZE,
    Descriptor,
    DiskRecord,
    Layout,
    Manifest,
    atomic_write,
    chunk_id,
    decode_manifest,
    encode_manifest,
    fsync_dir,
    new_pack_id,
    quote_id,
    unquote_id,
    validate_chunk_size,
)
from .gc import GcReport, collect
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
from .reader import DiskReader
from .verification import VerifyReport, verify
from .writer import Checkpoint, PointWriter

__all__ = ["PartialExport", "PointExistsError", "Repository"]


DEFAULT_PACK_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class PartialExport:
    """An export that began but has no manifest: still running, or crashed (garbage)."""

    id: str
    started_at: datetime
    host: str
    pid: int


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Repository:
    """An export repository in a local or NFS-mounted directory."""

    def __init__(
        self,
        root: Path,
        descriptor: Descriptor,
        *,
        target: str = "",
        threads: int | None = None,
        compression_level: int = 3,
        pack_size: int = DEFAULT_PACK_SIZE,
        lock_timeout: float = 30.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.root = root
        self.layout = Layout(root)
        self.descriptor = descriptor
        self.chunk_size = descriptor.chunk_size
        self.target = target
        self.threads = threads or os.cpu_count() or 2
        self.compression_level = compression_level
        self.pack_size = pack_size
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
        self._index: ChunkIndex | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._mutex = threading.RLock()
        self._gc_done = threading.Condition(self._mutex)
        self._gc_running = False
        self._writers: set[str] = set()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        chunk_size: int | None = None,
        target: str = "",
        threads: int | None = None,
        compression_level: int = 3,
        pack_size: int = DEFAULT_PACK_SIZE,
        lock_timeout: float = 30.0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> Repository:
        """Open the repository at `path`, creating it (with `chunk_size`) if allowed.

        `target` names it in the catalog; `threads` hash and compress in parallel (default:
        one per CPU); `lock_timeout` is how long a writer waits for the lock; `clock` gives
        the manifests' `createdAt`.
        """
        root = Path(path)
        layout = Layout(root)
        if layout.descriptor.is_file():
            descriptor = Descriptor.from_json(layout.descriptor.read_bytes(), str(root))
            if chunk_size is not None and chunk_size != descriptor.chunk_size:
                raise RepositoryError(
                    f"repository {str(root)!r} uses {descriptor.chunk_size}-byte chunks, not "
                    f"{chunk_size}; the chunk size is fixed when a repository is created"
                )
        elif not create:
            raise RepositoryError(f"no vmkeep repository at {str(root)!r}")
        elif root.is_dir() and any(
            entry.name not in {d.name for d in layout.directories()} for entry in root.iterdir()
        ):
            raise RepositoryError(
                f"{str(root)!r} is not empty and is not a vmkeep repository; point the "
                "target at an empty or new directory"
            )
        else:
            size = chunk_size or DEFAULT_CHUNK_SIZE
            validate_chunk_size(size, str(root))
            descriptor = Descriptor(chunk_size=size, repository_id=new_pack_id())
            try:
                layout.make_dir(root)
                for directory in layout.directories():
                    layout.make_dir(directory)
                atomic_write(layout.descriptor, descriptor.to_json(), layout.tmp)
            except OSError as exc:
                raise RepositoryError(f"cannot create repository {str(root)!r}: {exc}") from None
        for directory in layout.directories():
            if not directory.is_dir():  # lost or removed by hand: recreate it durably
                layout.make_dir(directory)
        return cls(
            root,
            descriptor,
            target=target,
            threads=threads,
            compression_level=compression_level,
            pack_size=pack_size,
            lock_timeout=lock_timeout,
            clock=clock,
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self.packs.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pool(self) -> ThreadPoolExecutor:
        with self._mutex:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="vmkeep-chunk")
            return self._pool

    # ------------------------------------------------------------------ index

    @property
    def index(self) -> ChunkIndex:
        with self._mutex:
            if self._index is None:
                self._index = self.load_index(repair=False)
            return self._index

    def refresh_index(self, *, repair: bool = False) -> ChunkIndex:
        """Forget the cached index and read it again from disk (after another process's
        GC, or before deciding what is garbage)."""
        with self._mutex:
            self.packs.close()
            self._index = self.load_index(repair=repair)
            return self._index

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
        with self._mutex:
            if self.index.mark_bad(cid, pack) and not self._writers:
                self.refresh_index()  # another good copy, if any, takes its place

    def publish_pack(self, summary: PackSummary) -> None:
        """Make a sealed pack's chunks visible (called by pack writers)."""
        self.index.add_pack(summary)

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

    def pack_ids(self) -> list[str]:
        ids: list[str] = []
        for sub in os.scandir(self.layout.packs):
            if sub.is_dir():
                ids.extend(e.name[:-5] for e in os.scandir(sub.path) if e.name.endswith(".pack"))
        return sorted(ids)

    def load_index(self, *, repair: bool) -> ChunkIndex:
        """Read every pack's index; packs without a good index are scanned (and, with
        `repair`, get their index file rewritten). Indexes without a pack are ignored."""
        index = ChunkIndex(self.quarantined())
        for pack in self.pack_ids():
            path = self.layout.pack(pack)
            summary = read_index_file(self.layout.index_file(pack), pack)
            try:
                actual = path.stat().st_size
            except FileNotFoundError:
                continue
            if summary is None or summary.size != actual:
                try:
                    summary = scan_pack(path, pack)
                except FileNotFoundError:
                    continue  # deleted by a GC since the stat: its chunks live elsewhere
                if repair:
                    atomic_write(
                        self.layout.index_file(pack),
                        encode_index(summary.size, summary.entries),
                        self.layout.tmp,
                    )
            index.add_pack(summary)
        return index

    def read_chunk(self, cid: bytes) -> bytes:
        """A chunk's bytes, verified. If its pack vanished (a GC in another process moved
        it), the index is reloaded once and the chunk looked up again."""
        loc = self.index.get(cid)
        if loc is not None:
            try:
                return self.packs.read(cid, loc)
            except PackMissingError:
                pass
        with self._mutex:
            if not self._writers:
                self.refresh_index()
        loc = self.index.get(cid)
        if loc is None:
            raise CorruptionError(f"chunk {cid.hex()} is missing from the repository")
        return self.packs.read(cid, loc)

    # ------------------------------------------------------------------ catalog

    def _manifest_files(self) -> list[Path]:
        return sorted(p for p in self.layout.points.iterdir() if p.suffix == ".json")

    def points(self) -> list[ExportPoint]:
        """Every committed restore point, from its manifest (no chunk data is read)."""
        out: list[ExportPoint] = []
        for path in self._manifest_files():
            try:
                m = decode_manifest(path.read_bytes(), str(path))
            except (CorruptionError, OSError):
                continue  # `verify` reports damaged manifests; the catalog lists good ones
            out.append(self._point(m))
        return out

    def damaged_manifests(self) -> list[str]:
        bad: list[str] = []
        for path in self._manifest_files():
            try:
                decode_manifest(path.read_bytes(), str(path))
            except CorruptionError:
                bad.append(unquote_id(path.stem))
        return bad

    def _point(self, m: Manifest) -> ExportPoint:
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

    def manifest(self, point_id: str) -> Manifest:
        path = self.layout.point(point_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RepositoryError(f"no restore point {point_id!r} in {str(self.root)!r}") from None
        return decode_manifest(data, str(path))

    def partials(self) -> list[PartialExport]:
        """Exports that started but never committed (in progress now, or crashed)."""
        out: list[PartialExport] = []
        for path in sorted(self.layout.partial.glob("*.json")):
            try:
                body = json.loads(path.read_bytes())
                point_id = str(body["id"])
                started = datetime.fromisoformat(body["startedAt"])
                host, pid = str(body.get("host", "")), int(body.get("pid", 0))
            except (OSError, ValueError, KeyError, TypeError):
                point_id, started, host, pid = unquote_id(path.stem), datetime.min, "", 0
            if not self.layout.point(point_id).exists():
                out.append(PartialExport(point_id, started, host, pid))
        return out

    def discard_partial(self, point_id: str) -> None:
        """Forget a crashed export's marker; its data is garbage that `gc` reclaims."""
        if point_id in self._writers:
            raise RepositoryError(f"export {point_id!r} is still being written by this process")
        self._checkpoint_path(point_id).unlink(missing_ok=True)
        self.layout.partial_marker(point_id).unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing

    def begin_point(
        self, point_id: str, policy: str, vm: VMRef, slot: datetime, *, resume: bool = False,
        **metadata: object
    ) -> PointWriter:
        """Start writing a restore point; holds the lock (shared with other writers) until
        commit or abort. `resume`: continue an earlier session's checkpoint of this point
        when it was made from the same `snapshotId` (see writer.py)."""
        quote_id(point_id)
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise RepositoryError(f"metadata of {point_id!r} is not JSON: {exc}") from None
        if self.layout.point(point_id).exists():
            raise RepositoryError(f"restore point {point_id!r} already exists")
        with self._mutex:
            if point_id in self._writers:
                raise RepositoryError(f"restore point {point_id!r} is already being written")
            self._wait_for_gc(point_id)
            first = not self.lock.held
            self.lock.acquire(f"export {point_id}", self.lock_timeout, shared=True)
            try:
                if first:
                    # another process may have run GC since we looked: start from the truth
                    self.refresh_index(repair=True)
                checkpoint = self._checkpoint_of(point_id, metadata) if resume else None
                if checkpoint is None:
                    self._checkpoint_path(point_id).unlink(missing_ok=True)
                marker = {
                    "id": point_id,
                    "startedAt": self._started_at(point_id) if checkpoint
                    else self.clock().isoformat(),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                }
                atomic_write(
                    self.layout.partial_marker(point_id),
                    json.dumps(marker).encode(),
                    self.layout.tmp,
                )
            except BaseException:
                self.lock.release()
                raise
            self._writers.add(point_id)
        writer = PointWriter(self, point_id, policy, vm, slot, dict(metadata))
        if checkpoint is not None:
            self.catch_up_index()
            writer.resume_from(checkpoint)
        return writer

    # ------------------------------------------------------------------ writer sessions

    def _checkpoint_path(self, point_id: str) -> Path:
        marker = self.layout.partial_marker(point_id)
        return marker.with_name(marker.name[: -len(".json")] + ".ckpt")

    def _checkpoint_of(self, point_id: str, metadata: dict[str, object]) -> Checkpoint | None:
        try:
            checkpoint = Checkpoint.from_json(self._checkpoint_path(point_id).read_bytes())
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if checkpoint.point_id != point_id or checkpoint.chunk_size != self.chunk_size \
                or checkpoint.snapshot_id != str(metadata.get("snapshotId") or ""):
            return None
        return checkpoint

    def _started_at(self, point_id: str) -> str:
        try:
            return str(json.loads(self.layout.partial_marker(point_id).read_bytes())
                       ["startedAt"])
        except (OSError, ValueError, KeyError, TypeError):
            return self.clock().isoformat()

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Record a writer session's progress; touching the marker says it is alive. A
        session whose point another writer committed meanwhile stops here."""
        if self.layout.point(checkpoint.point_id).exists():
            raise PointExistsError(
                f"restore point {checkpoint.point_id!r} was committed by another writer "
                "meanwhile; this copy was dropped")
        atomic_write(self._checkpoint_path(checkpoint.point_id), checkpoint.to_json(),
                     self.layout.tmp)
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.layout.partial_marker(checkpoint.point_id))

    def catch_up_index(self) -> None:
        """Add packs other processes published since the index was read (nothing is
        removed: GC cannot run while this process writes)."""
        with self._mutex:
            index = self.index
            for pack in self.pack_ids():
                if pack in index.packs:
                    continue
                try:
                    index.add_pack(self.pack_summary(pack))
                except FileNotFoundError:
                    continue

    def _wait_for_gc(self, point_id: str) -> None:
        """Wait (holding `_mutex` between checks) until no GC of this process runs."""
        deadline = time.monotonic() + self.lock_timeout
        while self._gc_running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RepositoryLockedError(
                    f"repository {str(self.root)!r}: export {point_id!r} waited "
                    f"{self.lock_timeout:g} s for a garbage collection in this process; "
                    "try again when it has finished"
                )
            self._gc_done.wait(remaining)

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
        return self._point(manifest)

    def end_point(self, point_id: str) -> None:
        with self._mutex:
            self._checkpoint_path(point_id).unlink(missing_ok=True)
            self.layout.partial_marker(point_id).unlink(missing_ok=True)
            self._writers.discard(point_id)
            self.lock.release()

    def previous_table(self, point_id: str, disk: str) -> list[bytes] | None:
        """The chunk ids of a disk of an earlier point, or None if it cannot be used."""
        try:
            m = self.manifest(point_id)
            if m.chunk_size != self.chunk_size:
                return None
            return self.load_table(m, m.disk(disk))
        except (RepositoryError, OSError):
            return None

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

    # ------------------------------------------------------------------ reading

    def open_disk(self, point_id: str, disk: str) -> DiskReader:
        m = self.manifest(point_id)
        return DiskReader(self, m, m.disk(disk))

    def read_file(self, point_id: str, name: str) -> bytes:
        m = self.manifest(point_id)
        record = m.file(name)
        data = b"".join(self.read_chunk(bytes.fromhex(c)) for c in record.chunks)
        if len(data) != record.size or chunk_id(data).hex() != record.digest:
            raise CorruptionError(f"restore point {point_id!r} file {name!r} is damaged")
        return data

    # ------------------------------------------------------------------ deleting

    def delete_point(self, point_id: str) -> None:
        """Remove a point's manifest; its chunks stay until `gc` finds them unreferenced."""
        path = self.layout.point(point_id)
        try:
            path.unlink()
        except FileNotFoundError:
            raise RepositoryError(f"no restore point {point_id!r} in {str(self.root)!r}") from None
        fsync_dir(path.parent)

    def gc(self, grace: timedelta = timedelta(0)) -> GcReport:
        """Delete data no committed manifest references (takes the writer lock).

        Refused while this process exports or already collects; exports that begin
        meanwhile in other threads wait for it (see the module docstring)."""
        with self._mutex:
            if self._writers:
                raise RepositoryLockedError(
                    f"repository {str(self.root)!r}: gc cannot run while this process is "
                    "exporting"
                )
            if self._gc_running:
                raise RepositoryLockedError(
                    f"repository {str(self.root)!r}: gc is already running in this process"
                )
            self._gc_running = True
        try:
            return collect(self, grace)
        finally:
            with self._mutex:
                self._gc_running = False
                self._gc_done.notify_all()

    def verify(self, point_id: str | None = None) -> VerifyReport:
        """Re-read and re-hash one point, or every point when `point_id` is None."""
        return verify(self, None if point_id is None else [point_id])

    @property
    def active_writers(self) -> frozenset[str]:
        return frozenset(self._writers)

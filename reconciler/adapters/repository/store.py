"""`Repository`: a directory holding restore points as chunks, packs and manifests.

The catalog (`points`) reads manifests only. Writing goes through `begin_point`, which
takes the writer lock; reading (`open_disk`, `read_file`, `verify`) takes none. What the
write, read, verify and GC paths share is a `RepositoryCore` (core.py), which the
`Repository` composes; those paths never see the `Repository` itself.

The writer lock excludes other processes. Within one process it is shared by concurrent
exports, so it cannot keep an export out of a GC run by another thread: `Repository` does
that itself — `gc` refuses to start while this process exports, and `begin_point` waits
(up to `lock_timeout`, as for another process's lock) while this process collects garbage.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
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
from reconciler.processes import process_running

from .core import PartialMarker, RepositoryCore
from .direct import DIRECT_SETTINGS, wants_direct
from .format import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_COMPRESSION_LEVEL,
    Descriptor,
    Layout,
    Manifest,
    atomic_write,
    chunk_id,
    decode_manifest,
    fsync_dir,
    new_pack_id,
    quote_id,
    unquote_id,
    validate_chunk_size,
    validate_compression_level,
)
from .gc import GcReport, collect
from .lock import WriterLock
from .packs import ChunkIndex, PackSummary
from .reader import DiskReader
from .verification import VerifyReport, verify
from .writer import Checkpoint, PointWriter

__all__ = ["PartialExport", "PointExistsError", "Repository"]

DEFAULT_PACK_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True)
class PartialExport:
    """An export that began but has no manifest: still running, or crashed (garbage).
    `live`: a writer may still be at work on it (see `Repository.partials`)."""

    id: str
    started_at: datetime
    host: str
    pid: int
    live: bool = False


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
        compression_level: int | None = None,
        pack_size: int = DEFAULT_PACK_SIZE,
        lock_timeout: float = 30.0,
        clock: Callable[[], datetime] = _utcnow,
        direct_writes: bool = False,
    ) -> None:
        self._core = RepositoryCore(
            root,
            descriptor,
            target=target,
            threads=threads,
            compression_level=descriptor.compression_level if compression_level is None
            else compression_level,
            pack_size=pack_size,
            lock_timeout=lock_timeout,
            clock=clock,
            direct_writes=direct_writes,
        )
        self._gc_done = threading.Condition(self._core.mutex)
        self._gc_running = False

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
        compression_level: int | None = None,
        pack_size: int = DEFAULT_PACK_SIZE,
        lock_timeout: float = 30.0,
        clock: Callable[[], datetime] = _utcnow,
        direct_writes: str = "auto",
    ) -> Repository:
        """Open the repository at `path`, creating it (with `chunk_size`) if allowed.

        `compression_level` (zstd) is recorded in the descriptor of a repository created
        here (default `DEFAULT_COMPRESSION_LEVEL`); an existing repository keeps the level
        it was created with unless one is given, which then holds for this session only.
        `target` names it in the catalog; `threads` hash and compress in parallel (default:
        one per CPU); `lock_timeout` is how long a writer waits for the lock; `clock` gives
        the manifests' `createdAt`; `direct_writes` (`auto`, `on`, `off`) says whether packs
        are written around the page cache (`direct.py`).
        """
        if direct_writes not in DIRECT_SETTINGS:
            raise RepositoryError(f"direct writes must be one of {', '.join(DIRECT_SETTINGS)}, "
                                  f"not {direct_writes!r}")
        root = Path(path)
        layout = Layout(root)
        if compression_level is not None:
            validate_compression_level(compression_level, str(root))
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
            level = DEFAULT_COMPRESSION_LEVEL if compression_level is None else compression_level
            descriptor = Descriptor(chunk_size=size, repository_id=new_pack_id(),
                                    compression_level=level)
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
            direct_writes=wants_direct(direct_writes, root),
        )

    def close(self) -> None:
        self._core.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ what it is made of

    @property
    def root(self) -> Path:
        return self._core.root

    @property
    def target(self) -> str:
        """The target name the catalog's points carry."""
        return self._core.target

    @property
    def chunk_size(self) -> int:
        return self._core.chunk_size

    @property
    def layout(self) -> Layout:
        """Where each kind of file lives (docs/repository-format.md)."""
        return self._core.layout

    @property
    def lock(self) -> WriterLock:
        """The repository lock: exports share it, GC takes it alone."""
        return self._core.lock

    @property
    def index(self) -> ChunkIndex:
        """The chunk index (read on first use): which chunks the repository holds."""
        return self._core.index

    def pack_ids(self) -> list[str]:
        return self._core.pack_ids()

    def pack_summaries(self) -> Iterator[PackSummary]:
        """Every pack's entries, from its index file, or by scanning the pack."""
        return self._core.pack_summaries()

    def quarantined(self) -> set[tuple[str, bytes]]:
        """The damaged chunk copies found so far, as (pack, chunk id)."""
        return self._core.quarantined()

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
            out.append(self._core.export_point(m))
        return out

    def damaged_manifests(self) -> list[str]:
        bad: list[str] = []
        for path in self._manifest_files():
            try:
                decode_manifest(path.read_bytes(), str(path))
            except CorruptionError:
                bad.append(unquote_id(path.stem))
        return bad

    def manifest(self, point_id: str) -> Manifest:
        return self._core.manifest(point_id)

    def partials(self) -> list[PartialExport]:
        """Exports that started but never committed (in progress now, or crashed).

        Each says whether a writer may still be at work on it (`live`): one of this process
        (writing it now), a process of this host that is still running, or — written from
        another host, whose processes cannot be seen — a session whose marker was touched
        (at its start and every checkpoint) within the repository's writer lease, the rule
        GC spares a resumable session by. Recovery leaves live ones alone: with many
        writers they are other processes' exports, not leftovers."""
        out: list[PartialExport] = []
        now = time.time()
        for m in self._core.partial_markers():
            if not self.layout.point(m.point_id).exists():
                live = self._writer_may_be_live(m.point_id, m.host, m.pid, now - m.touched)
                out.append(PartialExport(m.point_id, m.started or datetime.min, m.host, m.pid,
                                         live))
        return out

    def _writer_may_be_live(self, point_id: str, host: str, pid: int, age: float) -> bool:
        if host != socket.gethostname():
            return bool(host) and age < self._core.writer_lease
        if pid == os.getpid():
            return point_id in self._core.writers
        return process_running(pid)

    def discard_partial(self, point_id: str) -> None:
        """Forget a crashed export's marker; its data is garbage that `gc` reclaims."""
        if point_id in self._core.writers:
            raise RepositoryError(f"export {point_id!r} is still being written by this process")
        self._core.checkpoint_path(point_id).unlink(missing_ok=True)
        self.layout.partial_marker(point_id).unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing

    def begin_point(
        self, point_id: str, policy: str, vm: VMRef, slot: datetime, *, resume: bool = False,
        **metadata: object
    ) -> PointWriter:
        """Start writing a restore point; holds the lock (shared with other writers) until
        commit or abort. `resume`: continue an earlier session's checkpoint of this point
        when it was made from the same `snapshotId` (see writer.py)."""
        core = self._core
        quote_id(point_id)
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise RepositoryError(f"metadata of {point_id!r} is not JSON: {exc}") from None
        if self.layout.point(point_id).exists():
            raise RepositoryError(f"restore point {point_id!r} already exists")
        with core.mutex:
            if point_id in core.writers:
                raise RepositoryError(f"restore point {point_id!r} is already being written")
            self._wait_for_gc(point_id)
            first = not core.lock.held
            core.lock.acquire(f"export {point_id}", core.lock_timeout, shared=True)
            try:
                if first:  # another process may have run a GC or written packs since
                    core.revalidate_index()
                checkpoint = self._checkpoint_of(point_id, metadata) if resume else None
                if checkpoint is None:
                    core.checkpoint_path(point_id).unlink(missing_ok=True)
                marker = {
                    "id": point_id,
                    "startedAt": self._started_at(point_id) if checkpoint
                    else core.clock().isoformat(),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                }
                atomic_write(
                    self.layout.partial_marker(point_id),
                    json.dumps(marker).encode(),
                    self.layout.tmp,
                )
            except BaseException:
                core.lock.release()
                raise
            core.writers.add(point_id)
        writer = PointWriter(core, point_id, policy, vm, slot, dict(metadata))
        if checkpoint is not None:
            core.catch_up_index()
            writer.resume_from(checkpoint)
        return writer

    def _checkpoint_of(self, point_id: str, metadata: dict[str, object]) -> Checkpoint | None:
        try:
            checkpoint = Checkpoint.from_json(self._core.checkpoint_path(point_id).read_bytes())
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if checkpoint.point_id != point_id or checkpoint.chunk_size != self.chunk_size \
                or checkpoint.snapshot_id != str(metadata.get("snapshotId") or ""):
            return None
        return checkpoint

    def _started_at(self, point_id: str) -> str:
        marker = PartialMarker.read(self.layout.partial_marker(point_id))
        started = marker.started if marker is not None else None
        return (started or self._core.clock()).isoformat()

    def _wait_for_gc(self, point_id: str) -> None:
        """Wait (holding the core's mutex between checks) until no GC of this process runs."""
        timeout = self._core.lock_timeout
        deadline = time.monotonic() + timeout
        while self._gc_running:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RepositoryLockedError(
                    f"repository {str(self.root)!r}: export {point_id!r} waited "
                    f"{timeout:g} s for a garbage collection in this process; "
                    "try again when it has finished"
                )
            self._gc_done.wait(remaining)

    # ------------------------------------------------------------------ reading

    def open_disk(self, point_id: str, disk: str) -> DiskReader:
        m = self.manifest(point_id)
        return DiskReader(self._core, m, m.disk(disk))

    def read_file(self, point_id: str, name: str) -> bytes:
        m = self.manifest(point_id)
        record = m.file(name)
        data = b"".join(self._core.read_chunk(bytes.fromhex(c)) for c in record.chunks)
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
        with self._core.mutex:
            if self._core.writers:
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
            return collect(self._core, grace)
        finally:
            with self._core.mutex:
                self._gc_running = False
                self._gc_done.notify_all()

    def verify(self, point_id: str | None = None) -> VerifyReport:
        """Re-read and re-hash one point, or every point when `point_id` is None."""
        return self.verify_points(None if point_id is None else [point_id])

    def verify_points(self, point_ids: Iterable[str] | None) -> VerifyReport:
        """Re-read and re-hash the given points (every point when None); damaged chunk
        copies go to quarantine."""
        return verify(self._core, point_ids)

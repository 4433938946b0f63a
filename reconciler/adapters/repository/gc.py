"""Garbage collection: mark what committed manifests reference, sweep the rest.

GC holds the repository lock exclusively for its whole run (writers share it), so no export
can be in flight (in this process or any other) while it decides what is garbage:
everything not reachable from a committed manifest — data of aborted or crashed exports,
chunks of deleted points, stale copies — is garbage at that moment, with one exception: a
writer session that was cut off (its proxy died) and will be resumed by a retry. Its
partial marker is touched at every checkpoint; while it was touched within the
repository's `writer_lease`, the writer counts as live, and GC spares every pack sealed
since the oldest live writer started (grace by the oldest live writer, as Kopia and Proxmox
Backup Server do) and keeps its marker and checkpoint. `grace` is an extra guard for files
younger than it (packs and temporary files are left alone), for repositories shared over a
file system whose locks cannot be trusted.

Packs are rewritten for two reasons: mostly garbage (live bytes under `REWRITE_BELOW` of
the pack), or small (under `SMALL_BELOW` of the target pack size: every export ends with one
small pack, and so does every rewrite). Small packs are merged whenever there are at least
two packs to rewrite, so after a GC at most one pack is small and every other pack is at
least a quarter of the target size and at least half live — which bounds the number of pack
files by 1 + 8 × live bytes / pack size however many exports ran. A lone small pack is left
alone, so GC settles instead of copying it again and again.

Every step is safe to interrupt: a pack's index is deleted (and that made durable) before
the pack, so the index never names a missing pack; a rewritten pack is complete and indexed
before the packs it replaces are deleted, and where a chunk has two copies the newer pack's
copy is the one used, so the old pack becomes pure garbage for the next run.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from reconciler.errors import CorruptionError, RepositoryError

from .core import RepositoryCore
from .format import ID_SIZE, decode_manifest, fsync_dir
from .packs import ENTRY, ChunkIndex, Location, PackSummary, PackWriter, decode_chunk

__all__ = ["GcReport", "collect", "live_chunks"]

#: Packs whose live bytes are below this share of their size are rewritten.
REWRITE_BELOW = 0.5
#: Packs smaller than this share of the target pack size are merged when there are several.
SMALL_BELOW = 0.25

Entries = list[tuple[bytes, Location]]


@dataclass(frozen=True)
class GcReport:
    points: int
    live_chunks: int
    packs_before: int
    packs_deleted: int
    packs_rewritten: int
    bytes_before: int
    bytes_freed: int
    bytes_copied: int
    partials_removed: int
    temporary_removed: int

    def to_json(self) -> dict[str, int]:
        return asdict(self)


def live_chunks(core: RepositoryCore) -> tuple[int, set[bytes]]:
    """Every chunk id a committed manifest references (tables, data, files)."""
    live: set[bytes] = set()
    count = 0
    for path in sorted(core.layout.points.glob("*.json")):
        try:
            manifest = decode_manifest(path.read_bytes(), str(path))
        except CorruptionError as exc:
            raise RepositoryError(
                f"{exc}; gc cannot tell what it references, so it deleted nothing "
                "(restore the manifest from a copy, or delete the point)"
            ) from None
        except OSError as exc:  # e.g. a directory where a manifest should be
            raise RepositoryError(
                f"cannot read the restore point manifest {str(path)!r} ({exc.strerror or exc}); "
                "gc cannot tell what it references, so it deleted nothing (move away what is "
                "not a manifest there)"
            ) from None
        count += 1
        for record in manifest.disks:
            live.update(bytes.fromhex(t) for t in record.tables)
            try:
                live.update(core.load_table(manifest, record))
            except CorruptionError as exc:
                raise RepositoryError(
                    f"{exc}; gc deleted nothing — run `vmkeep verify`, then delete the "
                    "damaged point"
                ) from None
        for file in manifest.files:
            live.update(bytes.fromhex(c) for c in file.chunks)
    live.discard(bytes(ID_SIZE))
    return count, live


def _live_entries(summary: PackSummary, index: ChunkIndex, live: set[bytes]) -> Entries:
    """The entries of a pack that are referenced and are the copy the index uses."""
    return [(cid, loc) for cid, loc in summary.entries if cid in live and index.get(cid) == loc]


def collect(core: RepositoryCore, grace: timedelta = timedelta(0)) -> GcReport:
    """Run one GC under the writer lock. Call it through `Repository.gc`, which also keeps
    this process's own exports out (the lock is shared within a process)."""
    try:
        core.lock.acquire("gc", core.lock_timeout, shared=False)
    except OSError as exc:
        raise _unwritable(core, exc) from None
    try:
        return _collect(core, grace.total_seconds())
    except OSError as exc:
        raise _unwritable(core, exc) from None
    finally:
        core.lock.release()


def _unwritable(core: RepositoryCore, exc: OSError) -> RepositoryError:
    """One message for a file system that refused what GC had to do (read-only, full,
    permissions): every step is safe to interrupt, so nothing is left half done."""
    where = f": {exc.filename!r}" if exc.filename else ""
    hint = "gc needs to write there: mount it read-write" if exc.errno in (
        errno.EROFS, errno.EACCES, errno.EPERM) else "fix that and run gc again"
    return RepositoryError(
        f"repository {str(core.root)!r}: gc stopped: {exc.strerror or exc}{where}; {hint} "
        "(what gc did so far is complete: every step is safe to interrupt)"
    )


def _collect(core: RepositoryCore, grace: float) -> GcReport:
    layout = core.layout
    now = time.time()
    index = core.refresh_index(repair=True)
    points, live = live_chunks(core)

    live_partials, oldest_live = _live_writers(core, now)

    def young(path: str | os.PathLike[str]) -> bool:
        try:
            return now - os.stat(path).st_mtime < grace
        except FileNotFoundError:
            return True

    def spared(path: str | os.PathLike[str]) -> bool:
        """Young, or sealed since the oldest live writer started."""
        try:
            mtime = os.stat(path).st_mtime
        except FileNotFoundError:
            return True
        return now - mtime < grace or (oldest_live is not None and mtime >= oldest_live)

    packs_before = len(index.packs)
    doomed: list[PackSummary] = []
    rewrite: list[tuple[PackSummary, Entries]] = []
    small: list[tuple[PackSummary, Entries]] = []
    bytes_before = 0
    for summary in core.pack_summaries():
        bytes_before += summary.size
        if spared(layout.pack(summary.pack)):
            continue
        keep = _live_entries(summary, index, live)
        live_bytes = sum(ENTRY.size + loc.stored for _, loc in keep)
        if not keep:
            doomed.append(summary)
        elif live_bytes < REWRITE_BELOW * summary.size:
            rewrite.append((summary, keep))
        elif summary.size < SMALL_BELOW * core.pack_size:
            small.append((summary, keep))
    if small and len(rewrite) + len(small) >= 2:
        rewrite.extend(small)  # merged into full packs; a lone small pack stays as it is

    copied = 0
    if rewrite:
        copied = _copy_live(core, index, [keep for _, keep in rewrite])
        doomed.extend(summary for summary, _ in rewrite)

    freed = 0
    for summary in doomed:
        _delete_pack(core, summary.pack)
        freed += summary.size
    core.refresh_index()

    partials = 0
    for marker in layout.partial.glob("*.json"):
        if marker in live_partials:
            continue
        marker.with_name(marker.name[: -len(".json")] + ".ckpt").unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
        partials += 1
    for orphan in layout.partial.glob("*.ckpt"):  # a session that lost its marker
        if orphan.with_name(orphan.name[: -len(".ckpt")] + ".json") not in live_partials:
            orphan.unlink(missing_ok=True)
    temporary = 0
    for entry in os.scandir(layout.tmp):
        if young(entry.path):
            continue
        os.unlink(entry.path)
        temporary += 1
    _tidy(core)
    return GcReport(
        points=points,
        live_chunks=len(live),
        packs_before=packs_before,
        packs_deleted=len(doomed),
        packs_rewritten=len(rewrite),
        bytes_before=bytes_before,
        bytes_freed=freed,
        bytes_copied=copied,
        partials_removed=partials,
        temporary_removed=temporary,
    )


def _live_writers(core: RepositoryCore, now: float) -> tuple[set[Path], float | None]:
    """Partial markers touched within the writer lease, and when the oldest of them started
    (a checkpointed session that a retry may resume)."""
    live: set[Path] = set()
    oldest: float | None = None
    for marker in core.partial_markers():
        if not marker.checkpoint.exists() or now - marker.touched >= core.writer_lease:
            continue
        # unknown: spare everything rather than guess
        started = marker.started.timestamp() if marker.started is not None else 0.0
        live.add(marker.path)
        oldest = started if oldest is None else min(oldest, started)
    return live, oldest


def _copy_live(core: RepositoryCore, index: ChunkIndex, packs: list[Entries]) -> int:
    """Copy live entries into new packs, sealed and indexed before anything is deleted;
    returns the bytes copied."""
    copied = 0
    writer = PackWriter(core.layout, core.pack_size, index.add_pack, core.direct_writes)
    for keep in packs:
        for cid, loc in keep:
            stored = core.packs.read_stored(loc)
            try:
                decode_chunk(cid, loc, stored)
            except CorruptionError:
                core.quarantine(loc.pack, cid)  # never copy damage forward
                continue
            writer.add(cid, loc.kind, loc.flags, loc.raw, stored)
            copied += len(stored)
    writer.flush()
    fsync_dir(core.layout.index)
    return copied


def _delete_pack(core: RepositoryCore, pack: str) -> None:
    """Index first (durably), then the pack: an index never outlives its pack's data."""
    index_file = core.layout.index_file(pack)
    index_file.unlink(missing_ok=True)
    fsync_dir(index_file.parent)
    pack_file = core.layout.pack(pack)
    pack_file.unlink(missing_ok=True)
    fsync_dir(pack_file.parent)


def _tidy(core: RepositoryCore) -> None:
    """Drop index files and quarantine markers whose pack is gone."""
    packs = set(core.pack_ids())
    for entry in os.scandir(core.layout.index):
        if entry.name.endswith(".idx") and entry.name[:-4] not in packs:
            os.unlink(entry.path)
    for entry in os.scandir(core.layout.quarantine):
        if entry.name.partition("-")[0] not in packs:
            os.unlink(entry.path)

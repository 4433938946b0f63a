"""`verify`: re-read and re-hash everything the chosen restore points reference.

Each distinct chunk is checked once, however many points share it, reading each pack
sequentially in the thread pool. Damaged copies are put in quarantine, so the next export
that meets the same data stores a fresh copy instead of deduplicating against the damage
(and the damaged points are healed by it, as they reference chunks by content).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import CorruptionError, RepositoryError

from .core import RepositoryCore
from .format import ZERO_ID, Manifest, decode_manifest, disk_digest, unquote_id
from .packs import ChunkIndex, Location, decode_chunk

__all__ = ["ChunkDamage", "PointDamage", "VerifyReport", "verify"]


@dataclass(frozen=True)
class ChunkDamage:
    """One damaged or missing chunk, located in a point's disk or file."""

    item: str  # "disk <name>" or "file <name>" or "disk <name> table"
    chunk: int  # position in the disk/file (or table block number)
    offset: int  # byte offset in the disk/file
    chunk_id: str
    reason: str

    def __str__(self) -> str:
        where = f"{self.item}: chunk {self.chunk} at offset {self.offset}"
        return f"{where} ({self.chunk_id}): {self.reason}"


@dataclass(frozen=True)
class PointDamage:
    point: str
    chunks: tuple[ChunkDamage, ...] = ()
    message: str = ""  # for damage that is not about one chunk (manifest, digest)


@dataclass(frozen=True)
class VerifyReport:
    points_checked: int
    chunks_checked: int
    bytes_checked: int
    damaged: tuple[PointDamage, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.damaged

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "pointsChecked": self.points_checked,
            "chunksChecked": self.chunks_checked,
            "bytesChecked": self.bytes_checked,
            "damaged": [
                {
                    "point": d.point,
                    "message": d.message,
                    "chunks": [
                        {
                            "item": c.item,
                            "chunk": c.chunk,
                            "offset": c.offset,
                            "chunkId": c.chunk_id,
                            "reason": c.reason,
                        }
                        for c in d.chunks
                    ],
                }
                for d in self.damaged
            ],
        }


PACK_MISSING = "pack file is missing"


def _check_chunks(
    core: RepositoryCore, index: ChunkIndex, cids: Iterable[bytes]
) -> tuple[list[tuple[bytes, Location | None, str]], int]:
    """Check every chunk's copy named by `index`, pack by pack in the pool: the damaged
    ones (with their location, None when the index has none) and the bytes read."""
    by_pack: dict[str, list[tuple[bytes, Location]]] = defaultdict(list)
    found: list[tuple[bytes, Location | None, str]] = []
    for cid in cids:
        loc = index.get(cid)
        if loc is None:
            found.append((cid, None, "missing"))
        else:
            by_pack[loc.pack].append((cid, loc))
    futures = [core.pool.submit(_check_pack, core, items) for items in by_pack.values()]
    checked = 0
    for future in futures:
        bad, size = future.result()
        checked += size
        found.extend(bad)
    return found, checked


def _check_pack(
    core: RepositoryCore, items: Sequence[tuple[bytes, Location]]
) -> tuple[list[tuple[bytes, Location, str]], int]:
    bad: list[tuple[bytes, Location, str]] = []
    size = 0
    path = core.layout.pack(items[0][1].pack)
    try:
        with open(path, "rb", buffering=8 * 1024 * 1024) as f:
            for cid, loc in sorted(items, key=lambda e: e[1].offset):
                f.seek(loc.offset)
                stored = f.read(loc.stored)
                size += len(stored)
                try:
                    decode_chunk(cid, loc, stored)
                except CorruptionError as exc:
                    bad.append((cid, loc, _reason(exc)))
    except FileNotFoundError:
        bad.extend((cid, loc, PACK_MISSING) for cid, loc in items)
    return bad, size


def _reason(exc: CorruptionError) -> str:
    text = str(exc)
    if "decompress" in text:
        return "does not decompress"
    if "truncated" in text:
        return "truncated"
    return "hash mismatch"


def verify(core: RepositoryCore, point_ids: Iterable[str] | None) -> VerifyReport:
    """Check the given points (all when None); quarantine every damaged chunk copy."""
    if not core.active_writers:
        core.refresh_index()
    index = core.index
    damaged: dict[str, PointDamage] = {}
    manifests: list[Manifest] = []
    if point_ids is None:
        paths = sorted(core.layout.points.glob("*.json"))
    else:
        paths = [core.layout.point(p) for p in point_ids]
    for path in paths:
        try:
            manifests.append(decode_manifest(path.read_bytes(), str(path)))
        except FileNotFoundError:
            raise RepositoryError(
                f"no restore point {unquote_id(path.stem)!r} in {str(core.root)!r}"
            ) from None
        except CorruptionError as exc:
            pid = unquote_id(path.stem)
            damaged[pid] = PointDamage(pid, message=str(exc))
        except OSError as exc:  # a directory or an unreadable file where a manifest belongs
            pid = unquote_id(path.stem)
            damaged[pid] = PointDamage(
                pid, message=f"cannot read its manifest {str(path)!r}: {exc.strerror or exc}")

    # 1. chunk tables (needed to know the data chunks)
    tables: dict[tuple[str, str], list[bytes]] = {}
    wanted: set[bytes] = set()
    for m in manifests:
        for record in m.disks:
            try:
                ids = core.load_table(m, record)
            except CorruptionError as exc:
                _add(damaged, m.id, message=str(exc))
                _quarantine_tables(core, record.tables)
                continue
            if disk_digest(record.size, ids) != record.digest:
                _add(damaged, m.id, message=f"disk {record.name!r}: digest mismatch")
                continue
            tables[(m.id, record.name)] = ids
            wanted.update(ids)
        for file in m.files:
            wanted.update(bytes.fromhex(c) for c in file.chunks)
    wanted.discard(ZERO_ID)

    # 2. every distinct chunk once, pack by pack, in parallel
    found, checked_bytes = _check_chunks(core, index, wanted)
    gone = [cid for cid, _, reason in found if reason == PACK_MISSING]
    if gone and not core.active_writers:
        # a GC (verify takes no lock) may have moved them since the index was read: a pack
        # is deleted only once its live chunks are in a newer one, so look them up again
        found = [item for item in found if item[2] != PACK_MISSING]
        again, size = _check_chunks(core, core.refresh_index(), gone)
        found += again
        checked_bytes += size
    bad: dict[bytes, str] = {}
    for cid, loc, reason in found:
        bad[cid] = reason
        if loc is not None:
            core.quarantine(loc.pack, cid)

    # 3. name the points and positions that reference damaged chunks
    if bad:
        for m in manifests:
            cs = m.chunk_size
            for record in m.disks:
                for i, cid in enumerate(tables.get((m.id, record.name), ())):
                    if cid in bad:
                        damage = ChunkDamage(f"disk {record.name}", i, i * cs, cid.hex(), bad[cid])
                        _add(damaged, m.id, chunk=damage)
            for file in m.files:
                for i, hexid in enumerate(file.chunks):
                    cid = bytes.fromhex(hexid)
                    if cid in bad:
                        damage = ChunkDamage(f"file {file.name}", i, i * cs, hexid, bad[cid])
                        _add(damaged, m.id, chunk=damage)
    return VerifyReport(
        points_checked=len(paths),
        chunks_checked=len(wanted),
        bytes_checked=checked_bytes,
        damaged=tuple(damaged[k] for k in sorted(damaged)),
    )


def _add(
    damaged: dict[str, PointDamage],
    point: str,
    *,
    message: str = "",
    chunk: ChunkDamage | None = None,
) -> None:
    old = damaged.get(point, PointDamage(point))
    damaged[point] = PointDamage(
        point,
        old.chunks + ((chunk,) if chunk else ()),
        "; ".join(x for x in (old.message, message) if x),
    )


def _quarantine_tables(core: RepositoryCore, table_ids: Iterable[str]) -> None:
    for hexid in table_ids:
        tid = bytes.fromhex(hexid)
        loc = core.index.get(tid)
        if loc is None:
            continue
        try:
            core.packs.read(tid, loc)
        except CorruptionError:
            core.quarantine(loc.pack, tid)

"""Test helpers: deterministic disk contents and one-call exports into a real repository."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3

from reconciler.adapters.repository import Repository
from reconciler.adapters.repository.gc import REWRITE_BELOW, SMALL_BELOW, live_chunks
from reconciler.adapters.repository.packs import ENTRY
from reconciler.model import ExportPoint, VMRef

#: Small chunks and packs, so a few KiB of test data cross many chunk and pack boundaries.
CHUNK = 4096
PACK = 64 * 1024
VM = VMRef("vm1", "5003aaaa-0000-0000-0000-000000000001")
SLOT = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)


def noise(seed: object, length: int) -> bytes:
    """Deterministic incompressible bytes."""
    return blake3.blake3(repr(seed).encode()).digest(length=length)


def text(seed: object, length: int) -> bytes:
    """Deterministic compressible bytes."""
    return noise(seed, length).translate(bytes(b"abcd"[i % 4] for i in range(256)))


class ForwardOnly(io.BytesIO):
    """A disk source that cannot seek back, like an NFC download of a streamOptimized VMDK:
    the writer must read changed extents strictly forward."""

    def seek(self, offset: int, whence: int = 0, /) -> int:
        target = {0: offset, 1: self.tell() + offset, 2: len(self.getbuffer()) + offset}[whence]
        if target < self.tell():
            raise AssertionError(f"the writer seeked back from {self.tell()} to {target}")
        return super().seek(target)


def open_repo(path: Path, *, pack_size: int = PACK, lock_timeout: float = 5.0) -> Repository:
    return Repository.open(
        path, chunk_size=CHUNK, pack_size=pack_size, threads=2, lock_timeout=lock_timeout
    )


def point_id(n: int, policy: str = "nightly") -> str:
    return f"{policy}/{VM.instance_uuid}/2026010{1 + n // 100}T{n % 100:02d}0000Z"


def export(
    repo: Repository,
    pid: str,
    disks: Mapping[str, bytes],
    files: Mapping[str, bytes] | None = None,
) -> ExportPoint:
    with repo.begin_point(pid, pid.split("/")[0], VM, SLOT, source="test") as writer:
        for name, data in disks.items():
            writer.add_disk(name, io.BytesIO(data), size=len(data))
        for name, data in (files or {}).items():
            writer.add_file(name, data)
        return writer.commit("crash", policy_revision="0123abc")


def export_changed(
    repo: Repository,
    pid: str,
    source: Any,
    size: int,
    extents: Sequence[tuple[int, int]],
    previous: str,
) -> Any:
    """Export disk "d0" from `source` given the extents changed since point `previous`
    (as vSphere changed block tracking reports them); the writer's result for the disk."""
    with repo.begin_point(pid, "nightly", VM, SLOT) as writer:
        result = writer.add_disk(
            "d0", source, size=size, changed_extents=extents, previous=(previous, "d0")
        )
        writer.commit("crash")
    return result


def read_disk(repo: Repository, pid: str, name: str) -> bytes:
    return b"".join(repo.open_disk(pid, name))


def flip_chunk(repo: Repository, cid: bytes) -> str:
    """Flip bytes in the middle of a chunk's stored data; returns its pack id."""
    loc = repo._core.load_index(repair=False).get(cid)
    assert loc is not None
    path = repo.layout.pack(loc.pack)
    raw = bytearray(path.read_bytes())
    for k in range(3):
        raw[loc.offset + loc.stored // 2 + k] ^= 0x5A
    path.write_bytes(bytes(raw))
    return loc.pack


def live_per_pack(repo: Repository) -> list[tuple[int, int]]:
    """Per pack: (its size, the bytes of it that committed points still reference)."""
    _, live = live_chunks(repo._core)
    index = repo._core.load_index(repair=False)
    return [
        (
            s.size,
            sum(
                ENTRY.size + loc.stored
                for cid, loc in s.entries
                if cid in live and index.get(cid) == loc
            ),
        )
        for s in repo.pack_summaries()
    ]


def live_shares(repo: Repository) -> list[float]:
    """Per pack: the share of its bytes that committed points still reference."""
    return [used / size for size, used in live_per_pack(repo)]


def live_bytes(repo: Repository) -> int:
    return sum(used for _, used in live_per_pack(repo))


def assert_garbage_reclaimed(repo: Repository) -> None:
    """After a GC no pack is mostly garbage (packs under half live are rewritten) and at most
    one pack is small (small packs are merged)."""
    packs = live_per_pack(repo)
    assert all(used >= REWRITE_BELOW * size for size, used in packs)
    assert sum(1 for size, _ in packs if size < SMALL_BELOW * repo._core.pack_size) <= 1

"""Changed-extent input (vSphere changed block tracking): what to read, and how little.

Given the byte extents that changed since a previous point, each chunk of the disk is
either untouched (its id is taken from the previous point: not read, not hashed), read
whole from the source (mostly changed, or no usable previous copy), or *patched*: only the
changed bytes are read from the source and laid over the previous chunk, fetched from the
repository. Patching keeps source reads close to the changed bytes even when the chunk size
is much larger than the change granularity (e.g. scattered 4 KiB writes, 64 KiB chunks).

The source is read strictly forward: some sources cannot seek back (an NFC download of a
streamOptimized VMDK). So the previous copy of a chunk to patch is fetched and verified
*before* the source is read at that chunk, and a chunk whose previous copy turns out damaged
is read whole right there instead of patched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from reconciler.errors import RepositoryError

from .format import ZERO_ID

__all__ = ["ChunkPlan", "Patch", "Piece", "merge_extents", "plan_chunks", "read_planned"]

#: (previous chunk's bytes, [(offset in chunk, new bytes)]): a chunk rebuilt from its
#: previous copy.
Patch = tuple[bytes, list[tuple[int, bytes]]]
#: What the reader hands the encoder for one chunk: its bytes, or a patch to apply.
Piece = bytes | Patch


class Seekable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...
    def seek(self, offset: int, whence: int = 0, /) -> int: ...


@dataclass(frozen=True)
class ChunkPlan:
    index: int
    patches: tuple[tuple[int, int], ...] | None  # (offset in chunk, length); None: read whole


def merge_extents(extents: Iterable[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """(offset, length) extents → sorted, merged, clipped [start, end) byte ranges."""
    spans = sorted((max(0, off), min(size, off + length)) for off, length in extents if length > 0)
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if start >= end:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def plan_chunks(
    extents: Iterable[tuple[int, int]],
    size: int,
    chunk_size: int,
    base: list[bytes],
    usable: Callable[[bytes], bool],
) -> list[ChunkPlan]:
    """The chunks to (re)build, in order. `usable(id)` says whether a previous chunk can be
    read back (present and not quarantined); chunks whose copy is unusable are read whole."""
    cs = chunk_size
    chunks = (size + cs - 1) // cs
    parts: dict[int, list[tuple[int, int]]] = {}
    for start, end in merge_extents(extents, size):
        for i in range(start // cs, (end - 1) // cs + 1):
            lo, hi = max(start, i * cs), min(end, (i + 1) * cs)
            parts.setdefault(i, []).append((lo - i * cs, hi - lo))
    whole: set[int] = set()
    if len(base) != chunks or size % cs:
        # the size changed, or the last chunk is partial: re-read the old and new tail
        whole.update(range(max(0, min(len(base), chunks) - 1), chunks))
    whole.update(i for i, cid in enumerate(base[:chunks]) if cid != ZERO_ID and not usable(cid))
    plans: list[ChunkPlan] = []
    for i in sorted(whole | parts.keys()):
        patches = parts.get(i, [])
        length = min(cs, size - i * cs)
        if i in whole or 2 * sum(n for _, n in patches) >= length:
            plans.append(ChunkPlan(i, None))
        else:
            plans.append(ChunkPlan(i, tuple(patches)))
    return plans


def _read_exact(stream: BinaryIO | Seekable, offset: int, length: int) -> bytes:
    """`length` bytes at `offset` (callers only ever move forward)."""
    stream.seek(offset)
    parts: list[bytes] = []
    got = 0
    while got < length:
        data = stream.read(length - got)
        if not data:
            raise RepositoryError(f"disk stream ended at {offset + got}, inside its size")
        parts.append(data)
        got += len(data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_planned(
    stream: BinaryIO | Seekable,
    plans: list[ChunkPlan],
    previous: Callable[[int], bytes | None],
    size: int,
    chunk_size: int,
    per_block: int,
    counter: list[int],
) -> Iterator[tuple[int, list[Piece]]]:
    """Blocks of consecutive planned chunks: (first index, pieces), reading the source only
    forward. Whole chunks next to each other are read with one read; a patched chunk reads
    only its changed bytes, after `previous(index)` has given the previous copy — or None
    when that copy cannot be used, and then the chunk is read whole. `previous` is called
    for the patched chunks in order. `counter[0]` counts the bytes read from the source."""
    cs = chunk_size
    k = 0
    while k < len(plans):
        first = plans[k].index
        group = [plans[k]]
        k += 1
        while k < len(plans) and plans[k].index == group[-1].index + 1 and len(group) < per_block:
            group.append(plans[k])
            k += 1
        pieces: list[Piece] = []
        j = 0
        while j < len(group):
            plan = group[j]
            if plan.patches is not None:
                old = previous(plan.index)
                pieces.append(_patch(stream, plan.index, plan.patches, old, size, cs, counter))
                j += 1
                continue
            end = j
            while end + 1 < len(group) and group[end + 1].patches is None:
                end += 1
            start_byte = plan.index * cs
            stop_byte = min(size, (group[end].index + 1) * cs)
            data = _read_exact(stream, start_byte, stop_byte - start_byte)
            counter[0] += len(data)
            pieces.extend(data[p : p + cs] for p in range(0, len(data), cs))
            j = end + 1
        yield first, pieces


def _patch(
    stream: BinaryIO | Seekable,
    index: int,
    patches: tuple[tuple[int, int], ...],
    old: bytes | None,
    size: int,
    chunk_size: int,
    counter: list[int],
) -> Piece:
    """The changed bytes to lay over the previous copy `old`; without one (it is damaged or
    gone) the whole chunk, read from the same place in the stream."""
    start = index * chunk_size
    if old is None:
        data = _read_exact(stream, start, min(chunk_size, size - start))
        counter[0] += len(data)
        return data
    read = [(off, _read_exact(stream, start + off, n)) for off, n in patches]
    counter[0] += sum(len(data) for _, data in read)
    return old, read

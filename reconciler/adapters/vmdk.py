"""A streamOptimized VMDK, read front to back, as the flat disk it describes.

vCenter's NFC export (`ExportVm`) serves each disk as a *streamOptimized* sparse VMDK (VMware
Virtual Disk Format 5.0, §"Stream-Optimized Compressed Sparse Extents"): a 512-byte header
(`KDMV`, version 3, flags with "compressed grains" and "markers"), an embedded descriptor, then
a stream of sector-aligned markers:

* a **grain marker** — `lba: u64, size: u32` followed by `size` bytes of zlib-compressed
  grain data (one grain = `grainSize` sectors, usually 64 KiB, the last one may be short),
  padded to the next sector;
* a **metadata marker** — `sectors: u64, 0: u32, type: u32`, padding to a full sector, then
  `sectors` sectors of metadata: a grain table (type 1), the grain directory (2) or the footer
  (3, a copy of the header); type 0 ends the stream.

Grains appear in ascending LBA order and unwritten grains are simply absent (they read as
zeros), so the flat disk can be produced while the download streams: `StreamOptimizedReader`
is a file-like object over the download that yields exactly `capacity` bytes. It seeks forward
only (the changed-extent reader asks in ascending order) and skips grains it is asked to jump
over without inflating them. Anything unexpected is a `VmdkError`, never silently wrong data.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from reconciler.errors import VmdkError

__all__ = ["MAGIC", "SparseHeader", "StreamOptimizedReader", "VmdkError", "is_sparse_vmdk"]

SECTOR = 512
MAGIC = b"KDMV"
#: Header flags (the spec's bit numbers): valid newline test, compressed grains, markers.
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17
COMPRESSION_DEFLATE = 1
MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3

_HEADER = struct.Struct("<4sIIQQQQIQQQ?ccccH")
_GRAIN = struct.Struct("<QI")
_TYPE = struct.Struct("<I")


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def is_sparse_vmdk(first_bytes: bytes) -> bool:
    """Does a download start like a sparse VMDK (rather than raw disk bytes)?"""
    return first_bytes[:4] == MAGIC


@dataclass(frozen=True)
class SparseHeader:
    version: int
    flags: int
    capacity: int  # sectors
    grain_size: int  # sectors
    overhead: int  # sectors before the first marker
    compression: int

    @classmethod
    def parse(cls, sector: bytes) -> SparseHeader:
        if len(sector) < _HEADER.size or not is_sparse_vmdk(sector):
            raise VmdkError("not a sparse VMDK (no KDMV header)")
        (_, version, flags, capacity, grain, _desc_off, _desc_size, _gtes, _rgd, _gd,
         overhead, _unclean, *_newlines, compression) = _HEADER.unpack_from(sector)
        header = cls(version, flags, capacity, grain, overhead, compression)
        if version != 3 or not flags & FLAG_COMPRESSED or not flags & FLAG_MARKERS:
            raise VmdkError(f"not a streamOptimized VMDK (version {version}, flags {flags:#x})")
        if compression != COMPRESSION_DEFLATE:
            raise VmdkError(f"unknown grain compression {compression}")
        if grain == 0 or grain & (grain - 1):
            raise VmdkError(f"grain size of {grain} sectors is not a power of two")
        if overhead < 1:
            raise VmdkError("header overhead is smaller than the header")
        return header


class StreamOptimizedReader:
    """The flat disk inside a streamOptimized VMDK download (`raw` is read sequentially)."""

    def __init__(self, raw: _Readable, *, close: Callable[[], None] | None = None) -> None:
        self._raw = raw
        self._close: Callable[[], None] = close or getattr(raw, "close", None) or _nothing
        self._offset = 0  # bytes consumed from `raw`
        self.header = SparseHeader.parse(self._take(SECTOR))
        self._skip(self.header.overhead * SECTOR - SECTOR)
        self.size = self.header.capacity * SECTOR
        self._grain_bytes = self.header.grain_size * SECTOR
        self._pos = 0
        self._grain_start = 0
        self._grain: bytes | None = None  # the inflated grain that starts at _grain_start
        self._compressed: bytes | None = None  # a grain read but not inflated yet
        self._last_lba = -1
        self._ended = False

    # ------------------------------------------------------------------ file-like

    def read(self, size: int = -1, /) -> bytes:
        want = self.size - self._pos if size is None or size < 0 else min(size,
                                                                           self.size - self._pos)
        parts: list[bytes] = []
        while want > 0:
            self._advance_to(self._pos)
            if self._has_grain_at(self._pos):
                grain = self._inflated()
                at = self._pos - self._grain_start
                piece = grain[at : at + want]
            else:
                limit = self._grain_start if self._has_grain() else self.size
                piece = bytes(min(want, limit - self._pos))
            parts.append(piece)
            self._pos += len(piece)
            want -= len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def seek(self, offset: int, whence: int = 0, /) -> int:
        target = {0: offset, 1: self._pos + offset, 2: self.size + offset}[whence]
        if target < self._pos:
            raise VmdkError(f"a streamOptimized download cannot seek back (to byte {target} "
                            f"from {self._pos})")
        self._pos = min(target, self.size)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._close()

    # ------------------------------------------------------------------ the marker stream

    def _has_grain(self) -> bool:
        return self._grain is not None or self._compressed is not None

    def _has_grain_at(self, pos: int) -> bool:
        return self._has_grain() and self._grain_start <= pos

    def _advance_to(self, pos: int) -> None:
        """Drop grains that end at or before `pos` (without inflating them) and read markers
        until the next grain ends after `pos` or the stream ends."""
        while True:
            if self._has_grain():
                if self._grain_start + self._grain_length() > pos:
                    return
                self._grain = self._compressed = None
            if self._ended:
                return
            self._next_grain()

    def _grain_length(self) -> int:
        if self._grain is not None:
            return len(self._grain)
        # not inflated yet: a full grain, except where the disk ends
        return min(self._grain_bytes, self.size - self._grain_start)

    def _inflated(self) -> bytes:
        if self._grain is None:
            assert self._compressed is not None
            self._grain = _inflate(self._compressed, self._grain_start)
            self._compressed = None
            expected = min(self._grain_bytes, self.size - self._grain_start)
            if len(self._grain) != expected:
                raise VmdkError(f"grain at byte {self._grain_start} inflates to "
                                f"{len(self._grain)} bytes, not {expected}")
        return self._grain

    def _next_grain(self) -> None:
        while True:
            head = self._take(_GRAIN.size, allow_end=True)
            if not head:
                raise VmdkError(f"the stream ended at byte {self._offset} without an "
                                "end-of-stream marker")
            value, size = _GRAIN.unpack(head)
            if size:
                self._grain_marker(value, size)
                return
            (kind,) = _TYPE.unpack(self._take(_TYPE.size))
            self._skip(SECTOR - _GRAIN.size - _TYPE.size)
            if kind == MARKER_EOS:
                self._ended = True
                return
            if kind not in (MARKER_GT, MARKER_GD, MARKER_FOOTER):
                raise VmdkError(f"unknown marker type {kind} at byte {self._offset}")
            self._skip(value * SECTOR)  # grain table, directory or footer: not needed

    def _grain_marker(self, lba: int, size: int) -> None:
        if lba <= self._last_lba or lba % self.header.grain_size:
            raise VmdkError(f"grain at sector {lba} is out of order or not aligned")
        if lba * SECTOR >= self.size:
            raise VmdkError(f"grain at sector {lba} lies beyond the disk's capacity")
        data = self._take(size)
        self._skip(-(_GRAIN.size + size) % SECTOR)
        self._last_lba = lba
        self._grain_start = lba * SECTOR
        self._grain, self._compressed = None, data

    def _take(self, n: int, *, allow_end: bool = False) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < n:
            data = self._raw.read(n - got)
            if not data:
                if allow_end and got == 0:
                    return b""
                raise VmdkError(f"the stream ended at byte {self._offset + got} inside a "
                                "marker or grain")
            parts.append(data)
            got += len(data)
        self._offset += n
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        while n > 0:
            step = min(n, 1 << 20)
            self._take(step)
            n -= step


def _nothing() -> None:
    pass


def _inflate(data: bytes, where: int) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error:
        try:  # some writers store raw deflate without the zlib wrapper
            return zlib.decompress(data, -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise VmdkError(f"grain at byte {where} does not inflate: {exc}") from None

"""Pack writes around the page cache (`O_DIRECT`) on a local disk's filesystem.

An export writes far more than anyone reads back soon. Through the page cache every byte of
a pack is copied into cache pages by the kernel, written back, then dropped; on two busy
cores that copy cost about 1 s of CPU per GiB written, a sixth of an export's CPU
(docs/benchmarks.md, apply). With `O_DIRECT` the device reads the bytes from vmkeep's own
buffer instead: the entries of a pack are gathered into one page-aligned buffer and written
in whole buffers; the tail of a pack (less than a buffer) is written after `O_DIRECT` is
cleared, so a pack is exactly as long as its entries, as before. Durability is unchanged:
a pack is fsynced before it is published.

The host config's `targets.<name>.directWrites` says when (`auto`, the default: on a local
disk's filesystem, see `LOCAL_DISK_FILESYSTEMS`; never on a network share, where each
direct write would be a synchronous round trip; `on`; `off`). A filesystem that refuses
`O_DIRECT` (at the open or at the first write) is written through the page cache instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["DIRECT_SETTINGS", "LOCAL_DISK_FILESYSTEMS", "STAGE_BYTES", "StagedFile",
           "filesystem_type", "open_pack_file", "stage_buffer", "wants_direct"]

#: `targets.<name>.directWrites` values.
DIRECT_SETTINGS = ("auto", "on", "off")
#: Filesystems of local block devices that take `O_DIRECT` writes (`auto` uses it on these).
LOCAL_DISK_FILESYSTEMS = frozenset({"ext4", "ext3", "xfs", "btrfs", "f2fs"})
#: Bytes gathered per direct write: a multiple of every device's logical block size.
STAGE_BYTES = 4 * 1024 * 1024
_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_OCTAL = re.compile(r"\\([0-7]{3})")  # mountinfo's escapes of space, tab, newline, backslash


def filesystem_type(path: str | os.PathLike[str], mountinfo: str | None = None) -> str | None:
    """The type of the filesystem `path` is on, from `/proc/self/mountinfo` (or the text
    given); None where that cannot be read (not Linux)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target = os.path.realpath(path)
    best, kind = "", None
    for line in mountinfo.splitlines():
        fields, sep, rest = line.partition(" - ")
        parts = fields.split()
        if not sep or len(parts) < 5 or not rest.split():
            continue
        mount = _OCTAL.sub(lambda m: chr(int(m[1], 8)), parts[4])  # "\\040" is a space
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):  # the last of equal mounts is on top
            best, kind = mount, rest.split()[0]
    return kind


def wants_direct(setting: str, path: str | os.PathLike[str],
                 mountinfo: str | None = None) -> bool:
    """Whether packs under `path` are written with `O_DIRECT` (see the module docstring)."""
    if not _O_DIRECT or setting == "off":
        return False
    return setting == "on" or filesystem_type(path, mountinfo) in LOCAL_DISK_FILESYSTEMS


def open_pack_file(path: Path, direct: bool) -> tuple[int, bool]:
    """A new pack file, opened for direct writes when asked and the filesystem takes them;
    (fd, whether it is direct)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    if direct:
        try:
            return os.open(path, flags | _O_DIRECT, 0o644), True
        except OSError as exc:
            if exc.errno not in _REFUSED:
                raise
    return os.open(path, flags, 0o644), False


class StagedFile:
    """The writes of one pack opened with `O_DIRECT`: parts are gathered into `buffer`
    (page-aligned, `STAGE_BYTES`) and written whole through `write_all`; `finish` writes
    the tail through the page cache. Used by one thread at a time (the pack I/O thread)."""

    def __init__(self, fd: int, buffer: mmap.mmap,
                 write_all: Callable[[int, Sequence[bytes | bytearray | memoryview]], None]
                 ) -> None:
        self.fd = fd
        self.direct = True  # O_DIRECT is set on fd (cleared for the tail)
        self.refused = False  # the filesystem refused a direct write
        self._view = memoryview(buffer)  # keeps the buffer mapped until `close`
        self._fill = 0
        self._write_all = write_all

    def write(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        view, size = self._view, len(self._view)
        for part in parts:
            data = memoryview(part).cast("B")
            at = 0
            while at < len(data):
                n = min(len(data) - at, size - self._fill)
                view[self._fill : self._fill + n] = data[at : at + n]
                self._fill += n
                at += n
                if self._fill == size:
                    self._flush(view)
                    self._fill = 0

    def finish(self) -> None:
        """Write what is gathered, through the page cache (a tail need not be aligned)."""
        try:
            self._buffered()
            if self._fill:
                self._write_all(self.fd, [self._view[: self._fill]])
                self._fill = 0
        finally:
            self.close()

    def close(self) -> None:
        """Let go of the buffer (what is gathered and not written is dropped)."""
        self._view.release()

    def _flush(self, data: memoryview) -> None:
        if not self.direct:
            self._write_all(self.fd, [data])
            return
        start = os.lseek(self.fd, 0, os.SEEK_CUR)
        try:
            self._write_all(self.fd, [data])
        except OSError as exc:
            if exc.errno not in _REFUSED:
                raise
            self.refused = True
            self._buffered()  # opened, but the filesystem refuses direct writes: again,
            os.lseek(self.fd, start, os.SEEK_SET)  # from where this buffer began
            self._write_all(self.fd, [data])

    def _buffered(self) -> None:
        if self.direct:
            self.direct = False
            with contextlib.suppress(OSError):
                fcntl.fcntl(self.fd, fcntl.F_SETFL,
                            fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~_O_DIRECT)


def stage_buffer() -> mmap.mmap:
    """A page-aligned buffer for `StagedFile` (anonymous memory: aligned by the kernel)."""
    return mmap.mmap(-1, STAGE_BYTES)

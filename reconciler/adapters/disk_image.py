"""Partitions and file systems inside a stored disk, read in place with The Sleuth Kit.

    image = ChunkedImage(source)              # source: size, chunk_size, read(offset, length)
    for volume in volumes(image, "disk-2000"): ...
    fs = open_file_system(image, volume)      # ext2/3/4, NTFS, FAT, exFAT, HFS+, ISO 9660 …
    fs.list("/etc"), fs.stat("/etc/app.conf"), fs.read("/etc/app.conf", 0, 4096)

`ChunkedImage` is a `pytsk3.Img_Info` whose reads fetch only the chunks they touch from the
export repository (each verified by the repository's reader) and keep the last few in a
small LRU cache; `fetched` counts the chunks fetched, for the "reads < 1 % of the disk"
benchmark. A damaged chunk raises `CorruptionError` from the read; The Sleuth Kit only sees
a failed read, so every call into it goes through `_tsk`, which re-raises the repository's
error (naming point, disk and chunk) instead of the library's vague one.

What The Sleuth Kit cannot read (LVM, LUKS, Windows dynamic disks, an unknown file system)
raises `UnreadableVolume`, one line naming the partition and what it seems to hold.
"""

from __future__ import annotations

import collections
import functools
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import pytsk3

from reconciler.errors import UnreadableVolume, VmkeepError

__all__ = [
    "ChunkedImage",
    "DiskSource",
    "FileSystem",
    "Node",
    "UnreadableVolume",
    "Volume",
    "file_mode",
    "open_file_system",
    "volumes",
]

SECTOR = 512
CACHE_BYTES = 32 * 1024 * 1024
READ_STEP = 1024 * 1024
#: An Interix symbolic link, as ntfs-3g writes them on NTFS: this magic, then UTF-16LE.
INTERIX_LINK = b"IntxLNK\x01"
T = TypeVar("T")


class DiskSource(Protocol):
    """A stored disk read by offset, every chunk verified (the repository's `DiskReader`)."""

    @property
    def size(self) -> int: ...

    @property
    def chunk_size(self) -> int: ...

    def read(self, offset: int, length: int) -> bytes: ...


class ChunkedImage(pytsk3.Img_Info):
    """A disk image whose bytes come chunk by chunk from the repository, on demand."""

    def __init__(self, source: DiskSource, cache_bytes: int = CACHE_BYTES) -> None:
        self.source = source
        self.chunk_size = source.chunk_size
        self.fetched = 0
        self.error: BaseException | None = None
        self._cache: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._limit = max(1, cache_bytes // max(1, self.chunk_size))
        self._lock = threading.Lock()
        super().__init__(url="", type=pytsk3.TSK_IMG_TYPE_EXTERNAL)

    def get_size(self) -> int:
        return self.source.size

    def close(self) -> None:
        self._cache.clear()

    def chunk(self, index: int) -> bytes:
        with self._lock:
            data = self._cache.get(index)
            if data is not None:
                self._cache.move_to_end(index)
                return data
        data = self.source.read(index * self.chunk_size, self.chunk_size)
        with self._lock:
            self.fetched += 1
            self._cache[index] = data
            while len(self._cache) > self._limit:
                self._cache.popitem(last=False)
        return data

    def read(self, offset: int, length: int) -> bytes:
        try:
            return self.read_bytes(offset, length)
        except BaseException as exc:  # The Sleuth Kit sees a failed read; we keep the cause
            self.error = exc
            raise

    def read_bytes(self, offset: int, length: int) -> bytes:
        end = min(self.source.size, offset + length)
        if offset >= end:
            return b""
        cs = self.chunk_size
        parts: list[bytes] = []
        for i in range(offset // cs, (end + cs - 1) // cs):
            data = self.chunk(i)
            parts.append(data[max(offset, i * cs) - i * cs : min(end, (i + 1) * cs) - i * cs])
        return b"".join(parts)

    def tsk(self, call: Callable[[], T], what: str) -> T:
        """Run a Sleuth Kit call; a failed read inside it re-raises the repository's error."""
        self.error = None
        try:
            return call()
        except (OSError, RuntimeError) as exc:
            cause, self.error = self.error, None
            if isinstance(cause, VmkeepError):
                raise type(cause)(f"{cause} (while reading {what})") from None
            if cause is not None:
                raise cause from None
            raise _LibraryError(str(exc)) from None


class _LibraryError(Exception):
    """The Sleuth Kit refused (not a file system it knows, a path that is not there, …)."""


@dataclass(frozen=True)
class Volume:
    """A partition (`number` as Linux counts: 1 = the table's first entry), or the whole
    disk (`number` None) when it has no partition table."""

    disk: str
    number: int | None
    start: int  # bytes from the start of the disk
    length: int  # bytes
    description: str

    @property
    def label(self) -> str:
        where = f"disk {self.disk!r}"
        return where if self.number is None else f"{where} partition {self.number}"


def volumes(image: ChunkedImage, disk: str) -> list[Volume]:
    """The allocated partitions of the disk's MBR or GPT, or the whole disk without one."""
    try:
        info = image.tsk(lambda: pytsk3.Volume_Info(image), f"the partition table of {disk!r}")
    except _LibraryError:
        return [Volume(disk, None, 0, image.get_size(), "no partition table")]
    block = int(info.info.block_size) or SECTOR
    found: list[Volume] = []
    logical = 4
    for part in info:
        if not int(part.flags) & pytsk3.TSK_VS_PART_FLAG_ALLOC:
            continue
        if int(part.table_num) > 0 and int(info.info.vstype) == pytsk3.TSK_VS_TYPE_DOS:
            logical += 1
            number = logical
        else:
            number = int(part.slot_num) + 1
        description = part.desc.decode("utf-8", "replace") if part.desc else ""
        found.append(Volume(disk, number, int(part.start) * block, int(part.len) * block,
                            description))
    return sorted(found, key=lambda v: v.number or 0)


@dataclass(frozen=True)
class Node:
    """One entry of a file system."""

    path: str  # absolute inside the file system: /etc/app.conf
    type: str  # file | dir | symlink | other
    size: int
    mtime: datetime
    mode: int  # permission bits (and set-id/sticky)
    target: str | None = None  # a symbolic link's target


_FS_NAMES = {
    getattr(pytsk3, name): name.removeprefix("TSK_FS_TYPE_").lower()
    for name in dir(pytsk3)
    if name.startswith("TSK_FS_TYPE_") and not name.endswith(("_DETECT", "_ENUM"))
}


class FileSystem:
    """A file system at one volume of a `ChunkedImage`."""

    def __init__(self, image: ChunkedImage, volume: Volume, info: pytsk3.FS_Info) -> None:
        self.image = image
        self.volume = volume
        self.info = info
        self.type = _FS_NAMES.get(int(info.info.ftype), "unknown")

    def _open(self, path: str) -> pytsk3.File:
        try:
            return self.image.tsk(lambda: self.info.open(path), f"{path} on {self.volume.label}")
        except _LibraryError:
            raise FileNotFoundError(path) from None

    def stat(self, path: str) -> Node:
        path = _normal(path)
        return self._node(path, self._open(path))

    def list(self, path: str) -> list[Node]:
        """The entries of directory `path`, by name (deleted and virtual ones left out)."""
        path = _normal(path)
        where = f"{path} on {self.volume.label}"
        try:
            directory = self.image.tsk(lambda: self.info.open_dir(path), where)
        except _LibraryError:
            raise NotADirectoryError(path) from None
        out: list[Node] = []
        for entry in self.image.tsk(lambda: list(directory), where):
            name = entry.info.name.name.decode("utf-8", "surrogateescape")
            if name in (".", "..") or "/" in name:
                continue
            if int(entry.info.name.flags) & pytsk3.TSK_FS_NAME_FLAG_UNALLOC:
                continue
            meta = entry.info.meta
            if meta is None or int(meta.type) in (pytsk3.TSK_FS_META_TYPE_VIRT,
                                                  pytsk3.TSK_FS_META_TYPE_VIRT_DIR):
                continue
            if path == "/" and self.type == "ntfs" and name.startswith("$"):
                continue  # NTFS metadata files ($MFT, $Bitmap …)
            if self.type.startswith(("fat", "exfat")) and name.endswith(
                    ("(Volume Label Entry)", "$FAT1", "$FAT2", "$MBR")):
                continue  # The Sleuth Kit's virtual FAT entries
            child = f"{path.rstrip('/')}/{name}"
            out.append(self._node(child, entry))
        return sorted(out, key=lambda n: n.path)

    def walk(self, path: str = "/") -> Iterator[Node]:
        """Every entry below directory `path`, depth first, by name."""
        for node in self.list(path):
            yield node
            if node.type == "dir":
                yield from self.walk(node.path)

    def read(self, path: str, offset: int, length: int) -> bytes:
        file = self._open(_normal(path))
        size = int(file.info.meta.size)
        length = max(0, min(length, size - offset))
        if length == 0:
            return b""
        return self.image.tsk(lambda: file.read_random(offset, length),
                              f"{path} on {self.volume.label}")

    def blocks(self, path: str) -> Iterator[bytes]:
        """The file's bytes in steps of 1 MiB (holes of a sparse file as zeros)."""
        file = self._open(_normal(path))
        size = int(file.info.meta.size)
        where = f"{path} on {self.volume.label}"
        for offset in range(0, size, READ_STEP):
            length = min(READ_STEP, size - offset)
            yield self.image.tsk(functools.partial(file.read_random, offset, length), where)

    def _node(self, path: str, file: pytsk3.File) -> Node:
        meta = file.info.meta
        kind = int(meta.type)
        size = int(meta.size)
        when = datetime.fromtimestamp(int(meta.mtime), UTC)
        nano = int(getattr(meta, "mtime_nano", 0) or 0)
        if self.type.startswith(("ext", "ffs")) and nano:
            when = when.replace(microsecond=nano // 1000)
        mode = int(meta.mode) & 0o7777
        if kind == pytsk3.TSK_FS_META_TYPE_DIR:
            return Node(path, "dir", 0, when, mode)
        if kind == pytsk3.TSK_FS_META_TYPE_LNK:
            target = meta.link
            if isinstance(target, bytes):
                text = target.decode("utf-8", "surrogateescape")
            elif target:
                text = str(target)
            else:  # a long link keeps its target as data
                text = self.image.tsk(lambda: file.read_random(0, size), path).decode(
                    "utf-8", "surrogateescape")
            return Node(path, "symlink", size, when, mode, text)
        if kind == pytsk3.TSK_FS_META_TYPE_REG:
            if self.type == "ntfs" and 8 < size <= 8 + 2 * 4096:
                head = self.image.tsk(lambda: file.read_random(0, size), path)
                if head.startswith(INTERIX_LINK):
                    text = head[8:].decode("utf-16-le", "replace").rstrip("\0")
                    return Node(path, "symlink", len(text.encode()), when, 0o777, text)
            return Node(path, "file", size, when, mode)
        return Node(path, "other", size, when, mode)


def _normal(path: str) -> str:
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        raise FileNotFoundError(path)
    return "/" + "/".join(parts)


#: The families tried, one by one: The Sleuth Kit's own detection also tries YAFFS2, which
#: reads the whole volume, so a detection would fetch every chunk of the disk.
FAMILIES = ("EXT_DETECT", "NTFS_DETECT", "FAT_DETECT", "HFS_DETECT", "ISO9660_DETECT",
            "FFS_DETECT", "APFS_DETECT")


def open_file_system(image: ChunkedImage, volume: Volume) -> FileSystem:
    """The file system at `volume`; `UnreadableVolume` when there is none the library reads."""
    for family in FAMILIES:
        kind = getattr(pytsk3, f"TSK_FS_TYPE_{family}", None)
        if kind is None:
            continue
        try:
            info = image.tsk(functools.partial(pytsk3.FS_Info, image, offset=volume.start,
                                               type=kind), f"the file system on {volume.label}")
        except _LibraryError:
            continue
        return FileSystem(image, volume, info)
    raise UnreadableVolume(f"{volume.label} ({_guess(image, volume)}) holds no file system "
                           "The Sleuth Kit reads; use `vmkeep mount` and the standard tools "
                           "on the disk image (losetup -P, vgchange -ay, cryptsetup open, "
                           "ldmtool …)")


def _guess(image: ChunkedImage, volume: Volume) -> str:
    head = image.tsk(lambda: image.read_bytes(volume.start, 4096), volume.label)
    description = volume.description
    if head.startswith(b"LUKS\xba\xbe"):
        return "LUKS encrypted volume"
    if head[512:520] == b"LABELONE" or b"LVM2 001" in head[:2048]:
        return "LVM physical volume"
    if "0x42" in description or "LDM" in description:
        return "Windows dynamic disk"
    if "0x8e" in description.lower():
        return "Linux LVM"
    if "0xfd" in description.lower():
        return "Linux RAID member"
    return f"partition type {description}" if description else "unknown contents"


def file_mode(node: Node) -> int:
    """The node's `st_mode` (type bits included)."""
    kind = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}.get(node.type, stat.S_IFREG)
    return kind | node.mode


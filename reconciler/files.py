"""File-level restore: browse, search and extract files inside a point's disks, in place.

    files = PointFiles(repo, point_id)
    for volume, fs_or_error in files.file_systems(disk=None, partition=None): ...
    list_entries(files, disk, partition, "/etc", recursive=False)   -> ListReport
    extract(files, disk, partition, ["/etc/app.conf"], Path("out"))   -> ExtractReport
    find(repo, [point_id, ...], "*.conf")                              -> [Match]

Nothing is written anywhere but the extraction directory: the disks are read through
`ChunkedImage` (only the chunks a file-system read touches are fetched, each verified).
`extract` never overwrites: a target path that exists is refused before anything is written;
files go into a staging directory inside the destination (`.vmkeep-files-<pid>`) and are
renamed into place when whole, with their modification times and permission bits; symbolic
links stay links. A file with a damaged chunk is named (point, disk, file, chunk) and left
out; the others are still extracted.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, cast

from reconciler.adapters.disk_image import (
    ChunkedImage,
    DiskSource,
    FileSystem,
    Node,
    UnreadableVolume,
    Volume,
    file_mode,
    open_file_system,
    volumes,
)
from reconciler.adapters.fuse_mount import Leaf, Tree
from reconciler.errors import UsageError, VmkeepError
from reconciler.ports import RestorablePoint
from reconciler.processes import process_running

__all__ = [
    "Entry",
    "ExtractReport",
    "FileSource",
    "Match",
    "PointFiles",
    "UnreadableVolume",
    "catalog_tree",
    "extract",
    "file_mode",
    "find",
    "iso",
    "point_tree",
]

STAGING_PREFIX = ".vmkeep-files-"


class FileSource(Protocol):
    """The repository as file-level restore reads it."""

    def manifest(self, point_id: str) -> RestorablePoint: ...

    def open_disk(self, point_id: str, disk: str) -> DiskSource: ...


def iso(moment: datetime) -> str:
    """`2026-01-02T03:04:05Z` (with microseconds when there are any)."""
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Entry:
    disk: str
    partition: int | None
    node: Node

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "disk": self.disk, "partition": self.partition, "path": self.node.path,
            "type": self.node.type, "size": self.node.size, "mtime": iso(self.node.mtime),
            "mode": self.node.mode,
        }
        if self.node.target is not None:
            out["target"] = self.node.target
        return out


@dataclass(frozen=True)
class Match:
    point: str
    disk: str
    partition: int | None
    node: Node

    def to_json(self) -> dict[str, Any]:
        return {"point": self.point, "disk": self.disk, "partition": self.partition,
                "path": self.node.path, "size": self.node.size, "mtime": iso(self.node.mtime)}


class PointFiles:
    """The disks, partitions and file systems of one restore point, opened on demand."""

    def __init__(self, source: FileSource, point_id: str) -> None:
        self.source = source
        self.point_id = point_id
        self.disks = [d.name for d in source.manifest(point_id).disks]
        self._images: dict[str, ChunkedImage] = {}

    def image(self, disk: str) -> ChunkedImage:
        if disk not in self._images:
            self._images[disk] = ChunkedImage(self.source.open_disk(self.point_id, disk))
        return self._images[disk]

    @property
    def fetched(self) -> int:
        """Chunks fetched from the repository so far (all disks)."""
        return sum(image.fetched for image in self._images.values())

    def volumes(self, disk: str | None = None,
                partition: int | None = None) -> list[Volume]:
        if disk is not None and disk not in self.disks:
            raise UsageError(f"restore point {self.point_id!r} has no disk {disk!r} "
                             f"(disks: {', '.join(self.disks) or 'none'})")
        found: list[Volume] = []
        for name in [disk] if disk is not None else self.disks:
            listed = volumes(self.image(name), name)
            if partition is not None:
                listed = [v for v in listed if v.number == partition]
                if not listed and disk is not None:
                    numbers = ", ".join(str(v.number) for v in volumes(self.image(name), name))
                    raise UsageError(f"disk {name!r} of restore point {self.point_id!r} has no "
                                     f"partition {partition} (partitions: {numbers or 'none'})")
            found.extend(listed)
        if not found:
            raise UsageError(f"restore point {self.point_id!r} has no partition {partition} "
                             "on any disk")
        return found

    def file_systems(self, disk: str | None = None, partition: int | None = None,
                     ) -> list[tuple[Volume, FileSystem | UnreadableVolume]]:
        """Each chosen volume with its file system, or the error saying why it has none."""
        out: list[tuple[Volume, FileSystem | UnreadableVolume]] = []
        for volume in self.volumes(disk, partition):
            try:
                out.append((volume, open_file_system(self.image(volume.disk), volume)))
            except UnreadableVolume as exc:
                out.append((volume, exc))
        return out

    def one_file_system(self, disk: str | None, partition: int | None) -> FileSystem:
        """The one file system `disk`/`partition` choose (or the only readable one when they
        are left out); an error names the choices."""
        chosen = self.file_systems(disk, partition)
        readable = [(v, fs) for v, fs in chosen if isinstance(fs, FileSystem)]
        if len(readable) == 1:
            return readable[0][1]
        if not readable:
            unreadable = [fs for _, fs in chosen if isinstance(fs, UnreadableVolume)]
            raise unreadable[0]
        listed = ", ".join(f"--disk {v.disk} --partition {v.number}" for v, _ in readable)
        raise UsageError(f"restore point {self.point_id!r} has several file systems; choose "
                         f"one with {listed}")


def describe(volume: Volume, fs: FileSystem | UnreadableVolume) -> dict[str, Any]:
    """A volume as `files ls -o json` lists it under `partitions`."""
    out: dict[str, Any] = {"disk": volume.disk, "partition": volume.number,
                           "start": volume.start, "size": volume.length,
                           "description": volume.description,
                           "filesystem": fs.type if isinstance(fs, FileSystem) else None}
    if isinstance(fs, UnreadableVolume):
        out["error"] = str(fs)
    return out


def entries(files: PointFiles, fs: FileSystem, path: str, *, recursive: bool) -> list[Entry]:
    """What `files ls PATH` shows of one file system: a directory's entries (all below it
    with `recursive`), or the one entry of a file."""
    volume = fs.volume
    try:
        node = fs.stat(path)
    except FileNotFoundError:
        raise UsageError(f"no {path} on {volume.label} of restore point "
                         f"{files.point_id!r}") from None
    if node.type != "dir":
        return [Entry(volume.disk, volume.number, node)]
    listed = fs.walk(node.path) if recursive else iter(fs.list(node.path))
    return [Entry(volume.disk, volume.number, n) for n in listed]


# --------------------------------------------------------------------------- extract


@dataclass
class ExtractReport:
    directory: Path
    extracted: list[str] = field(default_factory=list)  # paths inside DIR, relative
    files: int = 0
    bytes: int = 0
    failures: list[str] = field(default_factory=list)  # one line each

    def to_json(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "extracted": self.extracted,
                "files": self.files, "bytes": self.bytes, "failures": self.failures}


def extract(files: PointFiles, fs: FileSystem, paths: Sequence[str], to: Path) -> ExtractReport:
    """Copy `paths` (files, links, whole directories) out of `fs` into directory `to`, each
    under its last name; see the module's documentation."""
    nodes: list[Node] = []
    names: set[str] = set()
    for path in paths:
        try:
            node = fs.stat(path)
        except FileNotFoundError:
            raise UsageError(f"no {path} on {fs.volume.label} of restore point "
                             f"{files.point_id!r}") from None
        name = node.path.rsplit("/", 1)[-1]
        if not name:
            raise UsageError("give files or directories inside the file system, not / itself "
                             "(e.g. /etc)")
        if name in names:
            raise UsageError(f"two paths would land as {to / name}; extract them one by one")
        names.add(name)
        nodes.append(node)
    if to.is_symlink() or (to.exists() and not to.is_dir()):
        raise UsageError(f"{to} exists and is not a directory")
    if not to.exists() and not to.parent.is_dir():
        raise UsageError(f"{to.parent} does not exist")
    taken = [name for name in sorted(names) if os.path.lexists(to / name)]
    if taken:
        raise UsageError(f"{to / taken[0]} exists; nothing is overwritten (choose another --to)")

    report = ExtractReport(to)
    try:
        to.mkdir(exist_ok=True)
        _clear_leftovers(to)
        staging = to / f"{STAGING_PREFIX}{os.getpid()}"
        staging.mkdir()
    except OSError as exc:
        raise VmkeepError(f"cannot extract into {to}: {exc.strerror or exc}") from None
    try:
        done: list[tuple[Node, Path]] = []
        for node in nodes:
            name = node.path.rsplit("/", 1)[-1]
            if _copy(files, fs, node, staging / name, report, top=True):
                done.append((node, staging / name))
        for node, staged in done:
            final = to / staged.name
            if os.path.lexists(final):
                raise VmkeepError(f"{final} appeared meanwhile; it was not overwritten")
            staged.rename(final)
            _set_times(node, final)
            report.extracted.append(staged.name)
    except OSError as exc:
        raise VmkeepError(f"extracting into {to} failed: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _copy(files: PointFiles, fs: FileSystem, node: Node, dest: Path,
          report: ExtractReport, *, top: bool = False) -> bool:
    """Copy one node to `dest`; False when it (a file) could not be read whole. A directory
    gets its mode and time after its contents (a top one after its rename)."""
    if node.type == "symlink":
        os.symlink(node.target or "", dest)
        _set_times(node, dest)
        report.files += 1
        return True
    if node.type == "dir":
        dest.mkdir()
        try:
            children = fs.list(node.path)
        except VmkeepError as exc:
            report.failures.append(f"{node.path}: {exc}")
            children = []
        for child in children:
            _copy(files, fs, child, dest / child.path.rsplit("/", 1)[-1], report)
        if not top:
            _set_times(node, dest)
        return True
    if node.type != "file":
        return False  # devices, sockets, fifos: nothing to copy
    try:
        written = _write_file(fs, node, dest)
    except VmkeepError as exc:
        dest.unlink(missing_ok=True)
        detail = str(exc).removeprefix(f"restore point {files.point_id!r} disk "
                                       f"{fs.volume.disk!r}: ")
        detail = detail.split(" (while reading ", 1)[0]
        report.failures.append(f"restore point {files.point_id!r} {fs.volume.label} file "
                               f"{node.path}: {detail}")
        return False
    report.files += 1
    report.bytes += written
    _set_times(node, dest)
    return True


def _write_file(fs: FileSystem, node: Node, dest: Path) -> int:
    written = 0
    with open(dest, "xb") as out:
        hole = 0
        for block in fs.blocks(node.path):
            if block.count(0) != len(block):
                if hole:
                    out.seek(hole, os.SEEK_CUR)
                    hole = 0
                out.write(block)
            else:
                hole += len(block)
            written += len(block)
        if hole:
            out.seek(hole - 1, os.SEEK_CUR)
            out.write(b"\0")
        out.flush()
        os.fsync(out.fileno())
    return written


def _set_times(node: Node, path: Path) -> None:
    stamp = int(node.mtime.timestamp()) * 10**9 + node.mtime.microsecond * 1000
    if node.type == "symlink":
        os.utime(path, ns=(stamp, stamp), follow_symlinks=False)
        return
    os.chmod(path, node.mode)
    os.utime(path, ns=(stamp, stamp))


def _clear_leftovers(directory: Path) -> None:
    """Remove staging directories of extractions whose process is gone."""
    for entry in directory.iterdir():
        pid = entry.name.removeprefix(STAGING_PREFIX)
        if entry.name.startswith(STAGING_PREFIX) and pid.isdigit() \
                and not process_running(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


# --------------------------------------------------------------------------- find


def matches(pattern: str, path: str) -> bool:
    """A glob on the whole path when it has a `/` (`/etc/*.conf`, `etc/*.conf` anywhere),
    else on the last name (`*.conf`), as `find -name` does."""
    if pattern.startswith("/"):
        return fnmatch.fnmatchcase(path, pattern)
    if "/" in pattern:
        return fnmatch.fnmatchcase(path, f"/{pattern}") or \
            fnmatch.fnmatchcase(path, f"*/{pattern}")
    return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)


def find(source: FileSource, point_ids: Sequence[str], pattern: str,
         warn: Any = None) -> list[Match]:
    """Every entry matching `pattern` in every readable file system of the points, in the
    order of `point_ids`; `warn(line)` hears of volumes that cannot be read."""
    found: list[Match] = []
    for point_id in point_ids:
        files = PointFiles(source, point_id)
        for volume, fs in files.file_systems():
            if isinstance(fs, UnreadableVolume):
                if warn is not None:
                    warn(f"restore point {point_id!r}: {fs}")
                continue
            for node in fs.walk("/"):
                if matches(pattern, node.path):
                    found.append(Match(point_id, volume.disk, volume.number, node))
    return found


# --------------------------------------------------------------------------- mount


class MountSource(FileSource, Protocol):
    def read_file(self, point_id: str, name: str) -> bytes: ...


def point_tree(source: MountSource, point_id: str) -> Tree:
    """What `vmkeep mount` shows of one point: each disk as `<disk file stem>.img` (a raw
    image, read on demand and verified) and the point's files (`vm.json`, the `.vmx` …)."""
    # the same disk file stems as `restore --to` gives its -flat.vmdk files
    from reconciler.restore import DESCRIPTION
    from reconciler.restore import _description as description_of
    from reconciler.restore import _image_names as image_names

    manifest = source.manifest(point_id)
    stored = [f.name for f in manifest.files]
    described = description_of(cast(Any, source), point_id) if DESCRIPTION in stored else {}
    stems = image_names([d.name for d in manifest.disks], described)
    when = _created(manifest)
    tree: Tree = {}
    for disk in manifest.disks:
        tree[f"{stems[disk.name]}.img"] = Leaf(disk.size, when, _disk_reader(source, point_id,
                                                                            disk.name))
    for item in manifest.files:
        if item.name not in tree and "/" not in item.name:
            tree[item.name] = Leaf(item.size, when, _file_reader(source, point_id, item.name))
    return tree


def catalog_tree(points: Sequence[tuple[MountSource, str, str, str, datetime]]) -> Tree:
    """`<vcenter>/<vm name>/<slot>/…` for every (source, point id, vCenter, VM name, slot);
    two points of one VM and slot (two policies) get the policy after the slot."""
    tree: Tree = {}
    for source, point_id, vcenter, vm, slot in points:
        folder = tree.setdefault(_safe(vcenter or "unknown-vcenter"), {})
        assert isinstance(folder, dict)
        folder = folder.setdefault(_safe(vm), {})
        assert isinstance(folder, dict)
        name = iso(slot)
        if name in folder:
            name = f"{name}-{_safe(point_id.split('/', 1)[0])}"
        folder[name] = point_tree(source, point_id)
    return tree


def _safe(name: str) -> str:
    return name.replace("/", "%2F") if name not in (".", "..") else f"%{name}"


def _created(manifest: Any) -> float:
    moment = getattr(manifest, "created_at", None)
    return moment.timestamp() if isinstance(moment, datetime) else 0.0


def _disk_reader(source: MountSource, point_id: str, disk: str) -> Callable[[int, int], bytes]:
    opened: list[DiskSource] = []

    def read(offset: int, length: int) -> bytes:
        if not opened:
            opened.append(source.open_disk(point_id, disk))
        return opened[0].read(offset, length)

    return read


def _file_reader(source: MountSource, point_id: str, name: str) -> Callable[[int, int], bytes]:
    held: list[bytes] = []

    def read(offset: int, length: int) -> bytes:
        if not held:
            held.append(source.read_file(point_id, name))
        return held[0][offset : offset + length]

    return read

"""Restore an exported restore point into a new local directory, ready to upload and register.

What lands in the directory (`docs/restore.md` has the walk-through):

* every disk as a flat image `<name>-flat.vmdk` (all-zero chunks left as holes) plus the
  small VMDK descriptor `<name>.vmdk` that ESXi and qemu-img read it through; `<name>` is the
  disk's file name at export time (`vm.json`), else the disk's name in the point;
* the point's small files as they were exported (`.vmx`, `.nvram`, `vm.json`), except that
  disk file names in the `.vmx` which point at a snapshot delta (`vm1-000001.vmdk`, what
  the `.vmx` says while the export's snapshot exists) or at another folder are pointed at
  the restored disk;
* `restore.json`: what was restored from where, and each disk's size.

Every chunk is checked against its hash as it is read. The directory appears only when
everything is written and flushed: the files go into a sibling staging directory
(`.<name>.vmkeep-restore-<pid>`) that is renamed at the end, and removed on any failure (or,
after a kill, by the next restore into the same place), so a directory of that name is
always a whole restore. An existing directory is used only when it is empty; nothing in it
is ever overwritten.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from reconciler.errors import RepositoryError, UsageError, VmkeepError
from reconciler.ports import RestoreSource
from reconciler.processes import process_running

__all__ = ["RestoreReport", "RestoredDisk", "descriptor", "restore_point"]

SECTOR = 512
DESCRIPTION = "vm.json"
REPORT = "restore.json"
#: A name a restored file may have: no folders, nothing hidden, nothing odd for a datastore.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_+()\[\] ,@=-][A-Za-z0-9_.+()\[\] ,@=-]{0,200}")
#: `scsi0:0.fileName = "..."` and the like in a .vmx.
_VMX_DISK = re.compile(r'^(\s*[\w:.]+\.fileName\s*=\s*")([^"]*\.vmdk)(".*)$', re.IGNORECASE)
_DELTA = re.compile(r"^(.+)-\d{6}\.vmdk$", re.IGNORECASE)


@dataclass(frozen=True)
class RestoredDisk:
    name: str  # the disk's name in the restore point
    image: str  # the flat image, e.g. vm1-flat.vmdk
    descriptor: str | None  # vm1.vmdk; None when the size is not whole 512-byte sectors
    size_bytes: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "image": self.image, "descriptor": self.descriptor,
                "sizeBytes": self.size_bytes, "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class RestoreReport:
    point: str
    directory: Path
    disks: tuple[RestoredDisk, ...]
    files: tuple[str, ...]
    vmx_changes: tuple[str, ...] = ()
    seconds: float = 0.0
    source: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "point": self.point,
            "directory": str(self.directory),
            "source": dict(self.source),
            "disks": [d.to_json() for d in self.disks],
            "files": list(self.files),
            "vmxChanges": list(self.vmx_changes),
            "seconds": round(self.seconds, 3),
        }


def restore_point(
    source: RestoreSource,
    point_id: str,
    directory: Path,
    *,
    disks: Sequence[str] = (),
    about: Mapping[str, str] | None = None,
    on_disk: Callable[[RestoredDisk], None] = lambda _: None,
    clock: Callable[[], float] = time.monotonic,
) -> RestoreReport:
    """Write restore point `point_id` (all its disks, or those named in `disks`) into the new
    directory `directory`; see the module's documentation. `about` is recorded in
    `restore.json` (e.g. the target's name)."""
    started = clock()
    manifest = source.manifest(point_id)
    chosen = _choose(manifest.disks, disks, point_id)
    _check_destination(directory)
    stored_files = {f.name for f in manifest.files}
    description = _description(source, point_id) if DESCRIPTION in stored_files else {}
    names = _image_names([d.name for d in chosen], description)
    for name in stored_files:
        if not _SAFE_NAME.fullmatch(name):
            raise RepositoryError(f"restore point {point_id!r} holds a file named {name!r}, "
                                  "which is not a plain file name; refusing to restore it")
    taken = set(stored_files) | {REPORT}
    for stem in names.values():
        for made in (f"{stem}.vmdk", f"{stem}-flat.vmdk"):
            if made in taken:
                raise RepositoryError(f"restore point {point_id!r}: the disk file {made!r} "
                                      "would have the name of another file of the point")
            taken.add(made)

    _clear_leftovers(directory)
    staging = directory.parent / f"{_staging_prefix(directory)}{os.getpid()}"
    try:
        staging.mkdir()
    except OSError as exc:
        raise VmkeepError(f"cannot restore into {directory}: {exc.strerror}") from None
    try:
        restored: list[RestoredDisk] = []
        for record in chosen:
            disk = _restore_disk(source, point_id, record.name, record.size,
                                 names[record.name], staging, clock)
            restored.append(disk)
            on_disk(disk)
        changes: list[str] = []
        for name in sorted(stored_files):
            data = source.read_file(point_id, name)
            if name.lower().endswith(".vmx"):
                data, changed = point_vmx_at(data, [d.descriptor or d.image for d in restored])
                changes.extend(f"{name}: {c}" for c in changed)
            _write(staging / name, data)
        report = RestoreReport(point_id, directory, tuple(restored), tuple(sorted(stored_files)),
                               tuple(changes), clock() - started, dict(about or {}))
        _write(staging / REPORT, json.dumps(report.to_json(), indent=2).encode() + b"\n")
        _fsync_dir(staging)
        if directory.exists():
            directory.rmdir()  # empty, checked above; rename needs it gone
        staging.rename(directory)
        _fsync_dir(directory.parent)
    except OSError as exc:  # a full disk, a directory made meanwhile by someone else …
        shutil.rmtree(staging, ignore_errors=True)
        raise VmkeepError(f"restore into {directory} failed, nothing was left behind: "
                          f"{exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _staging_prefix(directory: Path) -> str:
    return f".{directory.name}.vmkeep-restore-"


def _clear_leftovers(directory: Path) -> None:
    """Remove staging directories of restores into `directory` whose process is gone (they
    were killed); one of a restore still running is left alone."""
    prefix = _staging_prefix(directory)
    if not directory.parent.is_dir():
        return
    for entry in directory.parent.iterdir():
        pid = entry.name.removeprefix(prefix)
        if entry.name.startswith(prefix) and pid.isdigit() and not process_running(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _choose(stored: Sequence[Any], wanted: Sequence[str], point_id: str) -> list[Any]:
    if not wanted:
        return list(stored)
    by_name = {d.name: d for d in stored}
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        listed = ", ".join(by_name) or "none"
        raise UsageError(f"restore point {point_id!r} has no disk {unknown[0]!r} "
                         f"(disks: {listed})")
    return [by_name[w] for w in dict.fromkeys(wanted)]


def _check_destination(directory: Path) -> None:
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise UsageError(f"{directory} exists and is not a directory; choose a new one")
    if directory.is_dir() and any(directory.iterdir()):
        raise UsageError(f"{directory} is not empty; restore into a new or empty directory "
                         "(nothing is ever overwritten)")
    if not directory.parent.is_dir():
        raise UsageError(f"{directory.parent} does not exist")


def _description(source: RestoreSource, point_id: str) -> dict[str, Any]:
    try:
        body = json.loads(source.read_file(point_id, DESCRIPTION))
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _image_names(disk_names: Sequence[str], description: Mapping[str, Any]) -> dict[str, str]:
    """Each disk's file stem: its file name at export time when that is a plain, unique
    name (`[ds] vm1/vm1_1.vmdk` → `vm1_1`), else its name in the point (`disk-2001`)."""
    exported: dict[str, str] = {}
    for entry in description.get("disks", ()) or ():
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            exported[f"disk-{entry.get('key')}"] = _base_name(entry["file"])
    stems: dict[str, str] = {}
    used: set[str] = set()
    for name in disk_names:
        base = exported.get(name, "")
        stem = base[: -len(".vmdk")] if base.lower().endswith(".vmdk") else ""
        if not stem or stem in used or not _SAFE_NAME.fullmatch(stem):
            stem = name if _SAFE_NAME.fullmatch(name) else f"disk-{len(stems)}"
        while stem in used:
            stem += "_"
        used.add(stem)
        stems[name] = stem
    return stems


def _base_name(path: str) -> str:
    """The file name of a datastore path (`[ds] a/b.vmdk`), a POSIX or a Windows path."""
    path = path.rsplit("]", 1)[-1].strip()
    return PureWindowsPath(PurePosixPath(path).name).name


def _restore_disk(source: RestoreSource, point_id: str, name: str, size: int, stem: str,
                  staging: Path, clock: Callable[[], float]) -> RestoredDisk:
    began = clock()
    image = f"{stem}-flat.vmdk"
    with open(staging / image, "xb") as out:
        written = source.open_disk(point_id, name).read_into(out)
        out.flush()
        os.fsync(out.fileno())
    if written != size:
        raise VmkeepError(f"restore point {point_id!r} disk {name!r}: wrote {written} bytes "
                          f"of {size}")
    descriptor_name: str | None = None
    if size % SECTOR == 0:
        descriptor_name = f"{stem}.vmdk"
        _write(staging / descriptor_name, descriptor(image, size).encode())
    return RestoredDisk(name, image, descriptor_name, size, clock() - began)


def descriptor(image: str, size: int) -> str:
    """The text descriptor of a flat (preallocated) VMDK whose data is the file `image`.

    `createType="vmfs"`, so that ESXi opens the pair where it is uploaded to a datastore
    (qemu-img and VMware's converters read it too). The geometry is the one given to SCSI
    disks (255 heads, 63 sectors per track); the guest sees the capacity, not the geometry.
    """
    sectors = size // SECTOR
    cylinders = max(1, min(65535, sectors // (255 * 63)))
    return "\n".join([
        "# Disk DescriptorFile",
        "version=1",
        'encoding="UTF-8"',
        "CID=fffffffe",
        "parentCID=ffffffff",
        'createType="vmfs"',
        "",
        "# Extent description",
        f'RW {sectors} VMFS "{image}"',
        "",
        "# The Disk Data Base",
        "#DDB",
        "",
        'ddb.adapterType = "lsilogic"',
        f'ddb.geometry.cylinders = "{cylinders}"',
        'ddb.geometry.heads = "255"',
        'ddb.geometry.sectors = "63"',
        'ddb.virtualHWVersion = "4"',
        "",
    ])


def point_vmx_at(vmx: bytes, restored: Sequence[str]) -> tuple[bytes, list[str]]:
    """The .vmx with each disk file name that stands for a restored disk set to that disk's
    descriptor: a snapshot delta (`vm1-000001.vmdk`) stands for its base (`vm1.vmdk`), a
    path in another folder for its file name; a disk restored under a delta's name (the VM
    had a snapshot of its own) is found by that base too. Other lines are kept byte for
    byte."""
    wanted = {r.lower(): r for r in restored}
    for r in restored:  # exported as a delta (the VM had a snapshot): its base names it too
        chained = _DELTA.match(r)
        if chained:
            wanted.setdefault(f"{chained.group(1)}.vmdk".lower(), r)
    lines = vmx.split(b"\n")
    changes: list[str] = []
    for i, raw in enumerate(lines):
        try:
            line = raw.decode()
        except UnicodeDecodeError:
            continue
        match = _VMX_DISK.match(line)
        if not match:
            continue
        current = match.group(2)
        base = _base_name(current)
        delta = _DELTA.match(base)
        for candidate in (base, f"{delta.group(1)}.vmdk" if delta else ""):
            new = wanted.get(candidate.lower())
            if new is not None:
                break
        else:
            continue
        if new != current:
            lines[i] = f"{match.group(1)}{new}{match.group(3)}".encode()
            key = line.split("=", 1)[0].strip()
            changes.append(f"{key} {current} -> {new}")
    return b"\n".join(lines), changes


def _write(path: Path, data: bytes) -> None:
    with open(path, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

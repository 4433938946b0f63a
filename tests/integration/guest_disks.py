"""Partitioned guest disks built with the real tools, for file-level restore tests.

    gpt_ext4(image, tree, size)          GPT, partition 1: ext4 made with `mkfs.ext4 -d` at
                                         an offset (no loop device)
    mbr_ntfs_fat(image, ntfs, fat, size) MBR, partition 1: NTFS (`mkntfs`, filled through an
                                         ntfs-3g FUSE mount), partition 2: FAT (`mkfs.fat
                                         --offset`, `mmd`/`mcopy -i IMG@@OFFSET`)
    snapshot_tree(root)                  {path: Item} of a directory as the guest sees it

Trees are written from `Spec`s: {path: bytes | Link(target) | Sparse(size, {offset: bytes})}.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
SECTOR = 512
START = 2048  # first partition at 1 MiB, as every partitioning tool does


@dataclass(frozen=True)
class Link:
    target: str


@dataclass(frozen=True)
class Sparse:
    size: int
    data: Mapping[int, bytes]


Spec = Mapping[str, "bytes | Link | Sparse"]


@dataclass(frozen=True)
class Item:
    type: str  # file | dir | symlink
    size: int
    data: bytes | None = None  # a file's bytes
    target: str | None = None
    mode: int = 0
    mtime: int = 0


def blob(seed: str, size: int) -> bytes:
    """Deterministic incompressible bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def partitioned(image: Path, size: int, table: str) -> None:
    """A sparse file of `size` bytes with the partition table `table` (sfdisk's input)."""
    with open(image, "wb") as out:
        out.truncate(size)
    run("sfdisk", "-q", image, input=table.encode())


def tools_missing(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None
            and not Path("/usr/sbin", t).exists() and not Path("/sbin", t).exists()]


def run(*args: str | Path, input: bytes | None = None) -> None:
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin",
           "LC_ALL": "C.UTF-8", "MTOOLS_SKIP_CHECK": "1"}
    result = subprocess.run([str(a) for a in args], input=input, capture_output=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed: {result.stderr.decode()}")


def write_tree(root: Path, spec: Spec, mtime: int | None = None) -> None:
    """Write `spec` under `root` (directories made as needed); files get `mtime` if given."""
    for path, what in sorted(spec.items()):
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, Link):
            os.symlink(what.target, target)
            continue
        if isinstance(what, Sparse):
            with open(target, "wb") as out:
                out.truncate(what.size)
                for offset, data in what.data.items():
                    out.seek(offset)
                    out.write(data)
        else:
            target.write_bytes(what)
        if mtime is not None:
            os.utime(target, (mtime, mtime))


def snapshot_tree(root: Path) -> dict[str, Item]:
    """Every entry below `root` as {"/a/b": Item}, symlinks not followed."""
    out: dict[str, Item] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = "/" + full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = Item("symlink", 0, target=os.readlink(full), mtime=int(st.st_mtime))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = Item("dir", 0, mode=stat.S_IMODE(st.st_mode), mtime=int(st.st_mtime))
            else:
                out[rel] = Item("file", st.st_size, full.read_bytes(),
                                mode=stat.S_IMODE(st.st_mode), mtime=int(st.st_mtime))
    return out


def gpt_ext4(image: Path, tree: Path, size: int = 48 * MiB, fs_size: int = 32 * MiB) -> int:
    """A GPT disk whose partition 1 holds an ext4 file system made from directory `tree`;
    returns the partition's byte offset."""
    partitioned(image, size, f"label: gpt\nstart={START}, size={fs_size // SECTOR}, type=L\n")
    run("mkfs.ext4", "-q", "-F", "-E", f"offset={START * SECTOR}", "-d", tree, image,
        f"{fs_size // 1024}k")
    return START * SECTOR


def mbr_ntfs_fat(image: Path, ntfs: Spec, fat: Spec, work: Path, *, mtime: int,
                 size: int = 40 * MiB, part: int = 16 * MiB) -> dict[str, dict[str, Item]]:
    """An MBR disk: partition 1 NTFS holding `ntfs`, partition 2 FAT holding `fat`. Returns
    the trees as each file system holds them (read back through ntfs-3g and the FAT source
    directory). Needs FUSE (ntfs-3g writes NTFS through it)."""
    second = START + part // SECTOR
    partitioned(image, size, f"label: dos\nstart={START}, size={part // SECTOR}, type=7\n"
                f"start={second}, size={part // SECTOR}, type=c\n")
    ntfs_image = work / "ntfs.part"
    with open(ntfs_image, "wb") as out:
        out.truncate(part)
    run("mkntfs", "-q", "-F", "-Q", "-s", "512", "-p", str(START), "-H", "255", "-S", "63",
        "-L", "vmkeep", ntfs_image)
    mount = work / "ntfs-mount"
    mount.mkdir()
    run("ntfs-3g", ntfs_image, mount)
    try:
        write_tree(mount, ntfs, mtime)
        ntfs_tree = snapshot_tree(mount)
    finally:
        run("fusermount3", "-u", mount)
    with open(ntfs_image, "rb") as src, open(image, "r+b") as out:
        out.seek(START * SECTOR)
        shutil.copyfileobj(src, out)
    offset = second * SECTOR
    run("mkfs.fat", "-F", "16", "-n", "VMKEEP", "--offset", str(second), image,
        str(part // 1024))
    fat_root = work / "fat-source"
    write_tree(fat_root, fat, mtime)
    target = f"{image}@@{offset}"
    for path in sorted(p for p in snapshot_tree(fat_root)):
        local = fat_root / path.lstrip("/")
        if local.is_dir():
            run("mmd", "-i", target, f"::{path}")
        else:
            run("mcopy", "-m", "-i", target, local, f"::{path}")
    return {"ntfs": ntfs_tree, "fat": snapshot_tree(fat_root)}

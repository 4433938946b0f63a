"""Packs written around the page cache (`O_DIRECT`, `reconciler/adapters/repository/direct.py`):
the same bytes as through the page cache, on any filesystem, whether it takes direct writes,
refuses them at the open or refuses them at the first write."""

from __future__ import annotations

import errno
import fcntl
import io
import mmap
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from reconciler.adapters.repository import Repository
from reconciler.adapters.repository import direct as direct_module
from reconciler.adapters.repository import packs as packs_module
from reconciler.adapters.repository.direct import (
    LOCAL_DISK_FILESYSTEMS,
    STAGE_BYTES,
    filesystem_type,
    wants_direct,
)
from reconciler.errors import RepositoryError

from .disks import CHUNK, SLOT, VM, noise, point_id, read_disk, text

#: Big enough that a pack fills the direct writes' buffer twice and leaves an odd tail.
DATA = noise("direct", 2 * STAGE_BYTES + 3 * CHUNK) + text("direct", 5 * CHUNK + 123)


def export_with(path: Path, setting: str) -> tuple[Repository, bool]:
    """One export of DATA; the repository and whether its packs were written direct."""
    repo = Repository.open(path, chunk_size=CHUNK, pack_size=4 * STAGE_BYTES, threads=2,
                           direct_writes=setting)
    with repo.begin_point(point_id(1), "nightly", VM, SLOT) as writer:
        writer.add_disk("d0", io.BytesIO(DATA), size=len(DATA))
        writer.commit("crash")
        return repo, writer.packs.direct


def local_disk(path: Path) -> bool:
    return filesystem_type(path) in LOCAL_DISK_FILESYSTEMS


@pytest.mark.parametrize("setting", ["on", "off", "auto"])
def test_packs_read_back_as_written_whether_or_not_they_bypass_the_page_cache(
    tmp_path: Path, setting: str,
) -> None:
    repo, direct = export_with(tmp_path / "repo", setting)
    assert read_disk(repo, point_id(1), "d0") == DATA
    assert repo.verify().ok
    [pack] = list((tmp_path / "repo").glob("packs/*/*.pack"))
    [summary] = repo.pack_summaries()
    assert pack.stat().st_size == summary.size  # not padded: the tail is written as it is
    if setting == "off":
        assert not direct
    elif local_disk(tmp_path):  # elsewhere the filesystem decides (and falls back)
        assert direct
    repo.close()


def test_a_filesystem_that_refuses_direct_writes_at_the_open_gets_them_through_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_open = os.open

    def refusing(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(direct_module.os, "open", refusing)
    repo, direct = export_with(tmp_path / "repo", "on")
    assert not direct
    assert read_disk(repo, point_id(1), "d0") == DATA
    repo.close()


def test_a_filesystem_that_refuses_the_first_direct_write_gets_it_again_through_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_write = packs_module._write_all
    refused = [0]

    def refusing(fd: int, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused[0] += 1
            os.write(fd, mmap.mmap(-1, 4096))  # some of it written, then the refusal
            raise OSError(errno.EINVAL, "Invalid argument")
        real_write(fd, parts)

    monkeypatch.setattr(packs_module, "_write_all", refusing)
    repo, direct = export_with(tmp_path / "repo", "on")
    if local_disk(tmp_path):
        assert refused == [1]
    assert not direct
    assert read_disk(repo, point_id(1), "d0") == DATA
    assert repo.verify().ok
    repo.close()


def test_a_pack_whose_last_write_fails_is_dropped_not_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_write = packs_module._write_all

    def full(fd: int, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        if not fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:  # the tail, or every write
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, parts)

    monkeypatch.setattr(packs_module, "_write_all", full)
    with pytest.raises(OSError, match="No space"):
        export_with(tmp_path / "repo", "on")
    repo = Repository.open(tmp_path / "repo")
    assert list(repo.pack_summaries()) == []
    assert list((tmp_path / "repo" / "tmp").iterdir()) == []  # no pack left half written
    repo.close()


MOUNTINFO = """\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:25 / /dev/shm rw,nosuid,nodev shared:2 - tmpfs tmpfs rw
41 22 0:40 / /mnt/backup rw,relatime shared:3 - nfs4 nas:/export rw,vers=4.2
42 41 253:1 / /mnt/backup/local rw,relatime shared:4 - xfs /dev/vdb rw
43 22 0:41 / /mnt/back\\040up rw,relatime shared:5 - btrfs /dev/vdc rw
44 22 0:42 / /srv/a\\134b rw,relatime shared:6 - f2fs /dev/vdd rw
"""


@pytest.mark.parametrize(("path", "kind"), [
    ("/var/lib/vmkeep", "ext4"),
    ("/dev/shm/repo", "tmpfs"),
    ("/mnt/backup/vmkeep", "nfs4"),
    ("/mnt/backup/local/vmkeep", "xfs"),  # the deepest mount that holds the path
    ("/mnt/backupx/vmkeep", "ext4"),  # a mount point is a whole path component
    ("/mnt/back up/vmkeep", "btrfs"),  # mountinfo escapes spaces
    ("/srv/a\\b/vmkeep", "f2fs"),  # and backslashes
    ("/mnt/backup", "nfs4"),
])
def test_the_filesystem_of_a_path_is_that_of_the_deepest_mount_that_holds_it(
    path: str, kind: str,
) -> None:
    assert filesystem_type(path, MOUNTINFO) == kind


@pytest.mark.parametrize(("setting", "path", "direct"), [
    ("auto", "/var/lib/vmkeep", True),
    ("auto", "/mnt/backup/vmkeep", False),  # never on a network share by itself
    ("auto", "/dev/shm/repo", False),
    ("on", "/mnt/backup/vmkeep", True),
    ("off", "/var/lib/vmkeep", False),
])
def test_auto_writes_direct_on_a_local_disk_only(setting: str, path: str, direct: bool) -> None:
    assert wants_direct(setting, path, MOUNTINFO) is direct


def test_an_unknown_direct_writes_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="direct writes must be one of auto, on, off"):
        Repository.open(tmp_path / "repo", direct_writes="always")
    assert not (tmp_path / "repo").exists()

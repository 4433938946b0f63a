"""An export leaves its sealed packs out of the page cache (the kernel may drop them once
they are durable): the next pack is written into freed pages, not fresh memory."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .disks import CHUNK, export, noise, open_repo, point_id, read_disk


def resident_bytes(path: Path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


def file_system(path: Path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux's fincore")
def test_the_packs_of_a_committed_export_are_not_left_in_the_page_cache(
    tmp_path: Path,
) -> None:
    if file_system(tmp_path) in {"tmpfs", "ramfs"}:
        pytest.skip("a memory file system keeps its pages: they are the files")
    data = noise("page cache", 100 * CHUNK)  # incompressible: about six 64 KiB packs
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"d0": data})
    packs = sorted(tmp_path.glob("packs/*/*.pack"))
    assert len(packs) > 2
    assert [resident_bytes(p) for p in packs] == [0] * len(packs)
    assert read_disk(repo, point_id(1), "d0") == data  # read back from the disk
    repo.close()

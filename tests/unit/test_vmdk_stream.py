"""The streamOptimized VMDK a restore sends, read back by qemu-img (not vmkeep's reader) and
by vmkeep's own reader: the same disk, zeros left out of the stream."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.adapters.vmdk import StreamOptimizedReader
from reconciler.adapters.vmdk_stream import GRAIN, StreamStats, stream_optimized

MiB = 1 << 20


def disk() -> bytes:
    text = (b"vmkeep restores disks as streamOptimized VMDKs\n" * 50000)[: 2 * MiB]
    return os.urandom(MiB) + bytes(3 * MiB) + text + os.urandom(GRAIN // 2) + bytes(
        MiB - GRAIN // 2 + 512 * 3)


def blocks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("block", [8 * MiB, 3 * GRAIN + 512])  # grain-aligned or not
def test_qemu_img_reads_the_stream_as_the_disk(tmp_path: Path, level: int, block: int) -> None:
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is missing: scripts/bootstrap installs qemu-utils")
    data = disk()
    stats = StreamStats()
    stream = tmp_path / "disk.vmdk"
    stream.write_bytes(b"".join(stream_optimized(blocks(data, block), len(data), level=level,
                                                 stats=stats)))
    info = subprocess.run(["qemu-img", "info", "--output=json", str(stream)],
                          capture_output=True, text=True, check=True).stdout
    assert '"format": "vmdk"' in info and f'"virtual-size": {len(data)}' in info
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw", str(stream), str(raw)],
                   check=True)
    assert raw.read_bytes() == data
    assert StreamOptimizedReader(io.BytesIO(stream.read_bytes())).read() == data
    zero_grains = sum(1 for i in range(0, len(data), GRAIN)
                      if not any(data[i : i + GRAIN]))
    assert stats.zero_grains == zero_grains and stats.sent == stream.stat().st_size
    assert stats.sent < (len(data) - zero_grains * GRAIN) * 1.05  # zeros are not sent


def test_a_disk_that_is_not_whole_sectors_is_refused() -> None:
    with pytest.raises(ValueError, match="not a multiple of 512"):
        list(stream_optimized([b"x" * 1000], 1000))


def test_a_disk_shorter_than_its_size_is_an_error_not_a_short_stream() -> None:
    with pytest.raises(ValueError, match="gave 4096 bytes, expected 8192"):
        list(stream_optimized([bytes(4096)], 8192))

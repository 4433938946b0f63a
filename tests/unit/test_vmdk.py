"""Reading streamOptimized VMDKs (what vCenter's NFC export serves) as flat disks.

`stream_optimized` below writes the format as the VMware Virtual Disk Format 5.0 describes
it — header, embedded descriptor, grain markers, grain tables, grain directory, footer, end
marker — so the reader is checked against whole files, not just pieces.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.adapters.vmdk import (
    SECTOR,
    StreamOptimizedReader,
    VmdkError,
    is_sparse_vmdk,
)

GRAIN_SECTORS = 128  # 64 KiB grains, as vSphere writes them
GRAIN = GRAIN_SECTORS * SECTOR


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % SECTOR)


def _metadata(kind: int, body: bytes) -> bytes:
    body = _pad(body)
    marker = struct.pack("<QII", len(body) // SECTOR, 0, kind) + bytes(SECTOR - 16)
    return marker + body


def stream_optimized(disk: bytes, *, raw_deflate: bool = False, version: int = 3,
                     tables: bool = True) -> bytes:
    """A streamOptimized VMDK of `disk` (its length a multiple of 512)."""
    sectors = len(disk) // SECTOR
    descriptor = _pad(b'# Disk DescriptorFile\nversion=1\ncreateType="streamOptimized"\n')
    overhead = 1 + len(descriptor) // SECTOR

    def header(gd_offset: int) -> bytes:
        fields = struct.pack(
            "<4sIIQQQQIQQQ?ccccH", b"KDMV", version, 0x30001, sectors, GRAIN_SECTORS, 1,
            len(descriptor) // SECTOR, 512, 0, gd_offset, overhead, False, b"\n", b" ",
            b"\r", b"\n", 1,
        )
        return _pad(fields)

    out = bytearray(header(0xFFFFFFFFFFFFFFFF) + descriptor)
    table: list[int] = []
    for start in range(0, len(disk), GRAIN):
        grain = disk[start : start + GRAIN]
        if not grain.strip(b"\0"):
            table.append(0)
            continue
        if raw_deflate:
            packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            data = packer.compress(grain) + packer.flush()
        else:
            data = zlib.compress(grain)
        table.append(len(out) // SECTOR)
        out += _pad(struct.pack("<QI", start // SECTOR, len(data)) + data)
    if tables:
        out += _metadata(1, struct.pack(f"<{len(table)}I", *table))
        gd_at = len(out) // SECTOR + 1
        out += _metadata(2, struct.pack("<I", gd_at - 1))
        out += _metadata(3, header(gd_at))
    out += struct.pack("<QII", 0, 0, 0) + bytes(SECTOR - 16)
    return bytes(out)


def disk_of(pattern: list[tuple[int, bytes]], size: int) -> bytes:
    disk = bytearray(size)
    for offset, data in pattern:
        disk[offset : offset + len(data)] = data
    return bytes(disk)


SAMPLE = disk_of([(0, b"boot" * 100), (5 * GRAIN + 7, b"\x01" * 3000),
                  (9 * GRAIN - 10, b"tail of grain 8 and head of 9")], 12 * GRAIN)


def test_a_stream_optimized_download_reads_as_the_flat_disk() -> None:
    vmdk = stream_optimized(SAMPLE)
    assert is_sparse_vmdk(vmdk) and not is_sparse_vmdk(SAMPLE)
    reader = StreamOptimizedReader(io.BytesIO(vmdk))
    assert reader.size == len(SAMPLE)
    assert reader.read() == SAMPLE
    assert reader.read(10) == b""


@pytest.mark.parametrize("step", [1, 511, 4096, GRAIN, GRAIN + 1, 10 * GRAIN])
def test_any_read_size_gives_the_same_bytes(step: int) -> None:
    reader = StreamOptimizedReader(io.BytesIO(stream_optimized(SAMPLE)))
    parts = []
    while chunk := reader.read(step):
        parts.append(chunk)
    assert b"".join(parts) == SAMPLE


def test_raw_deflate_grains_and_streams_without_tables_read_too() -> None:
    for vmdk in (stream_optimized(SAMPLE, raw_deflate=True),
                 stream_optimized(SAMPLE, tables=False)):
        assert StreamOptimizedReader(io.BytesIO(vmdk)).read() == SAMPLE


def test_seeking_forward_skips_grains_and_seeking_back_is_refused() -> None:
    reader = StreamOptimizedReader(io.BytesIO(stream_optimized(SAMPLE)))
    reader.seek(5 * GRAIN)
    assert reader.read(GRAIN) == SAMPLE[5 * GRAIN : 6 * GRAIN]
    reader.seek(9 * GRAIN - 10)
    assert reader.read(20) == SAMPLE[9 * GRAIN - 10 : 9 * GRAIN + 10]
    with pytest.raises(VmdkError, match="cannot seek back"):
        reader.seek(0)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda v: v[: len(v) - SECTOR], "without an end-of-stream marker"),
        (lambda v: v[:2000], "ended at byte"),
        (lambda v: b"XXXX" + v[4:], "no KDMV header"),
        (lambda v: v[:4] + struct.pack("<I", 1) + v[8:], "not a streamOptimized VMDK"),
    ],
    ids=["no end marker", "cut short", "not a VMDK", "monolithicSparse, not stream"],
)
def test_a_damaged_download_is_an_error_not_wrong_data(damage, message) -> None:
    with pytest.raises(VmdkError, match=message):
        StreamOptimizedReader(io.BytesIO(damage(stream_optimized(SAMPLE)))).read()


def test_a_grain_that_does_not_inflate_to_its_size_is_an_error() -> None:
    vmdk = bytearray(stream_optimized(SAMPLE))
    first = bytes(SAMPLE[:GRAIN])
    start = vmdk.index(zlib.compress(first))
    vmdk[start + 40] ^= 0xFF
    with pytest.raises(VmdkError, match="grain at byte 0"):
        StreamOptimizedReader(io.BytesIO(bytes(vmdk))).read()


@settings(max_examples=60, deadline=None)
@given(
    grains=st.integers(1, 20),
    tail_sectors=st.integers(0, GRAIN_SECTORS - 1),
    writes=st.lists(st.tuples(st.integers(0, 10**9), st.binary(min_size=1, max_size=3000)),
                    max_size=12),
    seeks=st.lists(st.integers(0, 10**9), max_size=5),
)
def test_random_sparse_disks_round_trip_with_forward_seeks(grains, tail_sectors, writes,
                                                           seeks) -> None:
    size = grains * GRAIN + tail_sectors * SECTOR  # the last grain may be short
    disk = disk_of([(o % size, d[: size - o % size]) for o, d in writes], size)
    reader = StreamOptimizedReader(io.BytesIO(stream_optimized(disk)))
    assert reader.size == size
    for wanted in sorted(s % size for s in seeks):
        target = max(wanted, reader.tell())
        reader.seek(target)
        assert reader.read(777) == disk[target : target + 777]
    rest_at = reader.tell()
    assert reader.read() == disk[rest_at:]

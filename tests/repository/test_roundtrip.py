"""Properties of the write and read paths: byte-exact round trips, honest dedup, CBT input."""

from __future__ import annotations

import io
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.adapters.repository import Repository
from reconciler.adapters.repository.packs import FLAG_RAW, FLAG_ZSTD
from reconciler.errors import RepositoryError

from .disks import (
    CHUNK,
    SLOT,
    VM,
    ForwardOnly,
    export,
    export_changed,
    noise,
    open_repo,
    point_id,
    read_disk,
    text,
)

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A disk is a list of segments: zeros, noise, compressible text, or a copy of an earlier
# segment (so identical chunks appear at different places and in different disks).
segment = st.tuples(
    st.sampled_from(["zero", "noise", "text", "repeat"]),
    st.integers(min_value=0, max_value=3 * CHUNK + 17),
    st.integers(min_value=0, max_value=2**32),
)


def build(segments: list[tuple[str, int, int]]) -> bytes:
    parts: list[bytes] = []
    for kind, length, seed in segments:
        if kind == "zero":
            parts.append(bytes(length))
        elif kind == "noise":
            parts.append(noise(seed, length))
        elif kind == "text":
            parts.append(text(seed, length))
        elif parts:
            parts.append(parts[seed % len(parts)][:length])
    return b"".join(parts)


disks = st.lists(segment, max_size=8).map(build)


@PROPERTY
@given(data=disks)
def test_any_disk_reads_back_byte_exact_by_stream_file_and_offset(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = open_repo(Path(tmp))
        export(repo, point_id(1), {"d0": data})
        reader = repo.open_disk(point_id(1), "d0")
        assert reader.size == len(data)
        assert b"".join(reader) == data
        out = Path(tmp) / "restored.img"
        with open(out, "wb") as f:
            assert reader.read_into(f) == len(data)
        assert out.read_bytes() == data
        rng = random.Random(len(data))
        for _ in range(5):
            offset = rng.randrange(0, len(data) + 2)
            length = rng.randrange(0, 3 * CHUNK)
            assert reader.read(offset, length) == data[offset : offset + length]
        repo.close()


@PROPERTY
@given(first=disks, second=disks)
def test_dedup_never_merges_different_data(first: bytes, second: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = open_repo(Path(tmp))
        export(repo, point_id(1), {"a": first, "b": second})
        export(repo, point_id(2), {"a": second, "b": first})
        assert read_disk(repo, point_id(1), "a") == first
        assert read_disk(repo, point_id(1), "b") == second
        assert read_disk(repo, point_id(2), "a") == second
        assert read_disk(repo, point_id(2), "b") == first
        distinct = {
            d[i : i + CHUNK]
            for d in (first, second)
            for i in range(0, len(d), CHUNK)
            if d[i : i + CHUNK].strip(b"\0")
        }
        data_chunks = sum(1 for s in repo.pack_summaries() for _, loc in s.entries if loc.kind == 0)
        assert data_chunks == len(distinct)
        repo.close()


@PROPERTY
@given(
    base=disks,
    changes=st.lists(
        st.tuples(st.integers(0, 12 * CHUNK), st.integers(1, 2 * CHUNK), st.integers()),
        max_size=5,
    ),
    grow=st.integers(-CHUNK - 5, CHUNK + 5),
)
def test_changed_extents_give_the_same_manifest_as_a_full_read(
    base: bytes, changes: list[tuple[int, int, int]], grow: int
) -> None:
    size = max(0, len(base) + grow)
    new = bytearray(base[:size].ljust(size, b"\0"))
    extents: list[tuple[int, int]] = []
    for offset, length, seed in changes:
        if offset >= size:
            continue
        length = min(length, size - offset)
        new[offset : offset + length] = noise(seed, length)
        extents.append((offset, length))
    if size > len(base):  # a grown disk: vSphere reports the new area as changed when written
        extents.append((len(base), size - len(base)))
    with tempfile.TemporaryDirectory() as tmp:
        repo = open_repo(Path(tmp))
        export(repo, point_id(1), {"d0": base})
        export(repo, point_id(2), {"d0": bytes(new)})
        # changed extents are read strictly forward
        result = export_changed(repo, point_id(3), ForwardOnly(bytes(new)), size, extents,
                                point_id(1))
        by_full = repo.manifest(point_id(2)).disk("d0")
        by_cbt = repo.manifest(point_id(3)).disk("d0")
        assert (by_cbt.digest, by_cbt.tables, by_cbt.chunks) == (
            by_full.digest,
            by_full.tables,
            by_full.chunks,
        )
        assert read_disk(repo, point_id(3), "d0") == bytes(new)
        assert result.incremental
        touched = sum(min(size, o + n) - o for o, n in extents)
        assert result.read_bytes <= touched + 2 * CHUNK * (len(extents) + 1)
        repo.close()


def test_only_changed_bytes_are_read_with_a_changed_extent_list(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    base = noise("base", 100 * CHUNK)
    export(repo, point_id(1), {"d0": base})
    new = bytearray(base)
    new[50 * CHUNK + 10 : 50 * CHUNK + 20] = b"x" * 10

    class Counting(io.BytesIO):
        consumed = 0

        def read(self, size: int | None = -1, /) -> bytes:
            data = super().read(size)
            Counting.consumed += len(data)
            return data

    result = export_changed(
        repo, point_id(2), Counting(bytes(new)), len(new), [(50 * CHUNK + 10, 10)], point_id(1)
    )
    assert Counting.consumed == 10 == result.read_bytes  # only the changed bytes
    assert result.new_chunks == 1
    assert read_disk(repo, point_id(2), "d0") == bytes(new)


def test_a_disk_of_unknown_size_is_read_to_its_end(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    data = text("unknown", 5 * CHUNK + 3)
    with repo.begin_point(point_id(1), "nightly", VM, SLOT) as w:
        result = w.add_disk("d0", io.BytesIO(data))
        w.commit("crash")
    assert result.size == len(data)
    assert read_disk(repo, point_id(1), "d0") == data


def test_all_zero_and_empty_disks_store_no_data_chunks(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"zero": bytes(9 * CHUNK + 1), "empty": b""})
    assert read_disk(repo, point_id(1), "zero") == bytes(9 * CHUNK + 1)
    assert read_disk(repo, point_id(1), "empty") == b""
    kinds = [loc.kind for s in repo.pack_summaries() for _, loc in s.entries]
    assert 0 not in kinds  # only the chunk table was stored
    assert repo.manifest(point_id(1)).disk("zero").zero_chunks == 10


def test_small_files_round_trip_with_the_point(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    vmx = b'displayName = "vm1"\n' * 500
    export(repo, point_id(1), {}, {"vm1.vmx": vmx, "vm1.nvram": b"", "vm.json": b"{}"})
    assert repo.read_file(point_id(1), "vm1.vmx") == vmx
    assert repo.read_file(point_id(1), "vm1.nvram") == b""
    assert repo.read_file(point_id(1), "vm.json") == b"{}"


def test_the_second_export_of_an_unchanged_disk_adds_only_its_manifest(tmp_path: Path) -> None:
    repo = open_repo(tmp_path)
    data = noise("same", 40 * CHUNK)
    export(repo, point_id(1), {"d0": data})
    packs = set(repo.pack_ids())
    with repo.begin_point(point_id(2), "nightly", VM, SLOT) as w:
        result = w.add_disk("d0", io.BytesIO(data), size=len(data))
        w.commit("crash")
    assert result.new_chunks == 0 and result.stored_bytes == 0
    assert set(repo.pack_ids()) == packs


def test_repository_reopened_with_another_chunk_size_is_refused(tmp_path: Path) -> None:
    open_repo(tmp_path)
    with pytest.raises(RepositoryError, match="chunk size is fixed"):
        Repository.open(tmp_path, chunk_size=2 * CHUNK)


@pytest.mark.parametrize(
    ("contents", "flag"),
    [
        (noise("random", CHUNK), FLAG_RAW),
        (noise("1 % zeros", CHUNK - 40) + bytes(40), FLAG_RAW),  # saves under 3 %: not worth it
        (noise("10 % zeros", CHUNK - 410) + bytes(410), FLAG_ZSTD),
        (text("four symbols", CHUNK), FLAG_ZSTD),
    ],
    ids=["random", "1 % zeros", "10 % zeros", "text"],
)
def test_chunks_are_stored_raw_unless_zstd_saves_at_least_3_percent(
    tmp_path: Path, contents: bytes, flag: int
) -> None:
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"d0": contents})
    (cid,) = repo.open_disk(point_id(1), "d0").ids
    loc = repo._core.load_index(repair=False).get(cid)
    assert loc is not None and (loc.flags, loc.raw) == (flag, CHUNK)
    if flag == FLAG_RAW:
        assert loc.stored == CHUNK
        stored = repo._core.packs.read_stored(loc)
        assert stored == contents  # the bytes in the pack are the chunk itself
    else:
        assert loc.stored <= CHUNK - CHUNK // 32
    assert read_disk(repo, point_id(1), "d0") == contents

"""Many threads reading chunks from more packs than the reader keeps open at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reconciler.adapters.repository.packs import PackReader

from .disks import CHUNK, export, noise, open_repo, point_id


def test_reads_never_see_another_packs_bytes_when_open_files_are_evicted_or_closed(
    tmp_path: Path,
) -> None:
    repo = open_repo(tmp_path / "repo")
    data = noise("many-packs", 160 * CHUNK)  # incompressible: 10 packs of 64 KiB
    export(repo, point_id(1), {"d0": data})
    index = repo._core.refresh_index()
    ids = repo.open_disk(point_id(1), "d0").ids
    assert len({index.get(cid).pack for cid in ids}) >= 8  # type: ignore[union-attr]
    repo._core.packs = reader = PackReader(repo.layout, max_open=2)  # evictions on most reads

    def read_all(round_: int) -> int:
        order = ids[round_ % len(ids):] + ids[: round_ % len(ids)]
        for i, cid in enumerate(order):
            chunk = reader.read(cid, index.get(cid))  # type: ignore[arg-type]
            assert len(chunk) == CHUNK
            if i % 37 == round_ % 37:
                reader.close()  # what refresh_index does while others read
        return len(order)

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(read_all, range(24))) == 24 * len(ids)
    reader.close()
    repo.close()

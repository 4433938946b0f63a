"""The zstd level is a repository setting: level 1 for a repository created now, level 3 for
one whose descriptor names none (created before the setting), format version unchanged."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import zstandard

from reconciler.adapters.repository import DEFAULT_COMPRESSION_LEVEL, Repository
from reconciler.errors import RepositoryError

from .disks import CHUNK, PACK, export, point_id, text

DATA = text("level", CHUNK)  # one compressible chunk: its stored size tells the level


def stored_size(level: int) -> int:
    """Bytes a one-chunk disk stores: the zstd frame, and its 32-byte table stored raw."""
    return len(zstandard.ZstdCompressor(level=level).compress(DATA)) + 32


def descriptor(root: Path) -> dict[str, object]:
    body: dict[str, object] = json.loads((root / "vmkeep-repository.json").read_bytes())
    return body


def stored_by_export(root: Path, n: int, level: int | None = None) -> int:
    with Repository.open(root, chunk_size=CHUNK, pack_size=PACK, threads=2,
                         compression_level=level) as repo:
        point = export(repo, point_id(n), {"d0": DATA})
        return repo.manifest(point.id).disk("d0").stored_bytes


def test_the_levels_compared_here_give_different_sizes_for_the_test_chunk() -> None:
    assert len({stored_size(1), stored_size(3), stored_size(19)}) == 3


def test_a_new_repository_compresses_at_level_1_and_records_it_in_its_descriptor(
    tmp_path: Path,
) -> None:
    assert DEFAULT_COMPRESSION_LEVEL == 1
    assert stored_by_export(tmp_path, 1) == stored_size(1)
    body = descriptor(tmp_path)
    assert (body["compressionLevel"], body["format"]) == (1, 1)


def test_a_repository_whose_descriptor_names_no_level_keeps_compressing_at_level_3(
    tmp_path: Path,
) -> None:
    Repository.open(tmp_path, chunk_size=CHUNK).close()
    body = descriptor(tmp_path)
    del body["compressionLevel"]  # as vmkeep wrote it before the setting existed
    (tmp_path / "vmkeep-repository.json").write_text(json.dumps(body))
    assert stored_by_export(tmp_path, 1) == stored_size(3)
    assert "compressionLevel" not in descriptor(tmp_path)  # opening it changes nothing


def test_a_level_chosen_at_creation_is_kept_by_later_opens(tmp_path: Path) -> None:
    assert stored_by_export(tmp_path, 1, level=19) == stored_size(19)
    assert descriptor(tmp_path)["compressionLevel"] == 19
    with Repository.open(tmp_path) as repo:  # a point of new data: compressed at 19
        point = export(repo, point_id(2), {"d0": text("more", CHUNK)})
        assert repo.manifest(point.id).disk("d0").stored_bytes == len(
            zstandard.ZstdCompressor(level=19).compress(text("more", CHUNK))) + 32


def test_a_level_given_for_an_existing_repository_holds_for_that_session_only(
    tmp_path: Path,
) -> None:
    Repository.open(tmp_path, chunk_size=CHUNK).close()
    assert stored_by_export(tmp_path, 1, level=19) == stored_size(19)
    assert descriptor(tmp_path)["compressionLevel"] == 1


@pytest.mark.parametrize("level", [0, 23])
def test_an_out_of_range_level_is_refused_naming_the_repository(
    tmp_path: Path, level: int
) -> None:
    refused = rf"{re.escape(str(tmp_path))}.*level {level} must be between"
    with pytest.raises(RepositoryError, match=refused):
        Repository.open(tmp_path / "new", compression_level=level)
    Repository.open(tmp_path / "old").close()
    body = descriptor(tmp_path / "old")
    body["compressionLevel"] = level
    (tmp_path / "old" / "vmkeep-repository.json").write_text(json.dumps(body))
    with pytest.raises(RepositoryError, match=refused):
        Repository.open(tmp_path / "old")

"""Durability of directory entries, observed at the system-call level.

A new directory's name lives in its parent, so it survives a power loss only once the parent
is fsynced; until then a pack renamed into a fresh `packs/<xx>/` could vanish together with
its directory while the manifest that names it survived. These tests record every mkdir,
fsync and rename the repository makes and check the order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.repository.format import Layout, new_pack_id

from .disks import CHUNK, export, noise, open_repo, point_id

Event = tuple[str, Path]


class Recorder:
    """Wraps os.mkdir, os.fsync, os.replace and os.link (all threads) and logs what they
    touch; a link is logged as a "replace": both put a finished file in its place."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        mkdir, fsync, replace, link = os.mkdir, os.fsync, os.replace, os.link

        def logged_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
            mkdir(path, *args, **kwargs)
            self.events.append(("mkdir", Path(path).resolve()))

        def logged_fsync(fd: int) -> None:
            fsync(fd)
            self.events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))

        def logged_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            replace(src, dst, *args, **kwargs)
            self.events.append(("replace", Path(dst).resolve()))

        def logged_link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            link(src, dst, *args, **kwargs)
            self.events.append(("replace", Path(dst).resolve()))

        monkeypatch.setattr(os, "link", logged_link)
        monkeypatch.setattr(os, "mkdir", logged_mkdir)
        monkeypatch.setattr(os, "fsync", logged_fsync)
        monkeypatch.setattr(os, "replace", logged_replace)

    def first(self, kind: str, path: Path, after: int = -1) -> int:
        """Position of the first `kind` event on `path` after position `after`, or -1."""
        for i, event in enumerate(self.events):
            if i > after and event == (kind, path):
                return i
        return -1

    def commits(self, layout: Layout) -> list[int]:
        """Positions of manifest renames (or links) into `points/`."""
        points = layout.points.resolve()
        return [i for i, (k, p) in enumerate(self.events) if k == "replace" and p.parent == points]


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    rec = Recorder()
    rec.install(monkeypatch)
    yield rec


def test_every_directory_the_repository_creates_is_fsynced_into_its_parent_before_a_commit(
    tmp_path: Path, recorder: Recorder
) -> None:
    root = tmp_path.resolve() / "nested" / "deeper" / "repo"
    repo = open_repo(root)
    export(repo, point_id(1), {"d0": noise("one", 40 * CHUNK)})
    export(repo, point_id(2), {"d0": noise("two", 40 * CHUNK)})
    repo.delete_point(point_id(1))
    repo.gc()  # rewrites into new packs, which may need a new directory too

    made = [(i, path) for i, (kind, path) in enumerate(recorder.events) if kind == "mkdir"]
    names = {path.relative_to(tmp_path.resolve()).as_posix() for _, path in made}
    assert {"nested", "nested/deeper", "nested/deeper/repo", "nested/deeper/repo/packs"} <= names
    assert any(name.startswith("nested/deeper/repo/packs/") for name in names)
    first_commit = recorder.commits(Layout(root))[0]
    for i, path in made:
        synced = recorder.first("fsync", path.parent, after=i)
        assert synced > i, f"{path} was created but its parent was never fsynced"
        assert synced < first_commit, f"{path} became durable only after a point was committed"


def test_a_packs_subdirectory_left_by_a_crashed_writer_is_made_durable_before_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path.resolve()
    repo = open_repo(root)
    (repo.layout.packs / new_pack_id()[:2]).mkdir()  # created, never fsynced into packs/
    recorder = Recorder()
    recorder.install(monkeypatch)
    export(repo, point_id(1), {"d0": noise("crashed", 20 * CHUNK)})
    commit = recorder.commits(repo.layout)[0]
    synced = recorder.first("fsync", repo.layout.packs.resolve())
    assert 0 <= synced < commit

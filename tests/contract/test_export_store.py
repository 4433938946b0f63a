"""The `ExportStore` port: one set of cases against the fake and the real repository.

In the spirit of restic's backend tests: every case runs once against `FakeStore` (what the
unit tests drive the executor with) and once against `Repository` on a temporary directory,
so the fake cannot drift from the adapter it stands in for.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters.repository import Repository
from reconciler.errors import RepositoryError
from reconciler.ports import ExportStore
from tests.repository.disks import SLOT, VM, open_repo, point_id
from tests.unit.fakes import FakeStore


@pytest.fixture(params=["fake", "repository"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExportStore]:
    if request.param == "fake":
        yield FakeStore()
        return
    repo: Repository = open_repo(tmp_path)
    try:
        yield repo
    finally:
        repo.close()


def _export(store: ExportStore, pid: str, **metadata: object) -> None:
    writer = store.begin_point(pid, "nightly", VM, SLOT, **metadata)
    writer.add_disk("d0", io.BytesIO(b"disk bytes"))
    writer.add_file("vm.vmx", b"config")
    writer.commit("crash")


def test_a_committed_point_is_listed_with_its_policy_vm_slot_and_consistency(
    store: ExportStore,
) -> None:
    _export(store, point_id(1))
    [point] = store.points()
    assert (point.id, point.policy, point.vm, point.slot) == (point_id(1), "nightly", VM, SLOT)
    assert point.complete and point.consistency == "crash"


def test_the_metadata_given_at_the_start_is_read_back_from_the_manifest(
    store: ExportStore,
) -> None:
    _export(store, point_id(1), source="contract", attempt=2)
    assert dict(store.manifest(point_id(1)).metadata) == {"source": "contract", "attempt": 2}


def test_an_export_in_progress_is_a_partial_not_a_point_until_it_commits(
    store: ExportStore,
) -> None:
    writer = store.begin_point(point_id(1), "nightly", VM, SLOT)
    writer.add_disk("d0", io.BytesIO(b"half"))
    assert store.points() == []
    assert [p.id for p in store.partials()] == [point_id(1)]
    writer.commit("crash")
    assert list(store.partials()) == []
    assert [p.id for p in store.points()] == [point_id(1)]


def test_an_aborted_export_leaves_neither_a_point_nor_a_partial(store: ExportStore) -> None:
    writer = store.begin_point(point_id(1), "nightly", VM, SLOT)
    writer.add_disk("d0", io.BytesIO(b"half"))
    writer.abort()
    assert store.points() == [] and list(store.partials()) == []


def test_a_deleted_point_is_no_longer_listed(store: ExportStore) -> None:
    _export(store, point_id(1))
    _export(store, point_id(2))
    store.delete_point(point_id(1))
    assert [p.id for p in store.points()] == [point_id(2)]


def test_deleting_or_reading_a_point_that_does_not_exist_is_a_repository_error(
    store: ExportStore,
) -> None:
    with pytest.raises(RepositoryError, match="no restore point"):
        store.delete_point(point_id(9))
    with pytest.raises(RepositoryError, match="no restore point"):
        store.manifest(point_id(9))



def test_points_are_listed_in_the_same_order_whatever_order_they_were_written_in(
    store: ExportStore,
) -> None:
    _export(store, point_id(2))
    _export(store, point_id(1))
    assert [p.id for p in store.points()] == [point_id(1), point_id(2)]


def test_discarding_a_partial_that_does_not_exist_is_not_an_error(store: ExportStore) -> None:
    store.discard_partial(point_id(7))
    assert list(store.partials()) == []


def test_a_point_id_is_written_once(store: ExportStore) -> None:
    _export(store, point_id(1))
    with pytest.raises(RepositoryError, match="already exists"):
        store.begin_point(point_id(1), "nightly", VM, SLOT)

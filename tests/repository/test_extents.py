"""Planning changed-extent input: which chunks are read whole, patched, or left alone."""

from __future__ import annotations

import pytest

from reconciler.adapters.repository.extents import ChunkPlan, merge_extents, plan_chunks
from reconciler.adapters.repository.format import ZERO_ID

CS = 100
BASE = [bytes([i + 1]) * 32 for i in range(10)]  # ten full chunks, all usable


@pytest.mark.parametrize(
    ("extents", "merged"),
    [
        ([], []),
        ([(10, 0)], []),
        ([(10, 5), (12, 10)], [(10, 22)]),
        ([(30, 5), (10, 5), (15, 5)], [(10, 20), (30, 35)]),
        ([(990, 50)], [(990, 1000)]),
        ([(-5, 10)], [(0, 5)]),
    ],
)
def test_extents_are_sorted_merged_and_clipped_to_the_disk(extents, merged) -> None:
    assert merge_extents(extents, 1000) == merged


@pytest.mark.parametrize(
    ("extents", "size", "plans"),
    [
        ([], 1000, []),
        ([(110, 10)], 1000, [ChunkPlan(1, ((10, 10),))]),
        ([(110, 60)], 1000, [ChunkPlan(1, None)]),  # mostly changed: read whole
        ([(190, 20)], 1000, [ChunkPlan(1, ((90, 10),)), ChunkPlan(2, ((0, 10),))]),
        ([(100, 300)], 1000, [ChunkPlan(1, None), ChunkPlan(2, None), ChunkPlan(3, None)]),
        ([(110, 5), (130, 5)], 1000, [ChunkPlan(1, ((10, 5), (30, 5)))]),
        ([], 950, [ChunkPlan(9, None)]),  # shrunk, partial tail: re-read the tail
        ([], 1100, [ChunkPlan(9, None), ChunkPlan(10, None)]),  # grown: read the new area
    ],
)
def test_chunks_are_planned_from_the_changed_extents(extents, size, plans) -> None:
    assert plan_chunks(extents, size, CS, BASE, lambda cid: True) == plans


def test_a_chunk_without_a_usable_previous_copy_is_read_whole() -> None:
    bad = BASE[4]
    plans = plan_chunks([(410, 5)], 1000, CS, BASE, lambda cid: cid != bad)
    assert plans == [ChunkPlan(4, None)]
    plans = plan_chunks([], 1000, CS, BASE, lambda cid: cid != bad)
    assert plans == [ChunkPlan(4, None)]


def test_zero_chunks_of_the_previous_point_are_always_usable() -> None:
    base = [ZERO_ID] * 10
    assert plan_chunks([(5, 1)], 1000, CS, base, lambda cid: False) == [ChunkPlan(0, ((5, 1),))]

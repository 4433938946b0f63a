"""A restore point id is `<policy>/<instanceUuid>/<slot UTC compact>`, and can be read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from reconciler.markers import parse_point_id, point_id


@pytest.mark.parametrize(("policy", "uuid", "slot"), [
    ("gold", "5003a1b2-0000-4000-8000-000000000001", datetime(2026, 11, 25, 1, 0, tzinfo=UTC)),
    ("db-hourly", "uuid-app", datetime(2027, 1, 1, 0, 0, 59, tzinfo=UTC)),
])
def test_a_point_id_reads_back_as_its_policy_vm_and_slot(policy: str, uuid: str,
                                                         slot: datetime) -> None:
    pid = point_id(policy, uuid, slot)
    assert parse_point_id(pid) == (policy, uuid, slot)
    assert point_id(*parse_point_id(pid) or ("", "", slot)) == pid


def test_a_slot_with_another_offset_reads_back_as_the_same_moment_in_utc() -> None:
    slot = datetime(2026, 11, 25, 3, 0, tzinfo=timezone(timedelta(hours=2)))
    parsed = parse_point_id(point_id("gold", "u", slot))
    assert parsed is not None and parsed[2] == slot and parsed[2].tzinfo is UTC


@pytest.mark.parametrize("text", [
    "", "gold", "gold/uuid", "gold/uuid/20261125T010000Z/extra", "gold/uuid/2026-11-25",
    "gold/uuid/20261325T010000Z",
])
def test_text_that_is_not_a_point_id_reads_as_none(text: str) -> None:
    assert parse_point_id(text) is None

"""The slots an action holds on the engine's limiter: its proxy queue's, its host's (named by
its vCenter) and, for an export under a per-datastore limit, each datastore's."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.engine.limits import limit_keys

REQUEST = {"slots": {"site-a": 3}, "defaultSlots": 2, "hostSlots": 4, "datastoreSlots": 0}


def entry(kind: str, queue: str = "site-a") -> dict[str, Any]:
    return {"action": {"kind": kind, "vcenter": "vc1"}, "queue": queue, "host": "esx1",
            "datastores": ["ds1", "ds2"]}


@pytest.mark.parametrize(("request_", "item", "keys"), [
    (REQUEST, entry("export.create"), {"queue/site-a": 3, "host/vc1/esx1": 4}),
    (REQUEST, entry("snapshot.create", "vmkeep"), {"queue/vmkeep": 2, "host/vc1/esx1": 4}),
    (dict(REQUEST, datastoreSlots=1), entry("export.create"),
     {"queue/site-a": 3, "host/vc1/esx1": 4, "datastore/vc1/ds1": 1, "datastore/vc1/ds2": 1}),
    (dict(REQUEST, datastoreSlots=1), entry("snapshot.delete"),
     {"queue/site-a": 3, "host/vc1/esx1": 4}),
], ids=["proxy queue and host", "the default queue's slots", "an export's datastores",
        "no datastore slot but for exports"])
def test_an_action_holds_the_slots_of_its_queue_host_and_datastores(
        request_: dict[str, Any], item: dict[str, Any], keys: dict[str, int]) -> None:
    assert limit_keys(request_, item) == keys

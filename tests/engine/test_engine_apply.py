"""`vmkeep apply` on the Temporal engine: a workflow per vCenter plans, proxies (`vmkeep
worker` processes) carry out the actions, the points name the proxy that wrote them."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters.repository import Repository
from tests.engine.engine_world import EngineEstate, engine_estate
from tests.engine.temporal_server import TemporalServer

pytestmark = [pytest.mark.vcsim, pytest.mark.temporal]

DAY1 = "2026-11-25T01:00:00Z"
MiB = 1024 * 1024
_queues = itertools.count()


@pytest.fixture
def estate(start_vcsim, temporal: TemporalServer, tmp_path: Path) -> Iterator[EngineEstate]:
    queue = f"q{next(_queues)}-{os.getpid()}"  # each test its own queues on the shared server
    with engine_estate(start_vcsim(vms=int(os.environ.get("VMKEEP_ENGINE_VMS", "20"))),
                       tmp_path, temporal, queue) as world:
        yield world


def proxies_of(estate: EngineEstate) -> dict[str, str]:
    with Repository.open(estate.target, create=False) as repo:
        return {p.id: str(repo.manifest(p.id).metadata.get("proxy")) for p in repo.points()}


def test_three_workers_export_every_vm_byte_exact_spread_over_proxies_and_plan_is_empty(
        estate: EngineEstate) -> None:
    vms = estate.vms()
    data = {}
    for name, vm in sorted(vms.items()):
        estate.grow_disk(vm, MiB)
        data[name] = os.urandom(MiB // 2) + bytes(MiB // 2)
        estate.fill_disk(vm, data[name])
    for n in range(3):
        estate.start_worker(f"proxy-{n}", "--slots", "2")
    run = estate.apply(DAY1)
    assert run.code == 0, run.out + run.err
    points = estate.points()
    assert sorted(p.vm.name for p in points) == sorted(vms)
    for point in points:
        vm = vms[point.vm.name]
        disk = f"disk-{vm.disks[0].key}"
        assert estate.read_point_disk(point.id, disk) == data[point.vm.name]
    assert len(set(proxies_of(estate).values())) >= 2, proxies_of(estate)
    listed = estate.vmkeep("points", "--kind", "export", "-o", "json")
    assert listed.code == 0, listed.err
    assert {p["id"]: p["proxy"] for p in listed.json()["points"]} == proxies_of(estate)
    plan = estate.plan(DAY1)
    assert plan.code == 0 and plan.json()["actions"] == [], plan.out
    status = estate.vmkeep("status", "--policies", str(estate.policies), "--now", DAY1,
                           "-o", "json")
    assert status.code == 0, status.err
    [last, *_] = status.json()["runs"]  # the engine's run, journaled on the controller host
    assert last["finishedAt"] and last["counts"] == {"done": 2 * len(vms)}, last
    assert status.json()["unfinished"] == []


def test_apply_with_an_engine_refuses_a_saved_plan_and_asks_for_auto_approve(
        estate: EngineEstate, tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    made = estate.vmkeep("plan", "--policies", str(estate.policies), "--now", DAY1,
                         "--out", str(saved))
    assert made.code in (0, 2), made.err  # a valid saved plan: the engine plans itself
    run = estate.vmkeep("apply", str(saved), "--policies", str(estate.policies),
                        "--auto-approve")
    assert run.code == 1 and "saved plan cannot be applied through the engine" in run.err
    run = estate.vmkeep("apply", "--policies", str(estate.policies), "--now", DAY1)
    assert run.code == 1 and "--auto-approve" in run.err
    assert estate.points() == []


def test_deleted_exports_are_collected_by_the_targets_maintenance_workflow(
        start_vcsim, temporal: TemporalServer, tmp_path: Path) -> None:
    from temporalio.client import Client

    from reconciler.engine.workflows import maintenance_id

    queue = f"maint{next(_queues)}-{os.getpid()}"
    with engine_estate(start_vcsim(vms=1), tmp_path, temporal, queue) as estate:
        estate.set_policy(snapshots=1, daily=1)
        estate.start_worker("proxy-0")
        [vm] = estate.vms().values()
        estate.grow_disk(vm, 2 * MiB)
        estate.fill_disk(vm, os.urandom(2 * MiB))
        assert estate.apply(DAY1).code == 0
        estate.fill_disk(vm, os.urandom(2 * MiB))  # day 2 shares nothing with day 1
        run = estate.apply("2026-11-26T01:00:00Z", "-o", "json")
        assert run.code == 0, run.err
        assert any(o["action"]["kind"] == "export.delete" and o["status"] == "done"
                   for o in run.json()["outcomes"])

        async def maintenance() -> dict:
            client = await Client.connect(temporal.address, namespace=temporal.namespace)
            result: dict = await client.get_workflow_handle(maintenance_id("local")).result()
            return result

        result = asyncio.run(maintenance())
        assert result["target"] == "local" and result["verify"]["clean"], result
        assert result["gc"]["report"]["bytes_freed"] > 0, result
        [point] = estate.points()
        assert point.slot.day == 26


@pytest.mark.parametrize("claim", ["hosts", "clusters"])
def test_a_vm_claimed_by_a_proxy_is_exported_by_that_proxys_workers_only(
        claim: str, start_vcsim, temporal: TemporalServer, tmp_path: Path) -> None:
    queue = f"route{next(_queues)}-{os.getpid()}"
    sim = start_vcsim("--clusters", "2", vms=4)
    where = {"hosts": "host", "clusters": "cluster"}[claim]
    with engine_estate(sim, tmp_path, temporal, queue) as probe:
        places = sorted({getattr(vm, where) for vm in probe.vms().values()})
    assert len(places) >= 2 and "" not in places, places
    proxies = f"proxies: {{site-a: {{{claim}: [{places[0]}], slots: 1}}}}\n"
    with engine_estate(sim, tmp_path / "routed", temporal, queue, proxies) as estate:
        estate.start_worker("default-0")
        estate.start_worker("site-a-0", "--queue", "site-a")
        run = estate.apply(DAY1)
        assert run.code == 0, run.out + run.err
        by_place = {vm.name: getattr(vm, where) for vm in estate.vms().values()}
        with Repository.open(estate.target, create=False) as repo:
            written = {p.vm.name: repo.manifest(p.id).metadata.get("proxy")
                       for p in repo.points()}
        assert sorted(written) == sorted(by_place)
        for name, proxy in written.items():
            assert (proxy == "site-a-0") == (by_place[name] == places[0]), (name, written)

"""Limits that hold across the whole estate on the engine: a proxy queue's slots shared by
the reconciles of two vCenters, the per-datastore export limit, and the limiter workflow
that hands the slots out (first come first served, slots of an ended workflow given back,
history bounded by continue-as-new)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from reconciler.engine.limits import (
    ACQUIRE,
    GRANTED,
    PING,
    RELEASE,
    LimitsWorkflow,
    limits_id,
)
from tests.engine.engine_world import engine_estate
from tests.engine.temporal_server import TemporalServer
from tests.integration.test_exports_per_datastore import overlapping

pytestmark = [pytest.mark.vcsim, pytest.mark.temporal]

_queues = itertools.count()
DAY1 = "2026-11-25T01:00:00Z"
DAY2 = "2026-11-26T01:00:00Z"
EXPORTS = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata: {{name: {name}}}
spec:
  vcenter: {vcenter}
  selector: {{include: {{names: ["*"]}}}}
  schedule: {{cron: "0 1 * * *", timezone: UTC}}
  consistency: {{mode: crash}}
  exports: {{target: local, keep: {{daily: 30}}}}
"""


def spans(outcomes: list[dict[str, Any]], vcenter: str | None = None
          ) -> list[tuple[float, float]]:
    return [(o["startedAt"], o["endedAt"]) for o in outcomes
            if vcenter is None or o["action"]["vcenter"] == vcenter]


def test_two_vcenters_sharing_a_queue_of_one_slot_never_run_two_actions_at_once(
        start_vcsim, temporal: TemporalServer, tmp_path: Path) -> None:
    queue = f"limits{next(_queues)}-{os.getpid()}"
    first, second = start_vcsim(vms=2), start_vcsim(vms=2)
    proxies = "proxies: {shared: {datastores: [LocalDS_0], slots: 1}}\n"
    with engine_estate(first, tmp_path, temporal, queue, proxies, second=second) as estate:
        for old in estate.policies.glob("*.yaml"):
            old.unlink()
        for name, vcenter in (("gold", "sim"), ("gold2", "sim2")):
            (estate.policies / f"{name}.yaml").write_text(
                EXPORTS.format(name=name, vcenter=vcenter))
        assert {vm.datastores for vm in estate.vms().values()} == {("LocalDS_0",)}
        for sim in (first, second):  # slow snapshots: actions side by side would overlap
            sim.faults(taskDelayMs=300, taskDelayMatch="CreateSnapshot")
        for n in range(2):  # each could run two of the queue's actions at once
            estate.start_worker(f"proxy-{n}", "--queue", queue, "--queue", "shared",
                                "--slots", "2")
        run = estate.apply(DAY1, "-o", "json")
        assert run.code == 0, run.out + run.err
        outcomes = run.json()["outcomes"]
        assert sorted(o["action"]["vcenter"] for o in outcomes) == ["sim"] * 2 + ["sim2"] * 2
        assert {o["status"] for o in outcomes} == {"done"}
        assert overlapping(spans(outcomes)) == []
        assert len(estate.points()) == 4

        # the queue's slots raised, one export per datastore: one at a time per vCenter
        estate.config.write_text(estate.config.read_text().replace("slots: 1", "slots: 4")
                                 .replace("concurrentExports: 2,", "concurrentExports: 4, "
                                          "concurrentExportsPerDatastore: 1,"))
        run = estate.apply(DAY2, "-o", "json")
        assert run.code == 0, run.out + run.err
        outcomes = run.json()["outcomes"]
        assert len(outcomes) == 4 and {o["status"] for o in outcomes} == {"done"}
        for vcenter in ("sim", "sim2"):
            assert overlapping(spans(outcomes, vcenter)) == []
        assert len(estate.points()) == 8


@workflow.defn(name="test.holder")
class Holder:
    """A workflow that holds slots of the limiter as a batch does, until told it is done."""

    def __init__(self) -> None:
        self.granted = False
        self.done = False

    @workflow.signal(name=GRANTED)
    def on_granted(self, token: str) -> None:
        self.granted = True

    @workflow.signal(name=PING)
    def ping(self) -> None:
        pass

    @workflow.signal(name="done")
    def finish(self) -> None:
        self.done = True

    @workflow.run
    async def run(self, request: dict[str, Any]) -> None:
        me = workflow.info().workflow_id
        limiter = workflow.get_external_workflow_handle(request["limiter"])
        await limiter.signal(ACQUIRE, {"token": me, "workflow": me, "keys": request["keys"]})
        await workflow.wait_condition(lambda: self.granted and self.done)
        await limiter.signal(RELEASE, me)


async def _limiter_scenario(server: TemporalServer, queue: str) -> None:
    client = await Client.connect(server.address, namespace=server.namespace)
    async with Worker(client, task_queue=queue, workflows=[LimitsWorkflow, Holder],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        limiter = await client.start_workflow(
            LimitsWorkflow.run, {"checkSeconds": 1, "maxEvents": 40},
            id=limits_id(queue), task_queue=queue)
        first_run = limiter.result_run_id

        async def state() -> dict[str, Any]:
            result: dict[str, Any] = await client.get_workflow_handle(
                limits_id(queue)).query("state")
            return result

        async def until(check: Any) -> dict[str, Any]:
            deadline = time.monotonic() + 60
            while True:
                now = await state()
                if check(now):
                    return now
                assert time.monotonic() < deadline, now
                await asyncio.sleep(0.1)

        async def hold(name: str, keys: dict[str, int]) -> Any:
            return await client.start_workflow(
                Holder.run, {"limiter": limits_id(queue), "keys": keys},
                id=f"{queue}-{name}", task_queue=queue)

        a = await hold("a", {"queue/q": 1, "host/vc/h1": 2})
        await until(lambda s: f"{queue}-a" in s["holders"])
        b = await hold("b", {"queue/q": 1, "host/vc/h1": 2})
        await until(lambda s: [w["token"] for w in s["waiting"]] == [f"{queue}-b"])
        c = await hold("c", {"queue/q": 1})
        other = await hold("other", {"queue/r": 1, "host/vc/h2": 2})
        now = await until(lambda s: f"{queue}-other" in s["holders"])
        # b came first, c after it; a request for other slots is not held up by them
        assert [w["token"] for w in now["waiting"]] == [f"{queue}-b", f"{queue}-c"]

        await a.terminate("gone without releasing")  # its slot is given back, to b first
        now = await until(lambda s: f"{queue}-a" not in s["holders"]
                          and f"{queue}-b" in s["holders"])
        assert [w["token"] for w in now["waiting"]] == [f"{queue}-c"]
        await b.signal("done")
        await b.result()
        await until(lambda s: f"{queue}-c" in s["holders"])
        for handle in (c, other):
            await handle.signal("done")
            await handle.result()
        now = await until(lambda s: not s["holders"] and not s["waiting"])
        described = await client.get_workflow_handle(limits_id(queue)).describe()
        assert described.run_id != first_run  # continued as new, its history bounded
        await client.get_workflow_handle(limits_id(queue)).terminate("test over")


def test_the_limiter_serves_first_come_first_and_frees_the_slots_of_an_ended_workflow(
        temporal: TemporalServer) -> None:
    asyncio.run(_limiter_scenario(temporal, f"limiter{next(_queues)}-{os.getpid()}"))

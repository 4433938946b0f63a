"""The workflows: deterministic code only (no I/O, no wall clock, no threads).

`ReconcileWorkflow` — one per vCenter, its ID `vmkeep-reconcile-<vcenter>` making it the
only reconcile of that vCenter across every controller host. It plans through the
`vmkeep.plan` activity, then runs the VMs' actions in batches, each batch a child workflow
(`BatchWorkflow`), so no history grows with the size of the estate. A batch runs each VM's
actions in order (creations, then deletions; a VM's deletions are skipped when its backup
under that policy failed) on the VM's proxy queue, holding its slots (proxy queue, host,
datastores) from the estate's limiter workflow (`limits`), so they hold across every vCenter
and proxy. An export that fails for good (its proxy died,
the retries ran out) or is cancelled is followed by `vmkeep.compensate` on any worker: its
temporary snapshot is removed.

`MaintenanceWorkflow` — one per target (`vmkeep-maintenance-<target>`): GC, then verify.

Payloads are plain JSON values (see `codec`).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError

from reconciler.engine.limits import ACQUIRE, GRANTED, PING, RELEASE, limit_keys, limits_id

__all__ = [
    "BatchWorkflow",
    "MaintenanceWorkflow",
    "ReconcileWorkflow",
    "maintenance_id",
    "reconcile_id",
]

_RANK = {"snapshot.create": 0, "export.create": 1, "snapshot.delete": 2, "export.delete": 3}


def reconcile_id(vcenter: str) -> str:
    return f"vmkeep-reconcile-{vcenter}"


def maintenance_id(target: str) -> str:
    return f"vmkeep-maintenance-{target}"


def _retry(request: dict[str, Any]) -> RetryPolicy:
    return RetryPolicy(initial_interval=timedelta(seconds=1), backoff_coefficient=2.0,
                       maximum_interval=timedelta(seconds=30),
                       maximum_attempts=int(request.get("attempts", 5)))


@workflow.defn(name="vmkeep.reconcile")
class ReconcileWorkflow:
    def __init__(self) -> None:
        self._outcomes: list[dict[str, Any]] = []
        self._planned = 0
        self._phase = "planning"
        self._held = 0

    @workflow.query(name="progress")
    def progress(self) -> dict[str, Any]:
        return {"phase": self._phase, "planned": self._planned, "held": self._held,
                "outcomes": list(self._outcomes)}

    @workflow.run
    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        planned = await workflow.execute_activity(
            "vmkeep.plan", request, task_queue=request["defaultQueue"],
            start_to_close_timeout=timedelta(minutes=30), retry_policy=_retry(request),
        )
        actions: list[dict[str, Any]] = planned["actions"]
        self._planned = len(actions)
        self._held = int(planned.get("held", 0))
        by_vm: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry in actions:
            by_vm[entry["action"]["vm"]["instanceUuid"]].append(entry)
        vms = [by_vm[k] for k in sorted(by_vm)]
        size = max(1, int(request.get("batchVms", 200)))
        self._phase = "running"
        info = workflow.info()
        for number, first in enumerate(range(0, len(vms), size)):
            batch = dict(request, vms=vms[first:first + size])
            outcomes = await workflow.execute_child_workflow(
                BatchWorkflow.run, batch, id=f"{info.workflow_id}/{info.run_id}/batch-{number}",
            )
            self._outcomes.extend(outcomes)
        self._phase = "done"
        return {"runId": request["runId"], "vcenter": request["vcenter"],
                "outcomes": self._outcomes, "held": self._held,
                "revision": planned.get("revision")}


@workflow.defn(name="vmkeep.batch")
class BatchWorkflow:
    def __init__(self) -> None:
        self._granted: set[str] = set()
        self._tokens = 0

    @workflow.signal(name=GRANTED)
    def granted(self, token: str) -> None:
        self._granted.add(token)

    @workflow.signal(name=PING)
    def ping(self) -> None:
        """The limiter asks whether this workflow still runs (a signal to it succeeds)."""

    @asynccontextmanager
    async def _slots(self, request: dict[str, Any], entry: dict[str, Any]
                     ) -> AsyncIterator[None]:
        """Hold the action's slots of the estate's limiter (`limits`) while it runs."""
        self._tokens += 1
        me = workflow.info().workflow_id
        token = f"{me}#{self._tokens}"
        limiter = workflow.get_external_workflow_handle(limits_id(request["defaultQueue"]))
        await limiter.signal(ACQUIRE, {"token": token, "workflow": me,
                                       "keys": limit_keys(request, entry)})
        try:
            await workflow.wait_condition(lambda: token in self._granted)
            yield
        finally:
            self._granted.discard(token)
            await limiter.signal(RELEASE, token)  # also after a failure or a cancellation

    @workflow.run
    async def run(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        async def one_vm(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
            done: list[dict[str, Any]] = []
            failed: set[str] = set()
            for entry in sorted(entries, key=lambda e: (_RANK[e["action"]["kind"]],
                                                        e["action"]["pointId"])):
                action = entry["action"]
                deleting = action["kind"].endswith(".delete")
                if deleting and action["policy"] in failed:
                    done.append({"action": action, "status": "skipped", "proxy": "",
                                 "message": "not pruned: this run's backup of the VM under "
                                 "this policy failed"})
                    continue
                async with self._slots(request, entry):
                    outcome = await _run_action(request, entry)
                if outcome["status"] == "failed" and not deleting:
                    failed.add(action["policy"])
                done.append(outcome)
            return done

        results = await asyncio.gather(*(one_vm(entries) for entries in request["vms"]))
        return [o for vm_outcomes in results for o in vm_outcomes]


async def _run_action(request: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    action = entry["action"]
    payload = {"runId": request["runId"], "action": action,
               "policyFiles": request["policyFiles"], "revision": request.get("revision"),
               "installation": request.get("installation", "")}
    try:
        result: dict[str, Any] = await workflow.execute_activity(
            "vmkeep.action", payload, task_queue=entry["queue"],
            start_to_close_timeout=timedelta(hours=float(request.get("actionHours", 12))),
            heartbeat_timeout=timedelta(seconds=float(request.get("heartbeatSeconds", 60))),
            retry_policy=_retry(request),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        return result
    except (ActivityError, asyncio.CancelledError, CancelledError) as exc:
        cancelled = not isinstance(exc, ActivityError) or isinstance(exc.cause, CancelledError)
        if action["kind"] == "export.create":
            await workflow.execute_activity(
                "vmkeep.compensate",
                {"action": action, "installation": request.get("installation", "")},
                task_queue=request["defaultQueue"],
                start_to_close_timeout=timedelta(minutes=10), retry_policy=_retry(request),
            )
        if cancelled:
            raise
        cause = exc.cause if isinstance(exc, ActivityError) and exc.cause else exc
        return {"action": action, "status": "failed", "proxy": "",
                "message": f"{type(cause).__name__}: {cause}"}


@workflow.defn(name="vmkeep.maintenance")
class MaintenanceWorkflow:
    @workflow.run
    async def run(self, request: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"target": request["target"]}
        for step in request.get("steps", ["gc", "verify"]):
            out[step] = await workflow.execute_activity(
                f"vmkeep.{step}", request["target"], task_queue=request["defaultQueue"],
                start_to_close_timeout=timedelta(hours=12),
                heartbeat_timeout=None, retry_policy=_retry(request),
            )
        return out

"""Limits that hold across the whole estate on the engine: one limiter workflow per
installation (`vmkeep-limits-<default queue>`) hands out the slots of every proxy queue
(`proxies.<q>.slots`), ESXi host (`limits.concurrentSnapshotsPerHost`, a host named by its
vCenter and its name) and datastore (`limits.concurrentExportsPerDatastore`, vCenter and
datastore name) to the batch workflows of every vCenter's reconcile.

Why a workflow and not the workers: a worker's `max_concurrent_activities` holds per worker
process, so a queue served by three workers would run three times its slots, and hosts and
datastores are shared by workers of different queues. The limiter is deterministic workflow
code like the rest; its state is in the engine's history, so it survives every process.

Protocol (signals, all JSON values):
- a batch sends `vmkeep.acquire` `{token, workflow, keys: {key: capacity}}` and waits for
  `vmkeep.granted` `token`; it sends `vmkeep.release` `token` when the action ended (also
  when it failed or was cancelled). All keys of a request are granted at once (no batch
  holds one slot while waiting for another, so none waits crosswise), first come first
  served per key: a later request never takes a key an earlier waiting one needs.
- a holder or waiter whose workflow ended without releasing (terminated, timed out) is found
  by `vmkeep.ping` every `checkSeconds` while anything is held: a signal to an ended
  workflow fails, and its slots are given back.
- the history stays bounded: after `maxEvents` events (or when the engine suggests it) the
  limiter continues as new, carrying its holders and queue.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow

__all__ = ["LimitsWorkflow", "limit_keys", "limits_id"]

ACQUIRE = "vmkeep.acquire"
RELEASE = "vmkeep.release"
GRANTED = "vmkeep.granted"
PING = "vmkeep.ping"


def limits_id(default_queue: str) -> str:
    return f"vmkeep-limits-{default_queue}"


def limit_keys(request: dict[str, Any], entry: dict[str, Any]) -> dict[str, int]:
    """The slots one action of a reconcile holds, with their capacities: its proxy queue's,
    its host's, and for an export one of each datastore its disks are on (when limited)."""
    action = entry["action"]
    queue = entry["queue"]
    slots = request.get("slots", {})
    keys = {f"queue/{queue}": max(1, int(slots.get(queue, request.get("defaultSlots", 4))))}
    keys[f"host/{action['vcenter']}/{entry.get('host', '')}"] = max(
        1, int(request.get("hostSlots", 2)))
    per_store = int(request.get("datastoreSlots", 0))
    if per_store > 0 and action["kind"] == "export.create":
        for name in entry.get("datastores", ()):
            keys[f"datastore/{action['vcenter']}/{name}"] = per_store
    return keys


@workflow.defn(name="vmkeep.limits")
class LimitsWorkflow:
    def __init__(self) -> None:
        self._holders: dict[str, dict[str, Any]] = {}  # token -> {workflow, keys}
        self._waiting: list[dict[str, Any]] = []  # first come first served
        self._changed = False
        self._sending = 0  # grants and pings in flight
        self._tasks: set[asyncio.Future[None]] = set()

    # ------------------------------------------------------------------ signals, query

    @workflow.signal(name=ACQUIRE)
    def acquire(self, request: dict[str, Any]) -> None:
        token = request["token"]
        if token in self._holders or any(w["token"] == token for w in self._waiting):
            return  # a repeated signal
        self._waiting.append({"token": token, "workflow": request["workflow"],
                              "keys": dict(request["keys"])})
        self._changed = True

    @workflow.signal(name=RELEASE)
    def release(self, token: str) -> None:
        self._holders.pop(token, None)
        self._waiting = [w for w in self._waiting if w["token"] != token]
        self._changed = True

    @workflow.query(name="state")
    def state(self) -> dict[str, Any]:
        return {"holders": dict(self._holders), "waiting": list(self._waiting)}

    # ------------------------------------------------------------------ the loop

    @workflow.run
    async def run(self, carried: dict[str, Any]) -> None:
        self._holders.update(carried.get("holders", {}))
        self._waiting[:0] = carried.get("waiting", [])
        check = float(carried.get("checkSeconds", 300))
        max_events = int(carried.get("maxEvents", 10_000))
        self._changed = True
        checker = asyncio.ensure_future(self._check_forever(check))
        while True:
            await workflow.wait_condition(lambda: self._changed)
            self._changed = False
            for request in self._grantable():
                self._waiting.remove(request)
                self._holders[request["token"]] = {"workflow": request["workflow"],
                                                   "keys": request["keys"]}
                task = asyncio.ensure_future(self._tell(request["workflow"], request["token"]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            info = workflow.info()
            if info.get_current_history_length() >= max_events \
                    or info.is_continue_as_new_suggested():
                await workflow.wait_condition(
                    lambda: self._sending == 0 and workflow.all_handlers_finished())
                checker.cancel()
                workflow.continue_as_new({"holders": self._holders, "waiting": self._waiting,
                                          "checkSeconds": check, "maxEvents": max_events})

    def _grantable(self) -> list[dict[str, Any]]:
        used: dict[str, int] = {}
        for holder in self._holders.values():
            for key in holder["keys"]:
                used[key] = used.get(key, 0) + 1
        blocked: set[str] = set()  # keys an earlier waiting request is in line for
        granted = []
        for request in self._waiting:
            keys: dict[str, int] = request["keys"]
            if any(k in blocked or used.get(k, 0) >= cap for k, cap in keys.items()):
                blocked.update(keys)
                continue
            for key in keys:
                used[key] = used.get(key, 0) + 1
            granted.append(request)
        return granted

    def _forget(self, workflow_id: str) -> None:
        """Give back what an ended workflow held or waited for."""
        for token in [t for t, h in self._holders.items() if h["workflow"] == workflow_id]:
            del self._holders[token]
        self._waiting = [w for w in self._waiting if w["workflow"] != workflow_id]
        self._changed = True

    async def _signal(self, workflow_id: str, name: str, *args: Any) -> None:
        self._sending += 1
        try:
            await workflow.get_external_workflow_handle(workflow_id).signal(name, *args)
        except asyncio.CancelledError:
            raise
        except Exception:  # the workflow ended (or never was): its slots are free again
            workflow.logger.info("limits: %s ended without releasing; slots given back",
                                 workflow_id)
            self._forget(workflow_id)
        finally:
            self._sending -= 1

    async def _tell(self, workflow_id: str, token: str) -> None:
        await self._signal(workflow_id, GRANTED, token)

    async def _check_forever(self, seconds: float) -> None:
        while True:
            await workflow.wait_condition(lambda: bool(self._holders or self._waiting))
            await workflow.sleep(timedelta(seconds=seconds))
            holders = sorted({h["workflow"] for h in self._holders.values()}
                             | {w["workflow"] for w in self._waiting})
            await asyncio.gather(*(self._signal(w, PING) for w in holders))

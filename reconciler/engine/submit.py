"""`vmkeep apply` with `engine:` in the host config: submit one reconcile per vCenter to the
engine and follow it until it ends.

The policies are read and checked here first (bad input changes nothing, as always); the
workflow then plans on a worker and fans the actions out to the proxies. A reconcile of a
vCenter that is already running (another controller's) is not started twice: its workflow
ID is the vCenter's, and apply says whose run it is and exits 1. Interrupting apply
(SIGINT/SIGTERM) cancels its reconciles: running exports stop at their next heartbeat and
their temporary snapshots are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconciler import policies
from reconciler.cli import common
from reconciler.cli.common import parse_now
from reconciler.engine.codec import action_from_json, files_to_json
from reconciler.errors import ReconcileCancelled, ReconcileRunning, UsageError, VmkeepError
from reconciler.executor import ActionOutcome, RunReport
from reconciler.model import HostConfig
from reconciler.observed import format_time
from reconciler.ports import PolicyFile

__all__ = [
    "EXIT_PARTIAL",
    "EngineRun",
    "ReconcileCancelled",
    "ReconcileRunning",
    "engine_apply",
    "engine_reconcile",
    "reconcile_request",
]

EXIT_PARTIAL = 3


def reconcile_request(config: HostConfig, vcenter: str, run_id: str, files: list[Any],
                      revision: str | None, now: datetime, max_deletes: int,
                      **extra: Any) -> dict[str, Any]:
    assert config.engine is not None
    request: dict[str, Any] = {
        "vcenter": vcenter,
        "runId": run_id,
        "policyFiles": files,
        "revision": revision,
        "now": format_time(now),
        "defaultQueue": config.engine.task_queue,
        "slots": {q: p.slots for q, p in config.proxies.items()},
        "defaultSlots": max(1, config.limits.concurrent_exports),
        "hostSlots": config.limits.concurrent_snapshots_per_host,
        "datastoreSlots": config.limits.concurrent_exports_per_datastore,
        "maxDeletes": max_deletes,
        "heartbeatSeconds": config.engine.heartbeat_seconds,
        "attempts": config.engine.attempts,
    }
    request.update(extra)
    return request


def engine_apply(args: argparse.Namespace, config: HostConfig, **extra: Any) -> EngineRun:
    """Submit and follow; the exit code of apply (0, 1 before any action, 3 some failed)."""
    if getattr(args, "plan_file", None):
        raise UsageError("a saved plan cannot be applied through the engine: the reconcile "
                         "workflow plans on the engine; run `vmkeep apply` without PLAN.json")
    if not args.auto_approve:
        raise UsageError("with an engine, apply plans on the engine and cannot ask first: "
                         "review `vmkeep plan` and pass --auto-approve")
    source = common.policy_source_from_args(args)
    files = list(source.files())
    policy_set = policies.parse_policies(files, config, source.revision)  # bad input: stop
    return engine_reconcile(config, files, policy_set.revision, parse_now(args.now),
                            args.max_deletes, args.output, **extra)


def engine_reconcile(config: HostConfig, files: list[PolicyFile], revision: str | None,
                     now: datetime, max_deletes: int | None, output: str, *,
                     stop: threading.Event | None = None, **extra: Any) -> EngineRun:
    """One reconcile of every vCenter on the engine, followed until it ends, for `apply`
    and for `vmkeep run` (the policies already checked). SIGINT/SIGTERM — or, for `run`,
    `stop` being set — cancel it: `ReconcileCancelled` (exit 130)."""
    if max_deletes is None:
        max_deletes = config.limits.max_deletes_per_run
    run_id = f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    journal = _Journal(config, run_id, revision)
    extra.setdefault("installation", journal.db.installation_id())  # marks its temporaries
    requests = [reconcile_request(config, name, run_id, files_to_json(files),
                                  revision, now, max_deletes, **extra)
                for name in sorted(config.vcenters)]
    try:
        results = asyncio.run(_submit_and_follow(config, requests, output, stop))
    except ReconcileRunning:
        journal.forget()  # nothing of this apply ran
        raise
    outcomes = [o for r in results for o in r["outcomes"]]
    journal.finish(outcomes)
    failed = [o for o in outcomes if o["status"] == "failed"]
    _summary(run_id, results, outcomes, output)
    report = RunReport(run_id, tuple(
        ActionOutcome(action_from_json(o["action"]), o["status"], o.get("message", ""),
                      o.get("consistency", ""),
                      consistency_note=o.get("consistencyNote", ""),
                      bytes_read=int(o.get("bytesRead", 0)),
                      bytes_stored=int(o.get("bytesStored", 0)),
                      seconds=float(o.get("seconds", 0.0)))
        for o in outcomes))
    return EngineRun(EXIT_PARTIAL if failed else 0, revision, report)


class _Journal:
    """The controller host's state DB records each engine run and its outcomes as the
    workflows reported them, so `vmkeep status` shows runs, failures and interrupted runs in
    the scaled tier too (the engine's history stays the full record; the state DB is the
    local summary `status` already reads, and needs no engine to read)."""

    def __init__(self, config: HostConfig, run_id: str, revision: str | None) -> None:
        import os
        import socket
        import time

        from reconciler import wiring

        self._time = time.time
        self.run_id = run_id
        self.db = wiring.open_state_db(config)
        self.db.start_run(run_id, f"{socket.gethostname()}/{os.getpid()}/{run_id}",
                          time.time(), revision)

    def forget(self) -> None:
        self.db.finish_run(self.run_id, self._time(), {"notSubmitted": 1})
        self.db.close()

    def finish(self, outcomes: list[dict[str, Any]]) -> None:
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o["status"]] = counts.get(o["status"], 0) + 1
            if o["status"] == "skipped":
                continue
            a = o["action"]
            action_id = self.db.record_intent(
                self.run_id, kind=a["kind"], point_id=a["pointId"],
                vm_uuid=a["vm"]["instanceUuid"], vm_name=a["vm"]["name"],
                vcenter=a["vcenter"], now=self._time(),
                details={"target": a.get("target"), "proxy": o.get("proxy"),
                         "attempt": o.get("attempt")})
            self.db.record_outcome(action_id, o["status"], self._time(),
                                   o.get("message") if o["status"] == "failed" else None)
        self.db.finish_run(self.run_id, self._time(), counts)
        self.db.close()


@dataclass(frozen=True)
class EngineRun:
    """What apply on the engine did: its exit code, the revision and the outcomes."""

    code: int
    revision: str | None
    report: RunReport


async def _start_maintenance(client: Any, config: HostConfig, targets: set[str]) -> None:
    """GC then verify of each target whose points this run deleted, as the target's one
    maintenance workflow (left to run on the engine; one already running is enough)."""
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from reconciler.engine.workflows import MaintenanceWorkflow, maintenance_id

    assert config.engine is not None
    for target in sorted(targets):
        try:
            await client.start_workflow(
                MaintenanceWorkflow.run,
                {"target": target, "defaultQueue": config.engine.task_queue,
                 "attempts": config.engine.attempts},
                id=maintenance_id(target), task_queue=config.engine.task_queue)
        except WorkflowAlreadyStartedError:
            continue


async def _start_limiter(client: Any, config: HostConfig) -> None:
    """The installation's limiter workflow (slots across the estate, `engine/limits.py`):
    started by the first controller that needs it, then running for good."""
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from reconciler.engine.limits import LimitsWorkflow, limits_id

    assert config.engine is not None
    queue = config.engine.task_queue
    with contextlib.suppress(WorkflowAlreadyStartedError):  # running: it serves us too
        await client.start_workflow(
            LimitsWorkflow.run, {"checkSeconds": config.engine.heartbeat_seconds},
            id=limits_id(queue), task_queue=queue)


async def _submit_and_follow(config: HostConfig, requests: list[dict[str, Any]],
                             output: str, stopped: threading.Event | None
                             ) -> list[dict[str, Any]]:
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from reconciler.engine.connection import connect
    from reconciler.engine.workflows import ReconcileWorkflow, reconcile_id

    assert config.engine is not None
    client = await connect(config.engine)
    await _start_limiter(client, config)
    handles = []
    for request in requests:
        wid = reconcile_id(request["vcenter"])
        try:
            handles.append(await client.start_workflow(
                ReconcileWorkflow.run, request, id=wid, task_queue=config.engine.task_queue))
        except WorkflowAlreadyStartedError:
            for handle in handles:  # nothing of this apply runs half
                await handle.cancel()
            raise ReconcileRunning(
                f"a reconcile of vCenter {request['vcenter']!r} is already running on the "
                f"engine (workflow {wid}); nothing was submitted. Wait for it, or see "
                f"`temporal workflow describe --workflow-id {wid}`") from None
    stop = asyncio.Event()
    if stopped is None:  # apply: the signals are ours (run's controller has its own)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    if output == "text":
        print(f"Submitted reconcile {requests[0]['runId'] if requests else ''} of "
              f"{len(handles)} vCenter(s) to {config.engine.address}", flush=True)
    seen: set[str] = set()
    results: list[dict[str, Any]] = []
    cancelled = False
    for handle in handles:
        waiting = asyncio.ensure_future(handle.result())
        while not waiting.done():
            done, _ = await asyncio.wait({waiting}, timeout=1.0)
            if (stop.is_set() or (stopped is not None and stopped.is_set())) \
                    and not cancelled:
                cancelled = True
                print("vmkeep: cancelling: running exports stop at their next heartbeat",
                      file=sys.stderr, flush=True)
                for other in handles:
                    await other.cancel()
            if not done and output == "text":
                await _print_progress(handle, seen)
        try:
            results.append(waiting.result())
        except WorkflowFailureError as exc:
            if cancelled:
                continue
            cause = exc.cause
            text = f"{type(cause).__name__}: {cause}" if cause else str(exc)
            raise VmkeepError(f"reconcile {handle.id} ended without finishing: {text}") \
                from None
    deleted = {o["action"].get("target") for r in results for o in r["outcomes"]
               if o["action"]["kind"] == "export.delete" and o["status"] == "done"}
    if deleted - {None}:
        await _start_maintenance(client, config, {t for t in deleted if t})
    if cancelled:
        raise ReconcileCancelled(
            "reconcile cancelled: exports in flight were stopped and their temporary "
            "snapshots removed; the next run starts them again")
    return results


async def _print_progress(handle: Any, seen: set[str]) -> None:
    try:
        state = await handle.query("progress")
    except Exception:  # not started yet, or already closed: the result will tell
        return
    for outcome in state.get("outcomes", []):
        key = f"{outcome['action']['kind']} {outcome['action']['pointId']}"
        if key not in seen:
            seen.add(key)
            print(_line(outcome), flush=True)


def _line(outcome: dict[str, Any]) -> str:
    a = outcome["action"]
    where = f" on {outcome['proxy']}" if outcome.get("proxy") else ""
    return f"  {outcome['status']}: {a['kind']} {a['pointId']} ({a['vm']['name']}){where}" + (
        f": {outcome['message']}" if outcome["status"] in ("failed", "skipped") else "")


def _summary(run_id: str, results: list[dict[str, Any]], outcomes: list[dict[str, Any]],
             output: str) -> None:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o["status"]] = counts.get(o["status"], 0) + 1
    held = sum(int(r.get("held", 0)) for r in results)
    if output == "json":
        print(json.dumps({"runId": run_id, "engine": "temporal", "summary": counts,
                          "held": held, "outcomes": outcomes}, indent=2))
        return
    print(f"\nApply {run_id}: " + ", ".join(
        f"{counts.get(s, 0)} {s}" for s in ("done", "noop", "failed", "skipped")))
    for o in outcomes:
        if o["status"] in ("failed", "skipped"):
            print(_line(o))
    if held:
        print(f"  {held} deletions held back: more than the limit; raise "
              "limits.maxDeletesPerRun or pass --max-deletes N if this is intended")
    proxies = sorted({o["proxy"] for o in outcomes if o.get("proxy")})
    if proxies:
        print(f"  proxies: {', '.join(proxies)}")
    sys.stdout.flush()

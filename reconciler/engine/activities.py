"""The activities a `vmkeep worker` (a proxy) runs: the executor's unit of work and its
companions. Synchronous code on the worker's thread pool (pyVmomi blocks), the same
`ActionRunner.run` the embedded thread pool calls.

- `vmkeep.plan` — observe vCenter and the targets, plan (the pure planner), route each
  VM's actions to its proxy queue;
- `vmkeep.action` — one action on one VM; progress heartbeats the bytes done and the extent
  cursor, and cancellation reaches the action at its next heartbeat;
- `vmkeep.compensate` — remove a point's temporary export snapshot after its export failed
  for good (its proxy died), on whichever worker takes it;
- `vmkeep.gc`, `vmkeep.verify` — maintenance of one target.

Everything is idempotent: an action re-reads reality first, a commit refuses a point that
already exists, so a late zombie changes nothing.
"""

from __future__ import annotations

import contextvars
import logging
import socket
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import CancelledError

from reconciler import engine_config, planner, policies, wiring
from reconciler.engine.codec import (
    action_from_json,
    action_to_json,
    files_from_json,
    outcome_to_json,
)
from reconciler.executor import ActionRunner, Progress
from reconciler.markers import MarkerKind, parse_marker
from reconciler.model import ActionKind, HostConfig, Policy
from reconciler.observed import parse_time

__all__ = ["EngineJournal", "WorkerActivities"]


def _tick(stop: threading.Event, interval: float, beat: Any) -> None:
    while not stop.wait(interval):
        beat()

log = logging.getLogger(__name__)


class EngineJournal:
    """The executor's journal on a proxy: intents and details go out with the heartbeat, so
    the engine's history holds them (the controller's SQLite file is on another host)."""

    def __init__(self) -> None:
        self.details: dict[str, Any] = {}
        self._lock = threading.Lock()

    def record_intent(self, run_id: str, *, kind: str, point_id: str, vm_uuid: str,
                      vm_name: str, vcenter: str, now: float,
                      details: Mapping[str, Any] | None = None) -> int:
        with self._lock:
            self.details.update(details or {})
        return 1

    def update_details(self, action_id: int, details: Mapping[str, Any]) -> None:
        with self._lock:
            self.details.update(details)

    def record_outcome(self, action_id: int, status: str, now: float,
                       error: str | None = None) -> None:
        with self._lock:
            self.details["status"] = status


@dataclass
class WorkerActivities:
    """A proxy's ports, opened once per worker process and shared by its activities."""

    config: HostConfig
    identity: str = field(default_factory=lambda: socket.gethostname())
    _stack: ExitStack = field(default_factory=ExitStack, init=False, repr=False)
    _vcenters: Any = field(default=None, init=False, repr=False)
    _targets: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _policies: dict[str, Mapping[str, Policy]] = field(default_factory=dict, init=False,
                                                       repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def open(self) -> WorkerActivities:
        passwords = {name: wiring.resolve_password(vc)
                     for name, vc in self.config.vcenters.items()}
        self._vcenters = self._stack.enter_context(wiring.open_vcenters(self.config, passwords))
        self._targets = self._stack.enter_context(wiring.open_targets(self.config))
        return self

    def close(self) -> None:
        self._stack.close()

    def all(self) -> list[Any]:
        return [self.plan, self.run_action, self.compensate, self.gc, self.verify]

    def _policy_map(self, files: list[dict[str, str]], revision: str | None
                    ) -> Mapping[str, Policy]:
        key = f"{revision}:{hash(tuple(sorted((f['path'], f['data']) for f in files)))}"
        with self._guard:
            cached = self._policies.get(key)
        if cached is None:
            parsed = policies.parse_policies(files_from_json(files), self.config, revision)
            cached = parsed.by_name()
            with self._guard:
                self._policies[key] = cached
        return cached

    # ------------------------------------------------------------------ activities

    @activity.defn(name="vmkeep.plan")
    def plan(self, request: dict[str, Any]) -> dict[str, Any]:
        """Observe, plan and route: the actions of one vCenter, each with its task queue."""
        capture = wiring.capture

        files = request["policyFiles"]
        policy_set = policies.parse_policies(files_from_json(files), self.config,
                                             request.get("revision"))
        now = parse_time(request["now"])
        state = capture(self.config, now)
        the_plan = planner.plan(
            policy_set, state, now, self.config.limits,
            {name: vc.transport for name, vc in self.config.vcenters.items()},
            hygiene=self.config.hygiene)
        vcenter = request["vcenter"]
        vms = {vm.instance_uuid: vm for vm in state.vcenters.get(vcenter, ())}
        default = request["defaultQueue"]
        actions: list[dict[str, Any]] = []
        for action in the_plan.actions:
            if action.vcenter != vcenter:
                continue
            vm = vms.get(action.vm.instance_uuid)
            queue = engine_config.queue_for(vm, self.config.proxies, default) if vm else default
            actions.append({"action": action_to_json(action), "queue": queue,
                            "host": vm.host if vm else "",
                            "datastores": list(vm.datastores) if vm else []})
        deletions = sum(1 for a in actions if a["action"]["kind"].endswith(".delete"))
        held = 0
        if deletions > request.get("maxDeletes", self.config.limits.max_deletes_per_run):
            # the safety rule of apply: the backups run, the deletions are held back
            held = deletions
            actions = [a for a in actions if not a["action"]["kind"].endswith(".delete")]
        return {"actions": actions, "held": held, "revision": the_plan.policy_revision}

    @activity.defn(name="vmkeep.action")
    def run_action(self, request: dict[str, Any]) -> dict[str, Any]:
        """One action of the executor, heartbeating its progress."""
        action = action_from_json(request["action"])
        info = activity.info()
        journal = EngineJournal()
        state: dict[str, Any] = {"phase": "start", "disk": "", "done": 0, "total": 0,
                                 "attempt": info.attempt, "proxy": self.identity}
        previous = info.heartbeat_details[0] if info.heartbeat_details else None

        def beat() -> None:
            activity.heartbeat(dict(state, details=dict(journal.details)))

        def progress(p: Progress) -> None:
            state.update(phase=p.phase, disk=p.disk, done=p.done, total=p.total)
            beat()

        # heartbeats also while a step reports nothing (a quiesced snapshot, a hook)
        stop = threading.Event()
        interval = max(0.2, (info.heartbeat_timeout.total_seconds()
                             if info.heartbeat_timeout else 30.0) / 3)
        context = contextvars.copy_context()
        ticker = threading.Thread(
            target=lambda: context.run(_tick, stop, interval, beat),
            name="vmkeep-heartbeat", daemon=True)
        ticker.start()

        runner = ActionRunner(
            run_id=request["runId"],
            policies=self._policy_map(request["policyFiles"], request.get("revision")),
            vcenters=self._vcenters.ops(),
            targets=self._targets,
            hooks=wiring.hook_runner(self.config.hooks),
            journal=journal,
            clock=time.time,
            sleep=time.sleep,
            policy_revision=request.get("revision"),
            progress=progress,
            proxy=self.identity,
            # the controller host's installation: its id marks the temporary snapshots
            installation=str(request.get("installation", "")),
            # a retry after the engine lost the try (its proxy died or stopped answering)
            resume=info.attempt > 1 and action.kind is ActionKind.EXPORT_CREATE,
        )
        started = time.time()
        try:
            outcome = runner.run(action)
        finally:
            stop.set()
            ticker.join()
        ended = time.time()
        if activity.is_cancelled():
            # the runner recorded the cancellation as a failure; the engine must see it as
            # what it is (the export is aborted and its temporary snapshot removed by now)
            print(f"vmkeep: {self.identity}: {action.kind.value} {action.point_id} (attempt "
                  f"{info.attempt}): cancelled", file=sys.stderr, flush=True)
            raise CancelledError("the reconcile was cancelled")
        print(f"vmkeep: {self.identity}: {action.kind.value} {action.point_id} (attempt "
              f"{info.attempt}): {outcome.status} {outcome.message}".rstrip(),
              file=sys.stderr, flush=True)
        result = outcome_to_json(outcome, self.identity)
        result["attempt"] = info.attempt
        result["startedAt"], result["endedAt"] = started, ended  # on this proxy's clock
        if isinstance(previous, dict):
            result["resumedFrom"] = {"proxy": previous.get("proxy"),
                                     "disk": previous.get("disk"),
                                     "done": previous.get("done")}
        return result

    @activity.defn(name="vmkeep.compensate")
    def compensate(self, request: dict[str, Any]) -> list[str]:
        """Remove the temporary export snapshot of a point whose export failed for good."""
        action = action_from_json(request["action"])
        vc = self._vcenters.ops()[action.vcenter]
        vm = vc.find_vm(action.vm.instance_uuid)
        removed: list[str] = []
        if vm is None:
            return removed
        for snap in vm.snapshots:
            marker = parse_marker(snap.name, snap.description)
            if marker is not None and marker.point_id == action.point_id \
                    and marker.kind is MarkerKind.EXPORT_TEMP \
                    and (marker.installation or "") == request.get("installation", ""):
                vc.remove_snapshot(vm, snap.id)
                removed.append(snap.id)
        store = self._targets.get(action.target or "")
        if store is not None and any(p.id == action.point_id for p in store.partials()) \
                and not any(p.id == action.point_id for p in store.points()):
            store.discard_partial(action.point_id)
        return removed

    @activity.defn(name="vmkeep.gc")
    def gc(self, target: str) -> dict[str, Any]:
        report = self._targets[target].gc()
        body = report.to_json() if hasattr(report, "to_json") else {}
        return {"target": target, "report": body, "proxy": self.identity}

    @activity.defn(name="vmkeep.verify")
    def verify(self, target: str) -> dict[str, Any]:
        report = self._targets[target].verify()
        damaged = [str(d) for d in getattr(report, "damaged", ())]
        return {"target": target, "clean": bool(getattr(report, "ok", not damaged)),
                "damaged": damaged, "proxy": self.identity}

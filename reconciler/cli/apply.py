"""`vmkeep apply`: carry out a plan against vCenter and the export targets.

    vmkeep apply [PLAN.json] [--config F] [--policies DIR | --repo R --rev REV --path P]
                 [--now ISO] [--auto-approve] [--max-deletes N] [--parallel N] [-o text|json]

Without a saved plan it plans first and shows the plan. Without `--auto-approve` it asks
on a terminal and refuses when there is none. A saved plan is refused when it is stale: the
policy revision, the observed state's digest or the actions it implies changed since it was
made. Exit codes: 0 all done (or nothing to do), 1 error before any action (nothing changed),
3 some actions failed (the summary lists them).

One applier per state DB at a time (a lease with holder and expiry). Before planning, the
journal's unfinished actions of earlier runs are reconciled: VMs vmkeep powered off are
powered on, leftover export snapshots removed, partial exports discarded.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import observed, planner, policies, wiring
from reconciler.adapters.hooks import SubprocessHooks
from reconciler.adapters.statedb import ActionStatus, LeaseHeldError, StateDB
from reconciler.cli import common
from reconciler.cli.progress import ProgressDisplay
from reconciler.cli.state import capture, parse_now
from reconciler.errors import BlockedError, StalePlanError, UsageError
from reconciler.executor import ActionRunner, OutcomeStatus, RunReport, execute, recover
from reconciler.model import ActionKind, HostConfig, Limits, ObservedState, Plan, PolicySet
from reconciler.ports import ExportStore
from reconciler.render import plan_from_json, render_text

if TYPE_CHECKING:  # pyVmomi and the repository are imported when apply runs
    from reconciler.adapters.vsphere import VCenterPool

__all__ = [
    "EXIT_PARTIAL", "LEASE", "ApplyResult", "holder_is_dead", "reconcile", "register", "run",
]

#: Exit code when some actions failed (the others completed).
EXIT_PARTIAL = 3
LEASE = "apply"
LEASE_SECONDS = 300.0


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "apply",
        parents=[common_parser],
        help="create and prune snapshots and exports so reality matches the policies",
        description="Carry out a plan (saved with `vmkeep plan --out`, or made now). "
        "Exit 0 when everything succeeded, 1 on an error before any action, 3 when some "
        "actions failed.",
    )
    parser.add_argument("plan_file", nargs="?", metavar="PLAN.json",
                        help="a plan saved by `vmkeep plan --out`")
    common.add_source_arguments(parser)
    parser.add_argument("--now", metavar="ISO", help="plan as of this time (default: now)")
    parser.add_argument("--auto-approve", action="store_true",
                        help="do not ask for confirmation (needed without a terminal)")
    parser.add_argument("--max-deletes", type=int, metavar="N",
                        help="refuse to run when the plan deletes more than N restore points "
                        "(default: limits.maxDeletesPerRun)")
    parser.add_argument("--parallel", type=int, metavar="N",
                        help="VMs worked on at once (default: from the limits)")
    common.add_output_argument(parser, ("text", "json"))
    parser.set_defaults(func=run)


# ---------------------------------------------------------------------- the run


@dataclass(frozen=True)
class ApplyResult:
    """What one apply did: its exit code, the plan it carried out (None when it stopped
    before planning) and the run's report (None when there was nothing to do)."""

    code: int
    revision: str | None = None
    plan: Plan | None = None
    report: RunReport | None = None


def run(args: argparse.Namespace) -> int:
    return reconcile(args).code


def reconcile(args: argparse.Namespace) -> ApplyResult:
    """One apply as `run` does it, returning what happened (the controller's tick)."""
    from reconciler.adapters.vsphere import VCenterPool

    config = wiring.load_host_config(args.config)
    if args.max_deletes is not None and args.max_deletes < 0:
        raise UsageError("--max-deletes must be 0 or more")
    if config.engine is not None:  # the scaled tier: docs/scale-out.md
        from reconciler.engine.submit import engine_apply
        done = engine_apply(args, config)
        return ApplyResult(done.code, done.revision, None, done.report)
    run_id = f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    holder = f"{socket.gethostname()}/{os.getpid()}/{run_id}"
    with ExitStack() as stack:
        db = stack.enter_context(StateDB(config.state))
        _take_lease(db, holder)
        stack.callback(db.release_lease, LEASE, holder)
        stack.enter_context(_LeaseKeeper(db, holder))
        vcenters = stack.enter_context(VCenterPool.for_config(config, wiring.resolve_password))
        targets = _open_targets(config, stack)
        policy_set = policies.parse_policies(
            (source := common.policy_source_from_args(args)).files(), config, source.revision
        )
        now = parse_now(args.now)
        state = capture(config, now)
        notes = _recover(db, vcenters, state, targets)
        if notes:
            state = capture(config, now)
        limits = config.limits if args.max_deletes is None else replace(
            config.limits, max_deletes_per_run=args.max_deletes)
        plan = _the_plan(args, policy_set, state, limits, now)
        _show(plan, args.output)
        _guard(plan, limits.max_deletes_per_run)
        if not plan.actions:
            _say("No changes: reality already matches the policies.", args.output)
            return ApplyResult(0, policy_set.revision, plan)
        _confirm(args, plan)
        display = ProgressDisplay(sys.stderr, terminal=sys.stderr.isatty())
        stack.callback(display.close)
        db.start_run(run_id, holder, time.time(), policy_set.revision)
        runner = ActionRunner(
            run_id=run_id,
            policies=policy_set.by_name(),
            vcenters=vcenters.ops(),
            targets=targets,
            hooks=SubprocessHooks(config.hooks),
            journal=db,
            clock=time.time,
            sleep=time.sleep,
            policy_revision=policy_set.revision,
            progress=display,
        )
        hosts = {vm.instance_uuid: vm.host for vms in state.vcenters.values() for vm in vms}
        report = execute(plan, runner, config.limits, parallel=args.parallel, hosts=hosts)
        report = RunReport(report.run_id, report.outcomes, tuple(notes))
        db.finish_run(run_id, time.time(), report.counts())
        _summary(report, args.output)
        return ApplyResult(EXIT_PARTIAL if report.failed else 0, policy_set.revision, plan,
                           report)
    raise AssertionError("unreachable")


def _take_lease(db: StateDB, holder: str) -> None:
    """The applier lease; a lease whose holder process died on this host is taken over."""
    try:
        db.acquire_lease(LEASE, holder, time.time(), LEASE_SECONDS)
    except LeaseHeldError as exc:
        if not holder_is_dead(exc.holder):
            raise
        print(f"vmkeep: taking over the apply lease of {exc.holder}: that process is gone",
              file=sys.stderr)
        db.acquire_lease(LEASE, holder, time.time(), LEASE_SECONDS, take_over=exc.holder)


def holder_is_dead(holder: str) -> bool:
    """True when `holder` ("host/pid/run") names a process of this host that is not running."""
    host, _, rest = holder.partition("/")
    pid_text = rest.partition("/")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another host's applier: only its expiry can free the lease
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a recycled pid now running something else
        cmdline = Path(f"/proc/{pid_text}/cmdline").read_bytes()
    except OSError:
        return False
    return b"vmkeep" not in cmdline and b"reconciler" not in cmdline


def _open_targets(config: HostConfig, stack: ExitStack) -> dict[str, ExportStore]:
    from reconciler.adapters.repository import Repository

    targets: dict[str, ExportStore] = {}
    for name, target in sorted(config.targets.items()):
        if target.type != "directory":
            raise UsageError(f"target {name!r}: type {target.type!r} is not supported")
        targets[name] = stack.enter_context(
            Repository.open(target.path, create=True, chunk_size=target.chunk_size, target=name)
        )
    return targets


def _recover(db: StateDB, vcenters: VCenterPool, state: ObservedState,
             targets: dict[str, ExportStore]) -> list[str]:
    notes = recover(
        db.unfinished_actions(),
        vcenters.ops(),
        state.vcenters,
        targets,
        lambda action_id, note: db.record_outcome(action_id, ActionStatus.RECONCILED,
                                                  time.time(), note),
        db.failed_with_vm_shut_down(),
        lambda action_id: db.update_details(action_id, {"poweredOffByUs": False}),
    )
    for note in notes:
        print(f"vmkeep: repaired: {note}", file=sys.stderr)
    return notes


def _the_plan(args: argparse.Namespace, policy_set: PolicySet, state: ObservedState,
              limits: Limits, now: datetime) -> Plan:
    """A fresh plan, or the saved one after checking it is not stale (returned re-made with
    today's limits: its actions are the same, its guard verdict current)."""
    if not args.plan_file:
        return planner.plan(policy_set, state, now, limits)
    saved = _load_plan(args.plan_file)
    if saved.policy_revision != policy_set.revision:
        raise StalePlanError(
            f"Saved plan is stale: it was made from policy revision {saved.policy_revision}, "
            f"the policies are now at {policy_set.revision}; run `vmkeep plan --out` again"
        )
    digest = observed.digest(state)
    if saved.observed_digest != digest:
        raise StalePlanError(
            "Saved plan is stale: vCenter or the targets changed since it was made "
            f"(observed state {saved.observed_digest[:19]}… is now {digest[:19]}…); "
            "run `vmkeep plan --out` again"
        )
    fresh = planner.plan(policy_set, state, saved.now, limits)
    if fresh.actions != saved.actions:
        raise StalePlanError(
            "Saved plan is stale: the policies now call for different actions than the "
            "saved plan lists; run `vmkeep plan --out` again"
        )
    return fresh


def _load_plan(path: str) -> Plan:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read plan {path!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"plan {path!r} is not JSON: {exc}") from None
    return plan_from_json(data, path)


def _guard(plan: Plan, max_deletes: int) -> None:
    deletes = sum(1 for a in plan.actions if a.kind.is_delete)
    if plan.blocked:
        raise BlockedError(f"the plan is blocked, nothing was changed: {plan.blocked_reason}")
    if deletes > max_deletes:
        raise BlockedError(
            f"the plan deletes {deletes} restore points, more than the limit of {max_deletes}; "
            "nothing was changed. Check the policies; raise limits.maxDeletesPerRun or pass "
            "--max-deletes N if this is intended"
        )


def _confirm(args: argparse.Namespace, plan: Plan) -> None:
    if args.auto_approve:
        return
    if not sys.stdin.isatty():
        raise UsageError(
            "refusing to apply without confirmation: no terminal to ask on; "
            "review the plan and pass --auto-approve"
        )
    count = len(plan.actions)
    answer = input(f"\nApply these {count} action{'s' if count != 1 else ''}? "
                   "Only 'yes' will be accepted: ")
    if answer.strip() != "yes":
        raise UsageError("apply cancelled; nothing was changed")


# ---------------------------------------------------------------------- output


def _show(plan: Plan, output: str) -> None:
    if output == "text":
        sys.stdout.write(render_text(plan, colour=sys.stdout.isatty()
                                     and "NO_COLOR" not in os.environ))
        sys.stdout.flush()


def _say(message: str, output: str) -> None:
    if output == "json":
        print(json.dumps({"runId": None, "outcomes": [], "summary": {}, "message": message}))
    else:
        print(message)


def _summary(report: RunReport, output: str) -> None:
    if output == "json":
        body = {
            "runId": report.run_id,
            "summary": report.counts(),
            "repaired": list(report.recovered),
            "outcomes": [
                {
                    "kind": o.action.kind.value,
                    "pointId": o.action.point_id,
                    "vm": {"name": o.action.vm.name,
                           "instanceUuid": o.action.vm.instance_uuid},
                    "status": o.status,
                    "message": o.message,
                    "consistency": o.consistency,
                    "bytesRead": o.bytes_read,
                    "bytesStored": o.bytes_stored,
                    "seconds": round(o.seconds, 3),
                    "startedAt": _iso(o.started),
                    **({"transfer": {"startedAt": _iso(o.transfer_started),
                                     "seconds": round(o.transfer_seconds, 3)}}
                       if o.transfer_started else {}),
                }
                for o in report.outcomes
            ],
        }
        print(json.dumps(body, indent=2))
        return
    counts = report.counts()
    print(f"\nApply {report.run_id}: " + ", ".join(
        f"{counts.get(s, 0)} {s}" for s in (OutcomeStatus.DONE, OutcomeStatus.NOOP,
                                            OutcomeStatus.FAILED, OutcomeStatus.SKIPPED)))
    for outcome in report.outcomes:
        if outcome.status in (OutcomeStatus.FAILED, OutcomeStatus.SKIPPED):
            a = outcome.action
            print(f"  {outcome.status}: {a.kind.value} {a.point_id} ({a.vm.name}): "
                  f"{outcome.message}")
    exports = [o for o in report.outcomes
               if o.action.kind is ActionKind.EXPORT_CREATE and o.status == OutcomeStatus.DONE]
    if exports:
        read = sum(o.bytes_read for o in exports)
        stored = sum(o.bytes_stored for o in exports)
        print(f"  exports: {len(exports)}, {read / 2**20:,.1f} MiB read, "
              f"{stored / 2**20:,.1f} MiB stored")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class _LeaseKeeper:
    """Renews the applier lease in the background while a long run goes on."""

    def __init__(self, db: StateDB, holder: str) -> None:
        self._db, self._holder = db, holder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="vmkeep-lease", daemon=True)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            self._db.acquire_lease(LEASE, self._holder, time.time(), LEASE_SECONDS)


"""`vmkeep apply`: carry out a plan against vCenter and the export targets.

    vmkeep apply [PLAN.json] [--config F] [--policies DIR | --repo R --rev REV --path P]
                 [--now ISO] [--auto-approve] [--max-deletes N] [--parallel N] [-o text|json]

Without a saved plan it plans first and shows the plan. Without `--auto-approve` it asks
on a terminal and refuses when there is none. A saved plan is refused when it is stale: the
policy revision, the observed state's digest or the actions it implies changed since it was
made. Exit codes: 0 all done (or nothing to do), 1 error before any action (nothing changed),
3 needs attention: some actions failed (the summary lists them), or the deletion budget
(`limits.maxDeletesPerRun`, `--max-deletes N`) held deletions back while the creates ran.

Every input (host config, flags, `--now`, policies, the plan file, vCenter passwords) is
checked before anything is opened, created, locked or asked of vCenter.

One applier per state DB at a time (a lease with holder and expiry). Before planning, what
interrupted runs of this installation left is repaired (`reconciler.recovery`): tasks they
left running are waited for, VMs vmkeep powered off are powered on, this installation's
leftover export snapshots removed, partial exports discarded; each repair is printed and
journaled.
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
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import observed, planner, policies, wiring
from reconciler.adapters.hooks import SubprocessHooks
from reconciler.adapters.statedb import LeaseHeldError, StateDB
from reconciler.cli import common
from reconciler.cli.progress import ProgressDisplay
from reconciler.cli.state import capture, parse_now
from reconciler.errors import BlockedError, StalePlanError, UsageError
from reconciler.executor import ActionRunner, DiskExport, OutcomeStatus, RunReport, execute
from reconciler.model import ActionKind, HostConfig, Limits, ObservedState, Plan, PolicySet
from reconciler.ports import ExportStore
from reconciler.recovery import recover_journaled
from reconciler.render import plan_from_json, render_text
from reconciler.render.document import held_to_json
from reconciler.vcenter_restore import JOURNAL_KIND as RESTORE_KIND
from reconciler.vcenter_restore import clean_leftovers

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
        "actions failed or deletions were held back by the deletion budget.",
    )
    parser.add_argument("plan_file", nargs="?", metavar="PLAN.json",
                        help="a plan saved by `vmkeep plan --out`")
    common.add_source_arguments(parser)
    parser.add_argument("--now", metavar="ISO", help="plan as of this time (default: now)")
    parser.add_argument("--auto-approve", action="store_true",
                        help="do not ask for confirmation (needed without a terminal)")
    parser.add_argument("--max-deletes", type=int, metavar="N",
                        help="hold every deletion back (the creates still run) when the plan "
                        "deletes more than N restore points (default: limits.maxDeletesPerRun)")
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


@dataclass(frozen=True)
class _Inputs:
    """Everything an apply reads from the user, checked before anything is opened."""

    config: HostConfig
    policy_set: PolicySet
    now: datetime
    limits: Limits
    saved: Plan | None  # the saved plan file, when one was given
    passwords: dict[str, str]


def _inputs(args: argparse.Namespace) -> _Inputs:
    """Read and check every input: host config, flags, policies, `--now`, the plan file and
    the vCenter passwords. Nothing is created, locked or asked of vCenter before this
    returns (DESIGN rule 8): a bad input fails here and leaves the world as it was."""
    config = wiring.load_host_config(args.config)
    if args.max_deletes is not None and args.max_deletes < 0:
        raise UsageError("--max-deletes must be 0 or more")
    if args.parallel is not None and args.parallel < 0:
        raise UsageError("--parallel must be 0 (the default) or more")
    for name, target in sorted(config.targets.items()):
        if target.type != "directory":
            raise UsageError(f"target {name!r}: type {target.type!r} is not supported")
    now = parse_now(args.now)
    source = common.policy_source_from_args(args)
    policy_set = policies.parse_policies(source.files(), config, source.revision)
    saved = _load_plan(args.plan_file) if args.plan_file else None
    limits = config.limits if args.max_deletes is None else replace(
        config.limits, max_deletes_per_run=args.max_deletes)
    passwords = {name: wiring.resolve_password(vc) for name, vc in config.vcenters.items()}
    return _Inputs(config, policy_set, now, limits, saved, passwords)


def reconcile(args: argparse.Namespace) -> ApplyResult:
    """One apply as `run` does it, returning what happened (the controller's tick)."""
    from reconciler.adapters.vsphere import VCenterPool

    given = _inputs(args)  # first: bad input changes nothing
    config, policy_set, now, limits = given.config, given.policy_set, given.now, given.limits
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
        vcenters = stack.enter_context(VCenterPool(config.vcenters, given.passwords))
        targets = _open_targets(config, stack)
        state = capture(config, now)
        notes = _recover(db, holder, run_id, vcenters, state, targets)
        if notes:
            state = capture(config, now)
        transports = {name: vc.transport for name, vc in config.vcenters.items()}
        plan = _the_plan(given.saved, policy_set, state, limits, now, transports)
        _show(plan, args.output)
        _guard(plan)
        if not plan.actions:
            if plan.held:
                _say("Nothing to apply: every change is a deletion held back.", args.output,
                     plan, notes)
            elif plan.unobserved:
                _say("No changes for the vCenters that could be observed.", args.output, plan,
                     notes)
            else:
                _say("No changes: reality already matches the policies.", args.output,
                     repaired=notes)
            code = EXIT_PARTIAL if plan.held or plan.unobserved else 0
            return ApplyResult(code, policy_set.revision, plan)
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
            installation=db.installation_id(),
        )
        hosts = {vm.instance_uuid: vm.host for vms in state.vcenters.values() for vm in vms}
        report = execute(plan, runner, config.limits, parallel=args.parallel, hosts=hosts)
        report = RunReport(report.run_id, report.outcomes, tuple(notes))
        db.finish_run(run_id, time.time(), report.counts())
        _summary(report, args.output, plan)
        attention = report.failed or plan.held or plan.unobserved
        return ApplyResult(EXIT_PARTIAL if attention else 0, policy_set.revision, plan, report)
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
        targets[name] = stack.enter_context(
            Repository.open(target.path, create=True, chunk_size=target.chunk_size, target=name)
        )
    return targets


def _recover(db: StateDB, holder: str, run_id: str, vcenters: VCenterPool,
             state: ObservedState, targets: dict[str, ExportStore]) -> list[str]:
    # The journal's records of a vCenter that could not be observed wait for a run that sees
    # it: repairing them now would mean asking that vCenter, or settling them unrepaired.
    def say(note: str) -> None:
        print(f"vmkeep: repaired: {note}", file=sys.stderr)

    notes = _clean_restores(db, vcenters, set(state.unobserved))
    for note in notes:
        say(note)
    return notes + recover_journaled(db, holder, run_id, vcenters.ops(), state, targets,
                                     time.time, say, other_kinds={RESTORE_KIND})


def _clean_restores(db: StateDB, vcenters: VCenterPool, unseen: set[str]) -> list[str]:
    """What killed `vmkeep restore --vcenter` runs left: their temporary VMs and files (on
    the vCenters this run could observe)."""
    from reconciler.adapters.vsphere import VSphereRestore

    def target(name: str) -> VSphereRestore | None:
        if name in unseen:
            return None  # left for a run that sees that vCenter
        try:
            return VSphereRestore(vcenters.operations(name).client)
        except KeyError:
            return None  # a vCenter no longer in the host config

    return clean_leftovers(db, target, holder_is_dead)


def _the_plan(saved: Plan | None, policy_set: PolicySet, state: ObservedState,
              limits: Limits, now: datetime, transports: dict[str, str]) -> Plan:
    """A fresh plan, or the saved one after checking it is not stale (returned re-made with
    today's limits: its actions are the same, its guard verdict current)."""
    if saved is None:
        return planner.plan(policy_set, state, now, limits, transports)
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
    fresh = planner.plan(policy_set, state, saved.now, limits, transports)
    # The same changes, whichever the deletion budget holds back today.
    if Counter((*fresh.actions, *fresh.held)) != Counter((*saved.actions, *saved.held)):
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
    except RecursionError:
        raise UsageError(f"plan {path!r} is not a vmkeep plan: nested too deeply") from None
    return plan_from_json(data, path)


def _guard(plan: Plan) -> None:
    """A blocked plan does not run at all. (Deletions beyond the deletion budget are not a
    block: the planner holds them back and the rest of the plan runs.)"""
    if plan.blocked:
        raise BlockedError(f"the plan is blocked, nothing was changed: {plan.blocked_reason}")


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


def _held_json(plan: Plan | None) -> dict[str, Any]:
    """What needs attention besides failures: held deletions, unobserved vCenters."""
    if plan is None:
        return {"heldCount": 0, "heldReason": "", "heldHint": "", "held": [],
                "unobservedVcenters": {}}
    return {**held_to_json(plan), "unobservedVcenters": dict(sorted(plan.unobserved.items()))}


def _say(message: str, output: str, plan: Plan | None = None,
         repaired: list[str] | None = None) -> None:
    if output == "json":
        print(json.dumps({"runId": None, "outcomes": [], "summary": {}, "message": message,
                          "repaired": list(repaired or []), **_held_json(plan)}))
    else:
        print(message)
        for note in repaired or ():
            print(f"  repaired: {note}")
        _print_held(plan)


def _disk_json(d: DiskExport) -> dict[str, object]:
    t = d.transport
    return {
        "disk": d.disk,
        "transport": t.kind if t else "",
        "method": t.method if t else "",
        "datastore": t.datastore if t else "",
        "datastoreType": t.datastore_type if t else "",
        "reason": t.reason if t else "",
        "changedExtents": d.changed_extents,
        "bytesRead": d.bytes_read,
    }


def _print_held(plan: Plan | None) -> None:
    if plan is None:
        return
    for name, reason in sorted(plan.unobserved.items()):
        print(f"  not observed: vCenter {name!r} ({reason}); its VMs were left alone, their "
              "coverage is unknown")
    if plan.held:
        print(f"  held back: {len(plan.held)} deletion(s), see HELD above; to allow them pass "
              f"--max-deletes {len(plan.held)} or raise limits.maxDeletesPerRun")


def _summary(report: RunReport, output: str, plan: Plan | None = None) -> None:
    if output == "json":
        body = {
            "runId": report.run_id,
            "summary": report.counts(),
            "repaired": list(report.recovered),
            **_held_json(plan),
            "outcomes": [
                {
                    "kind": o.action.kind.value,
                    "pointId": o.action.point_id,
                    "vm": {"name": o.action.vm.name,
                           "instanceUuid": o.action.vm.instance_uuid},
                    "status": o.status,
                    "message": o.message,
                    "consistency": o.consistency,
                    "consistencyNote": o.consistency_note,
                    "bytesRead": o.bytes_read,
                    "bytesStored": o.bytes_stored,
                    "seconds": round(o.seconds, 3),
                    "startedAt": _iso(o.started),
                    **({"transfer": {"startedAt": _iso(o.transfer_started),
                                     "seconds": round(o.transfer_seconds, 3)}}
                       if o.transfer_started else {}),
                    **({"transport": o.transport,
                        "disks": [_disk_json(d) for d in o.disks]} if o.disks else {}),
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
    for note in report.recovered:
        print(f"  repaired: {note}")
    for outcome in report.outcomes:
        if outcome.status in (OutcomeStatus.FAILED, OutcomeStatus.SKIPPED):
            a = outcome.action
            print(f"  {outcome.status}: {a.kind.value} {a.point_id} ({a.vm.name}): "
                  f"{outcome.message}")
    for outcome in report.outcomes:
        if outcome.consistency_note and outcome.status == OutcomeStatus.DONE:
            a = outcome.action
            print(f"  {outcome.consistency}: {a.kind.value} {a.point_id} ({a.vm.name}): "
                  f"{outcome.consistency_note}")
    exports = [o for o in report.outcomes
               if o.action.kind is ActionKind.EXPORT_CREATE and o.status == OutcomeStatus.DONE]
    if exports:
        read = sum(o.bytes_read for o in exports)
        stored = sum(o.bytes_stored for o in exports)
        print(f"  exports: {len(exports)}, {read / 2**20:,.1f} MiB read, "
              f"{stored / 2**20:,.1f} MiB stored")
    _print_held(plan)


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


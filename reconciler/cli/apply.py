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
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler import policies, wiring
from reconciler.cli import common
from reconciler.cli.progress import ProgressDisplay
from reconciler.errors import UsageError
from reconciler.executor import DiskExport, OutcomeStatus, Progress, RunReport
from reconciler.model import ActionKind, HostConfig, Plan, PolicySet
from reconciler.reconcile import (
    EXIT_PARTIAL,
    ReconcileRequest,
    ReconcileResult,
    check_overrides,
)
from reconciler.render import plan_from_json, render_text
from reconciler.render.document import held_to_json

__all__ = ["EXIT_PARTIAL", "ApplyEvents", "ApplyResult", "reconcile", "register", "run"]

#: What one apply did (the reconcile service's result).
ApplyResult = ReconcileResult


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


def run(args: argparse.Namespace) -> int:
    return reconcile(args).code


@dataclass(frozen=True)
class _Inputs:
    """Everything an apply reads from the user, checked before anything is opened."""

    config: HostConfig
    request: ReconcileRequest
    passwords: dict[str, str]


def _inputs(args: argparse.Namespace) -> _Inputs:
    """Read and check every input: host config, flags, policies, `--now`, the plan file and
    the vCenter passwords. Nothing is created, locked or asked of vCenter before this
    returns (DESIGN rule 8): a bad input fails here and leaves the world as it was."""
    config = wiring.load_host_config(args.config)
    check_overrides(config, args.max_deletes, args.parallel)
    now = common.parse_now(args.now)
    source = common.policy_source_from_args(args)
    policy_set: PolicySet = policies.parse_policies(source.files(), config, source.revision)
    saved = _load_plan(args.plan_file) if args.plan_file else None
    passwords = {name: wiring.resolve_password(vc) for name, vc in config.vcenters.items()}
    request = ReconcileRequest(policy_set, now, saved, args.max_deletes, args.parallel)
    return _Inputs(config, request, passwords)


def reconcile(args: argparse.Namespace) -> ApplyResult:
    """One apply as `run` does it: the flags as a request to the reconcile service, its
    events rendered on stdout/stderr."""
    given = _inputs(args)  # first: bad input changes nothing
    config = given.config
    if config.engine is not None:  # the scaled tier: docs/scale-out.md
        from reconciler.engine.submit import engine_apply
        done = engine_apply(args, config)
        return ApplyResult(done.code, done.revision, None, done.report)
    service = wiring.reconciler(given.config, given.passwords,
                                approve=lambda plan: _confirm(args.auto_approve, plan),
                                events=ApplyEvents(args.output))
    return service.run(given.request)


class ApplyEvents:
    """The reconcile service's events as `vmkeep apply` shows them: the plan and summary on
    stdout (text or JSON), repairs and progress on stderr."""

    def __init__(self, output: str) -> None:
        self.output = output

    def lease_taken_over(self, holder: str) -> None:
        common.lease_taken_over(holder)

    def repaired(self, note: str) -> None:
        print(f"vmkeep: repaired: {note}", file=sys.stderr)

    def planned(self, plan: Plan) -> None:
        _show(plan, self.output)

    def nothing_to_do(self, message: str, plan: Plan | None, repaired: list[str]) -> None:
        _say(message, self.output, plan, repaired)

    @contextmanager
    def progress(self) -> Iterator[Callable[[Progress], None]]:
        display = ProgressDisplay(sys.stderr, terminal=sys.stderr.isatty())
        try:
            yield display
        finally:
            display.close()

    def finished(self, report: RunReport, plan: Plan) -> None:
        _summary(report, self.output, plan)


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


def _confirm(auto_approve: bool, plan: Plan) -> None:
    if auto_approve:
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

"""`vmkeep forget`: let go of restore points whose policy no longer exists.

    vmkeep forget (--point ID | --policy NAME --orphaned) [--plan] [--yes] [--force]
                  [--config F] [--policies DIR | --repo R --rev REV --path P] [--now ISO]
                  [--max-deletes N] [-o text|json]

Removing a policy never deletes its points (`onPolicyRemoval: retain`); plan and status list
them as `orphan-points`. `forget` deletes them on request — and only them: a point whose
policy is still in the policies is refused (retention decides about those), unless
`--force` names that single point. Snapshot points are removed from vCenter (only snapshots
carrying vmkeep's marker for that point), export points from their target (their data goes
with the next GC). It runs like apply: under the applier lease, every deletion journaled as
a run, counted against the deletion budget (`limits.maxDeletesPerRun`, `--max-deletes`).
`--plan` shows what would go and changes nothing; without `--yes` it asks on a terminal and
refuses without one. Exit codes: 0 done (or nothing to forget), 1 error or refused (nothing
changed), 3 some deletions failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from datetime import datetime
from typing import Any

from reconciler import observed, policies, wiring
from reconciler.cli import common
from reconciler.cli.common import parse_now
from reconciler.errors import BlockedError, UsageError
from reconciler.lease import LEASE, LeaseKeeper, new_holder, take_lease
from reconciler.model import Action, ActionKind, HostConfig, ObservedState, Plan, PointKind
from reconciler.reconcile import new_run_id
from reconciler.wiring import capture

__all__ = ["EXIT_PARTIAL", "register", "run", "select_points"]

EXIT_PARTIAL = 3


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "forget",
        parents=[common_parser],
        help="delete restore points of policies that no longer exist (orphans)",
        description="Delete restore points whose policy was removed from the policies: one "
        "(--point ID) or all of a removed policy (--policy NAME --orphaned). Points of a "
        "policy that still exists are refused unless --force names a single point.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--point", metavar="ID", help="one restore point, by id")
    which.add_argument("--policy", metavar="NAME",
                       help="every point of this removed policy (with --orphaned)")
    parser.add_argument("--orphaned", action="store_true",
                        help="with --policy: the policy must no longer exist (required)")
    parser.add_argument("--force", action="store_true",
                        help="with --point: forget it even though its policy still exists")
    parser.add_argument("--plan", action="store_true",
                        help="show what would be deleted and change nothing")
    parser.add_argument("--yes", action="store_true",
                        help="do not ask for confirmation (needed without a terminal)")
    common.add_source_arguments(parser)
    parser.add_argument("--now", metavar="ISO", help="observe as of this time (tests)")
    parser.add_argument("--max-deletes", type=int, metavar="N",
                        help="refuse when more than N points would be deleted "
                        "(default: limits.maxDeletesPerRun)")
    common.add_output_argument(parser, ("text", "json"))
    parser.set_defaults(func=run)


def select_points(
    state: ObservedState, live: set[str], *, point: str | None, policy: str | None,
    force: bool = False,
) -> list[Action]:
    """The deletions `forget` would make (pure): refuses what it must not touch."""
    catalog = observed.build_catalog(state)
    if point is not None:
        found = [p for p in catalog.points if p.point_id == point]
        if not found:
            raise UsageError(f"no restore point {point!r} in vCenter or the targets "
                             "(see `vmkeep status` or the plan's orphan-points)")
        if found[0].policy in live and not force:
            raise UsageError(
                f"restore point {point!r} belongs to policy {found[0].policy!r}, which still "
                "exists: its retention rules decide when it goes. Pass --force to forget "
                "this single point anyway")
        reason = (f"forget --point --force: policy {found[0].policy!r} still exists"
                  if found[0].policy in live else
                  f"forget: policy {found[0].policy!r} no longer exists")
    else:
        assert policy is not None
        if policy in live:
            raise UsageError(
                f"policy {policy!r} still exists: its points are not orphans (remove the "
                "policy from the policies first; its retention rules apply meanwhile)")
        found = [p for p in catalog.points if p.policy == policy]
        reason = f"forget: policy {policy!r} no longer exists"
    actions = []
    for p in sorted(found, key=lambda p: (p.kind.value, p.point_id, p.vcenter, p.target)):
        if p.kind is PointKind.SNAPSHOT:
            actions.append(Action(ActionKind.SNAPSHOT_DELETE, p.policy, p.vcenter, p.vm,
                                  p.point_id, p.slot, reason, snapshot_id=p.snapshot_id))
        else:
            actions.append(Action(ActionKind.EXPORT_DELETE, p.policy, p.vcenter, p.vm,
                                  p.point_id, p.slot, reason, target=p.target))
    return actions


def run(args: argparse.Namespace) -> int:
    if args.policy is not None and not args.orphaned:
        raise UsageError("--policy NAME needs --orphaned: forget deletes only the points of "
                         "a policy that no longer exists")
    if args.orphaned and args.policy is None:
        raise UsageError("--orphaned goes with --policy NAME")
    if args.force and args.point is None:
        raise UsageError("--force only forgets a single point: give --point ID")
    if args.max_deletes is not None and args.max_deletes < 0:
        raise UsageError("--max-deletes must be 0 or more")
    config = wiring.load_host_config(args.config)
    source = common.policy_source_from_args(args)
    policy_set = policies.parse_policies(source.files(), config, source.revision)
    live = {p.name for p in policy_set.policies}
    now = parse_now(args.now)
    if args.plan:
        actions = select_points(capture(config, now), live, point=args.point,
                                policy=args.policy, force=args.force)
        _show(actions, args.output, planned=True)
        return 0
    return _forget(args, config, live, now, policy_set.revision)


def _forget(args: argparse.Namespace, config: HostConfig, live: set[str], now: datetime,
            revision: str | None) -> int:
    from reconciler.executor import ActionRunner, execute

    run_id = new_run_id()
    holder = new_holder(run_id)
    with ExitStack() as stack:
        db = stack.enter_context(wiring.open_state_db(config))
        take_lease(db, holder, on_take_over=common.lease_taken_over)
        stack.callback(db.release_lease, LEASE, holder)
        stack.enter_context(LeaseKeeper(db, holder))
        passwords = {name: wiring.resolve_password(vc) for name, vc in config.vcenters.items()}
        vcenters = stack.enter_context(wiring.open_vcenters(config, passwords))
        targets = stack.enter_context(wiring.open_targets(config))
        state = capture(config, now)  # under the lease: nothing changes it meanwhile
        actions = select_points(state, live, point=args.point, policy=args.policy,
                                force=args.force)
        _show(actions, args.output, planned=True, quiet=args.output == "json")
        if not actions:
            return 0
        limit = config.limits.max_deletes_per_run if args.max_deletes is None \
            else args.max_deletes
        if len(actions) > limit:
            raise BlockedError(
                f"forget would delete {len(actions)} restore points, more than the limit of "
                f"{limit}; nothing was changed. Raise limits.maxDeletesPerRun or pass "
                "--max-deletes N if this is intended")
        _confirm(args, len(actions))
        plan = Plan(1, revision, observed.digest(state), now, tuple(actions),
                    delete_count=len(actions))
        db.start_run(run_id, holder, time.time(), revision)
        runner = ActionRunner(
            run_id=run_id, policies={}, vcenters=vcenters.ops(), targets=targets,
            hooks=wiring.hook_runner({}), journal=db, clock=time.time, sleep=time.sleep,
            policy_revision=revision,
        )
        report = execute(plan, runner, config.limits)
        db.finish_run(run_id, time.time(), report.counts())
        if args.output == "json":
            print(json.dumps({"runId": run_id, "summary": report.counts(), "outcomes": [
                {"kind": o.action.kind.value, "pointId": o.action.point_id,
                 "status": o.status, "message": o.message} for o in report.outcomes]},
                indent=2))
        else:
            for o in report.outcomes:
                print(f"{o.status}: {o.action.kind.value} {o.action.point_id} "
                      f"({o.action.vm.name}){': ' + o.message if o.message else ''}")
            print(f"forget {run_id}: " + ", ".join(
                f"{n} {k}" for k, n in sorted(report.counts().items())))
        return EXIT_PARTIAL if report.failed else 0
    raise AssertionError("unreachable")


def _confirm(args: argparse.Namespace, count: int) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("refusing to forget without confirmation: no terminal to ask on; "
                         "review the list (--plan) and pass --yes")
    answer = input(f"\nDelete these {count} restore point(s) for good? "
                   "Only 'yes' will be accepted: ")
    if answer.strip() != "yes":
        raise UsageError("forget cancelled; nothing was changed")


def _show(actions: list[Action], output: str, *, planned: bool, quiet: bool = False) -> None:
    if quiet:
        return
    if output == "json":
        print(json.dumps({"forget": [
            {"kind": a.kind.value, "pointId": a.point_id, "policy": a.policy,
             "vm": {"name": a.vm.name, "instanceUuid": a.vm.instance_uuid},
             "vcenter": a.vcenter, "target": a.target, "reason": a.reason}
            for a in actions]}, indent=2))
        return
    if not actions:
        print("Nothing to forget: no restore point matches.")
        return
    print(f"{'Would delete' if planned else 'Deleting'} {len(actions)} restore point(s):")
    for a in actions:
        where = f"target {a.target}" if a.target else f"vCenter {a.vcenter}"
        print(f"  - {a.kind.value} {a.point_id} ({a.vm.name}, {where}): {a.reason}")

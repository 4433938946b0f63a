"""`vmkeep status`: how the last runs went and how well the VMs are covered now.

    vmkeep status [--config F] [--policies DIR | --repo R --rev REV --path P] [--state FILE]
                  [--now ISO] [--runs N] [-o text|json] [--check]

From the state DB (read only): whether an apply is running, the last `--runs` runs with their
outcome counts, the failed actions of the newest finished run, and actions whose run ended
before their outcome (the next apply repairs them). With policies (`--policies`, `--repo`, or
a `./policies` directory) and the observed state (live, or `--state FILE`): every VM's
coverage and what an apply would do now. Exit 0; with `--check`, 3 when anything needs
attention (failures in the last run, a failed or interrupted recovery, an interrupted run not
repaired yet, pending repairs, late or missing coverage, a blocked plan), for monitoring; 1 on
errors.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import planner, policies, wiring
from reconciler.cli import common
from reconciler.cli.common import load_state, parse_now
from reconciler.cli.scheduled_verify import verification_view
from reconciler.collector import collector_paused
from reconciler.errors import UsageError, VmkeepError, mask
from reconciler.executor import OutcomeStatus
from reconciler.lease import LEASE, holder_is_dead
from reconciler.model import HostConfig, ObservedState, Plan
from reconciler.recovery import temporaries
from reconciler.render.status import status_text, status_to_json
from reconciler.status import JournalAction, RecoveryInfo, RunRecord, Status, summarize
from reconciler.verify_schedule import VerificationView
from reconciler.wiring import capture

if TYPE_CHECKING:
    from reconciler.adapters.statedb import ActionRecord, StateDB

__all__ = ["EXIT_ATTENTION", "collect_status", "register", "run"]

EXIT_ATTENTION = 3


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "status",
        parents=[common_parser],
        help="recent runs, failures, interrupted actions and coverage; --check for monitoring",
        description="Show whether an apply is running, how the recent runs went, what failed "
        "or was interrupted, and (with policies) how well every VM is covered now. With "
        "--check, exit 3 when something needs attention.",
    )
    common.add_source_arguments(parser)
    parser.add_argument(
        "--state", metavar="FILE", help="observed state from `vmkeep state export` (offline)"
    )
    parser.add_argument("--now", metavar="ISO", help="judge coverage as of this time")
    parser.add_argument("--runs", type=int, default=5, metavar="N",
                        help="how many recent runs to show (default: 5)")
    parser.add_argument("--check", action="store_true",
                        help="exit 3 when anything needs attention (0 when all is well)")
    common.add_output_argument(parser, ("text", "json"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    status = collect_status(args)
    if args.output == "json":
        sys.stdout.write(json.dumps(status_to_json(status), indent=2) + "\n")
    else:
        sys.stdout.write(status_text(status))
    return EXIT_ATTENTION if args.check and status.attention else 0


def collect_status(args: argparse.Namespace) -> Status:
    """The status `vmkeep status` shows (also served by the controller at /api/status)."""
    if args.runs < 0:
        raise UsageError("--runs must be 0 or more")
    config = wiring.load_host_config(args.config)
    now = parse_now(args.now)
    if Path(config.state).is_dir():  # checked before vCenter is asked anything
        raise VmkeepError(f"the state DB {config.state!r} is a directory; set `state` in the "
                          "host config to a file path")
    plan, verification, state = None, None, None
    if _wants_coverage(args):
        plan, verification, state = _plan(args, config, now)
    return _journal_status(config, now, plan, args.runs, verification, state)


def _wants_coverage(args: argparse.Namespace) -> bool:
    return bool(common.use_configured_source(args) or args.policies or args.repo
                or Path(common.DEFAULT_POLICIES).is_dir())


def _plan(args: argparse.Namespace, config: HostConfig, now: datetime
          ) -> tuple[Plan, VerificationView, ObservedState]:
    source = common.policy_source_from_args(args)
    policy_set = policies.parse_policies(source.files(), config, source.revision)
    observed = load_state(args.state) if args.state else capture(config, now)
    with collector_paused():  # a million small acyclic values at 10,000 VMs
        plan = planner.plan(policy_set, observed, now, config.limits,
                            {name: vc.transport for name, vc in config.vcenters.items()},
                            hygiene=config.hygiene)
    return (plan, verification_view(config, policy_set, observed.targets, now.timestamp()),
            observed)


def _moment(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _journal_status(config: HostConfig, now: datetime, plan: Plan | None, keep: int,
                    verification: VerificationView | None = None,
                    state: ObservedState | None = None) -> Status:
    """Read the state DB without creating or changing it: a host that never applied has no
    journal."""
    if not Path(config.state).is_file() or not wiring.holds_journal(Path(config.state)):
        others = temporaries(state, None)[1] if state is not None else []
        return summarize(now, (), (), (), None, plan, keep_runs=keep,
                         verification=verification, others=others)

    try:
        with wiring.open_journal(config.state, read_only=True) as db:
            holder = db.lease_holder(LEASE, time.time())
            if holder is not None and holder_is_dead(holder):
                holder = None  # its process was killed before the lease expired: nothing runs
            runs = [_run(db, r, now) for r in db.runs()]
            finished = [r for r in runs if r.finished_at is not None]
            newest = max(finished, key=lambda r: (r.started_at, r.run_id)) if finished else None
            failed = [a for a in db.actions(newest.run_id) if a.status == OutcomeStatus.FAILED] \
                if newest else []
            unfinished = db.unfinished_actions()
            shut_down = db.failed_with_vm_shut_down()
            last = db.last_recovery()
            installation = db.installation()
            ours, others = (temporaries(state, installation, db.knows_point)
                            if state is not None else ([], []))
    except sqlite3.Error as exc:
        raise VmkeepError(f"cannot read the state DB {config.state}: {exc}") from None
    pending = [f"VM {a.vm_name!r} ({a.vcenter}) may be off: vmkeep shut it down and its guest "
               "may have finished the shutdown after the action gave up; the next apply powers "
               "it on if it is" for a in shut_down]
    pending += ours
    recovery = None if last is None else RecoveryInfo(
        last.holder, _moment(last.started_at) or now, _moment(last.finished_at),
        None if last.error is None else mask(last.error), tuple(map(mask, last.repairs)))
    return summarize(now, runs, [_journal(a, now) for a in failed],
                     [_journal(a, now) for a in unfinished], holder, plan, keep_runs=keep,
                     verification=verification,
                     recovery=recovery, pending_repairs=pending, others=others)


def _run(db: StateDB, r: Mapping[str, Any], now: datetime) -> RunRecord:
    """A run as status shows it; a run that never finished gets its counts from the journal
    (actions it left without an outcome count as "interrupted")."""
    if r["finished_at"] is not None:
        counts = {str(k): int(v) for k, v in (r["summary"] or {}).items()}
    else:
        counts = {}
        for status, n in db.action_counts(r["run_id"]).items():
            key = "interrupted" if status in ("started", "reconciled") else status
            counts[key] = counts.get(key, 0) + n
    return RunRecord(r["run_id"], r["holder"], _moment(r["started_at"]) or now,
                     _moment(r["finished_at"]), r["policy_revision"], counts,
                     r.get("repaired_by"))


def _journal(a: ActionRecord, now: datetime) -> JournalAction:
    return JournalAction(a.run_id, a.kind, a.point_id, a.vm_name, a.vm_uuid, a.vcenter,
                         _moment(a.started_at) or now, a.status,
                         None if a.error is None else mask(a.error))

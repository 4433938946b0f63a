"""`vmkeep plan`: what would change, and why — or, in review mode, what a policy change does.

    vmkeep plan [--config F] [--policies DIR | --repo R [--rev REV] [--path P]]
                [--state FILE] [--now ISO] [-o text|json|markdown] [--out plan.json]
                [--detailed-exitcode]
    vmkeep plan --repo R --base REV --head REV [--path P] [--state FILE] ...   (review mode)

Without `--state` the observed state is read live from every vCenter and target of the host
config. Exit codes: 0 success; with `--detailed-exitcode` 0 = no changes, 2 = changes;
1 = error; 3 = a vCenter could not be observed (login refused, TLS, network): the plan of the
others is shown, that vCenter's VMs have coverage "unknown" and nothing is planned for them.
When the deletions exceed `limits.maxDeletesPerRun` they are held back: listed apart (HELD,
`held`), with the count and how to allow them; the creates still run.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from typing import Any

from reconciler import planner, policies
from reconciler.cli import common, keep_until_exit
from reconciler.cli.common import load_state, parse_now, write_json, write_stdout
from reconciler.collector import collector_paused
from reconciler.errors import UsageError
from reconciler.model import HostConfig, Limits, ObservedState, Plan, PolicySet
from reconciler.ports import PolicySource
from reconciler.render import plan_to_json, render_markdown, render_text
from reconciler.render.json_text import json_bytes
from reconciler.wiring import capture

__all__ = ["register", "run"]


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "plan",
        parents=[common_parser],
        help="show the actions that would make reality match the policies, with reasons",
        description="Compute the plan: snapshots and exports to create for the current slot, "
        "restore points retention would delete (restic forget rules), coverage and warnings. "
        "With --base and --head (and --repo), plan both revisions against the same observed "
        "state and show what the change does.",
    )
    common.add_source_arguments(parser)
    review_group = parser.add_argument_group("review mode")
    review_group.add_argument("--base", metavar="REV", help="base revision (with --repo)")
    review_group.add_argument("--head", metavar="REV", help="head revision (with --repo)")
    parser.add_argument(
        "--state", metavar="FILE", help="observed state from `vmkeep state export` (offline)"
    )
    parser.add_argument("--now", metavar="ISO", help="plan as of this time (default: now)")
    common.add_output_argument(parser, ("text", "json", "markdown"))
    parser.add_argument("--out", metavar="FILE", help="also save the plan as JSON to FILE")
    parser.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when there are no changes, 2 when there are (1 on errors, 3 when a "
        "vCenter could not be observed)",
    )
    parser.set_defaults(func=run)


def _observed(args: argparse.Namespace, config: HostConfig | None, now: datetime) -> ObservedState:
    if args.state:
        return load_state(args.state)
    if config is None:
        raise UsageError(
            "no host config: pass --config FILE to read the live state, or --state FILE"
        )
    return capture(config, now)


def _policies(source: PolicySource, config: HostConfig | None) -> PolicySet:
    return policies.parse_policies(source.files(), config, source.revision)


def _emit(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _emit_json(document: Any) -> None:
    write_stdout(json_bytes(document))


def _colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


#: A vCenter could not be observed: the plan covers the others only.
EXIT_PARTIAL = 3


def _exit_code(args: argparse.Namespace, changes: bool, plan: Plan | None = None) -> int:
    if plan is not None and plan.unobserved:
        return EXIT_PARTIAL
    return 2 if args.detailed_exitcode and changes else 0


def run(args: argparse.Namespace) -> int:
    # One pause for the whole command: read, plan and write each pause the collector, and
    # resuming it in between costs a pass over the heap each time (0.7 s at 10,000 VMs).
    with collector_paused():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.base or args.head:
        return _run_review(args)
    now = parse_now(args.now)
    config = common.optional_host_config(args)
    policy_set = _policies(common.policy_source_from_args(args), config)
    observed = _observed(args, config, now)
    result = planner.plan(policy_set, observed, now, config.limits if config else Limits(),
                          _transports(config), hygiene=config.hygiene if config else None)
    keep_until_exit(observed, result)  # read-only: the process's end releases them at once
    _render_plan(result, args.output)
    if args.out:
        write_json(plan_to_json(result), args.out)
    return _exit_code(args, result.has_changes, result)


def _transports(config: HostConfig | None) -> dict[str, str]:
    """Each vCenter's `transport` setting (the plan explains exports that use NFC)."""
    return {name: vc.transport for name, vc in config.vcenters.items()} if config else {}


def _render_plan(result: Plan, output: str) -> None:
    if output == "json":
        document = plan_to_json(result)
        keep_until_exit(document)
        _emit_json(document)
    elif output == "markdown":
        _emit(render_markdown(result))
    else:
        _emit(render_text(result, colour=_colour()))


def _run_review(args: argparse.Namespace) -> int:
    from reconciler import review  # review mode only: `vmkeep plan` does not import it
    from reconciler.render.review import review_markdown, review_text, review_to_json

    if not args.repo and not args.policies and not args.rev and args.base and args.head \
            and common.use_configured_source(args):
        args.rev = None  # the host config's repository; --base and --head name revisions
        if args.policies:
            raise UsageError("review mode needs a Git repository: pass --repo (the host "
                             "config's `policies` names a directory)")
    if not (args.repo and args.base and args.head):
        raise UsageError("review mode needs --repo, --base REV and --head REV")
    if args.rev or args.policies:
        raise UsageError("review mode reads --base and --head; drop --rev/--policies")
    now = parse_now(args.now)
    config = common.optional_host_config(args)
    base_set = _policies(common.open_git_source(args.repo, args.base, args.path or ""), config)
    head_set = _policies(common.open_git_source(args.repo, args.head, args.path or ""), config)
    observed = _observed(args, config, now)
    limits = config.limits if config else Limits()
    hygiene = config.hygiene if config else None
    base_plan = planner.plan(base_set, observed, now, limits, _transports(config),
                             hygiene=hygiene)
    head_plan = planner.plan(head_set, observed, now, limits, _transports(config),
                             hygiene=hygiene)
    report = review.review(base_set, head_set, base_plan, head_plan)
    if args.output == "json":
        _emit_json(review_to_json(report))
    elif args.output == "markdown":
        _emit(review_markdown(report))
    else:
        _emit(review_text(report))
    if args.out:
        write_json(plan_to_json(head_plan), args.out)
    return _exit_code(args, report.has_changes, head_plan)

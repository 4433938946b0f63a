"""`vmkeep run`: the controller loop on a management host.

    vmkeep run [--config F] [--policies DIR | --repo R --rev BRANCH --path P]
               [--interval 1h] [--poll 1m] [--metrics-file PATH] [--once] [--now ISO]
               [--max-deletes N] [--parallel N] [-o text|json]
               [--listen HOST:PORT] [--log-format text|json]

Reconciles (plans and applies, as `vmkeep apply --auto-approve`) at start, every
`--interval`, and whenever the policies change: a new commit on the followed branch (polled
every `--poll`) or a changed file in the policy directory. A revision whose policies do not
validate is not applied; the last valid one goes on being applied. Metrics go to
`--metrics-file` (Prometheus text format) after every reconcile. SIGTERM/SIGINT stop the
loop after the running reconcile; with an engine they cancel it (exit 130). `--once`
reconciles once and exits with apply's code (0, 1, or 3 when some actions failed).
`--listen 127.0.0.1:9469` serves /metrics, /healthz, /readyz, /api/status and a status page
at /; `--log-format json` writes JSON lines. Without a source flag the host config's
`policies` is followed. See `docs/controller.md`.
"""

from __future__ import annotations

import argparse
from typing import Any

from reconciler import durations
from reconciler.cli import common
from reconciler.errors import UsageError

__all__ = ["parse_listen", "register", "run", "seconds"]

def seconds(text: str) -> float:
    """`90`, `30s`, `5m`, `1h`, `1d` (fractions allowed) as seconds; at least 0.1."""
    try:
        return durations.seconds(text)
    except durations.DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9469` for IPv6; port 0 = any free port); a port alone (`9469`,
    `:9469`) binds loopback."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") or ("127.0.0.1" if sep or text.isdigit() else "")
    if not sep and text.isdigit():
        port = text  # a port alone: loopback
    if not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT, e.g. 127.0.0.1:9469 (port 0 picks a free one)")
    return host, int(port)


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "run",
        parents=[common_parser],
        help="the controller: reconcile on a schedule and on every policy change",
        description="Follow a policy branch (or directory) and reconcile — plan and apply, "
        "as `apply --auto-approve` does — at start, every --interval and on every change. "
        "Invalid revisions are reported and not applied; metrics are written after every "
        "reconcile.",
    )
    common.add_source_arguments(parser)
    parser.add_argument("--interval", type=seconds, default=3600.0, metavar="DURATION",
                        help="reconcile at least this often (default: 1h)")
    parser.add_argument("--poll", type=seconds, default=60.0, metavar="DURATION",
                        help="with --repo: look for new commits this often (default: 1m)")
    parser.add_argument("--metrics-file", metavar="PATH",
                        help="write Prometheus metrics here after every reconcile")
    parser.add_argument("--once", action="store_true",
                        help="reconcile once and exit with apply's exit code")
    parser.add_argument("--now", metavar="ISO",
                        help="plan every reconcile as of this time (tests and demos)")
    parser.add_argument("--max-deletes", type=int, metavar="N",
                        help="hold every deletion of a reconcile back (its creates still run) "
                        "when its plan deletes more than N restore points")
    parser.add_argument("--parallel", type=int, metavar="N",
                        help="VMs worked on at once (default: from the limits)")
    parser.add_argument("--listen", type=parse_listen, metavar="HOST:PORT",
                        help="serve /metrics, /healthz, /readyz, /api/status and a status "
                        "page at / (e.g. 127.0.0.1:9469; port 0 picks a free port; "
                        "default: off)")
    parser.add_argument("--log-format", choices=["text", "json"], default="text",
                        help="the controller's log: text lines, or JSON lines with run id, "
                        "vcenter, vm, action and point (default: text)")
    common.add_output_argument(parser, ("text", "json"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.rev or args.path) and not args.repo:
        raise UsageError("--rev and --path need --repo")
    if args.repo and args.policies:
        raise UsageError("give either --repo or --policies, not both")
    if args.max_deletes is not None and args.max_deletes < 0:
        raise UsageError("--max-deletes must be 0 or more")
    if args.parallel is not None and args.parallel < 0:
        raise UsageError("--parallel must be 0 (the default) or more")
    common.parse_now(args.now)  # a bad --now stops `run` before anything is written (metrics too)
    from reconciler.controller import Controller  # it imports the commands it runs

    return Controller(args).run()

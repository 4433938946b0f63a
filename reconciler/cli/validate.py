"""`vmkeep validate`: check policy files (and the host config, when there is one).

    vmkeep validate [PATH...] [--config FILE] [--policies DIR | --repo URL --rev REV --path DIR]
                    [-o text|json]

Exit 0 when everything is valid, 1 when not. Text output is one `path:line:col: message
(hint)` line per problem, then a summary; JSON output is
`{"valid", "revision", "policies", "errors": [{path, line, column, message, hint}]}`.
Bad input is always reported this way, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reconciler import policies
from reconciler.cli import common
from reconciler.errors import Diagnostic, InputError, SourceError, UsageError

__all__ = ["register", "run"]


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "validate",
        parents=[common_parser],
        help="check policy files: YAML, schema, cron, time zones, references",
        description="Check policy files and report every problem as path:line:col. "
        "Exit 0 when valid, 1 when not. References to vCenters, targets and hooks are "
        "checked when a host config is given or found.",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="policy files or directories (default: ./policies)")
    common.add_source_arguments(parser)
    common.add_output_argument(parser, ("text", "json"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    diagnostics: list[Diagnostic] = []
    config = None
    try:
        config = common.optional_host_config(args)
    except InputError as exc:
        diagnostics.extend(exc.diagnostics)
    except UsageError as exc:
        return _fail(args, str(exc))
    try:
        source = common.policy_source_from_args(args, args.paths)
        files = list(source.files())
        revision = source.revision
    except (SourceError, UsageError) as exc:  # e.g. --rev without --repo: still JSON with -o json
        return _fail(args, str(exc))
    report = policies.check_policies(files, config, revision)
    diagnostics.extend(report.diagnostics)
    diagnostics.sort()
    names = [p.name for p in report.policies]
    if args.output == "json":
        _print_json(not diagnostics, revision, names, diagnostics)
    else:
        for diagnostic in diagnostics:
            print(diagnostic)
        where = f" at {revision[:12]}" if revision else ""
        if diagnostics:
            bad = len({d.path for d in diagnostics})
            print(f"{len(diagnostics)} problem{'s' * (len(diagnostics) != 1)} in {bad} "
                  f"file{'s' * (bad != 1)}{where}", file=sys.stderr)
        else:
            unchecked = "" if config else " (no host config: vCenter, target and hook names " \
                "not checked)"
            print(f"{len(names)} polic{'ies' if len(names) != 1 else 'y'} in {len(files)} "
                  f"file{'s' * (len(files) != 1)} valid{where}{unchecked}")
    return 0 if not diagnostics else 1


def _print_json(valid: bool, revision: str | None, names: list[str],
                diagnostics: list[Diagnostic]) -> None:
    body = {
        "valid": valid,
        "revision": revision,
        "policies": names,
        "errors": [d.to_json() for d in diagnostics],
    }
    print(json.dumps(body, indent=2))


def _fail(args: argparse.Namespace, message: str) -> int:
    """A problem that is not located in a file (unreadable source, bad flags)."""
    if args.output == "json":
        error = {"path": "", "line": 0, "column": 0, "message": message, "hint": ""}
        print(json.dumps({"valid": False, "revision": None, "policies": [],
                          "errors": [error]}, indent=2))
    else:
        print(f"vmkeep: error: {message}", file=sys.stderr)
    return 1

"""Command-line pieces several commands share: where policies come from, output format.

    add_source_arguments(parser)        --policies DIR | --repo URL|PATH [--rev REV] [--path DIR]
    policy_source_from_args(args)       -> a PolicySource (directory or one Git commit)
    use_configured_source(args)         no source flag: fill them from the host config's
                                        `policies` (repo/rev/path or a directory)
    open_git_source(repo, rev, path)    -> a PolicySource at one revision (review: --base/--head)
    add_output_argument(parser, ...)    -o/--output FORMAT
    optional_host_config(args)          the host config if one is given or found, else None
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from reconciler import wiring
from reconciler.adapters.policydir import PolicyDirectory
from reconciler.errors import UsageError, VmkeepError
from reconciler.model import HostConfig
from reconciler.ports import PolicySource

__all__ = [
    "DEFAULT_POLICIES",
    "add_output_argument",
    "add_source_arguments",
    "open_git_source",
    "optional_host_config",
    "policy_source_from_args",
    "use_configured_source",
]

DEFAULT_POLICIES = "policies"


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--policies`, `--repo`, `--rev`, `--path` (a local directory or a Git commit)."""
    group = parser.add_argument_group(
        "policy source",
        "a local directory (--policies, default ./policies) or one commit of a Git "
        "repository (--repo with --rev and --path); Git is read from a bare cache clone, "
        "never from a work tree",
    )
    group.add_argument("--policies", metavar="DIR", help="local policy directory")
    group.add_argument("--repo", metavar="URL|PATH", help="Git repository holding the policies")
    group.add_argument("--rev", metavar="REV",
                       help="branch, tag or commit to read with --repo (default: remote HEAD)")
    group.add_argument("--path", metavar="SUBDIR", default="",
                       help="directory inside the repository (default: its root)")


def add_output_argument(
    parser: argparse.ArgumentParser, choices: Sequence[str] = ("text", "json"),
    default: str | None = None,
) -> None:
    """Add `-o/--output FORMAT` with the given choices (default: the first)."""
    parser.add_argument("-o", "--output", choices=list(choices), default=default or choices[0],
                        metavar="FORMAT", help=f"output format: {', '.join(choices)} "
                        f"(default: {default or choices[0]})")


def open_git_source(repo: str, rev: str | None, path: str = "") -> PolicySource:
    """The policy files of `repo` at `rev` (resolved to a commit SHA) under `path`."""
    from reconciler.adapters.git import GitSource  # GitPython only when a repo is read

    return GitSource.open(repo, rev or "HEAD", path)


def policy_source_from_args(
    args: argparse.Namespace, paths: Sequence[str] = ()
) -> PolicySource:
    """The source named on the command line; positional `paths` are local files or dirs.
    Without any, the host config's `policies` (see `use_configured_source`)."""
    if not paths:
        use_configured_source(args)
    repo = getattr(args, "repo", None)
    rev = getattr(args, "rev", None)
    subdir = getattr(args, "path", "") or ""
    policies = getattr(args, "policies", None)
    if repo:
        if policies or paths:
            raise UsageError("give either --repo or local policy paths (--policies), not both")
        return open_git_source(repo, rev, subdir)
    if rev or subdir:
        raise UsageError("--rev and --path need --repo")
    local = list(paths) or [policies or DEFAULT_POLICIES]
    if policies and paths:
        local = [policies, *paths]
    return PolicyDirectory(local)


def optional_host_config(args: argparse.Namespace) -> HostConfig | None:
    """The host config when `--config`/`$VMKEEP_CONFIG` names one or ./vmkeep.yaml exists.

    Without one, references to vCenters, targets and hooks are not checked.
    """
    explicit = getattr(args, "config", None)
    if not explicit and not os.environ.get(wiring.CONFIG_ENV) \
            and not Path(wiring.DEFAULT_CONFIG).is_file():
        return None
    return wiring.load_host_config(explicit)


def use_configured_source(args: argparse.Namespace) -> bool:
    """When no source flag (`--policies`, `--repo`, `--rev`, `--path`) was given and the host
    config (found as `optional_host_config` finds it) has `policies`, set the flags from it.
    Returns whether it did; flags on the command line always win."""
    if getattr(args, "_configured_source", False):
        return True
    if any(getattr(args, name, None) for name in ("policies", "repo", "rev", "path")):
        return False
    try:
        config = optional_host_config(args)
    except VmkeepError:
        return False  # the command reports a broken host config where it reads it
    if config is None or config.policies is None:
        return False
    source = config.policies
    if source.repo:
        args.repo, args.rev, args.path = source.repo, source.rev, source.path
    else:
        args.policies = source.path
    args._configured_source = True
    return True


def lease_taken_over(holder: str) -> None:
    """Say that the applier lease of a dead process is taken over."""
    print(f"vmkeep: taking over the apply lease of {holder}: that process is gone",
          file=sys.stderr)

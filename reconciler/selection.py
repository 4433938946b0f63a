"""Selection: which VMs a policy covers.

A policy selects a VM of its own vCenter when the `include` selector matches and the
`exclude` selector (if any) does not. Within a selector every given key must match:
`names` (shell globs; any of them), `folders` (inventory paths; the VM is in one of them or
below), `tags` (category/name; all of them) and `attributes` (custom attributes; all, with
these exact values). An empty selector matches every VM.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import translate
from itertools import compress

from reconciler.model import VM, Policy, Selector

__all__ = ["matches", "select"]


def _matching(selector: Selector, vms: list[VM]) -> list[VM]:
    """The VMs the selector matches, in their order: one pass per key the selector gives, so
    a whole inventory is filtered by its names first (globs compiled into one expression)."""
    if selector.names:
        match = re.compile("|".join(translate(n) for n in selector.names)).match
        vms = list(compress(vms, map(match, [vm.name for vm in vms])))
    if selector.folders:
        folders = tuple(f.rstrip("/") for f in selector.folders)
        prefixes = tuple(f + "/" for f in folders)
        vms = [vm for vm in vms if vm.folder in folders or vm.folder.startswith(prefixes)]
    if selector.tags:
        tags = frozenset(selector.tags)
        vms = [vm for vm in vms if tags.issubset(vm.tags)]
    if selector.attributes:
        wanted = dict(selector.attributes).items()
        vms = [vm for vm in vms if all(vm.attributes.get(k) == v for k, v in wanted)]
    return vms


def select(policy: Policy, vms: Iterable[VM]) -> list[VM]:
    """The VMs the policy selects, in their order (`matches` for a whole inventory at once)."""
    chosen = [vm for vm in _matching(policy.include, list(vms)) if vm.vcenter == policy.vcenter]
    if policy.exclude:
        excluded = {id(vm) for vm in _matching(policy.exclude, chosen)}
        chosen = [vm for vm in chosen if id(vm) not in excluded]
    return chosen


def matches(policy: Policy, vm: VM) -> bool:
    """Whether the policy selects the VM."""
    return bool(select(policy, [vm]))

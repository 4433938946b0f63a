"""Selection: which VMs a policy covers.

A policy selects a VM of its own vCenter when the `include` selector matches and the
`exclude` selector (if any) does not. Within a selector every given key must match:
`names` (shell globs; any of them), `folders` (inventory paths; the VM is in one of them or
below), `tags` (category/name; all of them) and `attributes` (custom attributes; all, with
these exact values). An empty selector matches every VM.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fnmatch import translate

from reconciler.model import VM, Policy, Selector

__all__ = ["matcher", "matches"]


def _predicate(selector: Selector) -> Callable[[VM], bool]:
    """One compiled check per selector: name globs become a single regular expression."""
    names = re.compile("|".join(translate(n) for n in selector.names)) if selector.names else None
    folders = tuple(f.rstrip("/") for f in selector.folders)
    prefixes = tuple(f + "/" for f in folders)
    tags, attributes = frozenset(selector.tags), dict(selector.attributes)

    def predicate(vm: VM) -> bool:
        if names is not None and names.match(vm.name) is None:
            return False
        if folders and not (vm.folder in folders or vm.folder.startswith(prefixes)):
            return False
        if tags and not tags.issubset(vm.tags):
            return False
        return all(vm.attributes.get(k) == v for k, v in attributes.items())

    return predicate


def matcher(policy: Policy) -> Callable[[VM], bool]:
    """A fast reusable test for `matches(policy, vm)` (compile once, call per VM)."""
    include = _predicate(policy.include)
    exclude = _predicate(policy.exclude) if policy.exclude else None

    def selected(vm: VM) -> bool:
        if vm.vcenter != policy.vcenter or not include(vm):
            return False
        return exclude is None or not exclude(vm)

    return selected


def matches(policy: Policy, vm: VM) -> bool:
    """Whether the policy selects the VM."""
    return matcher(policy)(vm)

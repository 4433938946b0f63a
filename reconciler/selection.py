"""Selection: which VMs a policy covers.

A policy selects a VM of its own vCenter when the `include` selector matches and the
`exclude` selector (if any) does not. Within a selector every given key must match:
`names` (shell globs; any of them), `folders` (inventory paths; the VM is in one of them or
below), `tags` (category/name; all of them) and `attributes` (custom attributes; all, with
these exact values). An empty selector matches every VM.

`select` filters a whole inventory at once, one pass per key a selector gives, names
first: name globs are compiled into one expression, tried only on the names that start
with one of the globs' literal prefixes (a cheap test that rules most VMs out when policies
select by name prefix). When the candidates come sorted by name (the planner sorts them),
the names with a prefix are one run of the list, found by bisection instead of testing
every name (20 policies x 10,000 VMs: 200,000 tests).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable
from fnmatch import translate
from itertools import compress, repeat
from operator import le

from reconciler.model import VM, Policy, Selector

__all__ = ["Candidates", "matches", "select"]


class Candidates:
    """VMs to select from, in order, with their names read out once for all policies."""

    def __init__(self, vms: Iterable[VM]) -> None:
        self.vms = list(vms)
        self.names = [vm.name for vm in self.vms]
        self.in_order = all(map(le, self.names, self.names[1:]))  # sorted by name


def _literal_prefix(glob: str) -> str:
    """What every name a glob matches starts with: the text before its first wildcard."""
    return re.split(r"[*?\[]", glob, maxsplit=1)[0]


def _by_names(globs: tuple[str, ...], vms: list[VM], names: list[str],
              in_order: bool = False) -> list[VM]:
    """The VMs whose name one of the globs matches, in their order; `in_order`: `names` are
    sorted (then a prefix's names are found by bisection)."""
    prefixes = tuple(_literal_prefix(g) for g in globs)
    if "" not in prefixes:
        if in_order:
            found = sorted({i for p in set(prefixes) for i in _run_of(names, p)})
            vms, names = [vms[i] for i in found], [names[i] for i in found]
        else:
            candidates = list(map(str.startswith, names, repeat(prefixes)))
            vms, names = list(compress(vms, candidates)), list(compress(names, candidates))
    match = re.compile("|".join(translate(g) for g in globs)).match
    return list(compress(vms, map(match, names)))


def _run_of(names: list[str], prefix: str) -> range:
    """The indexes of the sorted `names` that start with `prefix`: one run, since every name
    with the prefix sorts at or after it and before any later name without it."""
    start = bisect_left(names, prefix)
    end = bisect_left(names, True, start, key=lambda name: not name.startswith(prefix))
    return range(start, end)


def _matching(selector: Selector, candidates: Candidates) -> list[VM]:
    """The candidates the selector matches, in their order."""
    vms = candidates.vms
    if selector.names:
        vms = _by_names(selector.names, vms, candidates.names, candidates.in_order)
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


def select(policy: Policy, candidates: Candidates) -> list[VM]:
    """The candidates the policy selects, in their order (`matches` for many VMs at once)."""
    chosen = [vm for vm in _matching(policy.include, candidates) if vm.vcenter == policy.vcenter]
    if policy.exclude:
        excluded = {id(vm) for vm in _matching(policy.exclude, Candidates(chosen))}
        chosen = [vm for vm in chosen if id(vm) not in excluded]
    return chosen


def matches(policy: Policy, vm: VM) -> bool:
    """Whether the policy selects the VM."""
    return bool(select(policy, Candidates([vm])))

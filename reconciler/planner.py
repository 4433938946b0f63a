"""The planner: `plan(policies, observed, now, limits) -> Plan`, pure and deterministic.

For every policy and every VM it selects (`reconciler.selection`), per kind of restore point
it configures (snapshots, exports), in the group (policy, VM, kind):

1. the current slot (latest fire time <= now) is covered when a complete point for it
   exists; otherwise a `*.create` is planned, unless the backup window is closed. Older
   missed slots are not back-filled;
2. retention (restic `forget` rules, `reconciler.retention`) runs over the complete points
   *plus the point about to be created*, so planning again after an apply finds nothing to
   do; `snapshots.maxAge` removes older snapshots on top;
3. guards: the newest existing complete point of a group is never deleted unless a planned
   create replaces it (the deletions then `require` that point); incomplete exports are
   removed once a newer complete point exists; leftover temporary export snapshots are
   removed.

Nothing else is ever touched: foreign snapshots, points of removed policies, of VMs that are
gone or no longer selected are listed as warnings and kept (`reconciler.findings`). A plan
whose deletions of restore points exceed `limits.maxDeletesPerRun` holds every one of them
back (`Plan.held`, with the count, the limit and how to allow them): the creates still run
(DESIGN rule 2). The removal of leftover temporary export snapshots is cleanup, not a
deletion of a restore point: it is never held. The planner plans `export.create` only;
the executor takes (and removes) the temporary snapshot an export reads from.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import NamedTuple
from zoneinfo import ZoneInfo

from reconciler import findings, selection
from reconciler import observed as observed_state
from reconciler.markers import point_id
from reconciler.model import (
    VM,
    Action,
    ActionKind,
    Coverage,
    CoverageState,
    Duration,
    Hygiene,
    KeepRules,
    Limits,
    ObservedState,
    Plan,
    PlanWarning,
    PointKind,
    Policy,
    PolicySet,
    PowerState,
    RetentionDecision,
    Severity,
    TransportUnavailable,
    VMRef,
    choose_transport,
)
from reconciler.observed import Catalog, CatalogPoint
from reconciler.retention import apply_rules, subtract_duration
from reconciler.schedule import ScheduleError, SlotInfo, slot_info

__all__ = ["FORMAT_VERSION", "plan"]

FORMAT_VERSION = 1

_ACTION_ORDER = {kind: i for i, kind in enumerate(ActionKind)}
_slot_of = attrgetter("slot")
_new = tuple.__new__
_SNAPSHOT = PointKind.SNAPSHOT
_GroupKey = tuple[str, str, PointKind]  # policy, instance uuid, kind


# --------------------------------------------------------------------------- retention memo


@dataclass(frozen=True)
class _Verdict:
    keep: bool
    reasons: tuple[str, ...]


_GUARDED = _Verdict(True, ("guard: the newest complete point of a group is kept",))
_History = tuple[datetime, ...]  # the distinct slots of a group, oldest first


class _Judged(NamedTuple):
    """Retention of one history: a verdict per slot, the same in the history's order, and
    whether it keeps any or all of them."""

    verdicts: dict[datetime, _Verdict]
    ordered: tuple[_Verdict, ...]
    keeps_any: bool
    keeps_all: bool


class _Retention:
    """Retention of one group kind by slot history: every VM with the same history gets one
    answer. The table is shared by all policies with the same rules, maxAge cut and zone."""

    def __init__(
        self,
        rules: KeepRules,
        max_age_cut: datetime | None,
        max_age_text: str,
        zone: ZoneInfo,
        now: datetime,
        table: dict[_History, _Judged],
    ) -> None:
        self.rules, self.max_age_cut, self.max_age_text = rules, max_age_cut, max_age_text
        self.zone, self.now, self._table = zone, now, table

    def verdicts(self, history: _History) -> dict[datetime, _Verdict]:
        return self.judged(history).verdicts

    def judged(self, history: _History) -> _Judged:
        found = self._table.get(history)
        if found is None:
            verdicts = self._decide(history)
            ordered = tuple(verdicts[s] for s in history)
            keeps = [v.keep for v in ordered]
            found = self._table[history] = _new(_Judged, (verdicts, ordered, any(keeps),
                                                          all(keeps)))
        return found

    def _decide(self, history: _History) -> dict[datetime, _Verdict]:
        cut, rules = self.max_age_cut, self.rules
        result = apply_rules([(s, s) for s in history], rules, self.zone, self.now)
        found = {}
        for d in result.decisions:
            if cut is not None and d.keep and d.time < cut:
                found[d.key] = _Verdict(
                    False, (f"older than snapshots.maxAge {self.max_age_text}",)
                )
            elif d.keep:
                found[d.key] = _Verdict(True, d.reasons)
            else:
                found[d.key] = _Verdict(False, (f"kept by no rule ({_describe(rules)})",))
        return found


class _RetentionMemo:
    """Hands out the retention of each (keep rules, maxAge, zone), sharing verdict tables."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._tables: dict[tuple[object, ...], dict[_History, _Judged]] = {}

    def retention(self, rules: KeepRules, max_age: Duration | None, zone: ZoneInfo) -> _Retention:
        """`maxAge` is cut at `now - maxAge` on the zone's wall clock."""
        cut = None if max_age is None else subtract_duration(self.now, max_age, zone)
        # The key has the cut, not maxAge as written: policies spelling one cut differently
        # ("20d", "480h") share entries, whose reasons name the spelling that came first.
        table = self._tables.setdefault((rules, cut, zone.key), {})
        return _Retention(rules, cut, str(max_age or ""), zone, self.now, table)


def _describe(rules: KeepRules) -> str:
    parts = []
    for name in KeepRules.__dataclass_fields__:
        value = getattr(rules, name)
        if value is not None:
            label = name.replace("_", "-")
            parts.append(f"{label} {'unlimited' if value == -1 else value}")
    return "keep " + ", ".join(parts) if parts else "no rules"


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Kind:
    """One kind of restore point a policy makes, with what is the same for all its VMs."""

    kind: PointKind
    target: str | None  # exports
    create_reason: str  # for a missing point of the current slot
    expired_on_arrival: bool  # a snapshot of the current slot is already older than maxAge
    retention: _Retention


class _VmContext(NamedTuple):
    """One VM a policy selects, with what is the same for all its groups."""

    policy: Policy
    vm: VM
    ref: VMRef
    info: SlotInfo
    new_id: str  # the point id of the current slot


class _Group(NamedTuple):
    """One group (policy, VM, kind): its points, the complete ones oldest first, and their
    distinct slots."""

    ctx: _VmContext
    kind: _Kind
    points: Sequence[CatalogPoint]
    complete: Sequence[CatalogPoint]
    history: _History


class _VmPlan(NamedTuple):
    """What planning one VM under one policy gives."""

    actions: list[Action]
    retention: list[RetentionDecision]
    coverage: Coverage


def _when(slot: datetime, zone: ZoneInfo) -> str:
    return slot.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def _kinds(
    policy: Policy, info: SlotInfo, observed: ObservedState, memo: _RetentionMemo
) -> tuple[_Kind, ...]:
    """The kinds a policy plans, prepared once per plan (an export to a target the state lacks
    is warned about, not judged)."""
    when, cron, kinds = _when(info.slot, info.zone), policy.schedule.cron, []
    if policy.snapshots:
        max_age = policy.snapshots.max_age
        retention = memo.retention(policy.snapshots.keep, max_age, info.zone)
        cut = retention.max_age_cut
        kinds.append(
            _Kind(
                PointKind.SNAPSHOT,
                None,
                f"no snapshot for slot {when} (cron {cron!r})",
                cut is not None and info.slot < cut,
                retention,
            )
        )
    if policy.exports and policy.exports.target in observed.targets:
        target = policy.exports.target
        kinds.append(
            _Kind(
                PointKind.EXPORT,
                target,
                f"no export in target {target!r} for slot {when} (cron {cron!r})",
                False,
                memo.retention(policy.exports.keep, None, info.zone),
            )
        )
    return tuple(kinds)


def plan(
    policies: PolicySet,
    observed: ObservedState,
    now: datetime,
    limits: Limits | None = None,
    transports: Mapping[str, str] | None = None,
    *,
    hygiene: Hygiene | None = None,
) -> Plan:
    """Compute the plan. Pure: the same inputs give the same plan, nothing is read or written.

    `transports` maps vCenter names to the host config's `transport` (default "auto"): an
    export whose disks will not go over datastore HTTP says so in its reason. `hygiene`
    holds the thresholds of the snapshot hygiene findings (host config).

    A plan over 10,000 VMs allocates about a million small acyclic values; a caller planning
    that many pauses the cyclic collector around it (`collector.collector_paused`: without
    the pause the collector walks the whole heap again and again, ~40 % of the planning
    time). The planner itself leaves the process's collector alone."""
    return _plan(policies, observed, now, limits or Limits(), transports or {},
                 hygiene or Hygiene())


def _plan(policies: PolicySet, observed: ObservedState, now: datetime, limits: Limits,
          transports: Mapping[str, str], hygiene: Hygiene) -> Plan:
    catalog = observed_state.build_catalog(observed)
    actions: list[Action] = []
    coverage: list[Coverage] = []
    warnings: list[PlanWarning] = []
    retention: list[RetentionDecision] = []
    by_name = policies.by_name()
    infos: dict[str, SlotInfo] = {}
    for p in policies.policies:
        try:
            infos[p.name] = slot_info(p.schedule, now)
        except ScheduleError as exc:
            warnings.append(
                PlanWarning(
                    "schedule-unusable",
                    Severity.WARNING,
                    f"policy {p.name!r}: {exc}; nothing planned for it, its points are kept",
                    policy=p.name,
                )
            )
    memo = _RetentionMemo(now)

    groups = _grouped(catalog.points)

    candidates = {
        name: selection.Candidates(sorted(vms, key=_vm_order))
        for name, vms in observed.vcenters.items()
    }
    handled: set[_GroupKey] = set()
    selected: dict[tuple[str, str], list[str]] = defaultdict(list)  # (vcenter, uuid) -> policies

    for policy in sorted(policies.policies, key=lambda p: p.name):
        if policy.name not in infos:
            continue
        if policy.vcenter in observed.unobserved:
            keys = [key for key in groups if key[0] == policy.name]
            handled.update(keys)  # their points are the unseen VMs', not a gone VM's
            warnings.append(_unobserved_warning(policy, observed.unobserved[policy.vcenter]))
            coverage += _unobserved(policy, infos[policy.name], [groups[key] for key in keys])
            continue
        if policy.vcenter not in observed.vcenters:
            warnings.append(
                PlanWarning(
                    "vcenter-not-observed",
                    Severity.WARNING,
                    f"policy {policy.name!r} names vCenter {policy.vcenter!r}, "
                    "which is not in the observed state; nothing planned for it",
                    vcenter=policy.vcenter,
                    policy=policy.name,
                )
            )
            continue
        if policy.exports and policy.exports.target not in observed.targets:
            warnings.append(
                PlanWarning(
                    "target-not-observed",
                    Severity.WARNING,
                    f"policy {policy.name!r} exports to target {policy.exports.target!r}, "
                    "which is not in the observed state; its exports are not planned",
                    policy=policy.name,
                )
            )
        info = infos[policy.name]
        kinds = _kinds(policy, info, observed, memo)
        kind_values = [k.kind for k in kinds]
        for vm in selection.select(by_name[policy.name], candidates[policy.vcenter]):
            selected[(vm.vcenter, vm.instance_uuid)].append(policy.name)
            if kinds:
                uuid = vm.instance_uuid
                handled.update([(policy.name, uuid, kind) for kind in kind_values])
                ctx = _new(_VmContext, (policy, vm, vm.ref, info,
                                        point_id(policy.name, uuid, info.slot)))
                planned = _plan_vm(ctx, kinds, groups, now)
                actions += planned.actions
                retention += planned.retention
                coverage.append(planned.coverage)

    warnings += findings.vm_findings(observed, catalog, selected, now, hygiene)
    warnings += findings.point_findings(groups, handled, by_name, observed)
    temporary, owned = findings.temporary_findings(observed, now, catalog)
    warnings += temporary

    deletions = [a for a in actions if a.kind.is_delete]
    limit = limits.max_deletes_per_run
    held: list[Action] = []
    if len(deletions) > limit:
        held = sorted(deletions, key=_action_order)
        actions = [a for a in actions if not a.kind.is_delete]
    actions += _temporaries(catalog, owned)  # never held back
    actions = sorted(_explain_transports(actions, observed, transports), key=_action_order)
    deletes = sum(1 for a in actions if a.kind.is_delete)
    return Plan(
        format_version=FORMAT_VERSION,
        policy_revision=policies.revision,
        observed_digest=observed_state.digest(observed),
        now=now,
        actions=tuple(actions),
        coverage=tuple(
            sorted(
                coverage, key=lambda c: (c.vcenter, c.vm.name, c.vm.instance_uuid, c.policy)
            )
        ),
        warnings=tuple(sorted(warnings, key=_warning_order)),
        retention=tuple(retention),  # built in (policy, VM, kind, slot) order
        delete_count=deletes,
        held=tuple(held),
        held_reason=(
            f"{len(held)} deletions exceed limits.maxDeletesPerRun ({limit})" if held else ""
        ),
        unobserved=dict(sorted(observed.unobserved.items())),
    )


def _grouped(points: Iterable[CatalogPoint]) -> dict[_GroupKey, list[CatalogPoint]]:
    """The points by (policy, VM, kind), in catalog order. A VM's points of one policy and
    kind mostly come one after the other (its snapshots, a target's list of its exports):
    such a run is recognised by its `VMRef` object without building and hashing a key for
    every point (300,000 at 10,000 VMs)."""
    groups: dict[_GroupKey, list[CatalogPoint]] = defaultdict(list)
    last: tuple[object, str, PointKind] | None = None
    bucket: list[CatalogPoint] = []
    for point in points:
        ref, policy, kind = point.vm, point.policy, point.kind
        if last is not None and ref is last[0] and kind is last[2] and policy == last[1]:
            bucket.append(point)
            continue
        bucket = groups[(policy, ref.instance_uuid, kind)]
        bucket.append(point)
        last = (ref, policy, kind)
    return groups


def _explain_transports(actions: list[Action], observed: ObservedState,
                        transports: Mapping[str, str]) -> list[Action]:
    """Add to each export.create's reason how its disks will be read, where that is not the
    datastore HTTP interface (vSAN/VVol, `transport: nfc`) or cannot work (`transport: http`
    on vSAN/VVol). Disks whose datastore type is not known say nothing."""
    if not any(a.kind is ActionKind.EXPORT_CREATE for a in actions):
        return actions
    vms = {(vm.vcenter, vm.instance_uuid): vm
           for vms in observed.vcenters.values() for vm in vms}
    explained = []
    for action in actions:
        vm = vms.get((action.vcenter, action.vm.instance_uuid)) \
            if action.kind is ActionKind.EXPORT_CREATE else None
        note = _transport_note(vm, transports.get(action.vcenter, "auto")) if vm else ""
        explained.append(action._replace(reason=f"{action.reason}; {note}") if note else action)
    return explained


def _transport_note(vm: VM, setting: str) -> str:
    notes = []
    for disk in vm.disks:
        if not disk.datastore_type:
            continue
        datastore = disk.file[1:disk.file.find("]")] if disk.file.startswith("[") else ""
        try:
            chosen = choose_transport(setting, powered_off=vm.power_state is PowerState.OFF,
                                      datastore=datastore, datastore_type=disk.datastore_type)
        except TransportUnavailable as exc:
            notes.append(f"{disk.label} will fail: {exc}")
            continue
        if chosen.method == "ExportSnapshot":
            notes.append(f"{disk.label} via {chosen.describe()}")
    return "; ".join(notes)


def _unobserved_warning(policy: Policy, reason: str) -> PlanWarning:
    return PlanWarning(
        "vcenter-unobserved",
        Severity.WARNING,
        f"policy {policy.name!r}: vCenter {policy.vcenter!r} could not be observed "
        f"({reason}); coverage of its VMs is unknown, nothing is created or deleted "
        "for them",
        vcenter=policy.vcenter,
        policy=policy.name,
    )


def _unobserved(policy: Policy, info: SlotInfo,
                groups: Iterable[Sequence[CatalogPoint]]) -> list[Coverage]:
    """A policy whose vCenter could not be observed (`groups`: its groups' points): nothing
    is created or deleted for it (its VMs and their snapshots are unseen, and retention of its
    exports would be judged without them). The VMs its exports name get coverage "unknown",
    never "missing"."""
    refs: dict[str, VMRef] = {}  # instance uuid -> the VM as its newest point names it
    newest: dict[str, datetime] = {}  # instance uuid -> slot of its newest complete point
    seen: dict[str, datetime] = {}
    for points in groups:
        for point in points:
            uuid = point.vm.instance_uuid
            if uuid not in seen or point.slot >= seen[uuid]:
                seen[uuid], refs[uuid] = point.slot, point.vm
            if point.complete and (uuid not in newest or point.slot > newest[uuid]):
                newest[uuid] = point.slot
    return [
        Coverage(
            policy=policy.name,
            vcenter=policy.vcenter,
            vm=ref,
            state=CoverageState.UNKNOWN,
            slot=info.slot,
            threshold_seconds=int(info.threshold.total_seconds()),
            last_slot=newest.get(uuid),
            note=f"vCenter {policy.vcenter!r} could not be observed",
        )
        for uuid, ref in refs.items()
    ]


def _plan_vm(ctx: _VmContext, kinds: tuple[_Kind, ...],
             groups: Mapping[_GroupKey, Sequence[CatalogPoint]], now: datetime) -> _VmPlan:
    slot, name, uuid = ctx.info.slot, ctx.policy.name, ctx.vm.instance_uuid
    actions: list[Action] = []
    retention: list[RetentionDecision] = []
    covered_all, newest = True, None
    notes: list[str] = []
    for k in kinds:
        points = groups.get((name, uuid, k.kind), ())
        complete = sorted([p for p in points if p.complete], key=_slot_of)  # stable
        slots = dict.fromkeys(map(_slot_of, complete))
        group = _new(_Group, (ctx, k, points, complete, tuple(slots)))
        history = group.history
        if history:
            latest = history[-1]
            newest = latest if newest is None or latest > newest else newest
        covered = slot in slots
        creating = False
        base = _base_for(k.retention, history, slot) if not covered else history
        if base is None:
            # A newer point of the same period exists (e.g. after a schedule change): a point
            # for this slot would be pruned by the very next plan, so it is not made.
            notes.append("a newer point supersedes this slot under the keep rules")
        elif not covered:
            covered_all = False
            if not ctx.info.window_open:
                notes.append("waiting for window")
            elif k.expired_on_arrival:
                notes.append("slot is older than snapshots.maxAge; nothing to create")
            else:
                creating = True
                actions.append(_create(group))
        planned = slot if creating else None
        if complete:
            judged_with = base if creating and base is not None else history
            deletions, decisions = _retain(group, judged_with, planned)
            actions += deletions
            retention += decisions
        if len(complete) != len(points):
            actions += _incomplete(group, planned)
    return _new(_VmPlan, (actions, retention, _coverage(ctx, covered_all, newest, notes, now)))


def _coverage(ctx: _VmContext, covered: bool, newest: datetime | None, notes: list[str],
              now: datetime) -> Coverage:
    info = ctx.info
    if covered:
        state = CoverageState.COVERED
    elif now - info.slot < info.threshold:
        state = CoverageState.DUE
    elif newest is not None:
        state = CoverageState.LATE
    else:
        state = CoverageState.MISSING
    # By position, without keywords: a coverage line per VM. (Not straight into a __dict__ as
    # the state's snapshots are: an instance whose __dict__ was set holds a dict of its own,
    # 184 bytes more than the values the constructor stores in the instance.)
    return Coverage(ctx.policy.name, ctx.vm.vcenter, ctx.ref, state, info.slot,
                    int(info.threshold.total_seconds()), newest,
                    "; ".join(dict.fromkeys(notes)) if notes else "")


def _with_slot(history: _History, slot: datetime) -> _History:
    """The history with `slot` added (kept sorted and distinct)."""
    if not history or history[-1] < slot:
        return (*history, slot)
    if slot in history:
        return history
    return tuple(sorted((*history, slot)))


def _base_for(retention: _Retention, history: _History, slot: datetime) -> _History | None:
    """The points retention judges a new point for `slot` with, or None when no point for the
    slot would be kept (a newer point supersedes it): then none is made.

    Normally that is the whole history. But a new point may be dropped beside points that
    this very plan deletes and kept once they are gone — restic keeps the *oldest* point
    while a rule has count left, and the point that was oldest may be one maxAge removes.
    Then the slot is judged with the points that survive this plan's retention instead, so
    that one apply reaches a state the next plan leaves alone (retention of what it keeps
    keeps all of it). Only possible when a newer point exists.
    """
    if not history or history[-1] < slot:
        return history
    if retention.verdicts(_with_slot(history, slot))[slot].keep:
        return history
    verdicts = retention.verdicts(history)
    survivors = tuple(s for s in history if verdicts[s].keep)
    if survivors != history and retention.verdicts(_with_slot(survivors, slot))[slot].keep:
        return survivors
    return None


def _create(group: _Group) -> Action:
    ctx, k = group.ctx, group.kind
    kind = ActionKind.SNAPSHOT_CREATE if k.kind is _SNAPSHOT else ActionKind.EXPORT_CREATE
    return Action(kind, ctx.policy.name, ctx.vm.vcenter, ctx.ref, ctx.new_id, ctx.info.slot,
                  k.create_reason, target=k.target)


def _retain(group: _Group, base: _History,
            planned_slot: datetime | None) -> tuple[list[Action], list[RetentionDecision]]:
    """Retention over the complete points of a group, oldest first: the deletions and a
    decision per point. A planned point is judged with the points of `base` (see
    `_base_for`); the others of the history go by retention of the history alone."""
    k, history, complete = group.kind, group.history, group.complete
    if planned_slot is None:
        judged = k.retention.judged(history)
        if judged.keeps_any and len(complete) == len(history):
            return _decide_in_order(group, judged)
        verdicts = judged.verdicts
    elif base is history:
        verdicts = k.retention.verdicts(_with_slot(history, planned_slot))
    else:
        verdicts = {**k.retention.verdicts(history),
                    **k.retention.verdicts(_with_slot(base, planned_slot))}
    guarded: CatalogPoint | None = None
    requires: tuple[str, ...] = ()
    if not any(verdicts[s].keep for s in reversed(history)):  # every complete point would go
        if planned_slot is not None and verdicts[planned_slot].keep:
            requires = (group.ctx.new_id,)
        else:
            guarded = max(complete, key=_slot_of)
    return _decide_each(group, verdicts, guarded, requires)


def _decide_each(group: _Group, verdicts: Mapping[datetime, _Verdict],
                 guarded: CatalogPoint | None,
                 requires: tuple[str, ...]) -> tuple[list[Action], list[RetentionDecision]]:
    """The decision on each complete point of a group by its slot's verdict (`guarded`: the
    point the guard keeps, if any), and the deletions of the points not kept."""
    policy, ref, kind = group.ctx.policy.name, group.ctx.ref, group.kind.kind
    deletions: list[Action] = []
    decisions: list[RetentionDecision] = []
    append = decisions.append
    for p in group.complete:
        verdict = _GUARDED if p is guarded else verdicts[p.slot]
        keep = verdict.keep
        # Every field given, in order: built without the named tuple's Python-level __new__
        # (a decision per complete point: 290,000 at 10,000 VMs).
        append(_new(RetentionDecision, (p.point_id, kind, policy, ref, p.slot, keep,
                                        verdict.reasons)))
        if not keep:
            deletions.append(_delete(group, p, verdict.reasons[0], requires))
    return deletions, decisions


def _decide_in_order(group: _Group,
                     judged: _Judged) -> tuple[list[Action], list[RetentionDecision]]:
    """`_decide_each` for the common case: no point planned, one complete point per slot
    (so the points, sorted by slot, line up with the history's verdicts) and at least one
    kept (no guard). Built by comprehensions: a decision per point, 290,000 at 10,000 VMs."""
    policy, ref, kind = group.ctx.policy.name, group.ctx.ref, group.kind.kind
    complete, ordered = group.complete, judged.ordered
    decisions = [_new(RetentionDecision, (p.point_id, kind, policy, ref, p.slot, v.keep,
                                          v.reasons))
                 for p, v in zip(complete, ordered, strict=True)]
    if judged.keeps_all:
        return [], decisions
    return [_delete(group, p, v.reasons[0]) for p, v in zip(complete, ordered, strict=True)
            if not v.keep], decisions


def _delete(group: _Group, p: CatalogPoint, reason: str,
            requires: tuple[str, ...] = ()) -> Action:
    policy, vm = group.ctx.policy.name, group.ctx.vm
    if p.kind is _SNAPSHOT:
        return Action(
            ActionKind.SNAPSHOT_DELETE,
            policy,
            p.vcenter or vm.vcenter,
            p.vm,
            p.point_id,
            p.slot,
            reason,
            snapshot_id=p.snapshot_id,
            requires=requires,
        )
    return Action(
        ActionKind.EXPORT_DELETE,
        policy,
        vm.vcenter,
        p.vm,
        p.point_id,
        p.slot,
        reason,
        target=p.target,
        requires=requires,
    )


def _incomplete(group: _Group, planned_slot: datetime | None) -> list[Action]:
    """Incomplete exports go once a newer complete point exists (or is about to)."""
    complete, planned_id = group.complete, group.ctx.new_id
    newest = max(complete, key=lambda p: p.slot) if complete else None
    deletions = []
    for p in group.points:
        if p.complete:
            continue
        if newest is not None and p.slot < newest.slot:
            reason = f"incomplete export; a newer complete point exists ({newest.point_id})"
            deletions.append(_delete(group, p, reason))
        elif planned_slot is not None and p.slot < planned_slot:
            reason = f"incomplete export; superseded by the planned point {planned_id}"
            deletions.append(_delete(group, p, reason, (planned_id,)))
    return deletions


def _temporaries(catalog: Catalog, owned: frozenset[str]) -> list[Action]:
    """Removal of temporaries without an installation id (older vmkeep); those with one are
    their installation's to remove (`findings.temporary_findings`)."""
    return [
        Action(
            ActionKind.SNAPSHOT_DELETE,
            p.policy,
            p.vcenter,
            p.vm,
            p.point_id,
            p.slot,
            "temporary export snapshot left behind by an interrupted export",
            snapshot_id=p.snapshot_id,
        )
        for p in catalog.temporaries
        if p.snapshot_id not in owned
    ]


# --------------------------------------------------------------------------- ordering


def _vm_order(vm: VM) -> tuple[str, str]:
    return (vm.name, vm.instance_uuid)


def _action_order(a: Action) -> tuple[object, ...]:
    vm = a.vm
    return (
        a.vcenter,
        vm.name,
        vm.instance_uuid,
        a.policy,
        _ACTION_ORDER[a.kind],
        a.point_id,
        a.snapshot_id or "",
    )


def _warning_order(w: PlanWarning) -> tuple[object, ...]:
    return (w.code, w.vcenter, w.vm or VMRef("", ""), w.policy, w.message)

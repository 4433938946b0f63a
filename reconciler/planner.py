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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from zoneinfo import ZoneInfo

from reconciler import findings, selection
from reconciler import observed as observed_state
from reconciler.collector import collector_paused
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
_SNAPSHOT = PointKind.SNAPSHOT
_GroupKey = tuple[str, str, PointKind]  # policy, instance uuid, kind


# --------------------------------------------------------------------------- retention memo


@dataclass(frozen=True)
class _Verdict:
    keep: bool
    reasons: tuple[str, ...]


_GUARDED = _Verdict(True, ("guard: the newest complete point of a group is kept",))
_History = tuple[datetime, ...]  # the distinct slots of a group, oldest first


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
        table: dict[_History, dict[datetime, _Verdict]],
    ) -> None:
        self.rules, self.max_age_cut, self.max_age_text = rules, max_age_cut, max_age_text
        self.zone, self.now, self._table = zone, now, table

    def verdicts(self, history: _History) -> dict[datetime, _Verdict]:
        found = self._table.get(history)
        if found is None:
            found = self._table[history] = self._decide(history)
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
        self._tables: dict[tuple[object, ...], dict[_History, dict[datetime, _Verdict]]] = {}

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


@dataclass
class _Work:
    actions: list[Action]
    coverage: list[Coverage]
    warnings: list[PlanWarning]
    retention: list[RetentionDecision]


@dataclass(frozen=True)
class _Kind:
    """One kind of restore point a policy makes, with what is the same for all its VMs."""

    kind: PointKind
    target: str | None  # exports
    create_reason: str  # for a missing point of the current slot
    expired_on_arrival: bool  # a snapshot of the current slot is already older than maxAge
    retention: _Retention


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
    holds the thresholds of the snapshot hygiene findings (host config)."""
    # A plan over 10,000 VMs allocates about a million small acyclic values: without the
    # pause the cyclic collector walks the whole heap again and again (~40 % of the planning
    # time); resuming costs one young-generation pass over what the plan keeps (its __exit__
    # in profiles).
    with collector_paused():
        return _plan(policies, observed, now, limits or Limits(), transports or {},
                     hygiene or Hygiene())


def _plan(policies: PolicySet, observed: ObservedState, now: datetime, limits: Limits,
          transports: Mapping[str, str], hygiene: Hygiene) -> Plan:
    catalog = observed_state.build_catalog(observed)
    work = _Work([], [], [], [])
    by_name = policies.by_name()
    infos: dict[str, SlotInfo] = {}
    for p in policies.policies:
        try:
            infos[p.name] = slot_info(p.schedule, now)
        except ScheduleError as exc:
            work.warnings.append(
                PlanWarning(
                    "schedule-unusable",
                    Severity.WARNING,
                    f"policy {p.name!r}: {exc}; nothing planned for it, its points are kept",
                    policy=p.name,
                )
            )
    memo = _RetentionMemo(now)

    groups: dict[_GroupKey, list[CatalogPoint]] = defaultdict(list)
    for point in catalog.points:
        groups[(point.policy, point.vm.instance_uuid, point.kind)].append(point)

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
            _unobserved(policy, infos[policy.name], observed.unobserved[policy.vcenter],
                        groups, work, handled)
            continue
        if policy.vcenter not in observed.vcenters:
            work.warnings.append(
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
            work.warnings.append(
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
        for vm in selection.select(by_name[policy.name], candidates[policy.vcenter]):
            selected[(vm.vcenter, vm.instance_uuid)].append(policy.name)
            if kinds:
                _plan_vm(policy, vm, info, kinds, now, groups, work, handled)

    work.warnings += findings.vm_findings(observed, catalog, selected, now, hygiene)
    work.warnings += findings.point_findings(groups, handled, by_name, observed)
    temporary, owned = findings.temporary_findings(observed, now)
    work.warnings += temporary

    deletions = [a for a in work.actions if a.kind.is_delete]
    limit = limits.max_deletes_per_run
    held: list[Action] = []
    if len(deletions) > limit:
        held = sorted(deletions, key=_action_order)
        work.actions = [a for a in work.actions if not a.kind.is_delete]
    _temporaries(catalog, by_name, work, owned)  # never held back
    _explain_transports(work, observed, transports or {})
    actions = sorted(work.actions, key=_action_order)
    deletes = sum(1 for a in actions if a.kind.is_delete)
    return Plan(
        format_version=FORMAT_VERSION,
        policy_revision=policies.revision,
        observed_digest=observed_state.digest(observed),
        now=now,
        actions=tuple(actions),
        coverage=tuple(
            sorted(
                work.coverage, key=lambda c: (c.vcenter, c.vm.name, c.vm.instance_uuid, c.policy)
            )
        ),
        warnings=tuple(sorted(work.warnings, key=_warning_order)),
        retention=tuple(work.retention),  # built in (policy, VM, kind, slot) order
        delete_count=deletes,
        held=tuple(held),
        held_reason=(
            f"{len(held)} deletions exceed limits.maxDeletesPerRun ({limit})" if held else ""
        ),
        unobserved=dict(sorted(observed.unobserved.items())),
    )


def _explain_transports(work: _Work, observed: ObservedState,
                        transports: Mapping[str, str]) -> None:
    """Add to each export.create's reason how its disks will be read, where that is not the
    datastore HTTP interface (vSAN/VVol, `transport: nfc`) or cannot work (`transport: http`
    on vSAN/VVol). Disks whose datastore type is not known say nothing."""
    if not any(a.kind is ActionKind.EXPORT_CREATE for a in work.actions):
        return
    vms = {(vm.vcenter, vm.instance_uuid): vm
           for vms in observed.vcenters.values() for vm in vms}
    for i, action in enumerate(work.actions):
        if action.kind is not ActionKind.EXPORT_CREATE:
            continue
        vm = vms.get((action.vcenter, action.vm.instance_uuid))
        note = _transport_note(vm, transports.get(action.vcenter, "auto")) if vm else ""
        if note:
            work.actions[i] = action._replace(reason=f"{action.reason}; {note}")


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


def _unobserved(
    policy: Policy,
    info: SlotInfo,
    reason: str,
    groups: dict[_GroupKey, list[CatalogPoint]],
    work: _Work,
    handled: set[_GroupKey],
) -> None:
    """A policy whose vCenter could not be observed: nothing is created or deleted for it
    (its VMs and their snapshots are unseen, and retention of its exports would be judged
    without them). The VMs its exports name get coverage "unknown", never "missing"."""
    work.warnings.append(
        PlanWarning(
            "vcenter-unobserved",
            Severity.WARNING,
            f"policy {policy.name!r}: vCenter {policy.vcenter!r} could not be observed "
            f"({reason}); coverage of its VMs is unknown, nothing is created or deleted "
            "for them",
            vcenter=policy.vcenter,
            policy=policy.name,
        )
    )
    refs: dict[str, VMRef] = {}  # instance uuid -> the VM as its newest point names it
    newest: dict[str, datetime] = {}  # instance uuid -> slot of its newest complete point
    seen: dict[str, datetime] = {}
    for key, points in groups.items():
        if key[0] != policy.name:
            continue
        handled.add(key)  # their points are the unseen VMs', not a gone VM's
        for point in points:
            uuid = point.vm.instance_uuid
            if uuid not in seen or point.slot >= seen[uuid]:
                seen[uuid], refs[uuid] = point.slot, point.vm
            if point.complete and (uuid not in newest or point.slot > newest[uuid]):
                newest[uuid] = point.slot
    for uuid, ref in refs.items():
        work.coverage.append(
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
        )



def _plan_vm(
    policy: Policy,
    vm: VM,
    info: SlotInfo,
    kinds: tuple[_Kind, ...],
    now: datetime,
    groups: dict[_GroupKey, list[CatalogPoint]],
    work: _Work,
    handled: set[_GroupKey],
) -> None:
    slot = info.slot
    new_id = point_id(policy.name, vm.instance_uuid, slot)
    ref = vm.ref
    covered_all, newest = True, None
    notes: list[str] = []
    for k in kinds:
        key = (policy.name, vm.instance_uuid, k.kind)
        handled.add(key)
        points = groups.get(key, [])
        complete = sorted([p for p in points if p.complete], key=_slot_of)  # stable
        slots = dict.fromkeys(map(_slot_of, complete))
        history = tuple(slots)
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
            if not info.window_open:
                notes.append("waiting for window")
            elif k.expired_on_arrival:
                notes.append("slot is older than snapshots.maxAge; nothing to create")
            else:
                creating = True
                work.actions.append(_create(k, policy, vm, ref, slot, new_id))
        planned = slot if creating else None
        if complete:
            judged_with = base if creating and base is not None else history
            _retain(policy, vm, ref, k, complete, history, judged_with, planned, new_id, work)
        if len(complete) != len(points):
            _incomplete(policy, vm, points, complete, planned, new_id, work)

    if covered_all:
        state = CoverageState.COVERED
    elif now - slot < info.threshold:
        state = CoverageState.DUE
    elif newest is not None:
        state = CoverageState.LATE
    else:
        state = CoverageState.MISSING
    work.coverage.append(
        Coverage(
            policy=policy.name,
            vcenter=vm.vcenter,
            vm=ref,
            state=state,
            slot=slot,
            threshold_seconds=int(info.threshold.total_seconds()),
            last_slot=newest,
            note="; ".join(dict.fromkeys(notes)),
        )
    )


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


def _create(k: _Kind, policy: Policy, vm: VM, ref: VMRef, slot: datetime, new_id: str) -> Action:
    kind = ActionKind.SNAPSHOT_CREATE if k.kind is _SNAPSHOT else ActionKind.EXPORT_CREATE
    return Action(
        kind, policy.name, vm.vcenter, ref, new_id, slot, k.create_reason, target=k.target
    )


def _retain(
    policy: Policy,
    vm: VM,
    ref: VMRef,
    k: _Kind,
    complete: Sequence[CatalogPoint],
    history: _History,
    base: _History,
    planned_slot: datetime | None,
    planned_id: str,
    work: _Work,
) -> None:
    """Retention over the complete points of a group, oldest first (`history`: their
    distinct slots). A planned point is judged with the points of `base` (see `_base_for`);
    the others of the history go by retention of the history alone."""
    if planned_slot is None:
        verdicts = k.retention.verdicts(history)
    elif base is history:
        verdicts = k.retention.verdicts(_with_slot(history, planned_slot))
    else:
        verdicts = {**k.retention.verdicts(history),
                    **k.retention.verdicts(_with_slot(base, planned_slot))}
    guarded: CatalogPoint | None = None
    requires: tuple[str, ...] = ()
    if not any(verdicts[s].keep for s in reversed(history)):  # every complete point would go
        if planned_slot is not None and verdicts[planned_slot].keep:
            requires = (planned_id,)
        else:
            guarded = max(complete, key=_slot_of)
    for p in complete:
        verdict = _GUARDED if p is guarded else verdicts[p.slot]
        work.retention.append(
            RetentionDecision(
                p.point_id, k.kind, policy.name, ref, p.slot, verdict.keep, verdict.reasons
            )
        )
        if not verdict.keep:
            work.actions.append(_delete(p, policy.name, vm, verdict.reasons[0], requires))


def _delete(
    p: CatalogPoint, policy: str, vm: VM, reason: str, requires: tuple[str, ...] = ()
) -> Action:
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


def _incomplete(
    policy: Policy,
    vm: VM,
    points: Sequence[CatalogPoint],
    complete: Sequence[CatalogPoint],
    planned_slot: datetime | None,
    planned_id: str,
    work: _Work,
) -> None:
    """Incomplete exports go once a newer complete point exists (or is about to)."""
    newest = max(complete, key=lambda p: p.slot) if complete else None
    for p in points:
        if p.complete:
            continue
        if newest is not None and p.slot < newest.slot:
            reason = f"incomplete export; a newer complete point exists ({newest.point_id})"
            work.actions.append(_delete(p, policy.name, vm, reason))
        elif planned_slot is not None and p.slot < planned_slot:
            reason = f"incomplete export; superseded by the planned point {planned_id}"
            work.actions.append(_delete(p, policy.name, vm, reason, (planned_id,)))


def _temporaries(catalog: Catalog, by_name: dict[str, Policy], work: _Work,
                 owned: frozenset[str]) -> None:
    """Removal of temporaries without an installation id (older vmkeep); those with one are
    their installation's to remove (`findings.temporary_findings`)."""
    for p in catalog.temporaries:
        if p.snapshot_id in owned:
            continue
        work.actions.append(
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
        )


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

"""One reconcile (observe → recover → plan → guard → execute → journal) through the
reconcile service, built from in-memory fakes of vCenter and target and a real SQLite
journal: no argparse, no printing, no adapters but the state DB."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from reconciler import observed
from reconciler.adapters.statedb import StateDB
from reconciler.errors import UsageError
from reconciler.executor import OutcomeStatus, Progress, RunReport
from reconciler.model import (
    ActionKind,
    Hygiene,
    Inventory,
    Limits,
    ObservedState,
    Plan,
    PolicySet,
    Snapshot,
)
from reconciler.ports import ExportStore, RestoreTarget, VCenterOps
from reconciler.reconcile import Reconciler, ReconcileRequest, ReconcileResult

from .fakes import T0, FakeClock, FakeHooks, FakeStore, FakeVCenter, make_policy


class FakeVCenters:
    def __init__(self, vcenters: Mapping[str, FakeVCenter]) -> None:
        self.vcenters = vcenters
        self.prepared: list[dict[str, int]] = []

    def ops(self) -> Mapping[str, VCenterOps]:
        return dict(self.vcenters)

    def prepare_exports(self, exports: Mapping[str, int]) -> None:
        self.prepared.append(dict(exports))

    def restore_target(self, name: str) -> RestoreTarget:
        raise KeyError(name)


class RecordingEvents:
    def __init__(self) -> None:
        self.seen: list[str] = []
        self.repairs: list[str] = []

    def lease_taken_over(self, holder: str) -> None:
        self.seen.append("lease_taken_over")

    def repaired(self, note: str) -> None:
        self.repairs.append(note)

    def planned(self, plan: Plan) -> None:
        self.seen.append("planned")

    def nothing_to_do(self, message: str, plan: Plan | None, repaired: list[str]) -> None:
        self.seen.append(f"nothing: {message}")

    @contextmanager
    def progress(self) -> Iterator[Callable[[Progress], None]]:
        self.seen.append("progress")
        yield lambda _p: None

    def finished(self, report: RunReport, plan: Plan) -> None:
        self.seen.append("finished")


class World:
    """Two vCenters ('sim' with one VM, 'other' with one VM), one target, one journal."""

    def __init__(self, tmp_path: Path) -> None:
        self.sim, self.other = FakeVCenter("sim"), FakeVCenter("other")
        self.sim.add("app")
        self.other.add("db")
        self.store = FakeStore()
        self.vcenters = FakeVCenters({"sim": self.sim, "other": self.other})
        self.limits = Limits()
        self.db_path = tmp_path / "state.db"
        self.unreachable: dict[str, str] = {}
        self.clock = FakeClock()
        self.events = RecordingEvents()
        self.approved: list[int] = []
        self.observations = 0
        self.policies = PolicySet((make_policy("gold"),
                                   replace(make_policy("silver"), vcenter="other")), "rev-1")

    def observe(self, now: datetime) -> ObservedState:
        self.observations += 1
        inventories = [Inventory(vc.name, tuple(vc.vm(s) for s in vc.vms.values()))
                       for vc in (self.sim, self.other) if vc.name not in self.unreachable]
        return observed.observed_from(inventories, {"local": self.store.points()}, now,
                                      dict(self.unreachable))

    def approve(self, plan: Plan) -> None:
        self.approved.append(len(plan.actions))

    def reconciler(self, approve: Callable[[Plan], None] | None = None) -> Reconciler:
        targets: Mapping[str, ExportStore] = {"local": self.store}
        vcenters = self.vcenters

        def open_targets() -> AbstractContextManager[Mapping[str, ExportStore]]:
            return nullcontext(targets)

        return Reconciler(
            observe=self.observe,
            open_journal=lambda: StateDB(self.db_path),
            open_vcenters=lambda: nullcontext(vcenters),
            open_targets=open_targets,
            hooks=FakeHooks(),
            limits=self.limits,
            transports={},
            approve=approve or self.approve,
            events=self.events,
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    def run(self, now: datetime, max_deletes: int | None = None) -> ReconcileResult:
        return self.reconciler().run(ReconcileRequest(self.policies, now,
                                                      max_deletes=max_deletes))


def test_a_reconcile_observes_plans_asks_executes_and_journals_the_run(tmp_path: Path) -> None:
    world = World(tmp_path)
    result = world.run(T0)
    assert result.code == 0 and result.revision == "rev-1"
    assert result.plan is not None and result.report is not None
    kinds = sorted(a.kind for a in result.plan.actions)
    assert kinds == sorted([ActionKind.SNAPSHOT_CREATE, ActionKind.EXPORT_CREATE] * 2)
    assert {o.status for o in result.report.outcomes} == {OutcomeStatus.DONE}
    assert world.approved == [4]
    assert world.vcenters.prepared == [{"other": 1, "sim": 1}]  # once approved
    assert world.events.seen == ["planned", "progress", "finished"]
    assert len(world.store.committed) == 2
    with StateDB(world.db_path) as db:
        runs = db.runs()
        assert [r["policy_revision"] for r in runs] == ["rev-1"]
        assert runs[0]["finished_at"] is not None
        assert runs[0]["summary"] == {OutcomeStatus.DONE: 4}
        assert db.lease_holder("apply", world.clock()) is None  # released at the end


def test_a_refused_approval_changes_nothing_and_journals_no_run(tmp_path: Path) -> None:
    world = World(tmp_path)

    def refuse(plan: Plan) -> None:
        raise UsageError("apply cancelled; nothing was changed")

    with pytest.raises(UsageError, match="cancelled"):
        world.reconciler(refuse).run(ReconcileRequest(world.policies, T0))
    assert world.sim.calls == [] and world.other.calls == []
    assert world.vcenters.prepared == []  # no reader process started for a refused plan
    assert world.store.committed == {}
    with StateDB(world.db_path) as db:
        assert db.runs() == []
        assert db.lease_holder("apply", world.clock()) is None


def test_nothing_to_do_is_said_and_exits_zero_without_asking(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.run(T0)
    world.events.seen.clear()
    again = world.run(T0)
    assert again.code == 0 and again.report is None
    assert world.approved == [4]  # asked once, for the first run only
    assert world.events.seen == [
        "planned", "nothing: No changes: reality already matches the policies."]


def test_deletions_beyond_the_budget_are_held_while_the_creates_run(tmp_path: Path) -> None:
    world = World(tmp_path)
    world.run(T0)
    world.run(T0 + timedelta(days=1))
    result = world.run(T0 + timedelta(days=2), max_deletes=0)
    assert result.plan is not None and result.report is not None
    assert [a.kind for a in result.plan.held] == [ActionKind.SNAPSHOT_DELETE] * 2
    assert all(a.kind is not ActionKind.SNAPSHOT_DELETE for a in result.plan.actions)
    assert {o.status for o in result.report.outcomes} == {OutcomeStatus.DONE}
    assert result.code == 3  # needs attention: deletions were held back
    assert all(len(vc.vms[f"uuid-{name}"].snapshots) == 3
               for vc, name in ((world.sim, "app"), (world.other, "db")))


def test_an_unobserved_vcenter_is_left_alone_while_the_others_are_reconciled(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    world.unreachable["other"] = "login refused"
    result = world.run(T0)
    assert result.plan is not None and result.report is not None
    assert result.plan.unobserved == {"other": "login refused"}
    assert {a.vm.name for a in result.plan.actions} == {"app"}
    assert world.other.calls == []
    assert {o.status for o in result.report.outcomes} == {OutcomeStatus.DONE}
    assert result.code == 3


def test_a_plan_that_only_holds_deletions_is_not_applied_and_asks_nobody(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    world.run(T0)
    world.run(T0 + timedelta(days=1))
    world.run(T0 + timedelta(days=2), max_deletes=0)
    world.approved.clear()
    world.events.seen.clear()
    result = world.run(T0 + timedelta(days=2), max_deletes=0)
    assert result.code == 3 and result.report is None
    assert world.approved == []
    assert world.events.seen == [
        "planned", "nothing: Nothing to apply: every change is a deletion held back."]


def test_the_executor_and_the_journal_spell_an_actions_status_the_same_way() -> None:
    from reconciler.adapters.statedb import ActionStatus

    assert OutcomeStatus is ActionStatus
    assert [str(s) for s in (OutcomeStatus.DONE, OutcomeStatus.NOOP, OutcomeStatus.FAILED,
                             OutcomeStatus.SKIPPED)] == ["done", "noop", "failed", "skipped"]
    assert {str(s) for s in ActionStatus} >= {"started", "reconciled"}


def test_the_plan_of_a_reconcile_judges_snapshot_hygiene_by_the_host_configs_thresholds(
        tmp_path: Path) -> None:
    def warnings(hygiene: Hygiene | None, where: Path) -> set[str]:
        world = World(where)
        [app] = world.sim.vms.values()
        app.snapshots.append(Snapshot("snapshot-user", "before upgrade", "",
                                      T0 - timedelta(hours=5), False))
        service = world.reconciler()
        if hygiene is not None:
            service = replace(service, hygiene=hygiene)
        result = service.run(ReconcileRequest(world.policies, T0))
        assert result.plan is not None
        return {w.code for w in result.plan.warnings}

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert "foreign-snapshot-old" not in warnings(None, tmp_path / "a")  # default: 72 h
    assert "foreign-snapshot-old" in warnings(Hygiene(snapshot_max_age_seconds=3600),
                                              tmp_path / "b")


def test_the_vcenters_hear_how_many_exports_may_run_at_once_before_the_first_starts(
    tmp_path: Path,
) -> None:
    world = World(tmp_path)
    for name in ("web", "cache", "queue"):
        world.sim.add(name)
    world.limits = Limits(concurrent_exports=2)
    world.run(T0)
    assert world.vcenters.prepared == [{"other": 1, "sim": 2}]  # 4 and 1 exports, 2 at once
    world.vcenters.prepared.clear()
    world.run(T0)  # nothing to do: nothing to prepare
    assert world.vcenters.prepared == []

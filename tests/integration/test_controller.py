"""`vmkeep run`, the controller loop: the simulator, a real Git repository, a real policy
directory watched with watchdog, a real SQLite journal and export target."""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reconciler.cli import build_parser
from reconciler.cli.run import seconds
from reconciler.controller import Controller, Metrics, covered_after

from .apply_world import POLICY, Estate
from .conftest import REPO, StartVcsim, wait_until
from .test_review_mode import commit, git

pytestmark = pytest.mark.vcsim

DAY1 = "2026-11-25T01:30:00Z"


@pytest.fixture
def estate(start_vcsim: StartVcsim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Estate:
    monkeypatch.setenv("VMKEEP_CACHE_DIR", str(tmp_path / "cache"))
    world = Estate(start_vcsim(vms=3), tmp_path)
    os.environ["VMKEEP_SIM_PASSWORD"] = world.sim.password
    return world


def policy(name: str = "gold", names: str = '["*"]', snapshots: int = 2) -> str:
    return POLICY.format(name=name, names=names, mode="crash", snapshots=snapshots, daily=7)


def run_args(estate: Estate, *argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", "--config", str(estate.config), "--now", DAY1,
                                      "--metrics-file", str(estate.root / "vmkeep.prom"),
                                      *argv])


@contextmanager
def looping(controller: Controller) -> Iterator[Controller]:
    """The loop in a thread (signals are the main thread's: the test stops it by hand)."""
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    try:
        yield controller
    finally:
        controller.stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive()


def test_run_once_reconciles_like_apply_and_writes_metrics(estate: Estate) -> None:
    log = io.StringIO()
    code = Controller(run_args(estate, "--once", "--policies", str(estate.policies)),
                      log=log).run()
    assert code == 0, log.getvalue()
    assert len(estate.points()) == 3
    metrics = (estate.root / "vmkeep.prom").read_text()
    assert 'vmkeep_reconciles_total{result="ok"} 1' in metrics
    assert 'vmkeep_actions_total{kind="export.create",status="done"} 3' in metrics
    assert 'vmkeep_actions_total{kind="snapshot.create",status="done"} 3' in metrics
    assert "vmkeep_last_reconcile_success 1" in metrics
    assert 'vmkeep_coverage{state="covered"} 3' in metrics
    assert "reconcile (once)" in log.getvalue()


def test_the_loop_follows_new_commits_and_keeps_applying_the_last_valid_one(
    estate: Estate,
) -> None:
    repo = estate.root / "policy-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    first = commit(repo, {"gold.yaml": policy(names='["DC0_C0_RP0_VM0"]')}, "gold for VM0")
    log = io.StringIO()
    controller = Controller(run_args(estate, "--repo", str(repo), "--rev", "main",
                                     "--path", "policies", "--poll", "0.2s"), log=log)
    metrics = estate.root / "vmkeep.prom"
    with looping(controller):
        wait_until(lambda: metrics.exists() and f'revision="{first}"' in metrics.read_text(),
                   timeout=60)
        assert {p.vm.name for p in estate.points()} == {"DC0_C0_RP0_VM0"}

        second = commit(repo, {"gold.yaml": policy()}, "gold for every VM")
        wait_until(lambda: f'revision="{second}"' in metrics.read_text(), timeout=60)
        assert {p.vm.name for p in estate.points()} == {
            "DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1", "DC0_C0_RP0_VM2"}

        broken = commit(repo, {"gold.yaml": policy().replace("cron:", "cron: [")}, "typo")
        wait_until(lambda: f'vmkeep_rejected_revision_info{{revision="{broken}"}}'
                   in metrics.read_text(), timeout=60)
        text = metrics.read_text()
        assert "vmkeep_policies_valid 0" in text
        assert f'vmkeep_policy_revision_info{{revision="{second}"}} 1' in text  # still applied
        assert 'result="error"} 0' in text
    assert f"reconcile (new commit {second})" in log.getvalue()
    assert f"policies at revision {broken} are invalid; still applying {second}:" in log.getvalue()
    assert "gold.yaml:" in log.getvalue()  # the file:line:col diagnostics
    assert "stopped" in log.getvalue()


def test_a_changed_policy_file_is_reconciled_without_waiting_for_the_interval(
    estate: Estate,
) -> None:
    estate.set_policy(names=["DC0_C0_RP0_VM0"])
    log = io.StringIO()
    controller = Controller(run_args(estate, "--policies", str(estate.policies)), log=log)
    metrics = estate.root / "vmkeep.prom"
    with looping(controller):
        wait_until(lambda: metrics.exists()
                   and 'vmkeep_reconciles_total{result="ok"} 1' in metrics.read_text(),
                   timeout=60)
        estate.set_policy(names=["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"])
        wait_until(lambda: 'vmkeep_reconciles_total{result="ok"} 2' in metrics.read_text(),
                   timeout=60)
        assert {p.vm.name for p in estate.points()} == {"DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"}

        (estate.policies / "gold.yaml").write_text("apiVersion: vmkeep/v1\nkind: [\n")
        wait_until(lambda: 'result="invalid_policies"} 1' in metrics.read_text(), timeout=60)
        assert "vmkeep_policies_valid 0" in metrics.read_text()
    assert "reconcile (policy files changed)" in log.getvalue()
    assert "nothing is applied until they are valid" in log.getvalue()
    assert len(estate.points()) == 2


def test_sigterm_stops_the_loop_after_the_running_reconcile(estate: Estate) -> None:
    metrics = estate.root / "vmkeep.prom"
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "run", "--config", str(estate.config),
         "--policies", str(estate.policies), "--now", DAY1, "--metrics-file", str(metrics)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "VMKEEP_SIM_PASSWORD": estate.sim.password},
    )
    try:
        wait_until(lambda: metrics.exists() or proc.poll() is not None, timeout=120)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "SIGTERM: stopping after the running reconcile" in err
    assert err.rstrip().endswith("vmkeep run: stopped")
    assert 'vmkeep_reconciles_total{result="ok"} 1' in metrics.read_text()


@pytest.mark.parametrize(("text", "value"),
                         [("90", 90), ("30s", 30), ("5m", 300), ("1.5h", 5400), ("1d", 86400),
                          ("0.2s", 0.2)])
def test_durations_of_the_loop_read_like_the_rest_of_vmkeep(text: str, value: float) -> None:
    assert seconds(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "5 min", "-1s", "1w", "0.01s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        seconds(text)


def test_metrics_before_any_reconcile_are_the_counters_at_zero() -> None:
    text = Metrics().render()
    assert 'vmkeep_reconciles_total{result="ok"} 0' in text
    assert "vmkeep_last_reconcile_timestamp_seconds" not in text
    assert text.endswith("\n") and all(
        line.startswith("#") or " " in line for line in text.splitlines())


def test_after_a_run_a_pair_is_covered_only_when_all_its_creates_succeeded() -> None:
    from datetime import UTC, datetime

    from reconciler.executor import ActionOutcome, RunReport
    from reconciler.model import Action, ActionKind, Coverage, CoverageState, Plan, VMRef

    slot = datetime(2026, 11, 25, 1, tzinfo=UTC)
    vms = [VMRef(f"vm{i}", f"uuid-{i}") for i in range(4)]
    coverage = tuple(Coverage("gold", "vc", vm, CoverageState.DUE, slot, 3600) for vm in vms)
    plan = Plan(1, "rev", "sha256:0", slot, (), coverage)

    def outcome(vm: VMRef, kind: ActionKind, status: str) -> ActionOutcome:
        return ActionOutcome(Action(kind, "gold", "vc", vm, f"gold/{vm.instance_uuid}/x",
                                    slot, "r"), status)

    report = RunReport("run", (
        outcome(vms[0], ActionKind.SNAPSHOT_CREATE, "done"),
        outcome(vms[0], ActionKind.EXPORT_CREATE, "noop"),
        outcome(vms[1], ActionKind.SNAPSHOT_CREATE, "done"),
        outcome(vms[1], ActionKind.EXPORT_CREATE, "failed"),
        outcome(vms[2], ActionKind.SNAPSHOT_DELETE, "done"),
    ))
    assert covered_after(plan, report) == [CoverageState.COVERED] + [CoverageState.DUE] * 3
    assert covered_after(plan, None) == [CoverageState.DUE] * 4


def test_run_once_holds_deletions_over_the_budget_back_and_still_takes_the_backups(
    estate: Estate,
) -> None:
    estate.set_policy(snapshots=1)
    assert estate.apply(DAY1).code == 0
    estate.write_config(max_deletes=2)
    log = io.StringIO()
    args = build_parser().parse_args([
        "run", "--config", str(estate.config), "--now", "2026-11-26T01:30:00Z", "--once",
        "--metrics-file", str(estate.root / "vmkeep.prom"), "--policies", str(estate.policies)])
    code = Controller(args, log=log).run()
    assert code == 3, log.getvalue()
    assert "held back: 3 deletions exceed limits.maxDeletesPerRun (2)" in log.getvalue()
    assert "--max-deletes 3" in log.getvalue()
    assert sum(p.id.endswith("20261126T010000Z") for p in estate.points()) == 3
    metrics = (estate.root / "vmkeep.prom").read_text()
    assert 'vmkeep_reconciles_total{result="attention"} 1' in metrics
    assert "vmkeep_held_deletions 3" in metrics
    assert 'vmkeep_actions_total{kind="snapshot.create",status="done"} 3' in metrics
    assert 'kind="snapshot.delete"' not in metrics

"""One vCenter that cannot be observed never stops the others: two simulators, the second
one's login refused (a wrong password). The healthy vCenter's VMs get their backups; the
other's VMs have coverage "unknown" (never "missing"), nothing is deleted for them although
their policy now keeps fewer exports than exist, and apply, plan, run --once and
status --check say so and exit 3."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters.statedb import StateDB

from .apply_world import POLICY, Estate, wait
from .conftest import Simulator, StartVcsim

pytestmark = pytest.mark.vcsim

DAY1 = "2026-11-25T01:30:00Z"
DAY2 = "2026-11-26T01:30:00Z"
DAY3 = "2026-11-27T01:30:00Z"

FAR = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata:
  name: far
spec:
  vcenter: far
  selector:
    include:
      names: ["*"]
  schedule:
    cron: "0 1 * * *"
  exports:
    target: local
    keep: {{last: {last}}}
"""


class TwoVCenters(Estate):
    """`sim` (always reachable) and `far`, whose password comes from $VMKEEP_FAR_PASSWORD."""

    def __init__(self, sim: Simulator, far: Simulator, root: Path) -> None:
        self.far = far
        super().__init__(sim, root)

    def write_config(self, max_deletes: int) -> None:
        super().write_config(max_deletes)
        text = self.config.read_text().replace("targets:", textwrap.dedent(f"""\
              far:
                url: "{self.far.url}"
                username: {self.far.username}
                passwordEnv: VMKEEP_FAR_PASSWORD
                caFile: "{self.far.ca_file}"
            targets:"""), 1)
        self.config.write_text(text)

    def set_policies(self, far_keeps: int) -> None:
        (self.policies / "gold.yaml").write_text(POLICY.format(
            name="gold", names='["*"]', mode="crash", snapshots=2, daily=7))
        (self.policies / "far.yaml").write_text(FAR.format(last=far_keeps))

    def far_points(self) -> list[str]:
        return [p.id for p in self.points() if p.policy == "far"]


@pytest.fixture
def world(start_vcsim: StartVcsim, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[TwoVCenters]:
    far = start_vcsim(vms=2)
    estate = TwoVCenters(start_vcsim(vms=2), far, tmp_path)
    estate.set_policies(far_keeps=5)
    monkeypatch.setenv("VMKEEP_FAR_PASSWORD", far.password)
    assert estate.apply(DAY1).code == 0
    assert estate.apply(DAY2).code == 0
    assert len(estate.far_points()) == 4
    estate.set_policies(far_keeps=1)  # would delete 2 of far's exports, if it were seen
    monkeypatch.setenv("VMKEEP_FAR_PASSWORD", "wrong-password")
    yield estate


def test_apply_backs_up_the_healthy_vcenter_and_leaves_the_unobserved_ones_points_alone(
    world: TwoVCenters,
) -> None:
    far_before = world.far_points()
    world.far.reset_stats()
    run = world.apply(DAY3)
    assert run.code == 3, run.out + run.err
    assert "vCenter 'far' could not be observed" in run.err
    assert "not observed: vCenter 'far'" in run.out
    assert "Traceback" not in run.err
    assert sum(p.id.endswith("20261127T010000Z") and p.policy == "gold"
               for p in world.points()) == 2
    assert world.far_points() == far_before
    assert not any("Task" in name for name in world.far.stats()["methods"])


def test_plan_shows_the_unobserved_vcenter_and_unknown_coverage_and_exits_3(
    world: TwoVCenters,
) -> None:
    run = world.plan(DAY3)
    assert run.code == 3, run.err
    document = run.json()
    assert list(document["unobservedVcenters"]) == ["far"]
    assert "InvalidLogin" in document["unobservedVcenters"]["far"] \
        or "password" in document["unobservedVcenters"]["far"]
    far = [c for c in document["coverage"] if c["policy"] == "far"]
    assert len(far) == 2 and {c["state"] for c in far} == {"unknown"}
    assert all(a["vcenter"] == "sim" for a in document["actions"])
    assert document["heldCount"] == 0
    assert not any(a["kind"].endswith(".delete") and a["policy"] == "far"
                   for a in document["actions"])
    text = world.vmkeep("plan", "--policies", str(world.policies), "--now", DAY3)
    assert text.code == 3 and "UNOBSERVED: vCenter 'far' could not be observed" in text.out


def test_run_once_and_status_check_report_the_unobserved_vcenter(world: TwoVCenters) -> None:
    once = world.vmkeep("run", "--once", "--policies", str(world.policies), "--now", DAY3)
    assert once.code == 3, once.out + once.err
    assert sum(p.policy == "gold" and p.id.endswith("20261127T010000Z")
               for p in world.points()) == 2
    status = world.vmkeep("status", "--check", "--policies", str(world.policies),
                          "--now", DAY3)
    assert status.code == 3, status.out + status.err
    assert "vCenter 'far' could not be observed" in status.out
    assert " 2 unknown" in status.out


def test_an_interrupted_action_on_the_unobserved_vcenter_waits_for_a_run_that_sees_it(
    world: TwoVCenters, monkeypatch: pytest.MonkeyPatch,
) -> None:
    far_vm = world.far.vm("DC0_C0_RP0_VM0")
    wait(far_vm.PowerOffVM_Task())  # as a killed poweroff-mode run would have left it
    with StateDB(world.root / "state.db") as db:
        db.start_run("killed", "elsewhere/1/killed", 0.0, None)
        db.record_intent("killed", kind="export.create", point_id="far/x/20261126T010000Z",
                         vm_uuid=far_vm.config.instanceUuid, vm_name="DC0_C0_RP0_VM0",
                         vcenter="far", now=0.0, details={"poweredOffByUs": True})
    run = world.apply(DAY3)
    assert run.code == 3, run.out + run.err
    with StateDB(world.root / "state.db") as db:
        assert [a.vcenter for a in db.unfinished_actions()] == ["far"]
    assert far_vm.runtime.powerState == "poweredOff"
    monkeypatch.setenv("VMKEEP_FAR_PASSWORD", world.far.password)
    healed = world.apply(DAY3)
    assert healed.code == 0, healed.out + healed.err
    assert "powered VM 'DC0_C0_RP0_VM0' back on" in healed.err
    assert far_vm.runtime.powerState == "poweredOn"
    with StateDB(world.root / "state.db") as db:
        assert db.unfinished_actions() == []
    assert len(world.far_points()) == 2  # now that far is seen, its retention runs


def test_a_vcenter_whose_certificate_does_not_verify_is_unobserved_too(
    world: TwoVCenters, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VMKEEP_FAR_PASSWORD", world.far.password)
    text = world.config.read_text()
    world.config.write_text(text.replace(f'caFile: "{world.far.ca_file}"',
                                         f'caFile: "{world.sim.ca_file}"'))  # not far's CA
    run = world.plan(DAY3)
    assert run.code == 3, run.err
    reason = run.json()["unobservedVcenters"]["far"]
    assert "certificate" in reason.lower(), reason
    assert {c["state"] for c in run.json()["coverage"] if c["policy"] == "far"} == {"unknown"}

"""`vmkeep state export` and live `vmkeep plan` against the vSphere simulator.

Marked snapshots are created with pyVmomi the way the executor will create them; the plan
must recognise them (and leave the user's own snapshot alone), and a plan made live must be
the same plan as one made offline from the exported state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pyVim.task import WaitForTask

from reconciler.cli import main
from reconciler.markers import Marker, MarkerKind, format_description, format_name, point_id

from .conftest import REPO, Simulator

pytestmark = pytest.mark.vcsim

NOW = "2026-11-25T12:00:00Z"
SLOT = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
VM_NAME = "DC0_C0_RP0_VM0"

POLICY = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata:
  name: gold
spec:
  vcenter: sim
  selector:
    include:
      names: ["DC0_*_VM0"]
  schedule:
    cron: "0 1 * * *"
    timezone: UTC
  snapshots:
    keep: {last: 2}
"""


def host_config(tmp_path: Path, sim: Simulator) -> Path:
    path = tmp_path / "vmkeep.yaml"
    path.write_text(
        "vcenters:\n"
        "  sim:\n"
        f'    url: "{sim.url}"\n'
        f"    username: {sim.username}\n"
        "    passwordEnv: VMKEEP_SIM_PASSWORD\n"
        f"    caFile: {sim.ca_file}\n"
        "targets:\n"
        f"  nas: {{type: directory, path: {tmp_path / 'nas'}}}\n",
        encoding="utf-8",
    )
    return path


def snapshot(vm: Any, name: str, description: str) -> None:
    WaitForTask(vm.CreateSnapshot_Task(name, description, False, False))


@pytest.fixture
def estate(
    start_vcsim: Callable[..., Simulator],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    sim = start_vcsim(vms=3)
    monkeypatch.setenv("VMKEEP_SIM_PASSWORD", sim.password)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VMKEEP_CONFIG", raising=False)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "gold.yaml").write_text(POLICY)
    vm = sim.vm(VM_NAME)
    uuid = vm.config.instanceUuid
    ids = []
    for days in (3, 2, 1):
        slot = SLOT - timedelta(days=days)
        marker = Marker("gold", point_id("gold", uuid, slot), slot, MarkerKind.POINT)
        snapshot(vm, format_name(marker), format_description(marker))
        ids.append(marker.point_id)
    snapshot(vm, "before upgrade", "the admin's own snapshot")
    return {"config": host_config(tmp_path, sim), "uuid": uuid, "ids": ids}


def test_state_export_writes_a_schema_valid_state_with_the_marked_snapshots(
    estate: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["state", "export", "--config", str(estate["config"]), "-o", "state.json"]) == 0
    document = json.loads(Path("state.json").read_text())
    schema = json.loads((REPO / "schemas" / "state.schema.json").read_text())
    Draft202012Validator(schema).validate(document)
    (vm,) = [v for v in document["vcenters"]["sim"]["vms"] if v["name"] == VM_NAME]
    names = [s["name"] for s in vm["snapshots"]]
    assert names[-1] == "before upgrade" and sum(n.startswith("vmkeep:") for n in names) == 3
    assert document["targets"] == {"nas": {"points": []}}
    assert "wrote state.json: 3 VMs in 1 vCenters" in capsys.readouterr().err


def test_a_live_plan_recognises_marked_snapshots_and_never_touches_foreign_ones(
    estate: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["plan", "--config", str(estate["config"]), "--policies", "policies", "--now", NOW]
    assert main([*args, "-o", "json", "--detailed-exitcode"]) == 2
    live = json.loads(capsys.readouterr().out)
    actions = [(a["kind"], a["pointId"]) for a in live["actions"]]
    new = point_id("gold", estate["uuid"], SLOT)
    assert actions == [
        ("snapshot.create", new),
        ("snapshot.delete", estate["ids"][0]),
        ("snapshot.delete", estate["ids"][1]),
    ]
    assert all(a["snapshotId"].startswith("snapshot-") for a in live["actions"][1:])
    assert "foreign-snapshot-old" not in [w["code"] for w in live["warnings"]]  # it is new

    assert main(["state", "export", "--config", str(estate["config"]), "-o", "state.json",
                 "--now", NOW]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["plan", "--policies", "policies", "--state", "state.json", "--now", NOW,
                 "-o", "json"]) == 0  # fmt: skip
    offline = json.loads(capsys.readouterr().out)
    assert offline["observedDigest"] == live["observedDigest"]
    assert offline["actions"] == live["actions"]

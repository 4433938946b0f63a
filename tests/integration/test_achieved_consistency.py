"""The consistency achieved, not the one asked for, is what every record says: a quiesce that
fell back to crash (the simulator's VMware Tools never run) says `crash` with the reason on
the export's outcome, in its journal row, on the restore point, and to the post hook."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters.statedb import StateDB

from .apply_world import Estate
from .conftest import StartVcsim

pytestmark = pytest.mark.vcsim

NOW = "2026-11-25T01:30:00Z"

POLICY = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata:
  name: tools
spec:
  vcenter: sim
  selector:
    include:
      names: ["DC0_C0_RP0_VM0"]
  schedule:
    cron: "0 1 * * *"
  consistency:
    mode: quiesce
    fallback: crash
    hooks: {{pre: [record], post: [record]}}
  {kinds}
"""

EXPORTS_ONLY = "exports: {target: local, keep: {last: 2}}"
BOTH = "snapshots: {keep: {last: 1}}\n  exports: {target: local, keep: {last: 2}}"


@pytest.fixture
def estate(start_vcsim: StartVcsim, tmp_path: Path) -> Iterator[Estate]:
    yield Estate(start_vcsim(vms=1), tmp_path)


def with_recording_hook(estate: Estate, kinds: str) -> Path:
    """Point the `record` hook at a script appending phase and consistency to a file."""
    log = estate.root / "hook.log"
    script = (f"import os; open({str(log)!r}, 'a').write(os.environ['VMKEEP_PHASE'] + ' ' + "
              "os.environ['VMKEEP_CONSISTENCY'] + '\\n')")
    text = estate.config.read_text().replace("hooks: {}", textwrap.dedent(f"""\
        hooks:
          record: {{command: [{json.dumps(sys.executable)}, -c, {json.dumps(script)}]}}"""))
    estate.config.write_text(text)
    for old in estate.policies.glob("*.yaml"):
        old.unlink()
    (estate.policies / "tools.yaml").write_text(POLICY.format(kinds=kinds))
    return log


def test_a_quiesce_that_fell_back_is_recorded_as_crash_on_the_export_everywhere(estate):
    log = with_recording_hook(estate, EXPORTS_ONLY)
    run = estate.apply(NOW, "-o", "json")
    assert run.code == 0, run.out + run.err
    (outcome,) = run.json()["outcomes"]
    assert outcome["kind"] == "export.create"
    assert outcome["consistency"] == "crash"
    assert outcome["consistencyNote"] == "VMware Tools are not running: fell back to crash"
    assert "fell back to crash" in outcome["message"]
    assert log.read_text().splitlines() == ["pre quiesce", "post crash"]
    with StateDB(estate.root / "state.db") as db:
        (row,) = db.actions()
    assert row.details["consistency"] == "crash"
    assert row.details["consistencyNote"] == "VMware Tools are not running: fell back to crash"
    assert [p.consistency for p in estate.points()] == ["crash"]


def test_the_text_summary_names_the_fallback(estate):
    with_recording_hook(estate, EXPORTS_ONLY)
    run = estate.apply(NOW)
    assert run.code == 0, run.out + run.err
    assert ("  crash: export.create tools/" in run.out
            and "(DC0_C0_RP0_VM0): VMware Tools are not running: fell back to crash" in run.out)


def test_an_export_reading_the_slots_snapshot_records_that_snapshots_consistency(estate):
    log = with_recording_hook(estate, BOTH)
    run = estate.apply(NOW, "-o", "json")
    assert run.code == 0, run.out + run.err
    outcomes = {o["kind"]: o for o in run.json()["outcomes"]}
    assert outcomes["snapshot.create"]["consistency"] == "crash"
    assert outcomes["snapshot.create"]["consistencyNote"].endswith("fell back to crash")
    assert outcomes["export.create"]["consistency"] == "crash"
    assert outcomes["export.create"]["consistencyNote"].endswith(
        "taken crash (the policy asks for quiesce)")
    assert log.read_text().splitlines() == ["pre quiesce", "post crash"]
    with StateDB(estate.root / "state.db") as db:
        assert {r.kind: r.details["consistency"] for r in db.actions()} == {
            "snapshot.create": "crash", "export.create": "crash"}

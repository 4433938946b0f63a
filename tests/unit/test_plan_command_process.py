"""`vmkeep plan` as a process: it imports its own command module only, and it ends without
freeing its large values one by one (`reconciler.cli.keep_until_exit`) yet with every byte of
its output written and its exit code kept; called in-process (`main`), it frees them."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.observed import state_to_json
from tests.unit.estate import at, export_point, marked_snapshot, state, uuid_of, vm

NOW = "2026-11-25T12:00:00Z"
SLOT = at("2026-11-25 01:00")
POLICY = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata:
  name: gold
spec:
  vcenter: vc1
  selector:
    include:
      names: ["web*"]
  schedule:
    cron: "0 1 * * *"
    timezone: UTC
  snapshots:
    keep: {daily: 3}
  exports:
    target: nas
    keep: {weekly: 2}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Policies and a state with work to do: web1..web40 miss today's snapshot and have five
    days of them (deletions due, more than the default limit allows)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VMKEEP_CONFIG", raising=False)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "gold.yaml").write_text(POLICY)
    machines = [
        vm(f"web{n}", snapshots=[
            marked_snapshot("gold", uuid_of(f"web{n}"), SLOT - timedelta(days=d), f"s-{n}-{d}")
            for d in range(1, 6)])
        for n in range(1, 41)
    ]
    points = [export_point("gold", m, SLOT - timedelta(days=7 * w)) for m in machines
              for w in range(3)]
    (tmp_path / "state.json").write_text(json.dumps(state_to_json(state(machines, points))))
    return tmp_path


def plan_argv(*extra: str) -> list[str]:
    return ["plan", "--policies", "policies", "--state", "state.json", "--now", NOW, *extra]


def run_vmkeep(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *argv], cwd=cwd, text=True,
                          capture_output=True, timeout=60, check=False)


@pytest.mark.parametrize("output", ["json", "text", "markdown"])
def test_a_plan_process_writes_all_its_output_and_keeps_its_exit_code(
    workdir: Path, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    argv = plan_argv("-o", output, "--detailed-exitcode")
    assert main([*argv, "--out", "in-process.json"]) == 2
    expected = capsys.readouterr().out
    done = run_vmkeep(workdir, *argv, "--out", "process.json")
    assert done.returncode == 2, done.stderr
    assert done.stdout == expected
    assert done.stderr == ""
    saved = (workdir / "process.json").read_bytes()
    assert saved == (workdir / "in-process.json").read_bytes()
    document = json.loads(saved)
    assert len(document["actions"]) == 40  # today's snapshot of each VM
    assert len(document["held"]) == 40 * 4  # 3 snapshots, 1 export each: over the limit


def test_a_plan_process_that_fails_still_says_why_and_exits_1(workdir: Path) -> None:
    (workdir / "out").mkdir()
    (workdir / "out" / "plan.json").mkdir()  # --out names a directory: nothing to write to
    done = run_vmkeep(workdir, *plan_argv("-o", "json", "--out", "out/plan.json"))
    assert done.returncode == 1
    assert json.loads(done.stdout)["actions"]  # the plan was shown before the save failed
    assert done.stderr.startswith("vmkeep: error: cannot write 'out/plan.json'")


def test_a_plan_called_in_process_leaves_the_collector_as_it_found_it(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frozen = gc.get_freeze_count()
    assert main(plan_argv("-o", "json")) == 0
    assert json.loads(capsys.readouterr().out)["actions"]
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


def test_vmkeep_plan_imports_no_other_command_module(workdir: Path) -> None:
    script = ("import sys\nfrom reconciler.cli import main\nmain(sys.argv[1:])\n"
              "print(sorted(m for m in sys.modules if m.startswith('reconciler.cli.')))")
    done = subprocess.run([sys.executable, "-c", script, *plan_argv("-o", "json")],
                          cwd=workdir, capture_output=True, text=True, timeout=60, check=True)
    loaded = done.stdout.splitlines()[-1]
    assert "'reconciler.cli.plan'" in loaded
    for other in ("apply", "run", "status", "restore", "worker", "files", "mount", "forget"):
        assert f"'reconciler.cli.{other}'" not in loaded, loaded

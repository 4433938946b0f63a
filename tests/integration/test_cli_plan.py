"""`vmkeep plan` and `vmkeep state export` end to end: real files, real policy YAML."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from reconciler.cli import main
from reconciler.observed import state_to_json
from tests.unit.estate import at, export_point, marked_snapshot, state, uuid_of, vm

ROOT = Path(__file__).resolve().parents[2]
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

CONFIG = """\
vcenters:
  vc1:
    url: https://vc1.example.com
    username: svc
    passwordEnv: VC1_PASSWORD
targets:
  nas:
    type: directory
    path: {target}
limits:
  maxDeletesPerRun: {limit}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VMKEEP_CONFIG", raising=False)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "gold.yaml").write_text(POLICY)
    return tmp_path


def write_state(path: Path, days: int, covered: bool) -> Path:
    first = 0 if covered else 1
    snaps = [
        marked_snapshot("gold", uuid_of("web1"), SLOT - timedelta(days=d), f"snapshot-{d}")
        for d in range(first, first + days)
    ]
    web = vm("web1", snapshots=snaps)
    points = [export_point("gold", web, SLOT - timedelta(days=7 * w)) for w in range(2)]
    path.write_text(json.dumps(state_to_json(state([web], points))))
    return path


def plan_args(*extra: str) -> list[str]:
    return ["plan", "--policies", "policies", "--state", "state.json", "--now", NOW, *extra]


def test_plan_with_changes_exits_2_with_detailed_exitcode_and_saves_valid_json(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_state(workdir / "state.json", days=5, covered=False)
    code = main(plan_args("-o", "json", "--out", "plan.json", "--detailed-exitcode"))
    out = capsys.readouterr().out
    assert code == 2
    document = json.loads(out)
    schema = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())
    Draft202012Validator(schema).validate(document)
    assert json.loads((workdir / "plan.json").read_text()) == document
    kinds = [a["kind"] for a in document["actions"]]
    assert kinds == ["snapshot.create", "snapshot.delete", "snapshot.delete", "snapshot.delete"]


def test_plan_without_changes_exits_0_with_detailed_exitcode(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_state(workdir / "state.json", days=3, covered=True)
    assert main(plan_args("--detailed-exitcode")) == 0
    assert "No changes." in capsys.readouterr().out


def test_plan_exits_0_on_changes_without_detailed_exitcode(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_state(workdir / "state.json", days=5, covered=False)
    assert main(plan_args()) == 0
    assert "+ snapshot.create" in capsys.readouterr().out


def test_markdown_output_starts_with_the_summary(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_state(workdir / "state.json", days=5, covered=False)
    main(plan_args("-o", "markdown"))
    text = capsys.readouterr().out
    assert text.startswith("### vmkeep plan") and "| `gold` | 1 |" in text


def test_the_host_config_limit_holds_the_deletions_back_and_keeps_the_creates(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_state(workdir / "state.json", days=6, covered=False)
    (workdir / "vmkeep.yaml").write_text(CONFIG.format(target=workdir / "nas", limit=2))
    main(plan_args("-o", "json"))
    document = json.loads(capsys.readouterr().out)
    assert document["blocked"] is False
    assert document["heldCount"] == 4 and len(document["held"]) == 4
    assert document["heldReason"] == "4 deletions exceed limits.maxDeletesPerRun (2)"
    assert document["heldHint"] == ("pass --max-deletes 4 (apply, run) or raise "
                                    "limits.maxDeletesPerRun to 4 in the host config")
    assert [a["kind"] for a in document["actions"]] == ["snapshot.create"]
    assert document["deleteCount"] == 0


def test_the_text_plan_shows_the_held_deletions_and_how_to_allow_them(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_state(workdir / "state.json", days=6, covered=False)
    (workdir / "vmkeep.yaml").write_text(CONFIG.format(target=workdir / "nas", limit=2))
    main(plan_args())
    text = capsys.readouterr().out
    assert "Plan: 1 to create, 0 to delete, 4 held back." in text
    assert "HELD: 4 deletions exceed limits.maxDeletesPerRun (2)" in text
    assert "--max-deletes 4" in text and "Nothing will be applied" not in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--now", "yesterday"], "--now 'yesterday' is not an ISO 8601 time"),
        (["--now", "2026-11-25T12:00:00"], "is not an ISO 8601 time with an offset"),
        (["--state", "missing.json"], "cannot read state file 'missing.json'"),
    ],
)
def test_bad_arguments_are_one_line_errors_with_exit_1(
    workdir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    write_state(workdir / "state.json", days=1, covered=True)
    assert main([*plan_args(), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_malformed_state_file_names_the_file_and_the_field(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = state_to_json(state([vm("web1")]))
    del document["vcenters"]["vc1"]["vms"][0]["instanceUuid"]
    (workdir / "state.json").write_text(json.dumps(document))
    assert main(plan_args()) == 1
    err = capsys.readouterr().err
    assert "state.json:1:1: $.vcenters.vc1.vms[0].instanceUuid: required field is missing" in err


def test_planning_live_without_a_host_config_says_what_to_pass(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", "--policies", "policies", "--now", NOW]) == 1
    assert "pass --config FILE to read the live state, or --state FILE" in capsys.readouterr().err


def test_an_invalid_policy_stops_the_plan_with_its_location(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_state(workdir / "state.json", days=1, covered=True)
    (workdir / "policies" / "gold.yaml").write_text(POLICY.replace('"0 1 * * *"', '"0 1 * *"'))
    assert main(plan_args()) == 1
    assert (
        "policies/gold.yaml:11:11: `spec.schedule.cron` must have 5 fields"
        in capsys.readouterr().err
    )


def test_state_export_reads_every_configured_target(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no vCenters configured, export still lists the targets' points (real repository)."""
    from reconciler.adapters.repository import Repository

    target = workdir / "nas"
    with Repository.open(target, chunk_size=65536, target="nas"):
        pass
    (workdir / "vmkeep.yaml").write_text(
        CONFIG.format(target=target, limit=5).replace(
            "vcenters:\n  vc1:\n    url: https://vc1.example.com\n    username: svc\n"
            "    passwordEnv: VC1_PASSWORD\n",
            "vcenters: {}\n",
        )
    )
    assert main(["state", "export", "-o", "state.json", "--now", NOW]) == 0
    document = json.loads((workdir / "state.json").read_text())
    schema = json.loads((ROOT / "schemas" / "state.schema.json").read_text())
    Draft202012Validator(schema).validate(document)
    assert document["targets"] == {"nas": {"points": []}}
    assert document["capturedAt"] == NOW
    assert "wrote state.json" in capsys.readouterr().err


# `vmkeep plan` as a process: it imports its own command module only, and it ends without
# freeing its large values one by one (`reconciler.cli.keep_until_exit`) yet with every byte
# of its output written and its exit code kept; called in-process (`main`), it frees them.


def run_vmkeep(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *argv], cwd=cwd, text=True,
                          capture_output=True, timeout=60, check=False)


@pytest.mark.parametrize("output", ["json", "text", "markdown"])
def test_a_plan_process_writes_all_its_output_and_keeps_its_exit_code(
    workdir: Path, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    write_state(workdir / "state.json", days=5, covered=False)
    argv = plan_args("-o", output, "--detailed-exitcode")
    assert main([*argv, "--out", "in-process.json"]) == 2
    expected = capsys.readouterr().out
    done = run_vmkeep(workdir, *argv, "--out", "process.json")
    assert done.returncode == 2, done.stderr
    assert done.stdout == expected
    assert done.stderr == ""
    saved = (workdir / "process.json").read_bytes()
    assert saved == (workdir / "in-process.json").read_bytes()
    assert len(json.loads(saved)["actions"]) == 4


def test_a_plan_process_that_fails_to_save_still_says_why_and_exits_1(workdir: Path) -> None:
    write_state(workdir / "state.json", days=5, covered=False)
    (workdir / "out" / "plan.json").mkdir(parents=True)  # --out names a directory
    done = run_vmkeep(workdir, *plan_args("-o", "json", "--out", "out/plan.json"))
    assert done.returncode == 1
    assert json.loads(done.stdout)["actions"]  # the plan was shown before the save failed
    assert done.stderr.startswith("vmkeep: error: cannot write 'out/plan.json'")


def test_a_plan_called_in_process_leaves_the_collector_as_it_found_it(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_state(workdir / "state.json", days=5, covered=False)
    frozen = gc.get_freeze_count()
    assert main(plan_args("-o", "json")) == 0
    assert json.loads(capsys.readouterr().out)["actions"]
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


def test_vmkeep_plan_imports_no_other_command_module(workdir: Path) -> None:
    write_state(workdir / "state.json", days=5, covered=False)
    script = ("import sys\nfrom reconciler.cli import main\nmain(sys.argv[1:])\n"
              "print(sorted(m for m in sys.modules if m.startswith('reconciler.cli.')))")
    done = subprocess.run([sys.executable, "-c", script, *plan_args("-o", "json")],
                          cwd=workdir, capture_output=True, text=True, timeout=60, check=True)
    loaded = done.stdout.splitlines()[-1]
    assert "'reconciler.cli.plan'" in loaded
    for other in ("apply", "run", "status", "restore", "worker", "files", "mount", "forget"):
        assert f"'reconciler.cli.{other}'" not in loaded, loaded


def test_a_plan_process_ends_the_same_with_every_command_module_imported(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The `gc` command's module is the package attribute `gc`; the exit must not trip on it."""
    write_state(workdir / "state.json", days=5, covered=False)
    argv = plan_args("-o", "json", "--detailed-exitcode")
    assert main(argv) == 2
    expected = capsys.readouterr().out
    script = "from reconciler import cli\nassert cli.COMMANDS\ncli.entry()\n"
    done = subprocess.run([sys.executable, "-c", script, *argv], cwd=workdir, text=True,
                          capture_output=True, timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (2, expected, "")

"""`vmkeep validate` end to end: exit codes, text and JSON output, no tracebacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = ROOT / "docs" / "vmkeep.example.yaml"
BROKEN = b"""apiVersion: vmkeep/v1
kind: BackupPolicy
metadata: {name: broken}
spec:
  vcenter: prod
  selector: {include: {names: [x]}}
  schedule: {cron: "0 1 * *", timezone: Mars/Olympus}
  snapshots: {keep: {lats: 1}}
"""


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VMKEEP_CONFIG", raising=False)
    monkeypatch.setenv("VMKEEP_CACHE_DIR", str(tmp_path / "cache"))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["validate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_example_policies_are_valid(capsys) -> None:
    code, out, err = run(capsys, str(ROOT / "policies"), "--config", str(EXAMPLE_CONFIG))
    assert code == 0, out + err
    assert "5 policies in 4 files valid" in out


def test_the_default_directory_is_policies_in_the_working_directory(capsys, tmp_path) -> None:
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    code, out, _ = run(capsys)
    assert code == 0 and "valid" in out
    assert "no host config: vCenter, target and hook names not checked" in out


def test_every_error_is_printed_as_path_line_column_and_exit_is_1(capsys, tmp_path) -> None:
    (tmp_path / "bad.yaml").write_bytes(BROKEN)
    code, out, err = run(capsys, "bad.yaml")
    assert code == 1
    lines = out.splitlines()
    assert lines == sorted(lines) and len(lines) == 3
    assert lines[0].startswith("bad.yaml:7:20: `spec.schedule.cron` must have 5 fields")
    assert lines[1].startswith("bad.yaml:7:41: `spec.schedule.timezone`: unknown time zone")
    assert lines[2].startswith("bad.yaml:8:22: unknown key `lats`")
    assert "3 problems in 1 file" in err


def test_json_output_lists_policies_and_located_errors(capsys, tmp_path) -> None:
    (tmp_path / "p").mkdir()
    shutil.copy(ROOT / "policies" / "lab.yaml", tmp_path / "p" / "lab.yaml")
    (tmp_path / "p" / "bad.yml").write_bytes(BROKEN)
    code, out, _ = run(capsys, "p", "-o", "json")
    body = json.loads(out)
    assert code == 1 and body["valid"] is False and body["revision"] is None
    assert body["policies"] == ["lab-hourly"]
    assert body["errors"][0] == {
        "path": "p/bad.yml", "line": 7, "column": 20,
        "message": "`spec.schedule.cron` must have 5 fields (minute hour day-of-month month "
                   "day-of-week), found 4",
        "hint": 'e.g. "0 1 * * *" for 01:00 every day',
    }


def test_host_config_errors_are_reported_with_the_policy_errors(capsys, tmp_path) -> None:
    (tmp_path / "vmkeep.yaml").write_text("vcenters:\n  prod: {url: https://vc, username: u,"
                                          " password: hunter2}\n")
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    code, out, _ = run(capsys)
    assert code == 1
    assert "vmkeep.yaml:2:40: a literal `password` is not allowed" in out
    assert "hunter2" not in out


def test_references_are_checked_against_the_host_config(capsys, tmp_path) -> None:
    (tmp_path / "vmkeep.yaml").write_text(
        "vcenters:\n  prod: {url: https://vc, username: u, passwordEnv: P}\n")
    code, out, _ = run(capsys, str(ROOT / "policies"))
    assert code == 1
    assert "unknown vCenter `lab`" in out and "unknown target `nas`" in out


def test_a_git_repository_is_validated_at_a_revision(capsys, tmp_path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "policies", repo / "policies")
    git = ["git", "-c", "user.name=T", "-c", "user.email=t@e", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "policies"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                         text=True).stdout.strip()
    code, out, _ = run(capsys, "--repo", str(repo), "--rev", "HEAD", "--path", "policies",
                       "-o", "json")
    body = json.loads(out)
    assert code == 0 and body["valid"] and body["revision"] == sha
    assert len(body["policies"]) == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing-dir"], "policy path 'missing-dir' does not exist"),
        (["--repo", "/nowhere/repo"], "does not exist"),
        (["--repo", "."], "is not a Git repository"),
        (["--rev", "main"], "--rev and --path need --repo"),
        (["--repo", ".", "x.yaml"], "either --repo or local policy paths"),
        (["--config", "nope.yaml"], "host config 'nope.yaml' not found"),
    ],
)
def test_unusable_sources_give_one_clear_line_and_exit_1(capsys, args, message) -> None:
    code, out, err = run(capsys, *args)
    assert code == 1
    assert message in err and "Traceback" not in err + out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rev", "main"], "--rev and --path need --repo"),
        (["--path", "policies"], "--rev and --path need --repo"),
        (["--repo", ".", "x.yaml"], "either --repo or local policy paths"),
        (["missing-dir"], "policy path 'missing-dir' does not exist"),
        (["--config", "nope.yaml"], "host config 'nope.yaml' not found"),
    ],
)
def test_with_json_output_even_a_bad_command_line_is_reported_as_json(
    capsys, args, message
) -> None:
    code, out, err = run(capsys, *args, "-o", "json")
    assert code == 1
    body = json.loads(out)
    assert body["valid"] is False and body["policies"] == []
    assert len(body["errors"]) == 1 and message in body["errors"][0]["message"]
    assert err == ""


def test_an_oversized_file_is_reported_without_a_made_up_size(capsys, tmp_path) -> None:
    (tmp_path / "big.yaml").write_bytes(b"# padding\n" * 300_000)  # 3,000,000 bytes
    code, out, _ = run(capsys, "big.yaml")
    assert code == 1
    assert out.splitlines() == [
        "big.yaml:1:1: file is too large (more than 1048576 bytes) (split it into several files)"
    ]


def test_a_file_over_the_document_limit_is_one_error_not_thousands(capsys, tmp_path) -> None:
    (tmp_path / "many.yaml").write_text("- not a mapping\n---\n" * 1500)
    code, out, err = run(capsys, "many.yaml")
    assert code == 1
    assert out.splitlines() == [
        "many.yaml:2000:1: too many YAML documents in one file (more than 1000) (split it into "
        "files of at most 1000 documents; its other problems are reported after that)"]
    assert "1 problem in 1 file" in err


def test_the_installed_command_never_shows_a_traceback_for_bad_input(tmp_path) -> None:
    samples = {"utf8.yaml": b"a: \xff\n", "tag.yaml": b"a: !!python/name:os.system\n",
               "bomb.yaml": b"a: &a [1]\n" + b"".join(
                   b"%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n"
                   % ((98 + i, 98 + i) + (97 + i,) * 10) for i in range(10)),
               "deep.yaml": b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n",
               "empty.yaml": b"", "null.yaml": b"~\n"}
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
    done = subprocess.run([sys.executable, "-m", "reconciler", "validate", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    for name in ("utf8", "tag", "bomb", "deep", "null"):
        assert f"{name}.yaml:" in done.stdout


def test_a_bad_command_line_exits_1_not_argparses_2(capsys) -> None:
    from reconciler.cli import main

    assert main(["plan", "--no-such-flag"]) == 1
    assert main(["no-such-command"]) == 1
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err

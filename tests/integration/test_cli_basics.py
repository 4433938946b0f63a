"""The command itself: version, help, `python -m reconciler`, and where the host config is
looked for. Run as real processes where the entry point is what is tested."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import __version__
from reconciler.cli import COMMANDS, main

from .conftest import REPO

VMKEEP = Path(sys.executable).with_name("vmkeep")


def run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_the_installed_command_and_python_m_report_the_version() -> None:
    for argv in ([str(VMKEEP), "--version"], [sys.executable, "-m", "reconciler", "--version"]):
        done = run(*argv)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"vmkeep {__version__}"


def test_help_lists_every_command_that_exists() -> None:
    done = run(str(VMKEEP), "--help")
    assert done.returncode == 0
    names = [module.__name__.rsplit(".", 1)[-1] for module in COMMANDS]
    assert set(names) == {
        "validate", "plan", "apply", "run", "points", "restore", "status", "state", "inventory",
        "verify", "gc", "files", "mount", "forget", "worker",
    }
    for name in names:
        assert f"    {name}" in done.stdout, name


def test_without_a_command_vmkeep_shows_help_and_exits_1(capsys) -> None:
    assert main([]) == 1
    assert "usage: vmkeep" in capsys.readouterr().err


#: Each config names a target path that does not exist: the error names the one read.
CONFIG = "targets:\n  {name}: {{type: directory, path: /nonexistent/{name}}}\n"


@pytest.mark.parametrize(
    ("flag", "env", "cwd", "chosen"),
    [
        (True, True, True, "flag"),
        (False, True, True, "env"),
        (False, False, True, "cwd"),
    ],
    ids=["--config beats $VMKEEP_CONFIG", "$VMKEEP_CONFIG beats ./vmkeep.yaml",
         "./vmkeep.yaml last"],
)
def test_the_host_config_is_found_by_flag_then_environment_then_working_directory(
    tmp_path, monkeypatch, capsys, flag, env, cwd, chosen
) -> None:
    for name in ("flag", "env"):
        (tmp_path / f"{name}.yaml").write_text(CONFIG.format(name=name))
    (tmp_path / "vmkeep.yaml").write_text(CONFIG.format(name="cwd"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VMKEEP_CONFIG", raising=False)
    if env:
        monkeypatch.setenv("VMKEEP_CONFIG", str(tmp_path / "env.yaml"))
    argv = ["verify", "--all"] + (["--config", "flag.yaml"] if flag else [])
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"no vmkeep repository at '/nonexistent/{chosen}'" in err, err


def test_no_host_config_anywhere_is_one_clear_line(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VMKEEP_CONFIG", raising=False)
    assert main(["verify", "--all"]) == 1
    err = capsys.readouterr().err
    assert "host config 'vmkeep.yaml' not found: pass --config FILE or set $VMKEEP_CONFIG" in err

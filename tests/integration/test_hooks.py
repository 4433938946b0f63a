"""Host-config hooks run as real processes: environment, exit status, timeout, no shell."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from reconciler.adapters.hooks import SubprocessHooks
from reconciler.errors import MASK, HookError, register_secret
from reconciler.model import HookConfig

from .conftest import process_alive


def hooks(**commands: tuple[list[str], float]) -> SubprocessHooks:
    return SubprocessHooks(
        {n: HookConfig(n, tuple(argv), timeout) for n, (argv, timeout) in commands.items()}
    )


def test_a_hook_sees_the_vmkeep_variables(tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    script = f"import os; open({str(out)!r}, 'w').write(os.environ['VMKEEP_VM_NAME'])"
    hooks(record=([sys.executable, "-c", script], 10)).run("record", {"VMKEEP_VM_NAME": "db-1"})
    assert out.read_text() == "db-1"


def test_a_hook_gets_only_path_lang_tz_its_own_env_and_the_vmkeep_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMKEEP_PROD_PASSWORD", "pw-in-the-environment")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another-secret")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("TZ", "Europe/Berlin")
    out = tmp_path / "env.json"
    script = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    runner = SubprocessHooks({"dump": HookConfig(
        "dump", (sys.executable, "-c", script), 10, env={"PGHOST": "db1"})})

    runner.run("dump", {"VMKEEP_PHASE": "pre", "VMKEEP_VM_NAME": "db-1"})

    seen = json.loads(out.read_text())
    seen.pop("LC_CTYPE", None)  # Python's C-locale coercion may add it in the child itself
    assert seen == {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "TZ": "Europe/Berlin",
                    "PGHOST": "db1", "VMKEEP_PHASE": "pre", "VMKEEP_VM_NAME": "db-1"}


def test_a_secret_a_failing_hook_prints_is_masked_in_the_error() -> None:
    register_secret("pw-printed-by-a-hook")
    script = "import sys; print('login failed with pw-printed-by-a-hook'); sys.exit(1)"
    with pytest.raises(HookError) as caught:
        hooks(leak=([sys.executable, "-c", script], 10)).run("leak", {})
    assert "pw-printed-by-a-hook" not in str(caught.value)
    assert f"login failed with {MASK}" in str(caught.value)


def test_a_failing_hook_reports_its_status_and_output() -> None:
    script = "import sys; print('database refused to freeze'); sys.exit(3)"
    with pytest.raises(HookError, match=r"exited with status 3: database refused to freeze"):
        hooks(freeze=([sys.executable, "-c", script], 10)).run("freeze", {})


def test_a_hook_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],\n"
        "                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(600)\n"
    )
    # The hook must have started its child before the timeout for the kill to be tested; on a
    # loaded machine it may not have, so the timeout doubles until it has (a hook killed
    # earlier proves nothing, and the test does not pass on it).
    timeout = 2.0
    while True:
        with pytest.raises(HookError, match=rf"did not finish within {timeout:g}s"):
            hooks(slow=([sys.executable, "-c", script], timeout)).run("slow", {})
        if pidfile.exists() and pidfile.read_text():
            break
        assert timeout < 120, "the hook never got to start its child"
        timeout *= 2
    child = int(pidfile.read_text())
    # SIGKILL to the group is delivered at once; the orphan is then reaped by init, which
    # takes milliseconds: a minute is only there so that a surviving child fails the test.
    deadline = time.monotonic() + 60
    while process_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(child)



def test_arguments_are_passed_without_a_shell(tmp_path: Path) -> None:
    out = tmp_path / "args.txt"
    script = f"import sys; open({str(out)!r}, 'w').write(sys.argv[1])"
    hooks(echo=([sys.executable, "-c", script, "$(rm -rf /); `x`"], 10)).run("echo", {})
    assert out.read_text() == "$(rm -rf /); `x`"


def test_an_unknown_hook_or_missing_program_is_a_clear_error() -> None:
    runner = hooks(missing=(["/nonexistent/program"], 10))
    with pytest.raises(HookError, match="not defined in the host config"):
        runner.run("other", {})
    with pytest.raises(HookError, match="cannot start '/nonexistent/program'"):
        runner.run("missing", {})

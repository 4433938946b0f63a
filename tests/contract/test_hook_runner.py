"""The `HookRunner` port: one set of cases against `FakeHooks` and `SubprocessHooks`.

The real side runs real processes (the test's Python) defined as a host config would
define them: `record` writes the environment it got to a file, `freeze` exits with status 3
and `stuck` sleeps past its one-second timeout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.adapters.hooks import SubprocessHooks
from reconciler.errors import HookError
from reconciler.model import HookConfig
from reconciler.ports import HookRunner
from tests.unit.fakes import FakeHooks

TIMEOUT = 1.0


@dataclass
class Subject:
    runner: HookRunner
    seen: Callable[[], dict[str, str]]  # the environment `record` last ran with


def _fake() -> Subject:
    fake = FakeHooks(failing=["freeze"], slow=["stuck"], defined=["record", "freeze", "stuck"],
                     timeout=TIMEOUT)
    return Subject(fake, lambda: fake.environments[-1])


def _subprocess(tmp_path: Path) -> Subject:
    out = tmp_path / "environment.json"
    record = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    freeze = "import sys; print('database refused to freeze'); sys.exit(3)"
    stuck = "import time; time.sleep(600)"
    runner = SubprocessHooks({
        name: HookConfig(name, (sys.executable, "-c", script), TIMEOUT)
        for name, script in (("record", record), ("freeze", freeze), ("stuck", stuck))
    })
    return Subject(runner, lambda: dict(json.loads(out.read_text())))


@pytest.fixture(params=["fake", "subprocess"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    return _fake() if request.param == "fake" else _subprocess(tmp_path)


def test_a_hook_runs_with_the_variables_it_is_given(subject: Subject) -> None:
    variables = {"VMKEEP_PHASE": "pre", "VMKEEP_VM_NAME": "db-1", "VMKEEP_POLICY": "gold"}
    subject.runner.run("record", variables)
    seen = subject.seen()
    assert {name: seen.get(name) for name in variables} == variables


def test_a_hook_runs_without_any_variable_too(subject: Subject) -> None:
    subject.runner.run("record", {})
    assert not any(name.startswith("VMKEEP_") for name in subject.seen())


def test_a_failing_hook_is_a_hook_error_naming_the_hook_and_its_exit_status(
    subject: Subject,
) -> None:
    with pytest.raises(HookError, match=r"^hook 'freeze' exited with status 3"):
        subject.runner.run("freeze", {"VMKEEP_PHASE": "pre"})


def test_a_hook_past_its_timeout_is_a_hook_error_saying_it_was_killed(
    subject: Subject,
) -> None:
    with pytest.raises(HookError, match=r"^hook 'stuck' did not finish within 1s and was killed"):
        subject.runner.run("stuck", {"VMKEEP_PHASE": "pre"})


def test_a_hook_the_host_config_does_not_define_is_a_hook_error(subject: Subject) -> None:
    with pytest.raises(HookError, match=r"^hook 'thaw' is not defined in the host config"):
        subject.runner.run("thaw", {"VMKEEP_PHASE": "post"})

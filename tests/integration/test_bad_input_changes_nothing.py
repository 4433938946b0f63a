"""Bad input changes nothing (DESIGN rule 8): with a fresh host config, `apply` and
`run --once` given an invalid policy, a bad `--now` or a plan file that is not JSON exit 1
with one clear line, and afterwards the file system is as it was (no target repository, no
state DB, no lock) and the simulator was asked nothing (no SOAP call at all, so no task)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .apply_world import Estate, Run
from .conftest import StartVcsim

pytestmark = pytest.mark.vcsim

NOW = "2026-11-25T01:30:00Z"


@pytest.fixture
def estate(start_vcsim: StartVcsim, tmp_path: Path) -> Iterator[Estate]:
    yield Estate(start_vcsim(vms=2), tmp_path)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for a directory)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


def invalid_policy(estate: Estate) -> Run:
    return estate.apply(NOW)  # the test writes policies/broken.yaml first


def garbage_now(estate: Estate) -> Run:
    return estate.apply("garbage")


def plan_not_json(estate: Estate) -> Run:
    return estate.vmkeep("apply", str(estate.root / "plan.json"), "--policies",
                         str(estate.policies), "--now", NOW, "--auto-approve")


def run_once_with_garbage_now(estate: Estate) -> Run:
    return estate.vmkeep("run", "--once", "--policies", str(estate.policies), "--now", "garbage",
                         "--metrics-file", str(estate.root / "vmkeep.prom"))


@pytest.mark.parametrize("bad", [invalid_policy, garbage_now, plan_not_json,
                                 run_once_with_garbage_now],
                         ids=lambda f: f.__name__)
def test_bad_input_with_a_fresh_config_leaves_files_and_vcenter_untouched(
    estate: Estate, bad: Callable[[Estate], Run]
) -> None:
    if bad is invalid_policy:  # the bad files exist before the file system is recorded
        (estate.policies / "broken.yaml").write_text("kind: BackupPolicy\nspec: [\n")
    if bad is plan_not_json:
        (estate.root / "plan.json").write_text("{ this is not JSON")
    before = tree(estate.root)
    tasks_before = len(estate.sim.admin().taskManager.recentTask)
    estate.sim.reset_stats()
    run = bad(estate)
    stats = estate.sim.stats()
    assert run.code == 1, run.out + run.err
    assert "Traceback" not in run.err
    assert stats["requests"] == 0, stats
    assert tree(estate.root) == before
    assert not estate.target.exists() and not (estate.root / "state.db").exists()
    assert len(estate.sim.admin().taskManager.recentTask) == tasks_before


def test_a_bad_now_is_named_in_one_line(estate: Estate) -> None:
    run = garbage_now(estate)
    assert run.code == 1
    assert run.err.strip().splitlines() == [
        "vmkeep: error: --now 'garbage' is not an ISO 8601 time with an offset between "
        "1970 and 8999, e.g. 2026-11-25T01:00:00Z"
    ]

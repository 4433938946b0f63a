"""`vmkeep forget`: orphaned restore points (their policy was removed) and only those go,
against the simulator, a real export target and SQLite journal."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from reconciler import wiring
from reconciler.cli.state import capture, parse_now
from reconciler.observed import build_catalog

from .apply_world import POLICY, Estate, Run
from .conftest import StartVcsim

pytestmark = pytest.mark.vcsim

DAY1 = "2026-11-25T01:30:00Z"


@pytest.fixture
def estate(start_vcsim: StartVcsim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Estate:
    monkeypatch.setenv("VMKEEP_CACHE_DIR", str(tmp_path / "cache"))
    world = Estate(start_vcsim(vms=2), tmp_path)
    world.set_policy(name="gold", names=["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"])
    (world.policies / "silver.yaml").write_text(POLICY.format(
        name="silver", names='["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"]', mode="crash",
        snapshots=2, daily=7))
    applied = world.apply(DAY1)
    assert applied.code == 0, applied.err
    (world.policies / "silver.yaml").unlink()  # silver's points are orphans from now on
    return world


def points(estate: Estate) -> Counter[tuple[str, str]]:
    """(policy, kind) -> how many restore points exist, read live."""
    config = wiring.load_host_config(str(estate.config))
    catalog = build_catalog(capture(config, parse_now(DAY1)))
    return Counter((p.policy, p.kind.value) for p in catalog.points)


def forget(estate: Estate, *args: str) -> Run:
    return estate.vmkeep("forget", "--policies", str(estate.policies), "--now", DAY1, *args)


def test_forget_removes_exactly_the_orphaned_points_of_a_removed_policy(estate: Estate) -> None:
    before = points(estate)
    assert before == {("gold", "snapshot"): 2, ("gold", "export"): 2,
                      ("silver", "snapshot"): 2, ("silver", "export"): 2}

    preview = forget(estate, "--policy", "silver", "--orphaned", "--plan", "-o", "json")
    assert preview.code == 0, preview.err
    listed = preview.json()["forget"]
    assert sorted((a["kind"], a["policy"]) for a in listed) == \
        [("export.delete", "silver")] * 2 + [("snapshot.delete", "silver")] * 2
    assert points(estate) == before  # --plan changes nothing

    over = forget(estate, "--policy", "silver", "--orphaned", "--yes", "--max-deletes", "3")
    assert over.code == 1 and "more than the limit of 3" in over.err
    assert points(estate) == before

    done = forget(estate, "--policy", "silver", "--orphaned", "--yes")
    assert done.code == 0, done.err
    assert points(estate) == {("gold", "snapshot"): 2, ("gold", "export"): 2}
    status = estate.vmkeep("status", "-o", "json", "--now", DAY1,
                           "--policies", str(estate.policies)).json()
    assert status["runs"][0]["counts"] == {"done": 4}  # journaled as a run

    again = forget(estate, "--policy", "silver", "--orphaned", "--yes")
    assert again.code == 0 and "Nothing to forget" in again.out


def test_points_of_a_live_policy_are_refused_unless_forced_one_by_one(estate: Estate) -> None:
    before = points(estate)
    whole = forget(estate, "--policy", "gold", "--orphaned", "--yes")
    assert whole.code == 1 and "policy 'gold' still exists" in whole.err
    gold = sorted(p.id for p in estate.points() if p.policy == "gold")
    one = forget(estate, "--point", gold[0], "--yes")
    assert one.code == 1 and "Pass --force" in one.err
    assert points(estate) == before

    forced = forget(estate, "--point", gold[0], "--force", "--yes")
    assert forced.code == 0, forced.err
    assert sorted(p.id for p in estate.points() if p.policy == "gold") == gold[1:]


@pytest.mark.parametrize(("args", "message"), [
    (("--policy", "silver"), "--policy NAME needs --orphaned"),
    (("--policy", "silver", "--orphaned", "--force"), "--force only forgets a single point"),
    (("--point", "nope/x/y", "--yes"), "no restore point 'nope/x/y'"),
])
def test_bad_forget_requests_are_one_line_and_change_nothing(
    estate: Estate, args: tuple[str, ...], message: str,
) -> None:
    before = points(estate)
    result = forget(estate, *args)
    assert result.code == 1 and message in result.err
    assert "Traceback" not in result.err
    assert points(estate) == before


def test_forget_without_a_terminal_asks_for_yes(estate: Estate) -> None:
    result = forget(estate, "--policy", "silver", "--orphaned")
    assert result.code == 1 and "pass --yes" in result.err
    assert points(estate)[("silver", "export")] == 2

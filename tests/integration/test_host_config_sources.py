"""The host config as the one place for the policy source and the hygiene thresholds:
`vmkeep plan`, `status`, `validate` without a source flag; against the simulator and a real
Git repository."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.controller import Controller

from .apply_world import POLICY, Estate
from .conftest import StartVcsim
from .test_controller import run_args
from .test_review_mode import commit, git

pytestmark = pytest.mark.vcsim

DAY1 = "2026-11-25T01:30:00Z"


@pytest.fixture
def estate(start_vcsim: StartVcsim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Estate:
    monkeypatch.setenv("VMKEEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return Estate(start_vcsim(vms=2), tmp_path)


def configure(estate: Estate, extra: str) -> None:
    estate.write_config(50)
    with estate.config.open("a") as f:
        f.write(extra)


def planned_vms(result_json: dict[str, Any]) -> set[str]:
    return {a["vm"]["name"] for a in result_json["actions"]}


def test_plan_without_a_source_flag_reads_the_host_configs_policy_directory(
    estate: Estate,
) -> None:
    estate.set_policy(names=["DC0_C0_RP0_VM0"])
    moved = estate.root / "elsewhere"
    estate.policies.rename(moved)  # not ./policies: only the host config knows where
    configure(estate, "policies: {path: elsewhere}\n")
    result = estate.vmkeep("plan", "--now", DAY1, "-o", "json")
    assert result.code == 0, result.err
    assert planned_vms(result.json()) == {"DC0_C0_RP0_VM0"}

    other = estate.root / "other"
    other.mkdir()
    (other / "all.yaml").write_text(POLICY.format(name="all", names='["*"]', mode="crash",
                                                  snapshots=1, daily=1))
    flagged = estate.vmkeep("plan", "--now", DAY1, "-o", "json", "--policies", str(other))
    assert flagged.code == 0, flagged.err
    assert planned_vms(flagged.json()) == {"DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"}  # flag wins

    valid = estate.vmkeep("validate")
    assert valid.code == 0, valid.err
    status = estate.vmkeep("status", "--now", DAY1, "-o", "json")
    assert status.code == 0, status.err
    assert {c["vm"]["name"] for c in status.json()["coverage"]["vms"]} == {"DC0_C0_RP0_VM0"}


def test_plan_and_the_controller_follow_the_host_configs_git_repository(
    estate: Estate,
) -> None:
    repo = estate.root / "policy-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    policy = POLICY.format(name="gold", names='["DC0_C0_RP0_VM1"]', mode="crash",
                           snapshots=1, daily=1)
    sha = commit(repo, {"gold.yaml": policy}, "gold")
    configure(estate, f'policies: {{repo: "{repo}", rev: main, path: policies}}\n')
    result = estate.vmkeep("plan", "--now", DAY1, "-o", "json")
    assert result.code == 0, result.err
    assert result.json()["policyRevision"] == sha
    assert planned_vms(result.json()) == {"DC0_C0_RP0_VM1"}

    log = io.StringIO()
    args = run_args(estate, "--once")
    code = Controller(args, log=log).run()
    assert code == 0, log.getvalue()
    assert f'vmkeep_policy_revision_info{{revision="{sha}"}} 1' in \
        (estate.root / "vmkeep.prom").read_text()


def test_hygiene_thresholds_from_the_host_config_show_in_status(estate: Estate) -> None:
    vms = estate.vms()
    estate.add_user_snapshot(vms["DC0_C0_RP0_VM0"], "before-upgrade")
    estate.add_user_snapshot(vms["DC0_C0_RP0_VM0"], "after-upgrade")
    later = (datetime.now(UTC) + timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def findings() -> list[tuple[str, str]]:
        result = estate.vmkeep("status", "--now", later, "-o", "json",
                               "--policies", str(estate.policies))
        assert result.code == 0, result.err
        return sorted((f["code"], f["vm"]["name"]) for f in result.json()["findings"])

    assert findings() == []  # defaults: 72 h, chains deeper than 3
    configure(estate, "hygiene: {snapshotMaxAge: 4h, chainDepth: 1}\n")
    assert findings() == [("foreign-snapshot-old", "DC0_C0_RP0_VM0"),
                          ("foreign-snapshot-old", "DC0_C0_RP0_VM0"),
                          ("snapshot-chain-deep", "DC0_C0_RP0_VM0")]
    text = estate.vmkeep("status", "--now", later, "--policies", str(estate.policies))
    assert "Findings (snapshot hygiene)" in text.out
    assert "snapshot chain is 2 deep (more than 1" in text.out
    assert json.loads(estate.vmkeep("plan", "--now", later, "-o", "json", "--policies",
                                    str(estate.policies)).out)["warnings"]

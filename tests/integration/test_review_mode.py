"""Review mode (`vmkeep plan --repo R --base REV --head REV`) on a real Git repository."""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.markers import point_id
from reconciler.observed import state_to_json
from tests.unit.estate import at, marked_snapshot, state, uuid_of, vm

NOW = "2026-11-25T12:00:00Z"
SLOT = at("2026-11-25 01:00")

POLICY = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata:
  name: {name}
spec:
  vcenter: vc1
  selector:
    include:
      names: ["{names}"]
  schedule:
    cron: "0 1 * * *"
    timezone: UTC
  snapshots:
    keep: {{daily: {daily}}}
"""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
            "HOME": str(repo),
            "PATH": "/usr/bin:/bin",
        },
    )
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str | None], message: str) -> str:
    for name, text in files.items():
        path = repo / "policies" / name
        if text is None:
            path.unlink()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def estate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VMKEEP_CONFIG", raising=False)
    monkeypatch.setenv("VMKEEP_CACHE_DIR", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    revs = {
        "daily30": commit(
            repo,
            {
                "gold.yaml": POLICY.format(name="gold", names="web*", daily=30),
                "silver.yaml": POLICY.format(name="silver", names="app*", daily=3),
            },
            "gold keeps 30 dailies",
        )
    }
    revs["daily7"] = commit(
        repo, {"gold.yaml": POLICY.format(name="gold", names="web*", daily=7)}, "gold: 7"
    )
    revs["removed"] = commit(repo, {"gold.yaml": None}, "remove gold")
    aged = POLICY.format(name="gold", names="web*", daily=30) + "    maxAge: 6h\n"
    revs["maxage"] = commit(repo, {"gold.yaml": aged}, "gold: no snapshot older than 6h")
    uuid = uuid_of("web1")
    snaps = [
        marked_snapshot("gold", uuid, SLOT - timedelta(days=d), f"snapshot-{d}") for d in range(30)
    ]
    app = [marked_snapshot("silver", uuid_of("app1"), SLOT, "snapshot-app")]
    observed = state([vm("web1", snapshots=snaps), vm("app1", snapshots=app)])
    (tmp_path / "state.json").write_text(json.dumps(state_to_json(observed)))
    ids = [point_id("gold", uuid, SLOT - timedelta(days=d)) for d in range(30)]
    return {"repo": str(repo), "revs": revs, "ids": ids}


def review(estate: dict[str, object], base: str, head: str, capsys, *extra: str) -> dict:
    revs = estate["revs"]
    assert isinstance(revs, dict)
    args = ["plan", "--repo", str(estate["repo"]), "--path", "policies"]
    args += ["--base", revs[base], "--head", revs[head], "--state", "state.json", "--now", NOW]
    code = main([*args, "-o", "json", "--detailed-exitcode", *extra])
    assert code == 2, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_shrinking_daily_30_to_7_lists_exactly_the_points_that_would_go(estate, capsys) -> None:
    report = review(estate, "daily30", "daily7", capsys)
    gone = sorted(p["pointId"] for p in report["points"] if p["change"] == "newly deleted")
    assert gone == sorted(estate["ids"][7:])
    assert all(p["change"] == "newly deleted" for p in report["points"])
    (change,) = report["policies"]
    assert change == {
        "name": "gold",
        "status": "changed",
        "fields": [{"path": "snapshots.keep.daily", "before": "30", "after": "7"}],
    }
    assert report["coverage"] == [] and report["guardViolations"] == []


def test_deleting_a_policy_deletes_nothing_and_lists_its_points_as_orphans(estate, capsys) -> None:
    report = review(estate, "daily30", "removed", capsys)
    assert not [a for a in report["headPlan"]["actions"] if a["kind"].endswith(".delete")]
    orphans = sorted(p["pointId"] for p in report["points"] if p["change"] == "orphaned (retained)")
    assert orphans == sorted(estate["ids"])
    assert [p["status"] for p in report["policies"]] == ["removed"]
    (lost,) = report["coverage"]
    assert lost["vm"]["name"] == "web1" and lost["change"] == "loses coverage"


def test_the_review_shows_a_guard_violation_when_the_change_deletes_too_much(
    estate, capsys, tmp_path: Path
) -> None:
    (tmp_path / "vmkeep.yaml").write_text(
        "vcenters:\n  vc1:\n    url: https://vc1.example.com\n    username: svc\n"
        "    passwordEnv: VC1_PASSWORD\nlimits:\n  maxDeletesPerRun: 10\n"
    )
    report = review(estate, "daily30", "daily7", capsys)
    assert report["guardViolations"] == ["23 deletions exceed limits.maxDeletesPerRun (10)"]


def test_the_review_shows_the_never_empty_guard_when_the_change_would_empty_a_group(
    estate, capsys
) -> None:
    report = review(estate, "daily30", "maxage", capsys)
    ids = estate["ids"]
    assert isinstance(ids, list)
    assert report["guardViolations"] == [
        "policy gold would delete every complete snapshot point of web1; the never-empty "
        f"guard keeps the newest, {ids[0]}"
    ]
    gone = sorted(p["pointId"] for p in report["points"] if p["change"] == "newly deleted")
    assert gone == sorted(ids[1:])


def test_the_markdown_review_summarises_first(estate, capsys) -> None:
    revs = estate["revs"]
    assert isinstance(revs, dict)
    main(
        [
            "plan", "--repo", str(estate["repo"]), "--path", "policies", "--base",
            revs["daily30"], "--head", revs["daily7"], "--state", "state.json", "--now", NOW,
            "-o", "markdown",
        ]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert text.startswith("### vmkeep plan review")
    assert "| 1 | 0 | 0 | 23 | 0 | 0 |" in text
    assert "snapshots.keep.daily: 30 -> 7" in text


def test_review_mode_needs_both_revisions(estate, capsys) -> None:
    code = main(["plan", "--repo", str(estate["repo"]), "--base", "HEAD", "--state", "state.json"])
    assert code == 1
    assert "review mode needs --repo, --base REV and --head REV" in capsys.readouterr().err

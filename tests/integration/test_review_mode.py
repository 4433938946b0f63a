"""Review mode (`vmkeep plan --repo R --base REV --head REV`) on a real Git repository."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

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


# --- the CI examples in docs/ci -------------------------------------------------------------

CI = Path(__file__).resolve().parents[2] / "docs" / "ci"
MARKER = "<!-- vmkeep-plan -->"


def ci_example(name: str) -> dict[str, Any]:
    document = yaml.safe_load((CI / name).read_text())
    assert isinstance(document, dict)
    return document


def gitlab_script() -> list[str]:
    script = ci_example("gitlab-ci.yml")["vmkeep-plan"]["script"]
    assert isinstance(script, list)
    return script


def test_the_ci_examples_are_valid_yaml_and_install_vmkeep_from_its_source() -> None:
    github = ci_example("github-actions.yml")["jobs"]["plan"]
    gitlab = ci_example("gitlab-ci.yml")["vmkeep-plan"]
    for source, install in (
        (github["env"]["VMKEEP_SOURCE"], [s.get("run", "") for s in github["steps"]]),
        (gitlab["variables"]["VMKEEP_SOURCE"], gitlab["before_script"]),
    ):
        assert source.startswith("git+https://") and "@" in source.rsplit("/", 1)[1]  # pinned
        assert any('"vmkeep @ $VMKEEP_SOURCE"' in step for step in install)
    for name in ("github-actions.yml", "gitlab-ci.yml"):
        text = (CI / name).read_text()
        assert "pip install vmkeep" not in text and "pip install --quiet vmkeep" not in text


class FakeGitLab(BaseHTTPRequestHandler):
    """The three note endpoints the GitLab example uses, with 100-note pages."""

    notes: list[dict[str, Any]]
    requests: list[tuple[str, str, Any]]

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.requests.append(("GET", url.path, None))
        if url.path == "/api/v4/user":
            return self._send({"id": 7, "username": "project_1_bot"})
        page = int(parse_qs(url.query)["page"][0])
        pages = [self.notes[i : i + 100] for i in range(0, len(self.notes), 100)] or [[]]
        following = str(page + 1) if page < len(pages) else ""
        return self._send(pages[page - 1], {"X-Next-Page": following})

    def _write(self) -> None:
        data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.command, urlsplit(self.path).path, data))
        self._send({"id": 1})

    do_PUT = _write
    do_POST = _write


@pytest.fixture
def gitlab() -> Iterator[tuple[str, type[FakeGitLab]]]:
    handler = type("Handler", (FakeGitLab,), {"notes": [], "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v4", handler
    server.shutdown()
    server.server_close()


def post_note(tmp_path: Path, api: str) -> None:
    (tmp_path / "plan.md").write_text("### vmkeep plan review\n\nbody\n" + MARKER + "\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "CI_API_V4_URL": api,
        "CI_PROJECT_ID": "12",
        "CI_MERGE_REQUEST_IID": "34",
        "VMKEEP_API_TOKEN": "glpat-test",
    }
    subprocess.run(["bash", "-ec", gitlab_script()[3]], cwd=tmp_path, env=env, check=True)


NOTES = "/api/v4/projects/12/merge_requests/34/notes"


@pytest.mark.skipif(not (shutil.which("jq") and shutil.which("curl")), reason="needs jq, curl")
def test_the_gitlab_example_posts_a_note_once_then_updates_it(gitlab, tmp_path: Path) -> None:
    api, handler = gitlab
    post_note(tmp_path, api)
    body = {"body": (tmp_path / "plan.md").read_text()}
    assert handler.requests[-1] == ("POST", NOTES, body)
    # a later pipeline: its earlier note sits on the second page, after a note by someone
    # else that quotes the marker; only the bot's own note is updated
    handler.notes += [{"id": i, "author": {"id": 3}, "body": "looks good"} for i in range(150)]
    handler.notes.append({"id": 500, "author": {"id": 9}, "body": f"> quoted\n{MARKER}"})
    handler.notes.append({"id": 501, "author": {"id": 7}, "body": f"old plan\n{MARKER}\n"})
    handler.requests.clear()
    post_note(tmp_path, api)
    assert handler.requests[-1] == ("PUT", f"{NOTES}/501", body)
    assert [r[0] for r in handler.requests].count("POST") == 0


@pytest.mark.parametrize("head, fails", [("daily7", False), ("maxage", True)])
def test_the_ci_examples_fail_exactly_when_the_review_shows_a_guard(
    estate, capsys, tmp_path: Path, head: str, fails: bool
) -> None:
    revs = estate["revs"]
    assert isinstance(revs, dict)
    args = ["plan", "--repo", str(estate["repo"]), "--path", "policies", "--base"]
    args += [revs["daily30"], "--head", revs[head], "--state", "state.json", "--now", NOW]
    main([*args, "-o", "markdown"])
    (tmp_path / "plan.md").write_text(capsys.readouterr().out)
    github = [
        s["run"] for s in ci_example("github-actions.yml")["jobs"]["plan"]["steps"] if "run" in s
    ]
    for step in (github[-1], gitlab_script()[-1]):
        assert "Guard:" in step
        done = subprocess.run(["bash", "-ec", step], cwd=tmp_path, capture_output=True)
        assert (done.returncode == 1) == fails

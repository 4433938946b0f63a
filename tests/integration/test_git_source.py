"""The Git policy source against real repositories made here: bare remote, clones, commits,
branches, tags and a force-push. The user's own checkout must never change."""

from __future__ import annotations

from pathlib import Path

import git as git_module
import pytest

from reconciler.adapters.git import MAX_FILE_BYTES, GitSource
from reconciler.errors import SourceError
from reconciler.policies import check_policies, parse_policies
from tests.gitrepo import git

POLICY = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata:
  name: {name}
spec:
  vcenter: prod
  selector: {{include: {{names: ["{name}-*"]}}}}
  schedule: {{cron: "0 1 * * *"}}
  snapshots: {{keep: {{last: {keep}}}}}
"""


def write(clone: Path, relative: str, name: str, keep: int = 2) -> None:
    path = clone / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(POLICY.format(name=name, keep=keep))


def commit(clone: Path, message: str) -> str:
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", message)
    return git(clone, "rev-parse", "HEAD")


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A bare remote with main (two commits), a `staging` branch and tag `v1`, plus a
    user's clone with uncommitted work in it."""
    monkeypatch.setenv("VMKEEP_CACHE_DIR", str(tmp_path / "cache"))
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    author = tmp_path / "author"
    git(tmp_path, "clone", "-q", str(remote), str(author))
    write(author, "policies/db.yaml", "db")
    write(author, "README.yaml", "not-a-policy-dir")
    commit(author, "first")
    git(author, "tag", "v1")
    write(author, "policies/team/web.yaml", "web")
    (author / "policies/.hidden").mkdir()
    (author / "policies/.hidden/x.yaml").write_text("not: read\n")
    (author / "policies/notes.txt").write_text("ignored\n")
    commit(author, "second")
    git(author, "push", "-q", "origin", "main", "v1")
    git(author, "checkout", "-q", "-b", "staging")
    write(author, "policies/db.yaml", "db", keep=5)
    commit(author, "staging change")
    git(author, "push", "-q", "origin", "staging")
    git(author, "checkout", "-q", "main")
    user = tmp_path / "user"
    git(tmp_path, "clone", "-q", str(remote), str(user))
    write(user, "policies/db.yaml", "db", keep=99)  # uncommitted edit
    (user / "untracked.yaml").write_text("x: 1\n")
    return {"remote": remote, "author": author, "user": user, "tmp": tmp_path}


def snapshot_of(clone: Path) -> tuple[str, str, str, dict[str, bytes]]:
    files = {str(p.relative_to(clone)): p.read_bytes()
             for p in sorted(clone.rglob("*")) if p.is_file() and ".git" not in p.parts}
    refs = git(clone, "for-each-ref", "--format=%(refname) %(objectname)")
    return git(clone, "rev-parse", "HEAD"), git(clone, "status", "--porcelain"), refs, files


def names_and_keep(source: GitSource) -> dict[str, int | None]:
    policy_set = parse_policies(source.files(), revision=source.revision)
    assert policy_set.revision == source.revision
    return {p.name: p.snapshots.keep.last if p.snapshots else None
            for p in policy_set.policies}


def test_a_branch_resolves_to_its_commit_and_yields_its_policies(world) -> None:
    head = git(world["author"], "rev-parse", "main")
    source = GitSource.open(str(world["remote"]), "main", "policies")
    assert source.revision == head
    assert [f.path for f in source.files()] == ["policies/db.yaml", "policies/team/web.yaml"]
    assert names_and_keep(source) == {"db": 2, "web": 2}


def test_the_same_revision_always_yields_the_same_policies_and_sha(world) -> None:
    first = GitSource.open(str(world["remote"]), "staging", "policies")
    again = GitSource.open(str(world["remote"]), "staging", "policies")
    assert first.revision == again.revision
    assert list(first.files()) == list(again.files())
    assert names_and_keep(first) == {"db": 5, "web": 2}
    by_sha = GitSource.open(str(world["remote"]), first.revision, "policies")
    assert list(by_sha.files()) == list(first.files())


def test_tags_short_shas_and_the_remote_head_resolve(world) -> None:
    tagged = GitSource.open(str(world["remote"]), "v1", "policies")
    assert names_and_keep(tagged) == {"db": 2}
    main = git(world["author"], "rev-parse", "main")
    assert GitSource.open(str(world["remote"]), main[:10]).revision == main
    assert GitSource.open(str(world["remote"]), "HEAD").revision == main


def test_a_force_pushed_branch_resolves_to_the_new_commit_after_fetch(world) -> None:
    before = GitSource.open(str(world["remote"]), "staging", "policies")
    author = world["author"]
    git(author, "checkout", "-q", "staging")
    git(author, "reset", "-q", "--hard", "main~1")
    write(author, "policies/db.yaml", "db", keep=7)
    rewritten = commit(author, "rewritten history")
    git(author, "push", "-q", "--force", "origin", "staging")
    after = GitSource.open(str(world["remote"]), "staging", "policies")
    assert after.revision == rewritten != before.revision
    assert names_and_keep(after) == {"db": 7}
    # the old commit is still readable by its SHA from the cache
    assert names_and_keep(GitSource.open(str(world["remote"]), before.revision,
                                         "policies")) == {"db": 5, "web": 2}


def test_a_users_own_checkout_is_read_but_never_modified(world) -> None:
    user = world["user"]
    git(user, "checkout", "-q", "-b", "feature")
    write(user, "policies/new.yaml", "new")
    feature = commit(user, "feature work")
    write(user, "policies/db.yaml", "db", keep=42)  # uncommitted again
    before = snapshot_of(user)
    source = GitSource.open(str(user), "feature", "policies")
    assert source.revision == feature
    assert names_and_keep(source) == {"db": 99, "new": 2, "web": 2}  # committed, not 42
    detached = GitSource.open(str(user), "HEAD", "policies")
    assert detached.revision == feature
    assert snapshot_of(user) == before
    caches = sorted((world["tmp"] / "cache" / "git").glob("*.git"))
    assert caches and all(git(c, "rev-parse", "--is-bare-repository") == "true" for c in caches)


def test_a_single_file_path_is_read_on_its_own(world) -> None:
    source = GitSource.open(str(world["remote"]), "main", "policies/db.yaml")
    assert [f.path for f in source.files()] == ["policies/db.yaml"]


def test_an_oversized_blob_is_not_read_whole(world, monkeypatch) -> None:
    author = world["author"]
    (author / "policies/huge.yaml").write_bytes(b"# padding\n" * 300_000)  # 3,000,000 bytes
    commit(author, "a huge file")
    git(author, "push", "-q", "origin", "main")
    opened: list[str] = []

    def spy(blob: git_module.Blob) -> object:
        opened.append(str(blob.path))
        return blob.repo.odb.stream(blob.binsha)  # what `Blob.data_stream` does

    monkeypatch.setattr(git_module.Blob, "data_stream", property(spy))
    for path in ("policies", "policies/huge.yaml"):
        source = GitSource.open(str(world["remote"]), "main", path)
        files = {f.path: f.data for f in source.files()}
        assert len(files["policies/huge.yaml"]) == MAX_FILE_BYTES + 1
        assert files["policies/huge.yaml"] == (b"# padding\n" * 300_000)[: MAX_FILE_BYTES + 1]
        report = check_policies(source.files())
        assert [str(d) for d in report.diagnostics] == [
            "policies/huge.yaml:1:1: file is too large (more than 1048576 bytes) (split it into "
            "several files)"]
    assert "policies/huge.yaml" not in opened
    assert "policies/db.yaml" in opened


@pytest.mark.parametrize(
    ("repo", "rev", "path", "message"),
    [
        ("{tmp}/missing-repo", "main", "", "does not exist"),
        ("file://{tmp}/missing-repo", "main", "", "cannot fetch policy repository"),
        ("{remote}", "no-such-branch", "", "revision 'no-such-branch' not found"),
        ("{remote}", "0123456789abcdef0123456789abcdef01234567", "", "not found"),
        ("{remote}", "--upload-pack=evil", "", "invalid revision"),
        ("{remote}", "main", "no/such/dir", "path 'no/such/dir' does not exist at commit"),
        ("{tmp}/plain", "main", "", r"'.*/plain' is not a Git repository \(give a clone"),
        ("{tmp}/author/policies", "main", "",
         r"is not a Git repository but a directory inside '.*/author': give that as the "
         r"repository and 'policies' as the path"),
    ],
)
def test_unreachable_remotes_unknown_revisions_and_missing_paths_are_clear_errors(
    world, repo: str, rev: str, path: str, message: str
) -> None:
    (world["tmp"] / "plain").mkdir(exist_ok=True)
    url = repo.format(tmp=world["tmp"], remote=world["remote"])
    with pytest.raises(SourceError, match=message):
        GitSource.open(url, rev, path)

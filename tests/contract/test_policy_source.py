"""The `PolicySource` port: one set of cases against `PolicyDirectory` and `GitSource`.

No fake exists (unit tests hand the loader `PolicyFile` lists directly), so the two real
sources are held to the same cases: the same files written into a directory, or committed
to a real Git repository made here, must be listed alike. Where they differ by design the
case says so: a directory is read as it is now, a Git source reads the one commit it
resolved (`pinned`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.adapters.git import MAX_FILE_BYTES, GitSource
from reconciler.adapters.policydir import PolicyDirectory
from reconciler.errors import SourceError
from reconciler.ports import PolicySource
from tests.gitrepo import git

POLICY = b"kind: BackupPolicy\n"


@dataclass
class Subject:
    """A place to write files into, and a way to open a source on it (or on one path of it)."""

    root: Path
    open: Callable[[str], PolicySource]  # "" for the whole place
    relative: Callable[[str], str]  # a listed path, relative to the root
    pinned: bool  # the source reads one revision, not what the place holds later

    def write(self, name: str, data: bytes = POLICY) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def names(self, source: PolicySource) -> list[str]:
        return [self.relative(f.path) for f in source.files()]


def _directory(tmp_path: Path) -> Subject:
    root = tmp_path / "policies"
    root.mkdir()

    def open_(path: str) -> PolicySource:
        return PolicyDirectory([root / path if path else root])

    return Subject(root, open_, lambda p: Path(p).relative_to(root).as_posix(), pinned=False)


def _git(tmp_path: Path) -> Subject:
    root = tmp_path / "clone"
    root.mkdir()
    git(root, "init", "-q")

    def open_(path: str) -> PolicySource:
        git(root, "add", "-A")
        git(root, "commit", "-q", "--allow-empty", "-m", "policies")
        return GitSource.open(str(root), "HEAD", path, cache_dir=tmp_path / "cache")

    return Subject(root, open_, lambda p: p, pinned=True)


@pytest.fixture(params=["directory", "git"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    return _directory(tmp_path) if request.param == "directory" else _git(tmp_path)


def test_every_yaml_file_is_listed_recursively_in_sorted_order(subject: Subject) -> None:
    for name in ("b.yaml", "a/z.yaml", "a.yml", "a/deeper/c.yaml"):
        subject.write(name)
    assert subject.names(subject.open("")) == ["a.yml", "a/deeper/c.yaml", "a/z.yaml",
                                               "b.yaml"]


def test_files_are_read_with_their_bytes(subject: Subject) -> None:
    subject.write("gold.yaml", b"kind: BackupPolicy\nmetadata: {name: gold}\n")
    [policy] = subject.open("").files()
    assert policy.data == b"kind: BackupPolicy\nmetadata: {name: gold}\n"


def test_files_that_are_not_yaml_and_hidden_files_and_directories_are_ignored(
    subject: Subject,
) -> None:
    subject.write("gold.yaml")
    for name in ("README.md", "gold.yaml.bak", "notes.txt", ".hidden.yaml",
                 ".github/workflow.yaml", "team/.draft/x.yml"):
        subject.write(name)
    assert subject.names(subject.open("")) == ["gold.yaml"]


def test_a_source_on_a_subdirectory_lists_only_that_subdirectory(subject: Subject) -> None:
    subject.write("prod/db.yaml")
    subject.write("staging/web.yaml")
    assert subject.names(subject.open("prod")) == ["prod/db.yaml"]


def test_a_source_on_one_file_reads_that_file_whatever_its_name(subject: Subject) -> None:
    subject.write("policy.txt", b"kind: BackupPolicy\n# not named .yaml\n")
    [policy] = subject.open("policy.txt").files()
    assert subject.relative(policy.path) == "policy.txt"
    assert policy.data == b"kind: BackupPolicy\n# not named .yaml\n"


def test_a_path_that_does_not_exist_is_a_source_error(subject: Subject) -> None:
    subject.write("gold.yaml")
    with pytest.raises(SourceError, match="does not exist"):
        list(subject.open("missing").files())


def test_a_file_over_the_size_limit_is_read_to_one_byte_past_it(subject: Subject) -> None:
    subject.write("huge.yaml", b"#" * (MAX_FILE_BYTES + 1000))
    [policy] = subject.open("").files()
    assert len(policy.data) == MAX_FILE_BYTES + 1


def test_an_empty_source_lists_no_files(subject: Subject) -> None:
    subject.write("README.md")
    assert list(subject.open("").files()) == []


def test_the_revision_is_the_commit_read_or_none_for_a_directory(subject: Subject) -> None:
    subject.write("gold.yaml")
    source = subject.open("")
    if subject.pinned:
        assert source.revision == git(subject.root, "rev-parse", "HEAD")
    else:
        assert source.revision is None


def test_a_file_removed_after_opening_is_gone_unless_the_source_is_pinned_to_a_revision(
    subject: Subject,
) -> None:
    subject.write("gold.yaml")
    subject.write("silver.yaml")
    source = subject.open("")
    (subject.root / "silver.yaml").unlink()
    expected = ["gold.yaml", "silver.yaml"] if subject.pinned else ["gold.yaml"]
    assert subject.names(source) == expected
    assert subject.names(subject.open("")) == ["gold.yaml"]  # opened again: gone for both

"""Policy files from one exact commit of a Git repository (GitPython).

`GitSource.open(repo, rev, path)` keeps a *bare* cache clone per repository under
`$XDG_CACHE_HOME/vmkeep/git/<hash of the repository>.git`, fetches into it (branches and
tags forced, so a force-pushed branch resolves to its new commit; the remote's HEAD too),
resolves `rev` to a commit SHA and reads the blobs of that commit's tree. No work tree is
ever checked out, and a user's own clone given as `repo` is only read (like `git fetch`
from it would). Every policy and plan computed from the files carries `revision` = the SHA.

A blob over `MAX_FILE_BYTES` is never read whole (its size is looked up first); the
loader sees one byte past the limit and reports the file as too large.

Failures are `SourceError`s that say what to check: unreachable remote, unknown revision,
missing path, a local directory that is not a Git repository. A file lock serialises
concurrent fetches into the same cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import git
from filelock import FileLock

from reconciler.errors import SourceError
from reconciler.ports import PolicyFile

__all__ = ["FETCH_TIMEOUT", "MAX_FILE_BYTES", "SUFFIXES", "GitSource", "cache_root"]

SUFFIXES = (".yaml", ".yml")
#: Blobs larger than this are read only up to one byte past it (the loader reports them as too
#: large); their size is looked up first, so a huge blob is never read whole.
MAX_FILE_BYTES = 1 << 20
FETCH_TIMEOUT = 300  # seconds
_REMOTE_HEAD = "refs/vmkeep/remote-head"
_SYMLINK_MODE = 0o120000
_REQUESTED = "refs/vmkeep/requested"
_REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
_QUIET_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "",
              "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}


def cache_root() -> Path:
    """`$VMKEEP_CACHE_DIR`, else `$XDG_CACHE_HOME/vmkeep`, else `~/.cache/vmkeep`."""
    explicit = os.environ.get("VMKEEP_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "vmkeep"


def _normalise(repo: str) -> str:
    """A local path becomes an absolute path; URLs (incl. scp-like `host:path`) stay as given."""
    if "://" in repo or (":" in repo.split("/")[0] and not Path(repo).exists()):
        return repo
    return str(Path(repo).expanduser().resolve())


def _short_error(exc: git.GitCommandError) -> str:
    text = str(exc.stderr or exc)
    lines = [line.strip().removeprefix("stderr:").strip().strip("'").strip()
             for line in text.splitlines()]
    lines = [line for line in lines if line]
    meaningful = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return (meaningful or lines or ["git failed"])[-1]


def _check_repository(path: Path, shown: str) -> None:
    """Refuse a local directory that is not a Git repository (a clone, its `.git` or a bare
    one), saying so plainly; `git fetch` would only say it "does not appear to be" one."""
    try:
        git.Repo(path).close()
        return
    except git.InvalidGitRepositoryError:
        pass
    try:
        outer = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        outer = None
    top = outer.working_tree_dir if outer is not None else None
    if outer is not None:
        outer.close()
    if top is not None and path.is_relative_to(Path(top).resolve()):
        inner = path.relative_to(Path(top).resolve()).as_posix()
        raise SourceError(
            f"policy repository {shown!r} is not a Git repository but a directory inside "
            f"{str(top)!r}: give that as the repository and {inner!r} as the path"
        )
    raise SourceError(
        f"policy repository {shown!r} is not a Git repository (give a clone or a bare "
        "repository; a plain directory of policy files is read with --policies)"
    )


class GitSource:
    """Policy files of one commit; build it with `GitSource.open`."""

    def __init__(self, bare: git.Repo, url: str, sha: str, subdir: str) -> None:
        self._repo = bare
        self.url = url
        self._sha = sha
        self.subdir = subdir

    @property
    def revision(self) -> str:
        return self._sha

    @classmethod
    def open(
        cls, repo: str, rev: str = "HEAD", path: str = "", cache_dir: Path | None = None
    ) -> GitSource:
        """Fetch `repo` into the cache, resolve `rev` and check that `path` exists there."""
        url = _normalise(repo)
        if "://" not in url and not Path(url).exists():
            raise SourceError(f"policy repository {repo!r} does not exist")
        if "://" not in url and Path(url).is_dir():
            _check_repository(Path(url), repo)
        root = (cache_dir or cache_root()) / "git"
        key = hashlib.sha256(url.encode()).hexdigest()[:24]
        try:
            root.mkdir(parents=True, exist_ok=True)
            with FileLock(str(root / f"{key}.lock"), timeout=FETCH_TIMEOUT):
                bare = cls._fetch(root / f"{key}.git", url, repo)
                sha = cls._resolve(bare, url, rev, repo)
        except OSError as exc:
            raise SourceError(f"cannot use the Git cache {str(root)!r}: {exc}") from None
        source = cls(bare, url, sha, str(PurePosixPath(path.strip("/"))) if path.strip("/")
                     else "")
        source._tree()  # fail now (not while iterating) when the path is missing
        return source

    @staticmethod
    def _fetch(location: Path, url: str, shown: str) -> git.Repo:
        bare = git.Repo.init(location, bare=True) if not (location / "HEAD").exists() \
            else git.Repo(location)
        bare.git.update_environment(**_QUIET_ENV)
        try:
            bare.git.fetch(url, *_REFSPECS, "--force", "--prune", "--no-write-fetch-head",
                           kill_after_timeout=FETCH_TIMEOUT)
        except git.GitCommandError as exc:
            raise SourceError(
                f"cannot fetch policy repository {shown!r}: {_short_error(exc)} "
                "(check the URL or path, the network and your access rights)"
            ) from None
        return bare

    @staticmethod
    def _fetch_extra(bare: git.Repo, url: str, remote_name: str, local: str) -> None:
        """Fetch one more ref (the remote HEAD, a bare SHA); a failure only means "absent"."""
        with contextlib.suppress(git.GitCommandError):
            bare.git.update_ref("-d", local)  # never resolve to what an earlier run fetched
        with contextlib.suppress(git.GitCommandError):
            bare.git.fetch(url, f"+{remote_name}:{local}", "--force", "--no-write-fetch-head",
                           kill_after_timeout=FETCH_TIMEOUT)

    @staticmethod
    def _rev_parse(bare: git.Repo, name: str) -> str | None:
        try:
            sha: str = bare.git.rev_parse("--verify", "--quiet", "--end-of-options",
                                          f"{name}^{{commit}}")
        except git.GitCommandError:
            return None
        return sha.strip() or None

    @classmethod
    def _resolve(cls, bare: git.Repo, url: str, rev: str, shown: str) -> str:
        if rev.startswith("-") or any(c.isspace() for c in rev):
            raise SourceError(f"invalid revision {rev!r}")
        if rev in ("", "HEAD"):
            cls._fetch_extra(bare, url, "HEAD", _REMOTE_HEAD)
            sha = cls._rev_parse(bare, _REMOTE_HEAD)
        else:
            sha = cls._rev_parse(bare, rev)
            if sha is None:  # e.g. a commit only reachable from a detached HEAD or PR ref
                cls._fetch_extra(bare, url, rev, _REQUESTED)
                sha = cls._rev_parse(bare, _REQUESTED)
        if sha is None:
            raise SourceError(
                f"revision {rev or 'HEAD'!r} not found in policy repository {shown!r} "
                "(give a branch, a tag or a commit SHA that exists there)"
            )
        return sha

    def _tree(self) -> git.Tree | git.Blob:
        commit = self._repo.commit(self._sha)
        if not self.subdir:
            return commit.tree
        try:
            item = commit.tree / self.subdir
        except KeyError:
            raise SourceError(
                f"path {self.subdir!r} does not exist at commit {self._sha[:12]} of "
                f"{self.url!r}"
            ) from None
        if not isinstance(item, git.Tree | git.Blob):
            raise SourceError(f"path {self.subdir!r} at commit {self._sha[:12]} is not a "
                              "directory or file")
        return item

    def files(self) -> Iterator[PolicyFile]:
        """Every `*.yaml`/`*.yml` blob under the path, sorted; hidden directories skipped."""
        top = self._tree()
        if isinstance(top, git.Blob):
            yield PolicyFile(str(top.path), self._read(top))
            return
        blobs = []
        for item in top.traverse():
            if not isinstance(item, git.Blob) or not item.name.endswith(SUFFIXES):
                continue
            if item.mode == _SYMLINK_MODE:
                continue
            if any(part.startswith(".") for part in PurePosixPath(item.path).parts):
                continue
            blobs.append(item)
        for blob in sorted(blobs, key=lambda b: str(b.path)):
            yield PolicyFile(str(blob.path), self._read(blob))

    def _read(self, blob: git.Blob, limit: int = MAX_FILE_BYTES) -> bytes:
        """The blob's bytes; of a blob over `limit` only the first `limit + 1`."""
        if blob.size <= limit:  # `git cat-file --batch-check`: the size without the content
            data: bytes = blob.data_stream.read()
            return data
        # The shared `cat-file --batch` stream would have to be drained to the end: use a
        # process of its own and stop it once enough is read.
        process = self._repo.git.cat_file("blob", blob.hexsha, as_process=True)
        try:
            head: bytes = process.stdout.read(limit + 1)
        finally:
            process.terminate()  # GitPython closes the pipes and reaps it
        return head

"""Policy files from local directories (and single files), read in a stable order.

`PolicyDirectory(paths)` implements `ports.PolicySource`: every `*.yaml`/`*.yml` file under
each path, recursively, sorted; hidden directories (`.git`, `.github`, ...) are skipped.
A path that is a file is read as it is, whatever its suffix. There is no revision.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from reconciler.errors import SourceError
from reconciler.ports import PolicyFile

__all__ = ["MAX_FILE_BYTES", "SUFFIXES", "PolicyDirectory"]

SUFFIXES = (".yaml", ".yml")
#: Files are read up to one byte past this; the loader reports anything larger as too large.
MAX_FILE_BYTES = 1 << 20


class PolicyDirectory:
    """Reads policy files from one or more directories or files on the local disk."""

    def __init__(self, paths: Sequence[str | Path], max_bytes: int = MAX_FILE_BYTES) -> None:
        if not paths:
            raise SourceError("no policy directory given")
        self.paths = [Path(p) for p in paths]
        self.max_bytes = max_bytes

    @property
    def revision(self) -> str | None:
        return None

    def files(self) -> Iterator[PolicyFile]:
        for path in self._paths():
            try:
                with path.open("rb") as handle:
                    data = handle.read(self.max_bytes + 1)
            except OSError as exc:
                raise SourceError(f"cannot read policy file {str(path)!r}: {exc.strerror}") \
                    from None
            yield PolicyFile(str(path), data)

    def _paths(self) -> list[Path]:
        found: list[Path] = []
        for root in self.paths:
            if root.is_file():
                found.append(root)
            elif root.is_dir():
                found.extend(self._walk(root))
            else:
                raise SourceError(f"policy path {str(root)!r} does not exist")
        return sorted(dict.fromkeys(found), key=lambda p: p.as_posix())

    @staticmethod
    def _walk(root: Path) -> Iterator[Path]:
        def fail(exc: OSError) -> None:
            raise SourceError(f"cannot list policy directory {exc.filename!r}: {exc.strerror}")

        for folder, dirs, names in os.walk(root, onerror=fail):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                if name.endswith(SUFFIXES) and not name.startswith("."):
                    yield Path(folder, name)

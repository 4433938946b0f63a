"""An exporting process for the shared-repository tests: it writes one point from a
deterministic disk and SIGKILLs itself after reading KILL_AFTER bytes (0: never).

    python -m tests.repository.session_worker REPO POINT SEED SIZE KILL_AFTER [RESUME]

It prints the bytes it read from the source when it finishes.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path

from reconciler.adapters.repository import Repository

from .disks import SLOT, VM, noise


def open_shared(path: Path, lock_timeout: float = 60.0) -> Repository:
    """Chunks and packs of a real size: these tests move tens of MiB."""
    return Repository.open(path, chunk_size=65536, pack_size=4 << 20, threads=2,
                           lock_timeout=lock_timeout)


def session_disk(seed: str, size: int) -> bytes:
    """Data shared by every point, zeros, and data of this point only."""
    third = size // 3
    return noise("shared", third) + bytes(third) + noise(seed, size - 2 * third)


class Source(io.BytesIO):
    def __init__(self, data: bytes, kill_after: int) -> None:
        super().__init__(data)
        self.kill_after = kill_after
        self.read_bytes = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.read_bytes += len(data)
        if self.kill_after and self.read_bytes >= self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return data

    def readinto(self, buffer: object, /) -> int:  # the writer's fast path, counted too
        view = memoryview(buffer)  # type: ignore[arg-type]
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


def main(argv: list[str]) -> None:
    repo_path, point, seed, size, kill_after, *rest = argv
    resume = bool(rest and rest[0] == "resume")
    repo = open_shared(Path(repo_path))
    data = session_disk(seed, int(size))
    source = Source(data, int(kill_after))
    with repo.begin_point(point, "shared", VM, SLOT, resume=resume,
                          snapshotId=f"snap-{seed}") as writer:
        writer.add_disk("d0", source, size=len(data))
        writer.add_file("vm.vmx", seed.encode())
        writer.commit("crash")
    print(source.read_bytes, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

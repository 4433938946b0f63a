"""A writer or GC run that SIGKILLs itself at its N-th file-system step (crash tests).

    python -m tests.repository.crash_worker REPO write POINT SEED KILL_AT
    python -m tests.repository.crash_worker REPO gc VICTIM - KILL_AT

Steps are the calls that change files: os.write, os.fsync, os.replace, os.unlink. With
KILL_AT 0 the run completes and prints how many steps it took.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .disks import SLOT, VM, noise, open_repo

STEPS = 0


def crash_disk(seed: str) -> bytes:
    """Shared chunks (dedup across points), zeros, and data unique to this point."""
    return noise("base", 40 * 4096) + bytes(9 * 4096) + noise(seed, 60 * 4096 + 123)


def install(kill_at: int) -> None:
    def wrap(name: str) -> None:
        original: Callable[..., Any] = getattr(os, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            global STEPS
            STEPS += 1
            if kill_at == STEPS:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        setattr(os, name, counted)

    for name in ("write", "fsync", "replace", "unlink"):
        wrap(name)


def main(argv: list[str]) -> None:
    repo_path, mode, point, seed, kill_at = argv
    repo = open_repo(Path(repo_path))
    install(int(kill_at))
    if mode == "write":
        data = crash_disk(seed)
        with repo.begin_point(point, "crash", VM, SLOT) as writer:
            writer.add_disk("d0", io.BytesIO(data), size=len(data))
            writer.add_file("vm.vmx", seed.encode())
            writer.commit("crash")
    else:
        if point != "-":
            repo.delete_point(point)
        repo.gc()
    print(STEPS)


if __name__ == "__main__":
    main(sys.argv[1:])

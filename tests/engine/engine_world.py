"""An estate on the engine: the apply tests' estate (simulator, policies, directory target)
with `engine:` in its host config and `vmkeep worker` processes as proxies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.engine.temporal_server import TemporalServer
from tests.integration.apply_world import Estate
from tests.integration.conftest import Simulator


class EngineEstate(Estate):
    def __init__(self, sim: Simulator, root: Path, server: TemporalServer, queue: str,
                 proxies: str = "", heartbeat_seconds: int = 60, hooks: str = "{}") -> None:
        self.hooks_yaml = hooks
        self.server = server
        self.queue = queue
        self.proxies_yaml = proxies
        self.heartbeat_seconds = heartbeat_seconds
        self.workers: list[subprocess.Popen[bytes]] = []
        super().__init__(sim, root)

    def write_config(self, max_deletes: int) -> None:
        super().write_config(max_deletes)
        text = self.config.read_text().replace("hooks: {}", f"hooks: {self.hooks_yaml}")
        self.config.write_text(text)
        with self.config.open("a") as f:
            f.write(f"engine: {{type: temporal, address: \"{self.server.address}\", "
                    f"namespace: {self.server.namespace}, taskQueue: {self.queue}, "
                    f"heartbeatSeconds: {self.heartbeat_seconds}}}\n")
            f.write(self.proxies_yaml)

    def start_worker(self, identity: str, *extra: str,
                     checkpoint_mib: int = 8) -> subprocess.Popen[bytes]:
        env = dict(os.environ, VMKEEP_SIM_PASSWORD=self.sim.password,
                   VMKEEP_CHECKPOINT_MIB=str(checkpoint_mib))
        log = (self.root / f"worker-{identity}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "worker", "--config", str(self.config),
             "--identity", identity, *extra],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        log.close()
        deadline = time.monotonic() + 60
        while b"serving" not in self.worker_log(identity):
            assert process.poll() is None, self.worker_log(identity).decode()
            assert time.monotonic() < deadline, "worker did not start"
            time.sleep(0.1)
        self.workers.append(process)
        return process

    def start_apply(self, now: str) -> subprocess.Popen[str]:
        """`vmkeep apply -o json` in its own process (so a test can act while it runs)."""
        env = dict(os.environ, VMKEEP_SIM_PASSWORD=self.sim.password)
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler", "apply", "--config", str(self.config),
             "--policies", str(self.policies), "--now", now, "--auto-approve", "-o", "json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def worker_log(self, identity: str) -> bytes:
        path = self.root / f"worker-{identity}.log"
        return path.read_bytes() if path.exists() else b""

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                with_signal(process, signal.SIGCONT)
                process.terminate()
        for process in self.workers:
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def with_signal(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:
        os.kill(process.pid, signum)


@contextmanager
def engine_estate(sim: Simulator, root: Path, server: TemporalServer, queue: str,
                  proxies: str = "", heartbeat_seconds: int = 60,
                  hooks: str = "{}") -> Iterator[EngineEstate]:
    estate = EngineEstate(sim, root, server, queue, proxies, heartbeat_seconds, hooks)
    try:
        yield estate
    finally:
        estate.stop_workers()

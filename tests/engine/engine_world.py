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
from tests.integration.apply_world import Estate, Run
from tests.integration.conftest import Simulator


class EngineEstate(Estate):
    def __init__(self, sim: Simulator, root: Path, server: TemporalServer, queue: str,
                 proxies: str = "", heartbeat_seconds: int = 60, hooks: str = "{}",
                 second: Simulator | None = None) -> None:
        self.hooks_yaml = hooks
        self.second = second  # a second vCenter, `sim2`
        self.server = server
        self.queue = queue
        self.proxies_yaml = proxies
        self.heartbeat_seconds = heartbeat_seconds
        self.workers: list[subprocess.Popen[bytes]] = []
        super().__init__(sim, root)

    def write_config(self, max_deletes: int) -> None:
        super().write_config(max_deletes)
        text = self.config.read_text().replace("hooks: {}", f"hooks: {self.hooks_yaml}")
        if self.second is not None:
            text = text.replace("vcenters:\n", (
                f"vcenters:\n  sim2:\n    url: \"{self.second.url}\"\n"
                f"    username: {self.second.username}\n"
                f"    passwordEnv: VMKEEP_SIM2_PASSWORD\n"
                f"    caFile: \"{self.second.ca_file}\"\n"), 1)
        self.config.write_text(text)
        with self.config.open("a") as f:
            f.write(f"engine: {{type: temporal, address: \"{self.server.address}\", "
                    f"namespace: {self.server.namespace}, taskQueue: {self.queue}, "
                    f"heartbeatSeconds: {self.heartbeat_seconds}}}\n")
            f.write(self.proxies_yaml)

    def start_worker(self, identity: str, *extra: str,
                     checkpoint_mib: int = 8) -> subprocess.Popen[bytes]:
        env = dict(self.env(), VMKEEP_CHECKPOINT_MIB=str(checkpoint_mib))
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
        return self.start("apply", "--now", now, "--auto-approve", "-o", "json")

    def start_run(self, now: str) -> subprocess.Popen[str]:
        """`vmkeep run` (the controller loop) in its own process."""
        return self.start("run", "--now", now)

    def start(self, command: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "reconciler", command, "--config", str(self.config),
             "--policies", str(self.policies), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env())

    def env(self) -> dict[str, str]:
        """The environment of vmkeep processes: the simulators' passwords."""
        env = dict(os.environ, VMKEEP_SIM_PASSWORD=self.sim.password)
        if self.second is not None:
            env["VMKEEP_SIM2_PASSWORD"] = self.second.password
        return env

    def vmkeep(self, *args: str) -> Run:
        if self.second is not None:
            os.environ["VMKEEP_SIM2_PASSWORD"] = self.second.password
        return super().vmkeep(*args)

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
                  hooks: str = "{}", second: Simulator | None = None) -> Iterator[EngineEstate]:
    estate = EngineEstate(sim, root, server, queue, proxies, heartbeat_seconds, hooks, second)
    try:
        yield estate
    finally:
        estate.stop_workers()

"""Killing `vmkeep apply` at a chosen point, deterministically: the test waits for an event
of the running apply (a hook that holds, a vCenter request the simulator counted, a journal
row) and then SIGKILLs it. Nothing here sleeps for a guessed time."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path

from .apply_world import Estate
from .conftest import REPO, Simulator

#: How long a test waits for an event of a running apply before it fails (not a timing
#: assumption: the event must come, this only bounds a broken test).
EVENT_TIMEOUT = 120.0

POLICY = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata:
  name: {name}
spec:
  vcenter: sim
  selector:
    include:
      names: {names}
  schedule:
    cron: "0 1 * * *"
    timezone: UTC
  consistency:
    mode: {mode}
{consistency}{snapshots}  exports:
    target: local
    keep: {{daily: {daily}}}
"""


class KillEstate(Estate):
    """An estate whose host config has a `hold` hook: while the file `<root>/hold-<phase>`
    exists it records its pid and phase under `<root>/held/` and blocks; otherwise it does
    nothing."""

    def __init__(self, sim: Simulator, root: Path, *, max_deletes: int = 50) -> None:
        self.hold_prefix = root / "hold-"
        self.held_dir = root / "held"
        self.held_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(sim, root, max_deletes=max_deletes)

    def write_config(self, max_deletes: int) -> None:
        script = (f'if [ -e "{self.hold_prefix}$VMKEEP_PHASE" ]; then '
                  f'echo $$ > "{self.held_dir}/$VMKEEP_PHASE-$$"; exec /bin/sleep 300; fi')
        self.config.write_text(textwrap.dedent(f"""\
            vcenters:
              sim:
                url: "{self.sim.url}"
                username: {self.sim.username}
                passwordEnv: VMKEEP_SIM_PASSWORD
                caFile: "{self.sim.ca_file}"
            targets:
              local: {{type: directory, path: "{self.target}"}}
            state: "{self.root / 'state.db'}"
            limits: {{maxDeletesPerRun: {max_deletes}, concurrentExports: 2,
                      concurrentSnapshotsPerHost: 2}}
            hooks:
              hold: {{command: [/bin/sh, -c, {json.dumps(script)}], timeout: 10m}}
            """))

    def set_shape(self, *, mode: str = "crash", snapshots: int | None = None, daily: int = 2,
                  hooks: bool = False, names: Sequence[str] = ("*",)) -> None:
        """One policy `gold`: exports (keep daily), snapshot points too when `snapshots`."""
        consistency = "    fallback: crash\n" if mode == "quiesce" else ""
        if hooks:
            consistency += "    hooks: {pre: [hold], post: [hold]}\n"
        for old in self.policies.glob("*.yaml"):
            old.unlink()
        (self.policies / "gold.yaml").write_text(POLICY.format(
            name="gold", names=json.dumps(list(names)), mode=mode, consistency=consistency,
            snapshots=f"  snapshots:\n    keep: {{last: {snapshots}}}\n" if snapshots else "",
            daily=daily))

    # ------------------------------------------------------------------ a killed apply

    def spawn_apply(self, now: str, *extra: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "VMKEEP_SIM_PASSWORD": self.sim.password}
        log = (self.root / "killed-apply.log").open("wb")
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "reconciler", "apply", "--config", str(self.config),
                 "--policies", str(self.policies), "--now", now, "--auto-approve", *extra],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log,
            )
        finally:
            log.close()

    def wait_for(self, proc: subprocess.Popen[bytes], event: Callable[[], bool],
                 what: str) -> None:
        """Poll until `event()` holds; fail when the apply ended without it."""
        deadline = time.monotonic() + EVENT_TIMEOUT
        while not event():
            if proc.poll() is not None:
                log = (self.root / "killed-apply.log").read_text(errors="replace")
                raise AssertionError(f"apply ended (exit {proc.returncode}) before {what}:\n"
                                     f"{log[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {EVENT_TIMEOUT:.0f} s")
            time.sleep(0.02)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the apply, then the hooks it left holding, and let go of the hold."""
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        for phase in ("pre", "post"):
            Path(f"{self.hold_prefix}{phase}").unlink(missing_ok=True)
        for held in self.held_dir.iterdir():
            pid = held.read_text().strip()
            if pid.isdigit() and int(pid) > 1:  # never 0: that is this process group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            held.unlink()

    # ------------------------------------------------------------------ events

    def held(self, phase: str) -> Callable[[], bool]:
        Path(f"{self.hold_prefix}{phase}").touch()
        return lambda: any(p.name.startswith(f"{phase}-") and p.read_text().strip()
                           for p in self.held_dir.iterdir())

    def requested(self, method: str) -> Callable[[], bool]:
        """The simulator received `method` (counters reset now)."""
        self.sim.reset_stats()
        return lambda: self.sim.stats()["methods"].get(method, 0) > 0

    def journaled(self, where: str) -> Callable[[], bool]:
        """An action journaled from now on matches `where` (SQL on the actions table), read
        from the apply's journal read-only."""
        path = self.root / "state.db"

        def query(sql: str) -> tuple[object, ...] | None:
            if not path.exists():
                return None
            try:
                with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
                    row = conn.execute(sql).fetchone()
                    return tuple(row) if row is not None else None
            except sqlite3.Error:
                return None  # not set up yet

        last = query("SELECT coalesce(max(id), 0) FROM actions")
        after = int(str(last[0])) if last else 0
        return lambda: query(f"SELECT 1 FROM actions WHERE id > {after} AND ({where})") \
            is not None

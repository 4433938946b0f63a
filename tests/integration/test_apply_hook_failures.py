"""Error paths of `vmkeep apply` against real parts: hook processes, the simulator.

Each test pins one failure the audit of the apply path found: a hook that leaves a daemon
behind, a failing post hook leaving an export's temporary snapshot in vCenter.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.adapters.hooks import SubprocessHooks
from reconciler.markers import MarkerKind, parse_marker
from reconciler.model import HookConfig

from .apply_world import Estate
from .conftest import StartVcsim

DAY1 = "2026-11-25T01:30:00Z"

# A hook that starts a daemon of its own (as `ssh` with ControlPersist does) and exits 0 at
# once: the daemon inherits the hook's output and lives on until `release` appears, which the
# test writes only after `run` returned. Were `run` to wait for the end of the output, it
# would wait until the hook's timeout (60 s) and fail with a HookError; the daemon itself
# gives up after 120 s, so that such a failing run ends.
DAEMONIZING_HOOK = textwrap.dedent("""\
    import subprocess, sys
    daemon = (
        "import os, sys, time\\n"
        "for _ in range(1200):\\n"
        "    if os.path.exists(sys.argv[1]): break\\n"
        "    time.sleep(0.1)\\n"
    )
    subprocess.Popen([sys.executable, "-c", daemon, sys.argv[1]], start_new_session=True)
    print("frozen")
    """)


def test_a_hook_that_exits_at_once_but_leaves_a_daemon_succeeds(tmp_path: Path) -> None:
    release = tmp_path / "release"
    hooks = SubprocessHooks({"freeze": HookConfig(
        "freeze", (sys.executable, "-c", DAEMONIZING_HOOK, str(release)), 60.0)})
    try:
        hooks.run("freeze", {"VMKEEP_PHASE": "pre"})  # exit status 0: no HookError
    finally:
        release.write_text("")


# --------------------------------------------------------------------------- simulator


@pytest.fixture
def estate(start_vcsim: StartVcsim, tmp_path: Path) -> Iterator[Estate]:
    yield Estate(start_vcsim(vms=2), tmp_path)


@pytest.mark.vcsim
def test_a_failing_post_hook_fails_the_export_and_leaves_no_temporary_snapshot(
    estate: Estate,
) -> None:
    config = estate.config.read_text().replace(
        "hooks: {}",
        f"hooks:\n  thaw: {{command: [{sys.executable}, -c, 'import sys; sys.exit(4)'], "
        "timeout: 1m}",
    )
    estate.config.write_text(config)
    (estate.policies / "gold.yaml").write_text(textwrap.dedent("""\
        apiVersion: vmkeep/v1
        kind: BackupPolicy
        metadata:
          name: gold
        spec:
          vcenter: sim
          selector:
            include:
              names: ["DC0_C0_RP0_VM0"]
          schedule:
            cron: "0 1 * * *"
          consistency:
            mode: crash
            hooks: {post: [thaw]}
          exports:
            target: local
            keep: {daily: 7}
        """))
    run = estate.apply(DAY1)
    assert run.code == 3, run.out + run.err
    assert "post hook 'thaw' failed" in run.out
    assert estate.points() == []
    vm = estate.vms()["DC0_C0_RP0_VM0"]
    markers = [parse_marker(s.name, s.description) for s in vm.snapshots]
    assert [m for m in markers if m and m.kind is MarkerKind.EXPORT_TEMP] == []

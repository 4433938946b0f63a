"""Secrets never leave the host config (issue 9 C): a password in a vCenter URL is refused,
hooks do not inherit vCenter passwords, and a secret a hook still prints is masked in apply's
output, the journal and `vmkeep status`."""

from __future__ import annotations

import sqlite3
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.errors import MASK

from .apply_world import Estate
from .conftest import StartVcsim

DAY1 = "2026-11-25T01:30:00Z"


def test_a_url_with_a_password_fails_validation_and_inventory_without_printing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VC_PW", "the-real-one")
    config = tmp_path / "vmkeep.yaml"
    config.write_text("vcenters:\n  prod:\n    url: https://admin:Pa55-in-url@127.0.0.2:1/sdk\n"
                      "    username: admin\n    passwordEnv: VC_PW\n")
    (tmp_path / "policies").mkdir()

    for argv in (["validate", str(tmp_path / "policies")], ["inventory"]):
        assert main([*argv, "--config", str(config)]) == 1
        out, err = capsys.readouterr()
        assert f"{config}:3:10: `vcenters.prod.url` must not contain a user name or password" \
            in out + err
        assert "Pa55-in-url" not in out + err


@pytest.fixture
def estate(start_vcsim: StartVcsim, tmp_path: Path) -> Iterator[Estate]:
    yield Estate(start_vcsim(vms=1), tmp_path)


# A pre hook that fails after printing its environment, and the password it found elsewhere
# (a file it was not meant to read): the first must not hold it, the second is masked.
LEAKY_HOOK = textwrap.dedent("""\
    import os, sys
    print("env:", sorted(os.environ.items()))
    print("tried", open(sys.argv[1]).read())
    sys.exit(2)
    """)


@pytest.mark.vcsim
def test_a_failing_hook_never_puts_the_vcenter_password_in_output_journal_or_status(
    estate: Estate,
) -> None:
    password = estate.sim.password
    stolen = estate.root / "stolen.txt"
    stolen.write_text(password)
    hook = estate.root / "leaky_hook.py"
    hook.write_text(LEAKY_HOOK)
    estate.config.write_text(estate.config.read_text().replace(
        "hooks: {}",
        f"hooks:\n  freeze: {{command: ['{sys.executable}', '{hook}', '{stolen}'], "
        "timeout: 1m}",
    ))
    (estate.policies / "gold.yaml").write_text(textwrap.dedent("""\
        apiVersion: vmkeep/v1
        kind: BackupPolicy
        metadata: {name: gold}
        spec:
          vcenter: sim
          selector: {include: {names: ["*"]}}
          schedule: {cron: "0 1 * * *", timezone: UTC}
          consistency: {mode: crash, hooks: {pre: [freeze]}}
          snapshots: {keep: {last: 2}}
        """))

    run = estate.apply(DAY1)
    status = estate.vmkeep("status", "--policies", str(estate.policies), "--now", DAY1)

    assert run.code == 3, run.out + run.err
    assert "pre hook 'freeze' failed" in run.out
    assert f"tried {MASK}" in run.out
    assert "VMKEEP_SIM_PASSWORD" not in run.out  # the hook's environment did not have it
    with sqlite3.connect(estate.root / "state.db") as db:
        errors = [row[0] for row in db.execute("SELECT error FROM actions")]
    assert errors and all(f"tried {MASK}" in e for e in errors)
    for text in (run.out, run.err, status.out, status.err, *errors):
        assert password not in text


def test_status_masks_a_password_a_journal_from_before_masking_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from reconciler.adapters.statedb import StateDB

    password = "hunter2-old-journal"
    monkeypatch.setenv("VMKEEP_OLD_PW", password)
    monkeypatch.chdir(tmp_path)  # no policies: the journal alone, no vCenter asked
    config = tmp_path / "vmkeep.yaml"
    config.write_text(textwrap.dedent(f"""\
        vcenters:
          sim: {{url: "https://vc.example.com/sdk", username: u, passwordEnv: VMKEEP_OLD_PW}}
        targets:
          local: {{type: directory, path: "{tmp_path / 'target'}"}}
        state: "{tmp_path / 'state.db'}"
        """))
    with StateDB(tmp_path / "state.db") as db:
        db.start_run("run-1", "host/1/run-1", 1.0)
        action = db.record_intent("run-1", kind="export.create", point_id="p/u/20261125T010000Z",
                                  vm_uuid="u", vm_name="app", vcenter="sim", now=1.0)
        db.record_outcome(action, "failed", 2.0, "login failed")
        db.finish_run("run-1", 3.0, {"failed": 1})
        recovery = db.begin_recovery("host/2/run-2", 4.0)
        db.end_recovery(recovery, 5.0, "recovery failed")
    with sqlite3.connect(tmp_path / "state.db") as raw:  # as an older vmkeep wrote them
        raw.execute("UPDATE actions SET error = ?", (f"login as u:{password} failed",))
        raw.execute("UPDATE recoveries SET error = ?", (f"recovery with {password} failed",))

    for output in ("text", "json"):
        assert main(["status", "--config", str(config), "-o", output]) == 0
        out = capsys.readouterr().out
        assert password not in out and MASK in out, out

"""Review of `vmkeep run`, `status` and `restore`: real files, real SQLite journals, real
export repositories (no simulator needed for these)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from reconciler.adapters.statedb import StateDB
from reconciler.cli import build_parser, main
from reconciler.controller import Controller
from tests.repository.disks import CHUNK, export, noise, open_repo, point_id

from .apply_world import POLICY, Estate
from .conftest import REPO, StartVcsim, wait_until

DAY1 = "2026-11-25T01:30:00Z"


def host_config(root: Path, body: str = "") -> Path:
    path = root / "vmkeep.yaml"
    path.write_text(f'state: "{root / "state.db"}"\n{body}', encoding="utf-8")
    return path


# ---------------------------------------------------------------------- vmkeep run


def test_a_metrics_file_that_cannot_be_written_does_not_end_the_loop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = host_config(tmp_path)
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "gold.yaml").write_text("apiVersion: vmkeep/v1\nkind: [\n")  # not applied
    metrics = tmp_path / "vmkeep.prom"
    metrics.mkdir()  # in the way: the metrics file cannot replace it
    args = build_parser().parse_args(["run", "--config", str(config), "--policies",
                                      str(policies), "--metrics-file", str(metrics)])
    log = io.StringIO()
    controller = Controller(args, log=log)
    assert controller.reconcile("tick") == 1  # the loop calls this every tick: no exception
    assert controller.reconcile("tick") == 1
    assert controller.metrics.reconciles["invalid_policies"] == 2
    assert f"cannot write metrics to {metrics}" in log.getvalue()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policies", "vmkeep.prom",
                                                          "vmkeep.yaml"]  # no temporary left
    assert main(["run", "--once", "--config", str(config), "--policies", str(policies),
                 "--metrics-file", str(metrics)]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_a_poll_that_fails_unexpectedly_does_not_end_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_review_mode import commit, git

    cache = tmp_path / "cache"
    monkeypatch.setenv("VMKEEP_CACHE_DIR", str(cache))
    config = host_config(tmp_path)
    repo = tmp_path / "policy-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"gold.yaml": "apiVersion: vmkeep/v1\nkind: [\n"}, "invalid: never applied")
    args = build_parser().parse_args(["run", "--config", str(config), "--repo", str(repo),
                                      "--rev", "main", "--path", "policies", "--poll", "0.1s"])
    log = io.StringIO()
    controller = Controller(args, log=log)
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: "reconcile done: invalid_policies" in log.getvalue(), timeout=60)
        for head in cache.glob("git/*.git/HEAD"):
            head.write_text("garbage\n")  # the cache clone breaks (not a SourceError)
        wait_until(lambda: not thread.is_alive() or log.getvalue().count("cannot read") >= 2,
                   timeout=60)
        assert thread.is_alive(), log.getvalue()
    finally:
        controller.stop.set()
        thread.join(timeout=60)


# ---------------------------------------------------------------------- vmkeep status


def test_status_never_sets_up_or_changes_a_database_that_is_not_its_journal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./policies: the journal only
    foreign = tmp_path / "state.db"  # e.g. `state:` pointing at another program's database
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE users(id INTEGER)")
    conn.close()
    before = foreign.read_bytes()
    config = host_config(tmp_path)
    assert main(["status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "is not a vmkeep state DB" in err and "Traceback" not in err
    assert foreign.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db", "vmkeep.yaml"]


def test_status_leaves_an_empty_state_file_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "state.db").touch()  # made beforehand, e.g. to give it its owner
    config = host_config(tmp_path)
    assert main(["status", "--config", str(config)]) == 0
    assert "no apply run recorded" in capsys.readouterr().out
    assert (tmp_path / "state.db").stat().st_size == 0


def test_status_says_in_one_line_that_the_state_file_is_not_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "state.db").write_text("not a database at all, just some text\n" * 200)
    config = host_config(tmp_path)
    assert main(["status", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("vmkeep: error: cannot read the state DB") and err.count("\n") == 1


def test_status_does_not_report_a_killed_apply_as_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    holder = f"{socket.gethostname()}/{dead.pid}/run-1"  # killed: its lease has not expired
    with StateDB(tmp_path / "state.db") as db:
        db.start_run("run-1", holder, time.time() - 60, "abc123")
        db.record_intent("run-1", kind="export.create", point_id="gold/uuid-1/20261125T010000Z",
                         vm_uuid="uuid-1", vm_name="web-01", vcenter="vc1",
                         now=time.time() - 50)
        db.acquire_lease("apply", holder, time.time() - 10, 300)
    config = host_config(tmp_path)
    assert main(["status", "--config", str(config), "--check", "-o", "json"]) == 3
    body = json.loads(capsys.readouterr().out)
    assert body["apply"] == {"running": False, "holder": None}
    assert any("interrupted run" in item for item in body["attention"])


# ---------------------------------------------------------------------- vmkeep restore


def test_a_disk_exported_from_a_snapshot_chain_is_what_the_restored_vmx_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The VM had a snapshot of its own: at export time its disk was the delta vm1-000001.vmdk
    # (vm.json says so) and the .vmx, read while the export's snapshot existed, names the
    # next delta, vm1-000002.vmdk.
    disk = noise("disk", 8 * CHUNK)
    vm_json = json.dumps({"name": "vm1", "disks": [
        {"key": 2000, "file": "[ds1] vm1/vm1-000001.vmdk", "capacityBytes": len(disk)}]})
    vmx = b'displayName = "vm1"\nscsi0:0.fileName = "vm1-000002.vmdk"\n'
    repo = open_repo(tmp_path / "exports")
    export(repo, point_id(1), {"disk-2000": disk}, {"vm1.vmx": vmx, "vm.json": vm_json.encode()})
    repo.close()
    config = tmp_path / "vmkeep.yaml"
    config.write_text("targets:\n  nas: {type: directory, path: exports}\n", encoding="utf-8")
    out = tmp_path / "restored"
    assert main(["restore", "--config", str(config), "--point", point_id(1), "--to",
                 str(out)]) == 0
    capsys.readouterr()
    restored = (out / "vm1.vmx").read_text()
    name = restored.split('scsi0:0.fileName = "', 1)[1].split('"', 1)[0]
    assert (out / name).is_file(), f"the .vmx names {name!r}, which was not restored"
    assert (out / name).read_text().count("-flat.vmdk") == 1  # the descriptor of the disk


def test_run_refuses_flags_that_would_make_every_reconcile_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .test_review_mode import commit, git

    config = host_config(tmp_path)
    repo = tmp_path / "policy-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"gold.yaml": "apiVersion: vmkeep/v1\n"}, "policies")
    policies = tmp_path / "policies"
    policies.mkdir()
    for argv in (["--repo", str(repo), "--policies", str(policies)],  # apply refuses both
                 ["--policies", str(policies), "--path", "sub"]):  # --path needs --repo
        assert main(["run", "--once", "--config", str(config), *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("vmkeep: error:") and "reconcile" not in err, err


# ---------------------------------------------------------------------- with the simulator


@pytest.mark.vcsim
def test_sigterm_lets_a_once_reconcile_finish(
    start_vcsim: StartVcsim, tmp_path: Path
) -> None:
    estate = Estate(start_vcsim(vms=1), tmp_path)
    started, release = tmp_path / "hook-started", tmp_path / "hook-release"
    gate = tmp_path / "gate.py"
    gate.write_text("import pathlib, time\n"
                    f"pathlib.Path({str(started)!r}).touch()\n"
                    f"while not pathlib.Path({str(release)!r}).exists():\n"
                    "    time.sleep(0.02)\n")
    estate.config.write_text(estate.config.read_text().replace(
        "hooks: {}", f"hooks:\n  gate: {{command: [{sys.executable}, {gate}], timeout: 5m}}"))
    (estate.policies / "gold.yaml").write_text(POLICY.format(
        name="gold", names='["*"]', mode="crash", snapshots=2, daily=7).replace(
        "    mode: crash\n", "    mode: crash\n    hooks: {pre: [gate]}\n"))
    metrics, log = tmp_path / "vmkeep.prom", tmp_path / "run.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "--once", "--config",
             str(estate.config), "--policies", str(estate.policies), "--now", DAY1,
             "--metrics-file", str(metrics)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
            env={**os.environ, "VMKEEP_SIM_PASSWORD": estate.sim.password},
        )
    try:
        wait_until(lambda: started.exists() or proc.poll() is not None, timeout=120)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)  # while the reconcile waits in the pre hook
        wait_until(lambda: proc.poll() is not None or "SIGTERM" in log.read_text(),
                   timeout=60)
    finally:
        release.touch()
    code = proc.wait(timeout=120)
    assert code == 0, log.read_text()
    assert 'vmkeep_reconciles_total{result="ok"} 1' in metrics.read_text()
    assert len(estate.points()) == 1

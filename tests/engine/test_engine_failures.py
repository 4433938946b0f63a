"""Proxies that die or stop mid-export: the engine retries on another worker after the
heartbeat timeout, the export resumes from its checkpoint, no temporary snapshot is left, and
every point is committed once."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.markers import MarkerKind, parse_marker
from tests.engine.engine_world import EngineEstate, engine_estate, with_signal
from tests.engine.temporal_server import TemporalServer

pytestmark = [pytest.mark.vcsim, pytest.mark.temporal]

MiB = 1024 * 1024
#: Small enough that ten kill trials take about two minutes, large enough that the export
#: is still reading when the worker is killed (a checkpoint every CHECKPOINT_MIB). When the
#: CUT checkpoint is written the reading is already up to ~48 MiB further on: the writer
#: encodes four 8 MiB blocks ahead, and a disk reader process (`readers: process`) reads
#: two more ahead of those; and from the second day on every chunk is known, so the rest
#: of a 48 MiB disk was read and stored before the kill now and then (CI, 2026-12-07).
SIZE = 128 * MiB
#: A worker is stopped once its export checkpointed at least this far into the disk.
CUT = 16 * MiB
CHECKPOINT_MIB = 4
HEARTBEAT = 3
TRIALS = int(os.environ.get("VMKEEP_ENGINE_KILL_TRIALS", "10"))
_queues = itertools.count()
#: Exports only: each export takes (and removes) a temporary snapshot of its own.
EXPORTS_ONLY = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata: {name: gold}
spec:
  vcenter: sim
  selector: {include: {names: ["*"]}}
  schedule: {cron: "0 1 * * *", timezone: UTC}
  consistency: {mode: crash}
  exports: {target: local, keep: {daily: 30}}
"""


@pytest.fixture
def estate(start_vcsim, temporal: TemporalServer, tmp_path: Path) -> Iterator[EngineEstate]:
    queue = f"fail{next(_queues)}-{os.getpid()}"
    with engine_estate(start_vcsim(vms=1), tmp_path, temporal, queue,
                       heartbeat_seconds=HEARTBEAT) as world:
        (world.policies / "gold.yaml").write_text(EXPORTS_ONLY)
        yield world


def big_disk_vm(estate: EngineEstate) -> tuple[Any, bytes]:
    """The VM, its disk grown to SIZE: data, zeros, data."""
    [vm] = estate.vms().values()
    estate.grow_disk(vm, SIZE)
    data = os.urandom(4 * MiB) + bytes(SIZE - 8 * MiB) + os.urandom(4 * MiB)
    estate.fill_disk(vm, data)
    return vm, data


def day(n: int) -> str:
    moment = datetime(2026, 11, 25, 1, 0) + timedelta(days=n)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def exporting_pid(estate: EngineEstate, timeout: float = 60.0) -> int:
    """The pid of the worker process whose export checkpointed past CUT (mid-export)."""
    deadline = time.monotonic() + timeout
    partial = estate.target / "partial"
    while time.monotonic() < deadline:
        for checkpoint in partial.glob("*.ckpt") if partial.exists() else ():
            marker = checkpoint.with_name(checkpoint.name[: -len(".ckpt")] + ".json")
            try:
                if json.loads(checkpoint.read_bytes())["offset"] >= CUT:
                    return int(json.loads(marker.read_bytes())["pid"])
            except (OSError, ValueError, KeyError):
                continue
        time.sleep(0.005)
    raise AssertionError(f"no export reached a checkpoint past {CUT} bytes")


def temporary_snapshots(estate: EngineEstate) -> list[str]:
    return [s.name for vm in estate.vms().values() for s in vm.snapshots
            if (m := parse_marker(s.name, s.description)) and m.kind is MarkerKind.EXPORT_TEMP]


def finished(apply: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = apply.communicate(timeout=300)
    assert apply.returncode == 0, out + err
    result: dict[str, Any] = json.loads(out)
    return result


def test_a_worker_killed_mid_export_is_replaced_and_the_export_resumes_elsewhere(
        estate: EngineEstate) -> None:
    vm, data = big_disk_vm(estate)
    workers = {p.pid: p for p in (estate.start_worker(f"proxy-{n}", "--slots", "1",
                                                     checkpoint_mib=CHECKPOINT_MIB)
                                  for n in range(2))}
    spare = itertools.count(2)
    for trial in range(TRIALS):
        apply = estate.start_apply(day(trial))
        victim = exporting_pid(estate)
        with_signal(workers[victim], signal.SIGKILL)
        workers.pop(victim).wait()
        replacement = estate.start_worker(f"proxy-{next(spare)}", "--slots", "1",
                                          checkpoint_mib=CHECKPOINT_MIB)
        workers[replacement.pid] = replacement
        result = finished(apply)
        [export] = [o for o in result["outcomes"] if o["action"]["kind"] == "export.create"]
        assert export["status"] == "done", export
        assert export["attempt"] >= 2 and export["resumedFrom"]["proxy"] != export["proxy"]
        assert 0 < export["bytesRead"] <= SIZE - CUT, export  # resumed, not started over
        points = estate.points()
        assert len(points) == trial + 1  # one commit per day
        assert estate.read_point_disk(points[-1].id, f"disk-{vm.disks[0].key}") == data
        assert temporary_snapshots(estate) == []


def test_a_stopped_worker_past_its_heartbeat_timeout_has_its_late_result_discarded(
        estate: EngineEstate) -> None:
    vm, data = big_disk_vm(estate)
    workers = {p.pid: p for p in (estate.start_worker(f"proxy-{n}", "--slots", "1",
                                                     checkpoint_mib=CHECKPOINT_MIB)
                                  for n in range(2))}
    apply = estate.start_apply(day(0))
    stopped = exporting_pid(estate)
    identity = next(f"proxy-{n}" for n, p in enumerate(workers.values()) if p.pid == stopped)
    with_signal(workers[stopped], signal.SIGSTOP)
    try:
        result = finished(apply)
    finally:
        with_signal(workers[stopped], signal.SIGCONT)
    [export] = [o for o in result["outcomes"] if o["action"]["kind"] == "export.create"]
    assert export["status"] == "done" and export["proxy"] != identity, export
    deadline = time.monotonic() + 60
    while b"export.create" not in estate.worker_log(identity):  # the zombie finishes its try
        assert time.monotonic() < deadline, estate.worker_log(identity).decode()
        time.sleep(0.1)
    [point] = estate.points()
    assert estate.read_point_disk(point.id, f"disk-{vm.disks[0].key}") == data
    assert temporary_snapshots(estate) == []
    assert list((estate.target / "partial").iterdir()) == []


def test_two_controllers_for_one_vcenter_run_one_reconcile_at_a_time(
        estate: EngineEstate) -> None:
    estate.start_worker("proxy-0", "--slots", "1")
    estate.sim.faults(taskDelayMs=6000, taskDelayMatch="RemoveSnapshot")
    first = estate.start_apply(day(0))
    deadline = time.monotonic() + 60
    while not (estate.target / "points").is_dir() or not estate.points():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)  # the first reconcile committed, its snapshot removal is slow
    second = estate.start_apply(day(0))
    out, err = second.communicate(timeout=120)
    assert first.poll() is None, "the first reconcile ended before the second was refused"
    assert second.returncode == 1, out + err
    assert "a reconcile of vCenter 'sim' is already running" in err
    assert len(err.strip().splitlines()) == 1
    finished(first)
    assert len(estate.points()) == 1


@pytest.mark.parametrize("command", ["apply", "run"])
def test_cancelling_a_run_stops_its_export_and_removes_the_temporary_snapshot(
        command: str, tmp_path: Path, start_vcsim, temporal: TemporalServer) -> None:
    queue = f"cancel{next(_queues)}-{os.getpid()}"
    hooks = '{settle: {command: [/bin/sleep, "20"], timeout: 1m}}'
    with engine_estate(start_vcsim(vms=1), tmp_path, temporal, queue,
                       heartbeat_seconds=HEARTBEAT, hooks=hooks) as estate:
        (estate.policies / "gold.yaml").write_text(EXPORTS_ONLY.replace(
            "consistency: {mode: crash}", "consistency: {mode: crash, hooks: {post: [settle]}}"))
        estate.start_worker("proxy-0", "--slots", "1")
        start = estate.start_apply if command == "apply" else estate.start_run
        apply = start(day(0))  # `vmkeep run`: the controller loop, cancelled by its first signal
        deadline = time.monotonic() + 60
        while not temporary_snapshots(estate):  # taken; the export waits for its post hook
            assert time.monotonic() < deadline and apply.poll() is None
            time.sleep(0.1)
        apply.send_signal(signal.SIGINT)
        out, err = apply.communicate(timeout=120)
        assert apply.returncode == 130, out + err
        assert "reconcile cancelled" in err
        assert b"cancelled" in estate.worker_log("proxy-0")
        assert estate.points() == []
        assert temporary_snapshots(estate) == []

"""`vmkeep run --listen`: the controller's HTTP endpoints against the simulator, a real
policy directory, SQLite journal and export target; the page in Debian's headless Chromium."""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.adapters.repository import Repository
from reconciler.controller import Controller

from ..repository.disks import flip_chunk, noise
from .apply_world import Estate
from .conftest import REPO, wait_until
from .test_controller import DAY1, estate, looping, run_args

pytestmark = pytest.mark.vcsim

__all__ = ["estate"]  # the fixture, shared with test_controller

VMS = {"DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1", "DC0_C0_RP0_VM2"}


def get(base: str, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(base + path, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def listening(log: io.StringIO) -> str:
    """The base URL the controller logged (it listens on a free port)."""
    wait_until(lambda: "listening on http://" in log.getvalue(), timeout=30)
    match = re.search(r"listening on (http://127\.0\.0\.1:\d+)/", log.getvalue())
    assert match, log.getvalue()
    return match.group(1)


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(s.labels), s.value) for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name]


def test_the_endpoints_serve_metrics_health_and_the_same_status_as_the_command(
    estate: Estate,
) -> None:
    log = io.StringIO()
    controller = Controller(run_args(estate, "--policies", str(estate.policies),
                                     "--listen", "127.0.0.1:0"), log=log)
    with looping(controller):
        base = listening(log)
        wait_until(lambda: get(base, "/readyz")[0] == 200, timeout=120)

        code, headers, body = get(base, "/metrics")
        assert code == 200 and headers["Content-Type"].startswith("text/plain")
        text = body.decode()
        last = samples(text, "vmkeep_vm_last_point_timestamp_seconds")
        assert {(s["vm"], s["policy"], s["kind"]) for s, _ in last} == {
            (vm, "gold", kind) for vm in VMS for kind in ("snapshot", "export")}
        assert {s["vcenter"] for s, _ in last} == {"sim"}
        slot = datetime(2026, 11, 25, 1, tzinfo=UTC).timestamp()  # the 01:00 slot of DAY1
        assert all(value == slot for _, value in last)
        coverage = samples(text, "vmkeep_vm_coverage")
        assert {s["vm"] for s, v in coverage if s["state"] == "covered" and v == 1} == VMS
        assert sum(v for _, v in coverage) == 3  # one state per pair
        assert samples(text, "vmkeep_reconciles_total") \
            and ({"result": "ok"}, 1.0) in samples(text, "vmkeep_reconciles_total")
        assert samples(text, "vmkeep_reconcile_duration_seconds_count") == [({}, 1.0)]
        assert ({"code": "foreign-snapshot-old"}, 0.0) in samples(text, "vmkeep_findings")

        assert get(base, "/healthz")[0] == 200
        code, headers, body = get(base, "/api/status")
        assert code == 200 and headers["Content-Type"] == "application/json"
        assert "Set-Cookie" not in headers
        served = json.loads(body)
        command = estate.vmkeep("status", "-o", "json", "--now", DAY1,
                                "--policies", str(estate.policies))
        assert command.code == 0, command.err
        assert served == command.json()
        assert get(base, "/nothing")[0] == 404

        # the fault: vCenter goes away, every reconcile from now on errors
        estate.sim.stop()
        for n in range(1, 4):
            estate.set_policy(names=["DC0_C0_RP0_VM0", f"DC0_C0_RP0_VM{n % 3}"])

            def errored(n: int = n) -> bool:
                return controller.metrics.reconciles["error"] >= n

            wait_until(errored, timeout=60)
        wait_until(lambda: get(base, "/healthz")[0] == 503, timeout=30)
        code, _, body = get(base, "/healthz")
        assert b"the last 3 reconciles failed" in body
        stale = samples(get(base, "/metrics")[2].decode(), "vmkeep_vm_coverage")
        assert {s["vm"] for s, v in stale if s["state"] == "unknown" and v == 1} == VMS
        assert get(base, "/readyz")[0] == 200  # it did observe once
    assert estate.sim.password not in log.getvalue()


class Grid(HTMLParser):
    """The coverage cells of the rendered page: vm -> policy -> state."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, dict[str, str]] = {}
        self._vm: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-vm"):
            self._vm = a["data-vm"]
        elif tag == "td" and self._vm and a.get("data-policy"):
            self.cells.setdefault(self._vm, {})[a["data-policy"] or ""] = a["data-state"] or ""


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is installed by scripts/bootstrap"
    with tempfile.TemporaryDirectory(prefix="vmkeep-chromium-") as profile:
        return subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
             *args],
            capture_output=True, text=True, timeout=120, check=False)


def test_headless_chromium_renders_the_coverage_grid_of_the_status_page(
    estate: Estate, tmp_path: Path,
) -> None:
    estate.set_policy(names=["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"])
    log = io.StringIO()
    controller = Controller(run_args(estate, "--policies", str(estate.policies),
                                     "--listen", "127.0.0.1:0"), log=log)
    with looping(controller):
        base = listening(log)
        wait_until(lambda: get(base, "/readyz")[0] == 200, timeout=120)
        code, headers, page = get(base, "/")
        assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert b"<script" not in page and b"http://" not in page and b"https://" not in page
        assert "default-src 'none'" in headers["Content-Security-Policy"]

        dumped = chromium("--dump-dom", base + "/")
        assert dumped.returncode == 0, dumped.stderr[-2000:]
        grid = Grid()
        grid.feed(dumped.stdout)
        assert grid.cells == {"DC0_C0_RP0_VM0": {"gold": "covered"},
                              "DC0_C0_RP0_VM1": {"gold": "covered"}}
        assert "Last runs" in dumped.stdout and "Findings" in dumped.stdout

        shot = tmp_path / "status-page.png"
        taken = chromium(f"--screenshot={shot}", "--window-size=1100,800", base + "/")
        assert taken.returncode == 0, taken.stderr[-2000:]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("VMKEEP_UPDATE_SCREENSHOT"):
            shutil.copy(shot, REPO / "docs" / "images" / "status-page.png")


def test_json_logs_are_one_object_a_line_with_run_vcenter_vm_action_and_point(
    estate: Estate,
) -> None:
    log = io.StringIO()
    code = Controller(run_args(estate, "--once", "--log-format", "json",
                               "--policies", str(estate.policies)), log=log).run()
    assert code == 0, log.getvalue()
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    actions = [line for line in lines if "action" in line]
    assert {(a["vm"], a["action"]) for a in actions} == {
        (vm, kind) for vm in VMS for kind in ("snapshot.create", "export.create")}
    run_id = next(line["runId"] for line in lines if line.get("result") == "ok")
    assert all(a["runId"] == run_id and a["vcenter"] == "sim" and a["point"].startswith("gold/")
               for a in actions)
    assert all("time" in line and "msg" in line for line in lines)


def test_the_per_tick_text_output_is_a_summary_not_the_plan(
    estate: Estate, capsys: pytest.CaptureFixture[str],
) -> None:
    log = io.StringIO()
    code = Controller(run_args(estate, "--once", "--policies", str(estate.policies)),
                      log=log).run()
    assert code == 0
    assert capsys.readouterr().out == ""  # apply's plan and summary are not printed
    assert "reconcile done: ok in" in log.getvalue()
    assert "(4 done)" not in log.getvalue() and "(6 done)" in log.getvalue()


def test_scheduled_verification_in_the_controller_reports_a_damaged_point_everywhere(
    estate: Estate,
) -> None:
    """`exports.verify: {every: 1d}`; the controller's clock is injected (no sleeping)."""
    policy = estate.policies / "gold.yaml"
    policy.write_text(policy.read_text() + "    verify: {every: 1d}\n")
    victim = estate.vms()["DC0_C0_RP0_VM1"]
    estate.fill_disk(victim, noise("victim disk", 1 << 20))
    clock = [time.time()]
    log = io.StringIO()
    controller = Controller(run_args(estate, "--policies", str(estate.policies),
                                     "--listen", "127.0.0.1:0"), log=log,
                            wall=lambda: clock[0])
    controller.ops.start()
    try:
        base = listening(log)
        assert controller.reconcile("start") == 0, log.getvalue()
        assert controller.metrics.verified_points["ok"] == 0  # not yet half a period old
        clock[0] += 13 * 3600
        controller.reconcile("interval")
        assert controller.metrics.verified_points["ok"] == 3, log.getvalue()

        point = next(p.id for p in estate.points() if p.vm.name == victim.name)
        with Repository.open(estate.target, create=False) as repo:
            disk = repo.manifest(point).disks[0].name
            flip_chunk(repo, repo.open_disk(point, disk).ids[0])
        clock[0] += 13 * 3600
        controller.reconcile("interval")
        assert controller.metrics.verified_points["damaged"] == 1, log.getvalue()

        status = json.loads(get(base, "/api/status")[2])
        assert [d["pointId"] for d in status["verification"]["damaged"]] == [point]
        assert any("damaged" in a for a in status["attention"])
        metrics = get(base, "/metrics")[2].decode()
        assert ({"target": "local"}, 1.0) in samples(metrics, "vmkeep_points_damaged")
        page = get(base, "/")[2].decode()
        assert html.escape(point) in page.split('class="damaged"', 1)[1]
    finally:
        controller.ops.stop()
    assert f"DAMAGED export point {point}" in log.getvalue()
    checked = estate.vmkeep("status", "--check", "--now", DAY1,
                            "--policies", str(estate.policies))
    assert checked.code == 3 and f"DAMAGED local:{point}" in checked.out


def test_a_real_vmkeep_run_process_tells_its_free_port_and_serves_on_it(estate: Estate) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "run", "--config", str(estate.config),
         "--policies", str(estate.policies), "--now", DAY1, "--listen", "127.0.0.1:0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "VMKEEP_SIM_PASSWORD": estate.sim.password},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"vmkeep run: listening on (http://127\.0\.0\.1:\d+)/\n", line)
        assert match, line
        wait_until(lambda: get(match.group(1), "/readyz")[0] == 200, timeout=120)
        assert get(match.group(1), "/healthz")[0] == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "listening on http://127.0.0.1:" in err and estate.sim.password not in err

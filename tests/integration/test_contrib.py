"""contrib/: the systemd units pass `systemd-analyze verify`; the Grafana dashboard and the
alert rules in docs/operations.md use only metrics vmkeep exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

UNITS = REPO / "contrib" / "systemd"
METRIC = re.compile(r"\bvmkeep_[a-z_]+")


def documented_metrics() -> set[str]:
    """Metric names in the tables of docs/controller.md (histogram and counter series too)."""
    text = (REPO / "docs" / "controller.md").read_text(encoding="utf-8")
    names = set()
    for line in text.splitlines():
        if line.startswith("| `vmkeep_"):
            names.update(METRIC.findall(line.split("|")[1]))
    series = set(names)
    for name in names:
        series.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    return series


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (no systemd on this machine)")
def test_the_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    vmkeep = shutil.which("vmkeep") or str(REPO / ".venv" / "bin" / "vmkeep")
    assert Path(vmkeep).is_file()
    for unit in UNITS.iterdir():  # ExecStart pointed at this checkout's vmkeep
        text = unit.read_text(encoding="utf-8").replace("/opt/vmkeep/bin/vmkeep", vmkeep)
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no",
         *(str(tmp_path / u.name) for u in sorted(UNITS.iterdir()))],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    ours = [line for line in done.stderr.splitlines() if "vmkeep" in line]
    assert ours == []  # no warning (unknown keys, bad values) about our units


def test_the_service_is_hardened_and_takes_the_password_as_a_credential() -> None:
    service = (UNITS / "vmkeep.service").read_text(encoding="utf-8")
    for line in ("DynamicUser=yes", "ProtectSystem=strict", "NoNewPrivileges=yes",
                 "LoadCredential=vcenter-password:", "--listen 127.0.0.1:9469"):
        assert line in service
    assert "Unit=vmkeep-once.service" in (UNITS / "vmkeep-once.timer").read_text()
    assert "run --once" in (UNITS / "vmkeep-once.service").read_text()


def test_the_grafana_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads((REPO / "contrib" / "grafana" / "vmkeep-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used and used <= documented_metrics(), used - documented_metrics()
    assert {"vmkeep_vm_coverage", "vmkeep_vm_last_point_timestamp_seconds",
            "vmkeep_points_damaged"} <= used


def test_the_alert_rule_examples_parse_and_use_only_exported_metrics() -> None:
    text = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    block = text.split("### Alert rules", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    rules = yaml.safe_load(block)["groups"][0]["rules"]
    used = {name for rule in rules for name in METRIC.findall(rule["expr"])}
    assert len(rules) >= 5 and used <= documented_metrics(), used - documented_metrics()

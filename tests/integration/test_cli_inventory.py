"""`vmkeep inventory` end to end: host config file → simulator → table or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from reconciler.cli import main

from .conftest import REPO, Simulator, StartVcsim

pytestmark = pytest.mark.vcsim


def host_config(tmp_path: Path, **vcenters: Simulator) -> Path:
    lines = ["vcenters:"]
    for name, sim in vcenters.items():
        lines += [
            f"  {name}:",
            f'    url: "{sim.url}"',
            f"    username: {sim.username}",
            f"    passwordEnv: VMKEEP_{name.upper()}_PASSWORD",
            f"    caFile: {sim.ca_file}",
        ]
    lines += [
        "targets:",
        f"  local: {{type: directory, path: {tmp_path / 'target'}}}",
        f"state: {tmp_path / 'vmkeep.db'}",
        "limits: {maxDeletesPerRun: 50, concurrentExports: 2, concurrentSnapshotsPerHost: 2}",
        "hooks: {}",
    ]
    path = tmp_path / "vmkeep.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def vm_schema() -> dict[str, object]:
    """The VM object of the observed-state schema, which inventory's VMs share."""
    schema = json.loads((REPO / "schemas" / "state.schema.json").read_text(encoding="utf-8"))
    return {"$defs": schema["$defs"], "$ref": "#/$defs/vm"}


def test_json_lists_every_vm_in_the_state_schema_shape(
    vcsim_small: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VMKEEP_SIM_PASSWORD", vcsim_small.password)
    config = host_config(tmp_path, sim=vcsim_small)

    assert main(["inventory", "--config", str(config), "-o", "json"]) == 0

    document = json.loads(capsys.readouterr().out)
    assert document["formatVersion"] == 1
    assert document["capturedAt"].endswith("Z")
    sim = document["vcenters"]["sim"]
    assert sim["url"] == vcsim_small.url and sim["error"] is None and sim["tagsAvailable"]
    assert len(sim["vms"]) == vcsim_small.vm_count
    validator = jsonschema.Draft202012Validator(vm_schema())
    for vm in sim["vms"]:
        validator.validate(vm)
    first = sim["vms"][0]
    assert first["folder"] == "/DC0/vm" and first["powerState"] == "poweredOn"
    assert first["disks"][0]["capacityBytes"] == 1048576


def test_text_is_a_table_per_vcenter_and_a_failing_vcenter_gives_exit_1(
    vcsim_small: Simulator, start_vcsim: StartVcsim, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    other = start_vcsim(vms=2)
    monkeypatch.setenv("VMKEEP_SIM_PASSWORD", vcsim_small.password)
    monkeypatch.setenv("VMKEEP_OTHER_PASSWORD", "wrong")
    config = host_config(tmp_path, sim=vcsim_small, other=other)

    assert main(["inventory", "--config", str(config)]) == 1

    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(f"vCenter other ({other.url}): not read: vCenter 'other': login")
    assert lines[2] == f"vCenter sim ({vcsim_small.url}): 20 VMs, tags read"
    assert lines[3].split() == [
        "NAME", "FOLDER", "POWER", "TOOLS", "HOST", "DISKS", "SNAPSHOTS", "CBT", "LABELS",
    ]
    assert lines[4].split()[:4] == ["DC0_C0_RP0_VM0", "/DC0/vm", "on", "-"]
    assert "1 (1 MiB)" in lines[4]
    assert len([line for line in lines if line.startswith("DC0_")]) == 20
    assert "vmkeep: error: vCenter 'other': login as 'vmkeep'" in err
    assert "$VMKEEP_OTHER_PASSWORD" in err and other.password not in err + out

    # --vcenter picks one; the other one is not contacted.
    assert main(["inventory", "--config", str(config), "--vcenter", "sim"]) == 0
    assert "vCenter other" not in capsys.readouterr().out


def test_an_unknown_vcenter_name_is_a_usage_error(
    vcsim_small: Simulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = host_config(tmp_path, sim=vcsim_small)
    assert main(["inventory", "--config", str(config), "--vcenter", "nope"]) == 1
    assert capsys.readouterr().err.strip() == (
        "vmkeep: error: no vCenter named 'nope' in the host config (known: sim)"
    )


def test_a_missing_password_variable_is_named(
    vcsim_small: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("VMKEEP_SIM_PASSWORD", raising=False)
    config = host_config(tmp_path, sim=vcsim_small)
    assert main(["inventory", "--config", str(config), "-o", "json"]) == 1
    document = json.loads(capsys.readouterr().out)
    assert "VMKEEP_SIM_PASSWORD is not set" in document["vcenters"]["sim"]["error"]

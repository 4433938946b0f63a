"""One vCenter that cannot be read never stops the capture of the others — also when the
reason is a bug in vmkeep's reading of it rather than a vCenter error."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler import hostconfig, wiring
from reconciler.errors import VCenterError
from reconciler.model import Inventory, VCenterConfig

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def config(tmp_path: Path) -> hostconfig.HostConfig:
    text = f"""
vcenters:
  a: {{url: "https://a.example.com/sdk", username: u, passwordEnv: VMKEEP_TEST_PW}}
  b: {{url: "https://b.example.com/sdk", username: u, passwordEnv: VMKEEP_TEST_PW}}
  c: {{url: "https://c.example.com/sdk", username: u, passwordEnv: VMKEEP_TEST_PW}}
targets:
  local: {{type: directory, path: "{tmp_path / 'target'}"}}
state: "{tmp_path / 'state.db'}"
"""
    return hostconfig.parse(text.encode(), str(tmp_path / "vmkeep.yaml"))


def read(name: str, vc: VCenterConfig, password: str) -> Inventory:
    if name == "a":
        raise VCenterError(name, "connection refused")
    if name == "b":
        raise KeyError("summary.runtime")  # a reader bug on some odd answer
    return Inventory(name, ())


def test_a_reader_bug_on_one_vcenter_leaves_it_unobserved_and_the_others_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VMKEEP_TEST_PW", "secret")
    state = wiring.capture(config(tmp_path), NOW, read)
    assert set(state.vcenters) == {"c"}
    assert state.unobserved["a"] == "connection refused"
    assert state.unobserved["b"].startswith("internal error reading it (a bug in vmkeep")
    assert "KeyError" in state.unobserved["b"]
    err = capsys.readouterr().err
    assert "vCenter 'b' could not be observed" in err and "Traceback" not in err

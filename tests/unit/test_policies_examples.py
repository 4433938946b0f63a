"""The example policies in `policies/` are valid, carry the schema modeline and convert fully."""

from __future__ import annotations

import json
from datetime import time
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from reconciler import hostconfig, policies
from reconciler.adapters.policydir import PolicyDirectory
from reconciler.errors import InputError
from reconciler.model import ConsistencyMode, Fallback, Window
from reconciler.ports import PolicyFile

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "policies").rglob("*.y*ml"))
MODELINE = "# yaml-language-server: $schema=../schemas/policy.schema.json"


def example_set(config: bool = True):
    files = list(PolicyDirectory([ROOT / "policies"]).files())
    host = hostconfig.parse((ROOT / "docs/vmkeep.example.yaml").read_bytes(), "vmkeep.yaml")
    return policies.parse_policies(files, host if config else None, revision="abc123")


def walk_schema(node: object, where: str) -> None:
    """Every object with properties is closed and every property has a description."""
    if isinstance(node, dict):
        if "properties" in node:
            assert node.get("additionalProperties") is False, where
            for key, sub in node["properties"].items():
                assert "description" in sub, f"{where}.{key}"
        for key, sub in node.items():
            walk_schema(sub, f"{where}.{key}")
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            walk_schema(sub, f"{where}[{index}]")


@pytest.mark.parametrize("name", ["policy.schema.json", "config.schema.json"])
def test_schemas_are_draft_2020_12_closed_and_described_everywhere(name: str) -> None:
    schema = json.loads((ROOT / "schemas" / name).read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("2020-12/schema")
    walk_schema(schema, name)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_example_policy_carries_the_schema_modeline(path: Path) -> None:
    assert path.read_text().splitlines()[0] == MODELINE


def test_the_example_policies_are_valid_against_the_example_host_config() -> None:
    policy_set = example_set()
    assert policy_set.revision == "abc123"
    assert len(policy_set.policies) >= 5
    assert [p.name for p in policy_set.policies] == sorted(p.name for p in policy_set.policies)


def test_example_policies_convert_every_field() -> None:
    by_name = example_set().by_name()
    db = by_name["prod-databases"]
    assert db.include.names == ("db-*", "pg-*") and db.include.folders == ("/DC1/vm/prod",)
    assert db.exclude is not None and db.exclude.names == ("*-test", "*-scratch")
    assert db.schedule.timezone == "Europe/Berlin"
    assert db.schedule.window == Window(time(22, 0), time(5, 0))
    assert db.consistency.mode is ConsistencyMode.QUIESCE
    assert db.consistency.pre_hooks == ("flush-databases",)
    assert db.snapshots is not None and db.snapshots.keep.last == 2
    assert str(db.snapshots.max_age) == "48h"
    assert db.exports is not None and db.exports.keep.yearly == 2
    assert db.labels == {"team": "dba", "tier": "gold"}
    assert db.source.path.endswith("databases.yaml") and db.source.line == 6
    files = by_name["file-servers"]
    assert files.consistency.mode is ConsistencyMode.POWEROFF
    assert str(files.consistency.shutdown_timeout) == "15m"
    assert files.exports is not None and files.exports.keep.yearly == -1
    branch = by_name["branch-file-server"]
    assert branch.consistency.fallback is Fallback.CRASH
    assert branch.exports is not None and str(branch.exports.keep.within_weekly) == "3mo"
    assert by_name["lab-hourly"].schedule.window is None


def test_defaults_fill_what_a_minimal_policy_leaves_out() -> None:
    text = b"""apiVersion: vmkeep/v1
kind: BackupPolicy
metadata: {name: minimal}
spec:
  vcenter: prod
  selector: {include: {names: ["*"]}}
  schedule: {cron: "0  3 * * *"}
  snapshots: {keep: {last: 1}}
"""
    policy = policies.parse_policies([PolicyFile("m.yaml", text)]).policies[0]
    assert policy.schedule.timezone == "UTC" and policy.schedule.cron == "0 3 * * *"
    assert policy.consistency.mode is ConsistencyMode.CRASH
    assert policy.consistency.fallback is Fallback.FAIL
    assert str(policy.consistency.shutdown_timeout) == "10m"
    assert policy.on_policy_removal == "retain" and policy.exports is None


def test_parse_policies_raises_every_problem_of_every_file_sorted() -> None:
    bad = PolicyFile("b.yaml", b"kind: BackupPolicy\n")
    worse = PolicyFile("a.yaml", b"kind: [\n")
    with pytest.raises(InputError) as caught:
        policies.parse_policies([bad, worse])
    paths = [d.path for d in caught.value.diagnostics]
    assert paths == sorted(paths) and set(paths) == {"a.yaml", "b.yaml"}
    assert len(caught.value.diagnostics) >= 4


def test_references_are_only_checked_when_a_host_config_is_given() -> None:
    text = (ROOT / "policies/lab.yaml").read_bytes().replace(b"vcenter: lab", b"vcenter: nope")
    assert policies.check_policies([PolicyFile("x.yaml", text)]).valid
    host = hostconfig.parse((ROOT / "docs/vmkeep.example.yaml").read_bytes(), "vmkeep.yaml")
    report = policies.check_policies([PolicyFile("x.yaml", text)], host)
    assert [d.message for d in report.diagnostics] == ["unknown vCenter `nope`"]

"""A vCenter that could not be observed: its VMs are unknown, never missing or gone, and
nothing is created or deleted for them — the other vCenters are planned as usual."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from jsonschema import Draft202012Validator

from reconciler.model import (
    ActionKind,
    CoverageState,
    KeepRules,
    Limits,
    ObservedState,
    PolicySet,
    VMRef,
)
from reconciler.observed import state_from_json, state_to_json
from reconciler.planner import plan
from reconciler.render import plan_from_json, plan_to_json, render_text
from tests.unit.estate import TARGET, at, export_point, policy, state, uuid_of, vm

NOW = at("2026-11-25 12:00")
SLOT = at("2026-11-25 01:00")

REASON = "login refused (InvalidLogin): check the user name and password"
UNSEEN = VMRef("db1", uuid_of("db1"))


def estate_with_an_unobserved_vcenter() -> tuple[PolicySet, ObservedState]:
    """vc1 (observed) holds web1; 'broken' could not be read. Its policy `dark` has six
    daily exports of db1, more than its keep rules allow, and an incomplete one."""
    seen = policy(export_keep=KeepRules(daily=7))
    dark = replace(policy("dark", export_keep=KeepRules(daily=2)), vcenter="broken")
    exports = [export_point("dark", UNSEEN, SLOT - timedelta(days=d)) for d in range(1, 7)]
    exports.append(export_point("dark", UNSEEN, SLOT, complete=False))
    observed = replace(state([vm("web1")], exports), unobserved={"broken": REASON})
    return PolicySet((seen, dark)), observed


def test_an_unobserved_vcenters_vms_are_unknown_and_nothing_is_decided_for_them() -> None:
    policies, observed = estate_with_an_unobserved_vcenter()
    result = plan(policies, observed, NOW)
    assert [(a.kind, a.vm.name) for a in result.actions] == [
        (ActionKind.EXPORT_CREATE, "web1")]
    assert result.held == ()
    dark = [c for c in result.coverage if c.policy == "dark"]
    assert [(c.vm, c.state, c.vcenter) for c in dark] == [
        (UNSEEN, CoverageState.UNKNOWN, "broken")]
    assert dark[0].last_slot == SLOT - timedelta(days=1)
    assert result.unobserved == {"broken": REASON}
    codes = {w.code for w in result.warnings}
    assert "vcenter-unobserved" in codes
    assert not codes & {"gone-vm-points", "orphan-points", "unselected-vm-points"}


def test_no_coverage_is_missing_because_a_vcenter_could_not_be_observed() -> None:
    policies, observed = estate_with_an_unobserved_vcenter()
    result = plan(policies, observed, NOW + timedelta(days=3))
    assert CoverageState.MISSING not in {c.state for c in result.coverage}


def test_the_text_and_json_plans_name_the_unobserved_vcenter_and_the_unknown_coverage() -> None:
    policies, observed = estate_with_an_unobserved_vcenter()
    result = plan(policies, observed, NOW)
    text = render_text(result)
    assert f"UNOBSERVED: vCenter 'broken' could not be observed: {REASON}." in text
    assert "  unknown  broken/db1 [dark]" in text
    assert ", 1 unknown; " in text
    document = plan_to_json(result)
    assert document["unobservedVcenters"] == {"broken": REASON}
    assert document["summary"]["unknown"] == 1
    assert plan_from_json(document) == result


def test_the_observed_state_file_keeps_the_unobserved_vcenters() -> None:
    _, observed = estate_with_an_unobserved_vcenter()
    document = state_to_json(observed)
    assert document["unobserved"] == {"broken": REASON}
    assert state_from_json(document) == observed
    assert TARGET in document["targets"]


def test_plans_and_states_with_unobserved_vcenters_and_held_deletions_match_the_schemas(
) -> None:
    policies, observed = estate_with_an_unobserved_vcenter()
    root = Path(__file__).resolve().parents[2] / "schemas"
    plan_schema = Draft202012Validator(json.loads((root / "plan.schema.json").read_text()))
    state_schema = Draft202012Validator(json.loads((root / "state.schema.json").read_text()))
    seen = replace(observed, targets={TARGET: tuple(
        export_point("gold", vm("web1"), SLOT - timedelta(days=d)) for d in range(10))})
    held = plan(policies, seen, NOW, Limits(max_deletes_per_run=1))
    assert held.held and held.unobserved
    plan_schema.validate(plan_to_json(held))
    state_schema.validate(state_to_json(seen))

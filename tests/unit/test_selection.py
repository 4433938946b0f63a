"""Selection over a whole inventory agrees with the per-VM test."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reconciler.model import Selector
from reconciler.selection import Candidates, matches, select
from tests.unit.estate import policy, vm

VMS = [
    vm("web1", tags=("backup/gold", "env/prod")),
    vm("web2", folder="/DC0/vm/test", tags=("backup/gold",)),
    vm("db1", attributes={"owner": "dba"}),
    vm("db2", folder="/DC0/vm/prod/eu", attributes={"owner": "ops"}),
    replace(vm("web3"), vcenter="vc2"),
]


@pytest.mark.parametrize(
    ("include", "exclude", "selected"),
    [
        (Selector(), None, ["web1", "web2", "db1", "db2"]),
        (Selector(names=("web*", "db1")), None, ["web1", "web2", "db1"]),
        (Selector(names=("db?", "web[!1]")), None, ["web2", "db1", "db2"]),
        (Selector(names=("[dw]*1", "x*")), None, ["web1", "db1"]),
        (Selector(names=("DB*", "web")), None, []),
        (Selector(folders=("/DC0/vm/prod/",)), None, ["web1", "db1", "db2"]),
        (Selector(tags=("backup/gold", "env/prod")), None, ["web1"]),
        (Selector(attributes={"owner": "dba"}), None, ["db1"]),
        (Selector(names=("*",)), Selector(names=("web2",)), ["web1", "db1", "db2"]),
        (Selector(names=("*",)), Selector(), []),
        (
            Selector(names=("d*",), folders=("/DC0/vm/prod",)),
            Selector(tags=("x/y",)),
            ["db1", "db2"],
        ),
    ],
)
def test_a_policy_selects_the_vms_of_its_vcenter_its_selectors_match_in_order(
    include, exclude, selected
) -> None:
    pol = replace(policy(), include=include, exclude=exclude)
    assert [v.name for v in select(pol, Candidates(VMS))] == selected
    assert [v.name for v in VMS if matches(pol, v)] == selected

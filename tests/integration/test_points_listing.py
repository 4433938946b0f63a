"""`vmkeep points` and point selection by VM name against the simulator, a real target and a
real state file: the points `apply` made, as snapshots and as exports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .apply_world import Estate
from .conftest import StartVcsim

pytestmark = pytest.mark.vcsim

DAY1 = "2026-11-25T01:30:00Z"
DAY2 = "2026-11-26T01:30:00Z"
MiB = 1 << 20


@pytest.fixture
def estate(start_vcsim: StartVcsim, tmp_path: Path) -> Iterator[Estate]:
    world = Estate(start_vcsim(vms=2), tmp_path)
    world.set_policy(names=["DC0_C0_RP0_VM0"])
    yield world


def test_points_lists_snapshots_and_exports_newest_first_with_their_disks(estate):
    vm = estate.vms()["DC0_C0_RP0_VM0"]
    assert estate.apply(DAY1).code == 0
    assert estate.apply(DAY2).code == 0
    run = estate.vmkeep("points", "-o", "json")
    assert run.code == 0, run.err
    listed = run.json()["points"]
    assert [(p["slot"], p["kind"]) for p in listed] == [
        ("2026-11-26T01:00:00Z", "export"), ("2026-11-26T01:00:00Z", "snapshot"),
        ("2026-11-25T01:00:00Z", "export"), ("2026-11-25T01:00:00Z", "snapshot")]
    newest = listed[0]
    assert newest["id"] == f"gold/{vm.instance_uuid}/20261126T010000Z"
    assert newest["vm"] == {"name": vm.name, "instanceUuid": vm.instance_uuid}
    assert (newest["policy"], newest["vcenter"], newest["target"], newest["consistency"]) == (
        "gold", "sim", "local", "crash")
    assert newest["disks"] == [{"name": f"disk-{d.key}", "capacityBytes": d.capacity_bytes}
                               for d in vm.disks]
    assert listed[1]["target"] is None and listed[1]["snapshotId"]
    assert newest["proxy"] is None  # written by the embedded thread pool, not an engine worker

    exports = estate.vmkeep("points", "--kind", "export", "--vm", vm.instance_uuid, "-o", "json")
    assert [p["kind"] for p in exports.json()["points"]] == ["export", "export"]
    text = estate.vmkeep("points", "--vm", vm.name, "--kind", "snapshot")
    assert text.code == 0 and text.out.count("snapshot  ") == 2
    assert "2 restore point(s)" in text.out
    assert estate.vmkeep("points", "--vm", "nothing").out.strip() == "no restore points"


def test_restore_to_a_directory_finds_the_point_by_vm_name_and_time(estate):
    vm = estate.vms()["DC0_C0_RP0_VM0"]
    estate.grow_disk(vm, 2 * MiB)
    estate.fill_disk(vm, b"day1" * (MiB // 2))
    assert estate.apply(DAY1).code == 0
    estate.fill_disk(vm, b"day2" * (MiB // 2))
    assert estate.apply(DAY2).code == 0
    disk = f"disk-{vm.disks[0].key}"
    early = estate.vmkeep("restore", "--vm", vm.name, "--at", "2026-11-25T12:00:00Z",
                          "--to", str(estate.root / "early"), "-o", "json")
    assert early.code == 0, early.err
    assert early.json()["point"] == f"gold/{vm.instance_uuid}/20261125T010000Z"
    latest = estate.vmkeep("restore", "--vm", vm.name, "--to", str(estate.root / "latest"),
                           "-o", "json")
    assert latest.json()["point"] == f"gold/{vm.instance_uuid}/20261126T010000Z"
    image = {d["name"]: d["image"] for d in latest.json()["disks"]}[disk]
    assert (estate.root / "latest" / image).read_bytes() == b"day2" * (MiB // 2)

    unknown = estate.vmkeep("restore", "--vm", "DC0_C0_RP0_VM9", "--to",
                            str(estate.root / "x"))
    assert unknown.code == 1 and "Traceback" not in unknown.err
    assert unknown.err.strip() == (
        "vmkeep: error: no restore point of a VM named 'DC0_C0_RP0_VM9'; VMs with points: "
        f"{vm.name} ({vm.instance_uuid})")
    assert not (estate.root / "x").exists()


def test_a_vcenter_that_cannot_be_read_is_a_warning_and_the_exports_are_still_listed(estate):
    assert estate.apply(DAY1).code == 0
    text = estate.config.read_text()
    estate.config.write_text(text.replace("targets:", (
        '  gone:\n    url: "https://127.0.0.2:9/sdk"\n    username: x\n'
        f'    passwordEnv: VMKEEP_SIM_PASSWORD\n    caFile: "{estate.sim.ca_file}"\n'
        "targets:"), 1))
    run = estate.vmkeep("points", "-o", "json")
    assert run.code == 0, run.err
    assert "vCenter 'gone'" in run.err and "its snapshot points are not listed" in run.err
    assert sorted(p["kind"] for p in run.json()["points"]) == ["export", "snapshot"]
    chosen = estate.vmkeep("restore", "--vm", "DC0_C0_RP0_VM0", "--vcenter", "gone",
                           "--plan")
    assert chosen.code == 1 and "Traceback" not in chosen.err
    assert chosen.err.startswith("vmkeep: error: vCenter 'gone'")

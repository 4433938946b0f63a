"""The plan of a restore into vCenter: what it makes, where, and every reason to refuse."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from reconciler.model import PointKind, VMRef
from reconciler.points import Point, PointDisk
from reconciler.ports import DatastoreSpace, ExistingVM, Placement, RestoreSurvey
from reconciler.restore_plan import PlanFacts, RestoreRequest, decide
from reconciler.vmconfig import ControllerSpec, DiskSpec, NicSpec, VMConfig

GiB = 1 << 30
UUID = "5003aaaa-0000-0000-0000-000000000001"
POINT = Point(id=f"gold/{UUID}/20261125T010000Z", kind=PointKind.EXPORT, policy="gold",
              vm=VMRef("web01", UUID), slot=datetime(2026, 11, 25, 1, tzinfo=UTC),
              vcenter="vc1", target="nas", disks=(PointDisk("disk-2000", 40 * GiB),))
CONFIG = VMConfig(
    name="web01", instance_uuid=UUID, bios_uuid="4203-bios", guest_id="debian12_64Guest",
    firmware="efi", hardware_version="vmx-19", num_cpu=4, cores_per_socket=2, memory_mb=8192,
    datacenter="DC0", folder="/DC0/vm/prod", resource_pool="Resources", host="esx1",
    datastore="ds1",
    controllers=(ControllerSpec(1000, "ParaVirtualSCSIController", 0),),
    disks=(DiskSpec(2000, 1000, 0, 40 * GiB, "[ds1] web01/web01-000001.vmdk"),),
    nics=(NicSpec(4000, "VirtualVmxnet3", "prod-net", "00:50:56:aa:bb:cc", "assigned", 7),),
)
PLACE = Placement("DC0", "/DC0/vm/prod", "group-v1", "C1/Resources", "resgroup-1", "esx1",
                  "host-1")
SURVEY = RestoreSurvey(
    vcenter="vc1", placement=PLACE,
    datastores={"ds1": DatastoreSpace("ds1", 100 * GiB, 500 * GiB),
                "ds2": DatastoreSpace("ds2", 5 * GiB, 500 * GiB)},
    networks=("prod-net", "dr-net"), max_hardware=19, named=(), original=None)
FACTS = PlanFacts(now=datetime(2026, 12, 7, 4, 0, tzinfo=UTC), token="abcd1234",
                  directory="web01", data_bytes={"disk-2000": 12 * GiB})
ORIGINAL = ExistingVM("vm-42", "web01", UUID, "poweredOn")


def plan(survey: RestoreSurvey = SURVEY, facts: PlanFacts = FACTS, config: VMConfig | None =
         CONFIG, **request: object):
    return decide(RestoreRequest(point=POINT, vcenter=str(request.pop("vcenter", "vc1")),
                                 **request),  # type: ignore[arg-type]
                  config, survey, facts)


def test_a_vm_that_is_gone_comes_back_in_its_place_with_its_identity_and_thin_disks():
    p = plan()
    assert p.proceeds and p.mode == "import"
    assert (p.name, p.temporary) == ("web01", "web01.vmkeep-restore-abcd1234")
    assert p.keep_identity and p.instance_uuid == UUID
    assert [(d.key, d.file) for d in p.disks] == [(2000, "[ds1] web01/web01.vmdk")]
    assert p.space == (("ds1", 100 * GiB, 88 * GiB),)  # only the data is written: thin
    assert p.networks == (("prod-net", "prod-net"),)


def test_next_to_its_original_or_in_another_vcenter_the_vm_gets_a_new_identity():
    assert not plan(survey=replace(SURVEY, original=ORIGINAL), name="web01-copy").keep_identity
    assert not plan(vcenter="vc2").keep_identity


def test_a_name_in_use_is_refused_unless_replace_renames_that_vm_aside():
    taken = replace(SURVEY, named=(ORIGINAL,), original=ORIGINAL)
    assert plan(survey=taken).refusals == (
        "a VM named 'web01' exists in vCenter 'vc1' (vm-42): add --replace to power it off "
        "and rename it aside, or give another --name",)
    replacing = plan(survey=taken, replace=True)
    assert replacing.proceeds and replacing.replaced == ORIGINAL
    assert replacing.aside == "web01.replaced-20261207T040000Z"
    assert not replacing.keep_identity


def test_a_vm_already_restored_from_this_point_means_nothing_to_do():
    done = ExistingVM("vm-77", "web01", "other", "poweredOff", restored_from=POINT.id)
    p = plan(survey=replace(SURVEY, named=(done,)))
    assert p.proceeds and p.already == done and p.disks == ()


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"datastore": "ds2"}, "datastore 'ds2' has 5.00 GiB free, the restore needs 12.00 GiB"),
        ({"datastore": "ds9"}, "no datastore 'ds9' in vCenter 'vc1' (datastores: ds1, ds2)"),
        ({"networks": {"prod-net": "lab"}},
         "--network prod-net=lab: network 'lab' does not exist in vCenter 'vc1' "
         "(networks: prod-net, dr-net)"),
        ({"networks": {"dmz": "dr-net"}},
         "--network dmz=dr-net: the VM had no NIC on network 'dmz' (it had: prod-net)"),
        ({"survey": replace(SURVEY, networks=("dr-net",))},
         "the VM's network 'prod-net' does not exist in vCenter 'vc1' (networks: dr-net); "
         "map it with --network prod-net=NEW"),
        ({"survey": replace(SURVEY, max_hardware=17)},
         "the VM has hardware version vmx-19, newer than the hosts of vCenter 'vc1' run "
         "(up to vmx-17)"),
        ({"config": None}, f"restore point {POINT.id} holds no saved VM configuration"),
        ({"facts": replace(FACTS, point_problems=("restore point x is damaged: y",))},
         "restore point x is damaged: y"),
        ({"survey": replace(SURVEY, placement=None, problems=("no VM folder '/x'",))},
         "no VM folder '/x'"),
        ({"revert": True}, "--revert needs a snapshot point"),
    ],
)
def test_every_reason_to_refuse_is_one_line(change, refusal):
    p = plan(**change)
    assert not p.proceeds
    assert any(r.startswith(refusal) for r in p.refusals), p.refusals
    assert all("\n" not in r for r in p.refusals)


def test_mapping_a_network_connects_the_nic_to_the_new_one():
    p = plan(networks={"prod-net": "dr-net"})
    assert p.proceeds and p.networks == (("prod-net", "dr-net"),)


def test_a_snapshot_point_clones_under_a_new_name_or_reverts_in_place():
    snap = replace(POINT, kind=PointKind.SNAPSHOT, target="", snapshot_id="snapshot-9")
    survey = replace(SURVEY, original=ORIGINAL, named=(ORIGINAL,))
    facts = replace(FACTS, snapshot_vm=ORIGINAL)

    def request(**kw: object) -> RestoreRequest:
        return RestoreRequest(point=snap, vcenter=str(kw.pop("vcenter", "vc1")),
                              **kw)  # type: ignore[arg-type]

    clone = decide(request(name="web01-then"), CONFIG, replace(SURVEY, original=ORIGINAL),
                   facts)
    assert clone.mode == "clone" and clone.proceeds and not clone.keep_identity
    same = decide(request(), CONFIG, survey, facts)
    assert "give --name NEW for a clone of the snapshot, or --revert" in " ".join(same.refusals)
    revert = decide(request(revert=True), CONFIG, survey, facts)
    assert revert.mode == "revert" and revert.proceeds
    assert revert.lost.startswith("everything written since 2026-11-25T01:00:00Z")
    elsewhere = decide(request(name="x", vcenter="vc2"), CONFIG, SURVEY, facts)
    assert "is a snapshot in vCenter 'vc1'; it cannot go to 'vc2'" in " ".join(
        elsewhere.refusals)


def test_the_plan_json_names_place_disks_space_and_network_mapping():
    body = plan().to_json()
    assert body["vm"] == {"name": "web01", "temporaryName": "web01.vmkeep-restore-abcd1234",
                          "instanceUuid": UUID, "keepsIdentity": True}
    assert body["placement"]["directory"] == "[ds1] web01"
    assert body["datastores"] == [{"name": "ds1", "freeBytesBefore": 100 * GiB,
                                   "freeBytesAfter": 88 * GiB}]
    assert body["proceeds"] is True and body["refusals"] == []

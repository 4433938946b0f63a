"""Pure conversion of PropertyCollector results into inventory values (no vCenter needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace as NS
from typing import Any

import pytest

from reconciler.adapters.vsphere_inventory import (
    RawObject,
    build_inventory,
    disk_slots,
    disks_of,
    folder_paths,
    snapshots_of,
)
from reconciler.model import Disk, PowerState


class Ref:
    """Stands in for a pyVmomi managed object reference."""

    def __init__(self, moid: str) -> None:
        self._moId = moid


def folder(moid: str, name: str, parent: str | None) -> RawObject:
    return RawObject("Folder", moid, {"name": name, "parent": Ref(parent) if parent else None})


def datacenter(moid: str, name: str, parent: str) -> RawObject:
    return RawObject("Datacenter", moid, {"name": name, "parent": Ref(parent)})


def disk(key: int, file: str, kb: int, *, in_bytes: int | None = None,
         change_id: str | None = None) -> NS:
    return NS(key=key, capacityInKB=kb, capacityInBytes=in_bytes,
              deviceInfo=NS(label=f"Hard disk {key - 1999}"),
              backing=NS(fileName=file, changeId=change_id))


def vm(moid: str, name: str, folder_id: str | None, **props: Any) -> RawObject:
    base: dict[str, Any] = {
        "name": name,
        "parent": Ref(folder_id) if folder_id else None,
        "config.uuid": f"bios-{moid}",
        "config.instanceUuid": f"inst-{moid}",
        "runtime.powerState": "poweredOn",
        "runtime.host": Ref("host-1"),
        "guest.toolsRunningStatus": "guestToolsRunning",
    }
    base.update(props)
    return RawObject("VirtualMachine", moid, base)


ESTATE = [
    # group-d1 (the root folder) is not in the view: it ends every path.
    folder("group-f1", "Europe", "group-d1"),
    datacenter("dc-1", "DC0", "group-f1"),
    folder("group-v1", "vm", "dc-1"),
    folder("group-v2", "prod", "group-v1"),
    folder("group-v3", "db", "group-v2"),
    RawObject("VirtualApp", "resgroup-v9", {"name": "app", "parentFolder": Ref("group-v2")}),
    RawObject("HostSystem", "host-1", {"name": "esx1.example.com"}),
]


def test_folder_paths_are_built_from_names_and_parents_up_to_the_root() -> None:
    assert folder_paths(ESTATE) == {
        "group-f1": "/Europe",
        "dc-1": "/Europe/DC0",
        "group-v1": "/Europe/DC0/vm",
        "group-v2": "/Europe/DC0/vm/prod",
        "group-v3": "/Europe/DC0/vm/prod/db",
        "resgroup-v9": "/Europe/DC0/vm/prod/app",
    }


def test_a_parent_cycle_does_not_loop_forever() -> None:
    paths = folder_paths([folder("a", "A", "b"), folder("b", "B", "a")])
    assert set(paths) == {"a", "b"}


def test_only_virtual_disks_with_a_backing_file_count_as_disks() -> None:
    devices = [
        NS(key=1000, deviceInfo=NS(label="SCSI controller 0")),  # no capacity: not a disk
        disk(2001, "[ds] vm/vm_1.vmdk", 2048, change_id="52 1a/4"),
        disk(2000, "[ds] vm/vm.vmdk", 1024, in_bytes=1024 * 1024 + 512),
        NS(key=2002, capacityInKB=10, capacityInBytes=None, backing=NS(fileName="")),
    ]
    assert disks_of(devices) == (
        Disk(2000, "Hard disk 1", "[ds] vm/vm.vmdk", 1024 * 1024 + 512),
        Disk(2001, "Hard disk 2", "[ds] vm/vm_1.vmdk", 2048 * 1024, change_id="52 1a/4"),
    )
    assert disks_of(None) == ()


def tree(moid: str, name: str, children: list[NS], *, minutes: int = 0,
         quiesced: bool = False) -> NS:
    created = datetime(2026, 1, 31, 12, 0, tzinfo=timezone(timedelta(hours=1)))
    return NS(snapshot=Ref(moid), id=int(moid.split("-")[1]), name=name,
              description=f"about {name}", createTime=created + timedelta(minutes=minutes),
              quiesced=quiesced, childSnapshotList=children)


def test_the_snapshot_tree_is_flattened_depth_first_with_parent_ids_and_utc_times() -> None:
    info = NS(rootSnapshotList=[
        tree("snapshot-1", "a", [
            tree("snapshot-2", "b", [tree("snapshot-3", "c", [], minutes=2)], minutes=1),
            tree("snapshot-4", "d", [], minutes=3, quiesced=True),
        ]),
        tree("snapshot-5", "e", [], minutes=4),
    ])
    snapshots = snapshots_of(info)
    assert [(s.id, s.name, s.parent_id) for s in snapshots] == [
        ("snapshot-1", "a", None),
        ("snapshot-2", "b", "snapshot-1"),
        ("snapshot-3", "c", "snapshot-2"),
        ("snapshot-4", "d", "snapshot-1"),
        ("snapshot-5", "e", None),
    ]
    assert snapshots[0].created_at == datetime(2026, 1, 31, 11, 0, tzinfo=UTC)
    assert snapshots[0].created_at.tzinfo is UTC
    assert [s.quiesced for s in snapshots] == [False, False, False, True, False]
    assert snapshots[1].description == "about b"
    assert snapshots_of(None) == ()


def test_build_inventory_fills_every_field_and_sorts_by_folder_and_name() -> None:
    fields = [NS(key=1, name="owner"), NS(key=2, name="tier")]
    objects = [
        *ESTATE,
        vm("vm-2", "web", "group-v2",
           customValue=[NS(key=1, value="a"), NS(key=1, value="b"), NS(key=9, value="x")],
           **{"config.hardware.device": [disk(2000, "[ds] web/web.vmdk", 1024)],
              "config.changeTrackingEnabled": True}),
        vm("vm-1", "db", "group-v3", **{"runtime.powerState": "poweredOff",
                                        "guest.toolsRunningStatus": "guestToolsNotRunning",
                                        "guest.toolsVersionStatus2": "guestToolsNotInstalled"}),
        vm("vm-3", "app-1", None, parentVApp=Ref("resgroup-v9")),
        vm("vm-4", "golden", "group-v1", **{"config.template": True}),
        vm("vm-5", "broken", "group-v1", **{"config.instanceUuid": None}),
    ]
    inventory, skipped = build_inventory("vc1", objects, fields, {"vm-2": ("env/prod",)})

    assert inventory.vcenter == "vc1" and inventory.tags_available is True
    assert [(v.folder, v.name) for v in inventory.vms] == [
        ("/Europe/DC0/vm/prod", "web"),
        ("/Europe/DC0/vm/prod/app", "app-1"),
        ("/Europe/DC0/vm/prod/db", "db"),
    ]
    web = inventory.vms[0]
    assert web.moref == "vm-2" and web.instance_uuid == "inst-vm-2"
    assert web.bios_uuid == "bios-vm-2" and web.host == "esx1.example.com"
    assert web.power_state is PowerState.ON and web.tools_running is True
    assert web.attributes == {"owner": "b"}  # last value wins; unknown keys are dropped
    assert web.tags == ("env/prod",)
    assert web.change_tracking is True
    assert [d.file for d in web.disks] == ["[ds] web/web.vmdk"]
    db = inventory.vms[2]
    assert db.power_state is PowerState.OFF and db.tools_running is False
    assert db.tools_status == "notInstalled" and web.tools_status == ""
    assert db.tags == () and db.attributes == {} and db.disks == ()
    assert skipped == ("broken (vm-5): no instance UUID",)  # templates are left out quietly


def test_without_tags_the_inventory_says_tags_are_not_available() -> None:
    inventory, _ = build_inventory("vc1", [*ESTATE, vm("vm-1", "a", "group-v1")])
    assert inventory.tags_available is False
    assert inventory.vms[0].tags == ()


@pytest.mark.parametrize("state", ["poweredOn", "poweredOff", "suspended"])
def test_every_power_state_maps(state: str) -> None:
    inventory, _ = build_inventory("vc", [vm("vm-1", "a", "x", **{"runtime.powerState": state})])
    assert inventory.vms[0].power_state.value == state


def test_disks_are_named_by_controller_type_bus_and_unit_as_nfc_leases_key_them() -> None:
    pvscsi = NS(key=1000, busNumber=1, _wsdlName="ParaVirtualSCSIController")
    ide = NS(key=200, busNumber=0, _wsdlName="VirtualIDEController")
    first = NS(key=2000, capacityInKB=1, controllerKey=1000, unitNumber=0)
    second = NS(key=2001, capacityInKB=1, controllerKey=1000, unitNumber=3)
    orphan = NS(key=2002, capacityInKB=1, controllerKey=9999, unitNumber=0)
    slots = disk_slots([ide, pvscsi, first, second, orphan, NS(key=4000)])
    assert slots == {2000: "ParaVirtualSCSIController1:0", 2001: "ParaVirtualSCSIController1:3"}


def test_a_delta_disk_names_its_parent_file() -> None:
    delta = disk(2000, "[ds] db/db-000001.vmdk", 1024)
    delta.backing.parent = NS(fileName="[ds] db/db.vmdk")
    flat = disk(2001, "[ds] db/db_1.vmdk", 1024)
    assert [(d.file, d.parent) for d in disks_of([delta, flat])] == [
        ("[ds] db/db-000001.vmdk", "[ds] db/db.vmdk"),
        ("[ds] db/db_1.vmdk", None),
    ]

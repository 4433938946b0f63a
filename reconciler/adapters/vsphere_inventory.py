"""Turn one PropertyCollector read into `Inventory` values: pure functions, no I/O.

`reconciler.adapters.vsphere` asks for exactly the properties listed here, wraps each returned
object as a `RawObject` and calls `build_inventory`. Property values are pyVmomi data objects,
read by attribute only (duck typing), so this module does not import pyVmomi and its tests
can use plain stand-ins. A managed object reference is anything with a `_moId`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reconciler.model import VM, Disk, Inventory, PowerState, Snapshot

__all__ = [
    "COMPUTE_KINDS",
    "COMPUTE_PROPERTIES",
    "CONTAINER_PROPERTIES",
    "DATASTORE_PROPERTIES",
    "HOST_PROPERTIES",
    "VM_PROPERTIES",
    "RawObject",
    "build_inventory",
    "disk_slots",
    "disks_of",
    "folder_paths",
    "snapshots_of",
]

#: What is read per VM — nothing else (each property costs server time and deserialisation).
VM_PROPERTIES: tuple[str, ...] = (
    "name",
    "parent",
    "parentVApp",
    "config.uuid",
    "config.instanceUuid",
    "config.template",
    "config.changeTrackingEnabled",
    "config.hardware.device",
    "runtime.powerState",
    "runtime.host",
    "guest.toolsRunningStatus",
    "guest.toolsVersionStatus2",
    "customValue",
    "snapshot",
)
#: Folders, datacenters and vApps: enough to build inventory paths client-side.
CONTAINER_PROPERTIES: dict[str, tuple[str, ...]] = {
    "Folder": ("name", "parent"),
    "Datacenter": ("name", "parent"),
    "VirtualApp": ("name", "parentFolder", "parentVApp"),
}
#: A host's parent is its ComputeResource: a cluster, or the standalone host's own one.
HOST_PROPERTIES: tuple[str, ...] = ("name", "parent")
#: Clusters and standalone compute resources: their name is a VM's `cluster`.
COMPUTE_KINDS: tuple[str, ...] = ("ComputeResource", "ClusterComputeResource")
COMPUTE_PROPERTIES: tuple[str, ...] = ("name",)
#: Datastores: their type decides how an export reads a disk (datastore HTTP or NFC).
DATASTORE_PROPERTIES: tuple[str, ...] = ("name", "summary.type")


@dataclass(frozen=True)
class RawObject:
    """One object of the result: managed object type and id, and the properties returned."""

    kind: str
    id: str
    props: Mapping[str, Any] = field(default_factory=dict)


def ref_id(ref: Any) -> str | None:
    """The id ("vm-42") of a managed object reference, or None if unset."""
    return getattr(ref, "_moId", None) if ref is not None else None


def folder_paths(objects: Iterable[RawObject]) -> dict[str, str]:
    """Inventory path of every folder, datacenter and vApp: "/DC0/vm/prod".

    The root folder ("Datacenters") is not in a ContainerView of itself, so a parent that is
    not among the objects ends a path.
    """
    nodes: dict[str, tuple[str, str | None]] = {}
    for obj in objects:
        if obj.kind in CONTAINER_PROPERTIES:
            parent = obj.props.get("parent") or obj.props.get("parentVApp")
            parent = parent or obj.props.get("parentFolder")
            nodes[obj.id] = (str(obj.props.get("name", obj.id)), ref_id(parent))
    paths: dict[str, str] = {}

    def path_of(node: str, seen: frozenset[str] = frozenset()) -> str:
        if node in paths:
            return paths[node]
        name, parent = nodes[node]
        prefix = path_of(parent, seen | {node}) if parent in nodes and parent not in seen else ""
        paths[node] = f"{prefix}/{name}"
        return paths[node]

    for node in nodes:
        path_of(node)
    return paths


def disks_of(devices: Iterable[Any] | None,
             datastore_types: Mapping[str, str] | None = None) -> tuple[Disk, ...]:
    """The virtual disks among a VM's devices (those with a capacity and a backing file);
    `datastore_types` maps datastore names to their summary.type."""
    disks = []
    for device in devices or ():
        if not hasattr(device, "capacityInKB"):
            continue  # not a VirtualDisk
        backing = getattr(device, "backing", None)
        file = getattr(backing, "fileName", None)
        if not file:
            continue  # e.g. a raw device mapping without a descriptor
        capacity = getattr(device, "capacityInBytes", None) or (device.capacityInKB or 0) * 1024
        info = getattr(device, "deviceInfo", None)
        disks.append(
            Disk(
                key=int(device.key),
                label=str(getattr(info, "label", None) or f"disk {device.key}"),
                file=str(file),
                capacity_bytes=int(capacity),
                change_id=getattr(backing, "changeId", None) or None,
                parent=getattr(getattr(backing, "parent", None), "fileName", None) or None,
                datastore_type=_datastore_type(backing, str(file), datastore_types or {}),
            )
        )
    return tuple(sorted(disks, key=lambda d: d.key))


def _datastore_type(backing: Any, file: str, types: Mapping[str, str]) -> str:
    """The type of a disk's datastore: by the backing's datastore reference, else by the name
    in "[vsanDatastore] vm/disk.vmdk" (names repeat across datacenters, references do not)."""
    ref = ref_id(getattr(backing, "datastore", None))
    if ref and ref in types:
        return types[ref]
    name = file[1:file.index("]")] if file.startswith("[") and "]" in file else ""
    return types.get(name, "")


def disk_slots(devices: Iterable[Any] | None) -> dict[int, str]:
    """Each virtual disk's controller slot, as NFC export device keys name it: disk key →
    "ParaVirtualSCSIController0:1" (controller type, its bus number, the disk's unit)."""
    devices = list(devices or ())
    controllers = {int(d.key): d for d in devices if hasattr(d, "busNumber")}
    slots: dict[int, str] = {}
    for device in devices:
        if not hasattr(device, "capacityInKB"):
            continue
        controller = controllers.get(int(getattr(device, "controllerKey", None) or -1))
        unit = int(getattr(device, "unitNumber", None) or 0)
        if controller is None:
            continue
        kind = getattr(controller, "_wsdlName", None) or type(controller).__name__
        slots[int(device.key)] = f"{kind.rsplit('.', 1)[-1]}{int(controller.busNumber)}:{unit}"
    return slots


def _walk_snapshots(trees: Sequence[Any] | None, parent: str | None) -> Iterator[Snapshot]:
    for tree in trees or ():
        snapshot_id = ref_id(tree.snapshot) or f"snapshot-id-{tree.id}"
        yield Snapshot(
            id=snapshot_id,
            name=str(tree.name),
            description=str(getattr(tree, "description", None) or ""),
            created_at=_utc(tree.createTime),
            quiesced=bool(getattr(tree, "quiesced", False)),
            parent_id=parent,
        )
        yield from _walk_snapshots(getattr(tree, "childSnapshotList", None), snapshot_id)


def snapshots_of(info: Any) -> tuple[Snapshot, ...]:
    """The snapshot tree, flattened depth-first (a parent always before its children)."""
    if info is None:
        return ()
    return tuple(_walk_snapshots(getattr(info, "rootSnapshotList", None), None))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _attributes(values: Iterable[Any] | None, fields: Mapping[int, str]) -> dict[str, str]:
    """Custom attribute name → value; of repeated keys the last wins, as vCenter shows it."""
    result: dict[str, str] = {}
    for value in values or ():
        name = fields.get(int(value.key))
        text = getattr(value, "value", None)
        if name is not None and isinstance(text, str):
            result[name] = text
    return dict(sorted(result.items()))


def _vm(
    obj: RawObject,
    vcenter: str,
    paths: Mapping[str, str],
    hosts: Mapping[str, str],
    fields: Mapping[int, str],
    tags: Mapping[str, tuple[str, ...]],
    datastore_types: Mapping[str, str] | None = None,
    clusters: Mapping[str, str] | None = None,
) -> VM | None:
    p = obj.props
    instance_uuid = p.get("config.instanceUuid")
    if not instance_uuid or p.get("config.template"):
        return None
    parent = ref_id(p.get("parent")) or ref_id(p.get("parentVApp"))
    power = p.get("runtime.powerState")
    return VM(
        vcenter=vcenter,
        name=str(p.get("name", obj.id)),
        instance_uuid=str(instance_uuid),
        moref=obj.id,
        folder=paths.get(parent or "", ""),
        power_state=PowerState(power) if power else PowerState.OFF,
        tools_running=p.get("guest.toolsRunningStatus") == "guestToolsRunning",
        tools_status=_tools_status(p.get("guest.toolsVersionStatus2")),
        bios_uuid=str(p.get("config.uuid") or ""),
        host=hosts.get(ref_id(p.get("runtime.host")) or "", ""),
        cluster=(clusters or {}).get(ref_id(p.get("runtime.host")) or "", ""),
        attributes=_attributes(p.get("customValue"), fields),
        tags=tags.get(obj.id, ()),
        disks=disks_of(p.get("config.hardware.device"), datastore_types),
        snapshots=snapshots_of(p.get("snapshot")),
        change_tracking=bool(p.get("config.changeTrackingEnabled")),
    )


def _tools_status(value: Any) -> str:
    """"guestToolsNotInstalled" → "notInstalled"."""
    text = str(value or "")
    rest = text.removeprefix("guestTools")
    return rest[:1].lower() + rest[1:] if rest != text else text


def build_inventory(
    vcenter: str,
    objects: Sequence[RawObject],
    custom_fields: Iterable[Any] | None = None,
    tags: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[Inventory, tuple[str, ...]]:
    """The inventory of one vCenter, VMs sorted by folder and name, and what was left out.

    `custom_fields` is CustomFieldsManager.field (definitions with key and name); `tags` maps
    VM ids to "category/tag" names, None when the tagging API could not be read. Templates
    and VMs without an instance UUID (inaccessible, or still being created) are left out;
    the second value names them.
    """
    fields = {int(f.key): str(f.name) for f in custom_fields or ()}
    paths = folder_paths(objects)
    hosts = {o.id: str(o.props.get("name", o.id)) for o in objects if o.kind == "HostSystem"}
    computes = {o.id: str(o.props.get("name", o.id)) for o in objects
                if o.kind in COMPUTE_KINDS}
    clusters = {o.id: computes[parent] for o in objects if o.kind == "HostSystem"
                if (parent := ref_id(o.props.get("parent"))) in computes}
    datastore_types: dict[str, str] = {}
    for o in objects:  # by name first, then by reference (which wins when looked up)
        if o.kind == "Datastore" and o.props.get("summary.type"):
            datastore_types[str(o.props.get("name"))] = str(o.props["summary.type"])
            datastore_types[o.id] = str(o.props["summary.type"])
    vms, skipped = [], []
    for obj in objects:
        if obj.kind != "VirtualMachine":
            continue
        vm = _vm(obj, vcenter, paths, hosts, fields, tags or {}, datastore_types, clusters)
        if vm is None:
            if not obj.props.get("config.template"):
                skipped.append(f"{obj.props.get('name', obj.id)} ({obj.id}): no instance UUID")
        else:
            vms.append(vm)
    vms.sort(key=lambda v: (v.folder, v.name, v.moref))
    return Inventory(vcenter, tuple(vms), tags_available=tags is not None), tuple(skipped)

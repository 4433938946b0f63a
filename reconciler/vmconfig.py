"""A VM's virtual hardware as an export saves it (`vm-config.json` in the point) and a
restore into vCenter rebuilds it: CPU, memory, firmware, guest OS, hardware version, disk
controllers, disks and network cards, plus where the VM lived.

Values only; the vSphere adapter converts to and from pyVmomi objects. `to_json` /
`from_json` are the file's format (`"format": 1`); an unreadable file is a
`RepositoryError` naming the point.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import RepositoryError

__all__ = [
    "CONFIG_FILE",
    "ControllerSpec",
    "DiskSpec",
    "NicSpec",
    "VMConfig",
    "hardware_number",
]

CONFIG_FILE = "vm-config.json"
FORMAT = 1


@dataclass(frozen=True)
class ControllerSpec:
    key: int
    kind: str  # the vSphere device type: ParaVirtualSCSIController, VirtualAHCIController, …
    bus: int
    sharing: str = "noSharing"


@dataclass(frozen=True)
class DiskSpec:
    key: int
    controller_key: int
    unit: int
    capacity_bytes: int
    file: str  # "[ds] vm/vm.vmdk" at export time
    thin: bool = True

    @property
    def name(self) -> str:
        """The disk's name in a restore point."""
        return f"disk-{self.key}"


@dataclass(frozen=True)
class NicSpec:
    key: int
    kind: str  # VirtualVmxnet3, VirtualE1000e, …
    network: str  # port group name
    mac: str = ""
    address_type: str = "generated"
    unit: int | None = None


@dataclass(frozen=True)
class VMConfig:
    name: str
    instance_uuid: str
    bios_uuid: str = ""
    guest_id: str = "otherGuest64"
    firmware: str = "bios"
    hardware_version: str = ""  # "vmx-13"
    num_cpu: int = 1
    cores_per_socket: int = 1
    memory_mb: int = 1024
    annotation: str = ""
    datacenter: str = ""
    folder: str = ""  # inventory path, e.g. /DC0/vm/prod
    resource_pool: str = ""  # inventory path of the pool
    host: str = ""
    datastore: str = ""  # the datastore of the .vmx
    controllers: tuple[ControllerSpec, ...] = ()
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "instanceUuid": self.instance_uuid,
            "biosUuid": self.bios_uuid,
            "guestId": self.guest_id,
            "firmware": self.firmware,
            "hardwareVersion": self.hardware_version,
            "numCpu": self.num_cpu,
            "coresPerSocket": self.cores_per_socket,
            "memoryMB": self.memory_mb,
            "annotation": self.annotation,
            "datacenter": self.datacenter,
            "folder": self.folder,
            "resourcePool": self.resource_pool,
            "host": self.host,
            "datastore": self.datastore,
            "controllers": [{"key": c.key, "kind": c.kind, "bus": c.bus, "sharing": c.sharing}
                            for c in self.controllers],
            "disks": [{"key": d.key, "controllerKey": d.controller_key, "unit": d.unit,
                       "capacityBytes": d.capacity_bytes, "file": d.file, "thin": d.thin}
                      for d in self.disks],
            "nics": [{"key": n.key, "kind": n.kind, "network": n.network, "mac": n.mac,
                      "addressType": n.address_type, "unit": n.unit} for n in self.nics],
            "extra": dict(self.extra),
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), indent=2, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes, where: str) -> VMConfig:
        try:
            body = json.loads(data)
            if not isinstance(body, dict) or body.get("format") != FORMAT:
                raise ValueError(f"unknown format {body.get('format')!r}"
                                 if isinstance(body, dict) else "not an object")
            return cls(
                name=str(body["name"]),
                instance_uuid=str(body["instanceUuid"]),
                bios_uuid=str(body.get("biosUuid", "")),
                guest_id=str(body.get("guestId") or "otherGuest64"),
                firmware=str(body.get("firmware") or "bios"),
                hardware_version=str(body.get("hardwareVersion") or ""),
                num_cpu=int(body["numCpu"]),
                cores_per_socket=int(body.get("coresPerSocket") or 1),
                memory_mb=int(body["memoryMB"]),
                annotation=str(body.get("annotation") or ""),
                datacenter=str(body.get("datacenter") or ""),
                folder=str(body.get("folder") or ""),
                resource_pool=str(body.get("resourcePool") or ""),
                host=str(body.get("host") or ""),
                datastore=str(body.get("datastore") or ""),
                controllers=tuple(ControllerSpec(int(c["key"]), str(c["kind"]), int(c["bus"]),
                                                 str(c.get("sharing") or "noSharing"))
                                  for c in body.get("controllers", ())),
                disks=tuple(DiskSpec(int(d["key"]), int(d["controllerKey"]), int(d["unit"]),
                                     int(d["capacityBytes"]), str(d.get("file") or ""),
                                     bool(d.get("thin", True)))
                            for d in body.get("disks", ())),
                nics=tuple(NicSpec(int(n["key"]), str(n["kind"]), str(n.get("network") or ""),
                                   str(n.get("mac") or ""),
                                   str(n.get("addressType") or "generated"),
                                   None if n.get("unit") is None else int(n["unit"]))
                           for n in body.get("nics", ())),
                extra={str(k): str(v) for k, v in (body.get("extra") or {}).items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RepositoryError(f"{where}: the saved VM configuration cannot be read "
                                  f"({exc}); the point cannot be restored into vCenter") from None


_VMX = re.compile(r"^vmx-(\d+)$")


def hardware_number(version: str) -> int | None:
    """`vmx-13` → 13; None when not of that form."""
    match = _VMX.match(version)
    return int(match.group(1)) if match else None

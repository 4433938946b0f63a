"""Narrow ports: what the core and services need from the world, one Protocol per edge.

Adapters in `reconciler.adapters` implement these; tests of the pure core use fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Protocol

from reconciler.model import VM, Disk, ExportPoint, Inventory, VMRef

__all__ = [
    "BuildSpec",
    "CreatedVM",
    "DatastoreSpace",
    "DiskStream",
    "DiskTarget",
    "ExistingVM",
    "ExportStore",
    "ExportWriter",
    "HookRunner",
    "InventorySource",
    "Journal",
    "PartialPoint",
    "Placement",
    "PolicyFile",
    "PolicySource",
    "Response",
    "RestorablePoint",
    "RestoreSource",
    "RestoreSurvey",
    "RestoreTarget",
    "StoredDisk",
    "StoredItem",
    "StoredPoint",
    "VCenterOps",
    "read_into",
]


@dataclass(frozen=True)
class PolicyFile:
    """The raw bytes of one policy file and the path to report errors against."""

    path: str
    data: bytes


class PolicySource(Protocol):
    """Where policy files come from: a directory or one commit of a Git repository."""

    @property
    def revision(self) -> str | None:
        """The exact revision read (a commit SHA), or None for a plain directory."""
        ...

    def files(self) -> Iterator[PolicyFile]:
        """Every `*.yaml`/`*.yml` file, recursively, in a stable (sorted) order."""
        ...


class InventorySource(Protocol):
    """Reads the VMs (with disks and snapshot trees) of one vCenter."""

    def inventory(self) -> Inventory: ...


class DiskStream(Protocol):
    """A disk's bytes, read sequentially (and seekable, for changed-extent reads)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def close(self) -> None: ...


def read_into(stream: DiskStream, buffer: bytearray | memoryview) -> int:
    """Fill up to `len(buffer)` bytes of `buffer` from `stream` (as `readinto` does), through
    the stream's own `readinto` when it has one — a wrapper of a disk stream offers
    `readinto` by passing it on with this, so a reader of reused buffers reaches the socket."""
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        return int(readinto(buffer))
    data = stream.read(len(buffer))
    memoryview(buffer)[: len(data)] = data
    return len(data)


@dataclass(frozen=True)
class Lent:
    """A block of a disk stream lent where it already is, not copied: `length` bytes of
    `buffer` (bytes-like with `find`, such as an mmap) from `offset`. They stay as they are
    until `release()` is called, which must happen exactly once, as soon as they have been
    read (a disk stream's optional `lend`; see `lend_from`)."""

    buffer: Any
    offset: int
    length: int
    release: Callable[[], None]


def lend_from(stream: object, n: int) -> Lent | None:
    """The next `n` bytes (at most) of `stream` in place, through the stream's own `lend`
    when it has one — a wrapper of a disk stream passes `lend` on with this, as it does
    `readinto` with `read_into`; None when the stream cannot lend them (then read them)."""
    lend = getattr(stream, "lend", None)
    return lend(n) if lend is not None else None


class VCenterOps(Protocol):
    """What the executor does to one vCenter. Every method re-reads reality; all raise
    `VCenterError`s (`transient` ones for what a retry may fix; `fault` names the vCenter
    fault behind one)."""

    name: str

    def find_vm(self, instance_uuid: str) -> VM | None:
        """A fresh read of one VM (power, Tools, disks, snapshots), or None when it is gone."""
        ...

    def create_snapshot(
        self, vm: VM, name: str, description: str, *, memory: bool, quiesce: bool
    ) -> str:
        """Create a snapshot of the VM's current state; returns its id."""
        ...

    def remove_snapshot(self, vm: VM, snapshot_id: str) -> None:
        """Remove one snapshot (not its children), consolidating disks if vCenter asks."""
        ...

    def shutdown_guest(self, vm: VM) -> None: ...

    def power_off(self, vm: VM) -> None: ...

    def power_on(self, vm: VM) -> None: ...

    def snapshot_disks(self, vm: VM, snapshot_id: str) -> tuple[Disk, ...]:
        """The disks as the snapshot froze them: base files and their change ids."""
        ...

    def open_disk(self, vm: VM, snapshot_id: str, disk: Disk,
                  on_lease: Callable[[str], None] | None = None) -> DiskStream:
        """Stream a frozen disk's bytes (datastore HTTP, or an NFC export lease: see
        `model.choose_transport`). The stream may say how it is read (`transport`, a
        `DiskTransport`) and take `fail()` (the reader's work failed: an NFC lease is
        aborted on close rather than completed). `on_lease` hears "" just before an NFC
        lease is asked for, then the lease's id as soon as it exists."""
        ...

    def abort_lease(self, lease_id: str) -> bool:
        """Abort an NFC export lease a crashed run left; False when it had already ended."""
        ...

    def changed_extents(
        self, vm: VM, snapshot_id: str, disk: Disk, since_change_id: str
    ) -> list[tuple[int, int]] | None:
        """(offset, length) extents changed since `since_change_id`, or None when unknown."""
        ...

    def vm_files(self, vm: VM) -> Mapping[str, bytes]:
        """The VM's small files worth keeping with an export (.vmx, .nvram)."""
        ...

    def wait_for_tasks(self, vm: VM, timeout: float = 600.0) -> tuple[str, ...]:
        """Wait until no vCenter task on the VM is queued or running (one an interrupted run
        started may still be: a snapshot being created); the names of the tasks waited for."""
        ...


class ExportWriter(Protocol):
    def add_disk(
        self,
        name: str,
        stream: Any,
        *,
        size: int | None = None,
        changed_extents: Sequence[tuple[int, int]] | None = None,
        previous: tuple[str, str] | None = None,
    ) -> Any: ...

    def add_file(self, name: str, data: bytes) -> Any: ...

    def commit(
        self,
        consistency: str,
        policy_revision: str | None = None,
        timings: dict[str, float] | None = None,
    ) -> ExportPoint: ...

    def abort(self) -> None: ...


class StoredPoint(Protocol):
    """What the executor reads back from a committed point: its free-form metadata."""

    @property
    def metadata(self) -> Mapping[str, Any]: ...


class PartialPoint(Protocol):
    """An export that began and has no manifest (running now, or crashed)."""

    @property
    def id(self) -> str: ...

    @property
    def live(self) -> bool:
        """A writer may still be at work on it (this process, a running process of this
        host, or another host's session touched within the writer lease): not a leftover."""
        ...


class ExportStore(Protocol):
    """An export target: the catalog of committed points and a way to add and remove them.
    `reconciler.adapters.repository.Repository` is the implementation."""

    def points(self) -> list[ExportPoint]: ...

    def manifest(self, point_id: str) -> StoredPoint: ...

    def begin_point(
        self, point_id: str, policy: str, vm: VMRef, slot: datetime, **metadata: Any
    ) -> ExportWriter: ...

    def delete_point(self, point_id: str) -> None: ...

    def partials(self) -> Sequence[PartialPoint]: ...

    def discard_partial(self, point_id: str) -> None: ...

    def gc(self) -> Any: ...


class StoredItem(Protocol):
    """A disk or small file of a committed point, by name and size."""

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...


class RestorablePoint(Protocol):
    """A committed point as a restore reads it: what it holds."""

    @property
    def id(self) -> str: ...

    @property
    def disks(self) -> Sequence[StoredItem]: ...

    @property
    def files(self) -> Sequence[StoredItem]: ...


class StoredDisk(Protocol):
    """One disk of a committed point, every chunk checked against its hash as it is read
    (`CorruptionError` names the chunk)."""

    def read_into(self, out: BinaryIO) -> int: ...


class RestoreSource(Protocol):
    """Where a restore reads from; `RepositoryError` for a point or item it does not hold."""

    def manifest(self, point_id: str) -> RestorablePoint: ...

    def open_disk(self, point_id: str, disk: str) -> StoredDisk: ...

    def read_file(self, point_id: str, name: str) -> bytes: ...


class HookRunner(Protocol):
    """Runs a host-config hook by name; raises `HookError` when it fails or times out."""

    def run(self, name: str, environment: Mapping[str, str]) -> None: ...


# --------------------------------------------------------------------------- restore into vCenter


@dataclass(frozen=True)
class ExistingVM:
    """A VM found in the destination vCenter (by name or by instance UUID)."""

    moref: str
    name: str
    instance_uuid: str
    power_state: str
    restored_from: str = ""  # the point id in its `vmkeep.restoredFrom` setting, if any
    hardware_version: str = ""


@dataclass(frozen=True)
class Placement:
    """Where a restored VM goes, resolved in the destination vCenter (ids are morefs)."""

    datacenter: str
    folder: str  # inventory path
    folder_id: str
    pool: str  # inventory path of the resource pool
    pool_id: str
    host: str = ""
    host_id: str = ""


@dataclass(frozen=True)
class DatastoreSpace:
    name: str
    free_bytes: int
    capacity_bytes: int


@dataclass(frozen=True)
class RestoreSurvey:
    """What the destination vCenter holds that a restore must know; read, never changed."""

    vcenter: str
    placement: Placement | None  # None when a named folder/host/cluster/pool is not found
    datastores: Mapping[str, DatastoreSpace]  # every datastore of the datacenter, by name
    networks: tuple[str, ...]  # port group names of the datacenter
    max_hardware: int | None  # the newest hardware version the hosts run (vmx-N), if known
    named: tuple[ExistingVM, ...]  # VMs with the restored VM's name
    original: ExistingVM | None  # the VM with the point's instance UUID, if it is here
    directories: frozenset[str] = frozenset()  # "[ds] dir" taken on the datastores
    problems: tuple[str, ...] = ()  # why no placement (an unknown folder, host, …)


@dataclass(frozen=True)
class DiskTarget:
    key: int
    controller_key: int
    unit: int
    capacity_bytes: int
    file: str  # "[ds] dir/name.vmdk", created by the import


@dataclass(frozen=True)
class BuildSpec:
    """Everything an import needs, resolved: the VM is created under `name` (temporary)."""

    name: str
    placement: Placement
    datastore: str  # of the .vmx
    directory: str  # the VM's new directory on that datastore
    config: Any  # reconciler.vmconfig.VMConfig
    disks: tuple[DiskTarget, ...]
    networks: Mapping[str, str]  # each NIC's network: old name -> new name
    instance_uuid: str
    bios_uuid: str
    keep_macs: bool
    restored_from: str


@dataclass(frozen=True)
class CreatedVM:
    moref: str
    name: str
    instance_uuid: str
    sent: Mapping[str, int] = field(default_factory=dict)  # bytes sent per disk


class RestoreTarget(Protocol):
    """The destination vCenter of a restore (`VSphereRestore`); every method re-reads."""

    name: str

    def survey(self, config: Any, *, name: str, folder: str | None, host: str | None,
               cluster: str | None, resource_pool: str | None) -> RestoreSurvey: ...

    def import_vm(self, spec: BuildSpec, disks: Sequence[Any],
                  progress: Any, on_created: Any) -> CreatedVM: ...

    def find_by_moref(self, moref: str) -> ExistingVM | None: ...

    def vms_named(self, name: str) -> list[ExistingVM]: ...

    def rename(self, moref: str, name: str) -> None: ...

    def power_off_vm(self, moref: str) -> None: ...

    def power_on_vm(self, moref: str) -> None: ...

    def destroy(self, moref: str) -> None: ...

    def delete_directory(self, datacenter: str, directory: str) -> bool: ...

    def directory_exists(self, datacenter: str, datastore: str, directory: str) -> bool: ...

    def revert(self, moref: str, snapshot_id: str) -> None: ...

    def clone_from_snapshot(self, moref: str, snapshot_id: str, spec: BuildSpec,
                            on_created: Any) -> CreatedVM: ...

    def find_by_uuid(self, instance_uuid: str) -> ExistingVM | None: ...


@dataclass(frozen=True)
class Response:
    """One HTTP response of the controller's endpoint (adapters.http_server serves it)."""

    status: int
    content_type: str
    body: bytes


class Journal(Protocol):
    """The part of the state DB the executor writes to (adapters.statedb.StateDB): an intent
    before each action, its details as they become known, its outcome after."""

    def record_intent(
        self,
        run_id: str,
        *,
        kind: str,
        point_id: str,
        vm_uuid: str,
        vm_name: str,
        vcenter: str,
        now: float,
        details: Mapping[str, Any] | None = None,
    ) -> int: ...

    def update_details(self, action_id: int, details: Mapping[str, Any]) -> None: ...

    def record_outcome(
        self, action_id: int, status: str, now: float, error: str | None = None
    ) -> None: ...

"""In-memory fakes of the executor's ports, for unit tests of the services layer only.

Adapters are tested against the real parts (simulator, directories, SQLite); these fakes
follow the same contracts closely enough to test decisions: ordering, fallbacks, repairs.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from reconciler.adapters.repository.format import quote_id
from reconciler.errors import HookError, RepositoryError, VCenterError
from reconciler.model import (
    VM,
    Consistency,
    Disk,
    ExportPoint,
    ExportSpec,
    KeepRules,
    Policy,
    PowerState,
    Schedule,
    Selector,
    Snapshot,
    SnapshotSpec,
    VMRef,
)
from reconciler.vmconfig import CONFIG_FILE, ControllerSpec, DiskSpec, VMConfig

T0 = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)


def make_policy(name: str = "gold", consistency: Consistency | None = None,
                snapshots: bool = True, exports: bool = True) -> Policy:
    return Policy(
        name=name,
        vcenter="sim",
        include=Selector(names=("*",)),
        schedule=Schedule(cron="0 1 * * *"),
        consistency=consistency or Consistency(),
        snapshots=SnapshotSpec(KeepRules(last=2)) if snapshots else None,
        exports=ExportSpec("local", KeepRules(daily=7)) if exports else None,
    )


@dataclass
class FakeVMState:
    name: str
    uuid: str
    power: PowerState = PowerState.ON
    tools: bool = True
    tools_status: str = "current"
    host: str = "host-1"
    disks: dict[int, bytes] = field(default_factory=lambda: {2000: b"A" * 4096})
    snapshots: list[Snapshot] = field(default_factory=list)
    shuts_down: bool = True  # does the guest honour a shutdown request?


class FakeVCenter:
    """A vCenter in memory; `fail_*` sets make chosen calls raise a vCenter fault."""

    def __init__(self, name: str = "sim") -> None:
        self.name = name
        self.vms: dict[str, FakeVMState] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_snapshot_for: set[str] = set()
        self.fail_quiesce = False
        self.fail_read = False
        #: Tasks still running per VM (uuid): (name, what it does when it completes).
        self.in_flight: dict[str, list[tuple[str, Callable[[], None]]]] = {}
        #: NFC export leases aborted or completed; any other lease id is taken as open.
        self.ended_leases: set[str] = set()
        self._next = 1

    def add(self, name: str, **kw: Any) -> FakeVMState:
        state = FakeVMState(name=name, uuid=f"uuid-{name}", **kw)
        self.vms[state.uuid] = state
        return state

    def vm(self, state: FakeVMState) -> VM:
        return VM(
            vcenter=self.name,
            name=state.name,
            instance_uuid=state.uuid,
            moref=f"vm-{state.name}",
            folder="/DC0/vm",
            power_state=state.power,
            tools_running=state.tools,
            tools_status=state.tools_status,
            host=state.host,
            disks=tuple(
                Disk(key, f"Hard disk {i + 1}", f"[ds] {state.name}/{key}.vmdk", len(data),
                     change_id=None)
                for i, (key, data) in enumerate(sorted(state.disks.items()))
            ),
            snapshots=tuple(state.snapshots),
        )

    def _state(self, vm: VM) -> FakeVMState:
        """As `VSphereOperations`: a VM removed meanwhile is a `VCenterError`."""
        state = self.vms.get(vm.instance_uuid)
        if state is None:
            raise VCenterError(self.name, f"VM {vm.name!r}: ManagedObjectNotFound")
        return state

    # ---- VCenterOps
    def find_vm(self, instance_uuid: str) -> VM | None:
        state = self.vms.get(instance_uuid)
        return None if state is None else self.vm(state)

    def create_snapshot(self, vm: VM, name: str, description: str, *, memory: bool,
                        quiesce: bool) -> str:
        self.calls.append(("create_snapshot", f"{vm.name}:quiesce={quiesce}"))
        state = self._state(vm)
        if vm.name in self.fail_snapshot_for:
            raise VCenterError(self.name, "FileFault: cannot create snapshot")
        if quiesce and self.fail_quiesce:
            raise VCenterError(self.name, "ApplicationQuiesceFault")
        sid = f"snapshot-{self._next}"
        self._next += 1
        state.snapshots.append(Snapshot(sid, name, description, T0, quiesce))
        return sid

    def remove_snapshot(self, vm: VM, snapshot_id: str) -> None:
        self.calls.append(("remove_snapshot", snapshot_id))
        state = self.vms.get(vm.instance_uuid)
        if state is None:
            return  # as `VSphereOperations`: the snapshot went with its VM, the goal holds
        state.snapshots = [s for s in state.snapshots if s.id != snapshot_id]

    def shutdown_guest(self, vm: VM) -> None:
        self.calls.append(("shutdown_guest", vm.name))
        state = self._state(vm)
        if state.shuts_down:
            state.power = PowerState.OFF

    def power_off(self, vm: VM) -> None:
        self.calls.append(("power_off", vm.name))
        self._state(vm).power = PowerState.OFF

    def power_on(self, vm: VM) -> None:
        self.calls.append(("power_on", vm.name))
        self._state(vm).power = PowerState.ON

    def snapshot_disks(self, vm: VM, snapshot_id: str) -> tuple[Disk, ...]:
        return self.vm(self._state(vm)).disks

    def open_disk(self, vm: VM, snapshot_id: str, disk: Disk,
                  on_lease: Callable[[str], None] | None = None) -> io.BytesIO:
        if self.fail_read:
            raise VCenterError(self.name, "HTTP 503 reading disk")
        return io.BytesIO(self._state(vm).disks[disk.key])

    def abort_lease(self, lease_id: str) -> bool:
        """As `VSphereOperations`: False for a lease that has already ended."""
        self.calls.append(("abort_lease", lease_id))
        if lease_id in self.ended_leases:
            return False
        self.ended_leases.add(lease_id)
        return True

    def changed_extents(self, vm: VM, snapshot_id: str, disk: Disk,
                        since_change_id: str) -> list[tuple[int, int]] | None:
        return None

    def vm_files(self, vm: VM) -> Mapping[str, bytes]:
        """As `VSphereOperations`: the .vmx and the VM's configuration (`vm-config.json`)."""
        config = VMConfig(
            name=vm.name, instance_uuid=vm.instance_uuid, folder=vm.folder, host=vm.host,
            controllers=(ControllerSpec(1000, "ParaVirtualSCSIController", 0),),
            disks=tuple(DiskSpec(d.key, 1000, unit, d.capacity_bytes, d.file)
                        for unit, d in enumerate(vm.disks)),
        )
        return {f"{vm.name}.vmx": b'displayName = "x"\n', CONFIG_FILE: config.encode()}

    def wait_for_tasks(self, vm: VM, timeout: float = 600.0) -> tuple[str, ...]:
        self.calls.append(("wait_for_tasks", vm.name))
        tasks = self.in_flight.pop(vm.instance_uuid, [])
        for _, complete in tasks:
            complete()
        return tuple(name for name, _ in tasks)


class FakeWriter:
    def __init__(self, store: FakeStore, point_id: str, policy: str, vm: VMRef,
                 slot: datetime, metadata: dict[str, Any]) -> None:
        self.store, self.point_id, self.policy, self.vm, self.slot = (
            store, point_id, policy, vm, slot)
        self.metadata = metadata
        self.disks: dict[str, bytes] = {}
        self.files: dict[str, bytes] = {}
        store.partial.add(point_id)

    def add_disk(self, name: str, stream: Any, *, size: int | None = None,
                 changed_extents: Sequence[tuple[int, int]] | None = None,
                 previous: tuple[str, str] | None = None) -> Any:
        self.disks[name] = stream.read()
        return None

    def add_file(self, name: str, data: bytes) -> Any:
        self.files[name] = data

    def commit(self, consistency: str, policy_revision: str | None = None,
               timings: dict[str, float] | None = None) -> ExportPoint:
        point = ExportPoint(self.point_id, self.policy, self.vm, self.slot, T0, True,
                            consistency=consistency)
        self.store.committed[self.point_id] = (point, self.disks, self.metadata)
        self.store.partial.discard(self.point_id)
        return point

    def abort(self) -> None:
        self.store.aborted.append(self.point_id)
        self.store.partial.discard(self.point_id)


@dataclass(frozen=True)
class FakeManifest:
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class FakePartial:
    id: str
    live: bool = False


class FakeStore:
    def __init__(self) -> None:
        self.committed: dict[str, tuple[ExportPoint, dict[str, bytes], dict[str, Any]]] = {}
        self.partial: set[str] = set()
        self.live_partials: set[str] = set()  # being written by another process
        self.aborted: list[str] = []
        self.gc_runs = 0

    def points(self) -> list[ExportPoint]:
        """In `Repository`'s order: by manifest file name."""
        return sorted((p for p, _, _ in self.committed.values()), key=lambda p: quote_id(p.id))

    def manifest(self, point_id: str) -> FakeManifest:
        return FakeManifest(self._committed(point_id)[2])

    def begin_point(self, point_id: str, policy: str, vm: VMRef, slot: datetime,
                    **metadata: Any) -> FakeWriter:
        if point_id in self.committed:  # as `Repository`: a point is written once
            raise RepositoryError(f"restore point {point_id!r} already exists")
        return FakeWriter(self, point_id, policy, vm, slot, metadata)

    def delete_point(self, point_id: str) -> None:
        self._committed(point_id)
        del self.committed[point_id]

    def _committed(self, point_id: str) -> tuple[ExportPoint, dict[str, bytes], dict[str, Any]]:
        """Like `Repository`: an unknown point is a `RepositoryError`, not a `KeyError`."""
        try:
            return self.committed[point_id]
        except KeyError:
            raise RepositoryError(f"no restore point {point_id!r} in the fake store") from None

    def partials(self) -> list[FakePartial]:
        return [FakePartial(p, p in self.live_partials) for p in sorted(self.partial)]

    def discard_partial(self, point_id: str) -> None:
        self.partial.discard(point_id)

    def gc(self) -> Any:
        self.gc_runs += 1


class FakeHooks:
    """Hooks that succeed, fail (`failing`: exit status 3) or outlive their timeout (`slow`),
    with `SubprocessHooks`'s messages; `defined` (None: any name) are those the host config
    defines."""

    def __init__(self, failing: Sequence[str] = (), slow: Sequence[str] = (),
                 defined: Sequence[str] | None = None, timeout: float = 60.0) -> None:
        self.failing = set(failing)
        self.slow = set(slow)
        self.defined = None if defined is None else set(defined)
        self.timeout = timeout
        self.ran: list[tuple[str, str]] = []
        self.environments: list[dict[str, str]] = []

    def run(self, name: str, environment: Mapping[str, str]) -> None:
        if self.defined is not None and name not in self.defined:
            raise HookError(f"hook {name!r} is not defined in the host config")
        self.ran.append((name, environment.get("VMKEEP_PHASE", "")))
        self.environments.append(dict(environment))
        if name in self.failing:
            raise HookError(f"hook {name!r} exited with status 3")
        if name in self.slow:
            raise HookError(f"hook {name!r} did not finish within {self.timeout:g}s and was "
                            "killed")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.001)


def with_power(vm: VM, power: PowerState) -> VM:
    return replace(vm, power_state=power)

"""Value types shared by every layer: host config, inventory, catalog, policies.

Everything here is a frozen dataclass or an enum. YAML, JSON and pyVmomi objects are
converted to these once, at the edge (the loaders and adapters), and never travel inward.
Times are timezone-aware `datetime`s in UTC unless a field says otherwise.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import NamedTuple

from reconciler.errors import TransportUnavailable

__all__ = [
    "HOOK_PASSTHROUGH",
    "VM",
    "ActionStatus",
    "Consistency",
    "ConsistencyMode",
    "Disk",
    "Duration",
    "ExportPoint",
    "ExportSpec",
    "Fallback",
    "HookConfig",
    "HostConfig",
    "Hygiene",
    "Inventory",
    "KeepRules",
    "Limits",
    "ObservedState",
    "Policy",
    "PolicySet",
    "PolicySourceConfig",
    "PowerState",
    "Schedule",
    "Selector",
    "Snapshot",
    "SnapshotSpec",
    "SourceLocation",
    "TargetConfig",
    "VCenterConfig",
    "VMRef",
    "VerifyEntry",
    "Window",
]
__all__ += ["EngineConfig", "EngineTLS", "ProxyConfig"]


# --------------------------------------------------------------------------- host config


@dataclass(frozen=True)
class VCenterConfig:
    """One vCenter connection. The password itself is never stored here, only where to find it."""

    name: str
    url: str
    username: str
    password_env: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    thumbprint: str | None = None
    insecure: bool = False
    #: How disk data is read: "auto" (per disk, see `choose_transport`), "http" or "nfc".
    transport: str = "auto"
    #: Where datastore HTTP reads run: "process" (a helper's) or "thread" (the export's).
    readers: str = "process"


@dataclass(frozen=True)
class TargetConfig:
    """A backup target; `type` is "directory" for now."""

    name: str
    type: str
    path: str
    chunk_size: int | None = None
    #: Packs written around the page cache: "auto" (on a local disk's filesystem), "on", "off".
    direct_writes: str = "auto"


@dataclass(frozen=True)
class Limits:
    max_deletes_per_run: int = 50
    concurrent_exports: int = 2
    concurrent_snapshots_per_host: int = 2
    #: Scheduled verification reads at most about this many bytes per hour (10 GiB).
    verify_bytes_per_hour: int = 10 * 2**30
    #: Exports reading from one datastore at once; 0: no limit.
    concurrent_exports_per_datastore: int = 0


#: Variables of vmkeep's own environment every hook gets; nothing else is passed on.
HOOK_PASSTHROUGH = ("PATH", "LANG", "TZ")


@dataclass(frozen=True)
class EngineTLS:
    """TLS to the engine's frontend (always verified); files are absolute paths."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class EngineConfig:
    """`engine:` in the host config: where the Temporal frontend is."""

    address: str
    namespace: str = "default"
    task_queue: str = "vmkeep"
    tls: EngineTLS | None = None
    type: str = "temporal"
    heartbeat_seconds: int = 60
    attempts: int = 5


@dataclass(frozen=True)
class ProxyConfig:
    """One entry of `proxies:`: the VMs a task queue serves and its estate-wide slots."""

    queue: str
    clusters: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    datastores: tuple[str, ...] = ()
    slots: int = 2


@dataclass(frozen=True)
class HookConfig:
    """A host-side command a policy may reference by name (argv, never a shell string).

    Its environment is minimal: `HOOK_PASSTHROUGH` from vmkeep's own, then `env`, then the
    `VMKEEP_*` variables describing the VM and phase."""

    name: str
    command: tuple[str, ...]
    timeout_seconds: float = 300.0
    #: Variables the host config sets for this hook (`env:`), besides the minimal ones.
    env: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class PolicySourceConfig:
    """Where commands read policies when no source flag is given (host config `policies`):
    a Git repository (`repo`, `rev`, `path` inside it) or a local directory (`path`)."""

    path: str
    repo: str | None = None
    rev: str | None = None


@dataclass(frozen=True)
class Hygiene:
    """Thresholds of the snapshot hygiene findings (host config `hygiene`)."""

    snapshot_max_age_seconds: float = 72 * 3600.0
    chain_depth: int = 3


@dataclass(frozen=True)
class HostConfig:
    path: str
    vcenters: Mapping[str, VCenterConfig] = field(default_factory=dict)
    targets: Mapping[str, TargetConfig] = field(default_factory=dict)
    state: str = "vmkeep.db"
    limits: Limits = field(default_factory=Limits)
    hooks: Mapping[str, HookConfig] = field(default_factory=dict)
    policies: PolicySourceConfig | None = None
    hygiene: Hygiene = field(default_factory=Hygiene)
    #: The scaled tier (docs/scale-out.md); None: everything in one process.
    engine: EngineConfig | None = None
    proxies: Mapping[str, ProxyConfig] = field(default_factory=dict)


# --------------------------------------------------------------------------- inventory


class ActionStatus(enum.StrEnum):
    """How one action went: the executor's outcome and the journal's record (one spelling)."""

    STARTED = "started"  # journaled intent, no outcome yet
    DONE = "done"
    NOOP = "noop"  # the goal already held
    FAILED = "failed"
    SKIPPED = "skipped"  # not attempted, with a reason (e.g. prune after a failed backup)
    RECONCILED = "reconciled"  # left unfinished by a crashed run, cleaned up later


class PowerState(enum.StrEnum):
    ON = "poweredOn"
    OFF = "poweredOff"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class Disk:
    key: int
    label: str
    file: str  # datastore path, e.g. "[LocalDS_0] vm1/vm1.vmdk"
    capacity_bytes: int
    change_id: str | None = None
    #: The backing's parent file: the disk is a delta in a snapshot chain (its own file holds
    #: only the changes on top of the parent).
    parent: str | None = None
    #: summary.type of the disk's datastore (VMFS, NFS, vsan, VVOL...); "" when not read.
    datastore_type: str = ""


@dataclass(frozen=True)
class Snapshot:
    """One vSphere snapshot; the tree is flattened, `parent_id` links it."""

    id: str  # managed object id of the snapshot (e.g. "snapshot-42")
    name: str
    description: str
    created_at: datetime
    quiesced: bool
    parent_id: str | None = None


@dataclass(frozen=True)
class VM:
    vcenter: str
    name: str
    instance_uuid: str
    moref: str
    folder: str  # inventory path of the parent folder, e.g. "/DC0/vm/prod"
    power_state: PowerState
    tools_running: bool
    bios_uuid: str = ""
    #: VMware Tools installation as vCenter reports it (`guest.toolsVersionStatus2` without
    #: its "guestTools" prefix): "notInstalled", "current", "needUpgrade", "supportedOld",
    #: "unmanaged", …; "" when unknown.
    tools_status: str = ""
    host: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()  # "category/name"
    disks: tuple[Disk, ...] = ()
    snapshots: tuple[Snapshot, ...] = ()
    change_tracking: bool = False
    #: The name of the host's ComputeResource: its cluster, or a standalone host's own
    #: compute resource (named after the host); "" when unknown.
    cluster: str = ""

    @property
    def ref(self) -> VMRef:
        return VMRef(self.name, self.instance_uuid)

    @property
    def datastores(self) -> tuple[str, ...]:
        """The names of the datastores its disks are on (from `[name] path`), sorted."""
        return tuple(sorted({d.file[1:].partition("]")[0] for d in self.disks
                             if d.file.startswith("[")}))


@dataclass(frozen=True)
class Inventory:
    vcenter: str
    vms: tuple[VM, ...]
    tags_available: bool = False


# --------------------------------------------------------------------------- catalog


@dataclass(frozen=True, order=True)
class VMRef:
    """How a restore point names its VM: the name for people, the instance UUID for identity."""

    name: str
    instance_uuid: str


@dataclass(frozen=True)
class ExportPoint:
    """A restore point in a backup target, as its committed manifest describes it."""

    id: str  # "<policy>/<instanceUuid>/<slot UTC compact>"
    policy: str
    vm: VMRef
    slot: datetime
    created_at: datetime
    complete: bool
    target: str = ""
    consistency: str = ""
    size_bytes: int = 0


@dataclass(frozen=True)
class ObservedState:
    """Inventory + catalog at one moment; serialisable, so plans can be made offline.

    `unobserved`: vCenters of the host config that could not be read (login refused, TLS,
    network), with the reason. Their VMs are unknown — not gone: nothing is decided for them.
    """

    captured_at: datetime
    vcenters: Mapping[str, tuple[VM, ...]]
    targets: Mapping[str, tuple[ExportPoint, ...]]
    unobserved: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- policies


@dataclass(frozen=True, order=True)
class SourceLocation:
    path: str
    line: int = 1
    column: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Duration:
    """A calendar duration (restic style): years and months are calendar units."""

    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    text: str = ""  # as written, for reasons like "within 2d"

    def __str__(self) -> str:
        if self.text:
            return self.text
        parts = [
            (self.years, "y"),
            (self.months, "mo"),
            (self.weeks, "w"),
            (self.days, "d"),
            (self.hours, "h"),
            (self.minutes, "m"),
        ]
        return "".join(f"{n}{unit}" for n, unit in parts if n) or "0m"


@dataclass(frozen=True)
class Selector:
    """Which VMs: every given key must match (names/folders: any entry; tags/attributes: all)."""

    names: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Window:
    start: time
    end: time  # may be earlier than start: the window wraps midnight


@dataclass(frozen=True)
class Schedule:
    cron: str
    timezone: str = "UTC"
    window: Window | None = None


class ConsistencyMode(enum.StrEnum):
    CRASH = "crash"
    QUIESCE = "quiesce"
    POWEROFF = "poweroff"


class Fallback(enum.StrEnum):
    CRASH = "crash"
    FAIL = "fail"


@dataclass(frozen=True)
class Consistency:
    mode: ConsistencyMode = ConsistencyMode.CRASH
    fallback: Fallback = Fallback.FAIL
    shutdown_timeout: Duration = field(default_factory=lambda: Duration(minutes=10, text="10m"))
    hard_power_off: bool = False
    pre_hooks: tuple[str, ...] = ()
    post_hooks: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeepRules:
    """restic `forget` rules. Counts: None = rule not given, -1 = unlimited."""

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    within: Duration | None = None
    within_hourly: Duration | None = None
    within_daily: Duration | None = None
    within_weekly: Duration | None = None
    within_monthly: Duration | None = None
    within_yearly: Duration | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f) is None for f in self.__dataclass_fields__)


@dataclass(frozen=True)
class SnapshotSpec:
    keep: KeepRules
    max_age: Duration | None = None


@dataclass(frozen=True)
class ExportSpec:
    target: str
    keep: KeepRules
    #: `exports.verify.every`: re-verify each export point at least this often (seconds).
    verify_every_seconds: float | None = None


@dataclass(frozen=True)
class Policy:
    name: str
    vcenter: str
    include: Selector
    schedule: Schedule
    exclude: Selector | None = None
    consistency: Consistency = field(default_factory=Consistency)
    snapshots: SnapshotSpec | None = None
    exports: ExportSpec | None = None
    description: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    on_policy_removal: str = "retain"
    source: SourceLocation = field(default_factory=lambda: SourceLocation("<memory>"))


@dataclass(frozen=True)
class PolicySet:
    """All policies of one revision of the policy repo (revision = commit SHA, or None)."""

    policies: tuple[Policy, ...]
    revision: str | None = None

    def by_name(self) -> dict[str, Policy]:
        return {p.name: p for p in self.policies}


# ---- plan


class PointKind(enum.StrEnum):
    """Where a restore point lives: a vSphere snapshot or an export in a target."""

    SNAPSHOT = "snapshot"
    EXPORT = "export"


class ActionKind(enum.StrEnum):
    """The closed set of things a plan can ask for, in the order the executor runs them."""

    SNAPSHOT_CREATE = "snapshot.create"
    EXPORT_CREATE = "export.create"
    SNAPSHOT_DELETE = "snapshot.delete"
    EXPORT_DELETE = "export.delete"

    @property
    def is_delete(self) -> bool:
        return self in _DELETES


_DELETES = frozenset({ActionKind.SNAPSHOT_DELETE, ActionKind.EXPORT_DELETE})


class Action(NamedTuple):
    """One step of a plan on one VM. `requires` names planned points a deletion relies on.

    A named tuple, like `RetentionDecision`: a nightly plan of a large estate makes tens of
    thousands of them.
    """

    kind: ActionKind
    policy: str
    vcenter: str
    vm: VMRef
    point_id: str
    slot: datetime
    reason: str
    target: str | None = None  # export target name (export.*)
    snapshot_id: str | None = None  # managed object id (snapshot.delete)
    requires: tuple[str, ...] = ()


class CoverageState(enum.StrEnum):
    COVERED = "covered"  # a complete point exists for the current slot, or a newer one
    #                      that retention would keep in its place (after a schedule change)
    DUE = "due"  # not yet, but still inside the lateness threshold
    LATE = "late"  # past the threshold; older points exist
    MISSING = "missing"  # past the threshold and no complete point at all
    UNKNOWN = "unknown"  # its vCenter could not be observed: neither covered nor missing


@dataclass(frozen=True)
class Coverage:
    """How well one VM is protected by one policy at `Plan.now`."""

    policy: str
    vcenter: str
    vm: VMRef
    state: CoverageState
    slot: datetime
    threshold_seconds: int
    last_slot: datetime | None = None
    note: str = ""


class Severity(enum.StrEnum):
    INFO = "info"
    HYGIENE = "hygiene"
    WARNING = "warning"


@dataclass(frozen=True)
class PlanWarning:
    """Something a reader should know; never acted upon. `code` is stable for scripts."""

    code: str
    severity: Severity
    message: str
    vcenter: str = ""
    vm: VMRef | None = None
    policy: str = ""
    point_ids: tuple[str, ...] = ()


class RetentionDecision(NamedTuple):
    """Why one existing restore point stays or goes (restic-style reasons).

    A named tuple rather than a dataclass: a plan over 10,000 VMs holds about 300,000 of
    them; tuples are built several times faster and, holding no containers of their own
    but the reasons, cost the garbage collector less. Just as immutable.
    """

    point_id: str
    kind: PointKind
    policy: str
    vm: VMRef
    slot: datetime
    keep: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """A versioned, serialisable plan and what it was made from.

    `held`: deletions the deletion budget (`limits.maxDeletesPerRun`, `--max-deletes N`) holds
    back — not in `actions`, so the creates still run; `held_reason` says how many and the
    limit ("60 deletions exceed limits.maxDeletesPerRun (50)"), `held_hint` how to allow
    them. `blocked` is for a plan that must not run at all.
    """

    format_version: int
    policy_revision: str | None
    observed_digest: str
    now: datetime
    actions: tuple[Action, ...]
    coverage: tuple[Coverage, ...] = ()
    warnings: tuple[PlanWarning, ...] = ()
    retention: tuple[RetentionDecision, ...] = ()
    blocked: bool = False
    blocked_reason: str = ""
    delete_count: int = 0  # deletions in `actions` (held ones not counted)
    held: tuple[Action, ...] = ()
    held_reason: str = ""
    #: vCenters that could not be observed, with the reason (see `ObservedState.unobserved`).
    unobserved: Mapping[str, str] = field(default_factory=dict)

    @property
    def has_changes(self) -> bool:
        return bool(self.actions)

    @property
    def held_hint(self) -> str:
        """How to let the held deletions through ("" when none are held)."""
        if not self.held:
            return ""
        n = len(self.held)
        return (f"pass --max-deletes {n} (apply, run) or raise limits.maxDeletesPerRun to {n} "
                "in the host config")


__all__ += [
    "Action",
    "ActionKind",
    "Coverage",
    "CoverageState",
    "Plan",
    "PlanWarning",
    "PointKind",
    "RetentionDecision",
    "Severity",
]


# --------------------------------------------------------------------------- disk transports

__all__ += ["DiskTransport", "TransportUnavailable", "after_refusal", "choose_transport"]

#: The values of the host config's `transport` per vCenter.
TRANSPORTS = ("auto", "http", "nfc")
#: Datastore types (summary.type, lower-cased) whose disks are objects, not files.
OBJECT_DATASTORES = {"vsan": "vSAN", "vvol": "VVol"}


@dataclass(frozen=True)
class DiskTransport:
    """How one disk's data is read for an export, and why.

    `kind` is "http" (the flat file over the datastore HTTP interface, with Range reads, so
    changed extents are read alone) or "nfc" (an NFC export lease: one sequential stream);
    `method` is "datastore HTTP", "ExportSnapshot" or "ExportVm"."""

    kind: str
    method: str
    reason: str
    datastore: str = ""
    datastore_type: str = ""

    @property
    def ranged(self) -> bool:
        """Whether changed extents can be read alone (else the whole disk is streamed)."""
        return self.kind == "http"

    def describe(self) -> str:
        via = "NFC" if self.kind == "nfc" else "datastore HTTP"
        method = f" ({self.method})" if self.kind == "nfc" else ""
        return f"{via}{method}: {self.reason}"


def _type_name(datastore_type: str) -> str:
    return OBJECT_DATASTORES.get(datastore_type.lower(), datastore_type or "unknown")


def choose_transport(setting: str, *, powered_off: bool, datastore: str,
                     datastore_type: str) -> DiskTransport:
    """The transport of one disk: `setting` is the vCenter's `transport` (auto, http, nfc),
    `datastore_type` the disk's datastore's summary.type (VMFS, NFS, vsan, VVOL, ...)."""
    kind = _type_name(datastore_type)
    is_object = datastore_type.lower() in OBJECT_DATASTORES
    where = dict(datastore=datastore, datastore_type=datastore_type)
    if setting == "http":
        if is_object:
            raise TransportUnavailable(
                f"datastore {datastore!r} is of type {datastore_type} ({kind}): it keeps disks "
                "as objects, not files, so transport: http (the datastore file interface) "
                "cannot read them; set transport: auto or nfc for this vCenter")
        return DiskTransport("http", "datastore HTTP", "transport: http", **where)
    if setting == "nfc":
        if powered_off:
            return DiskTransport("nfc", "ExportVm", "transport: nfc; the VM is powered off",
                                 **where)
        return DiskTransport("nfc", "ExportSnapshot", "transport: nfc", **where)
    if powered_off:
        return DiskTransport("nfc", "ExportVm", "the VM is powered off", **where)
    if is_object:
        return DiskTransport("nfc", "ExportSnapshot", f"{kind} datastore {datastore!r} keeps "
                             "disks as objects, not files", **where)
    return DiskTransport("http", "datastore HTTP", f"{kind} datastore {datastore!r} holds the "
                         "disk as a file", **where)


def after_refusal(chosen: DiskTransport, why: str) -> DiskTransport:
    """With transport auto, the NFC export a refused datastore read falls back to."""
    return DiskTransport("nfc", "ExportSnapshot", f"datastore {chosen.datastore!r} refused "
                         f"the read of the disk's file ({why})", chosen.datastore,
                         chosen.datastore_type)


@dataclass(frozen=True)
class VerifyEntry:
    """One point's last scheduled verification (kept by adapters.verifylog)."""

    target: str
    point_id: str
    verified_at: float
    ok: bool
    message: str = ""
    bytes: int = 0

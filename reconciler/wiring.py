"""Wiring: find and load the host config, resolve secrets, build adapters.

This is the shell: it touches the environment and the file system so the core does not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler import hostconfig, observed
from reconciler.errors import UsageError, VCenterError, VmkeepError, register_secret
from reconciler.markers import parse_point_id
from reconciler.model import (
    ExportPoint,
    HookConfig,
    HostConfig,
    Inventory,
    ObservedState,
    Plan,
    TargetConfig,
    VCenterConfig,
    VerifyEntry,
    VMRef,
)
from reconciler.ports import (
    ExportStore,
    HookRunner,
    PolicySource,
    Response,
    RestoreTarget,
    VCenterOps,
)

if TYPE_CHECKING:  # pyVmomi and the repository are imported when they are used
    from reconciler.adapters.fuse_mount import Tree
    from reconciler.adapters.http_server import HttpServer
    from reconciler.adapters.repository import Repository, VerifyReport
    from reconciler.adapters.statedb import StateDB
    from reconciler.adapters.vsphere import VCenterPool, VSphereClient, VSphereRestore
    from reconciler.reconcile import ReconcileEvents, Reconciler

log = logging.getLogger(__name__)

__all__ = [
    "capture", "config_path", "fuse_available", "git_source", "holds_journal", "hook_runner",
    "http_server", "load_host_config", "missing_chunks", "open_journal", "open_repository",
    "open_state_db", "open_targets", "open_vcenters", "policy_directory", "read_verify_log",
    "reconciler", "record_verify_log", "resolve_password",
    "serve_mount", "verify_points", "vsphere_client", "vsphere_operations", "vsphere_restore",
]

DEFAULT_CONFIG = "vmkeep.yaml"
CONFIG_ENV = "VMKEEP_CONFIG"


def config_path(explicit: str | None) -> Path:
    """`--config FILE`, else `$VMKEEP_CONFIG`, else `./vmkeep.yaml`."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    return Path(DEFAULT_CONFIG)


def load_host_config(explicit: str | None) -> HostConfig:
    """Load and validate the host config; relative paths in it are relative to its file."""
    path = config_path(explicit)
    if not path.is_file():
        raise UsageError(
            f"host config {str(path)!r} not found: pass --config FILE or set ${CONFIG_ENV}"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read host config {str(path)!r}: {exc.strerror}") from None
    config = hostconfig.parse(data, str(path))
    _register_secrets(config)  # masked from here on, even before any login
    return config


def resolve_password(vc: VCenterConfig, environ: dict[str, str] | None = None) -> str:
    """Read a vCenter password from the environment or a file. Errors never show the value,
    and from now on no message, hook output or journal text does (`errors.mask`)."""
    password = _read_password(vc, os.environ if environ is None else environ)
    register_secret(password)
    return password


def _register_secrets(config: HostConfig) -> None:
    """Make `errors.mask` hide every vCenter password the host config names that can be
    read now, from its variable or its file (one that cannot is not registered here: the
    command that needs it says why it cannot be read)."""
    for vc in config.vcenters.values():
        with contextlib.suppress(VmkeepError):
            resolve_password(vc)


def _read_password(vc: VCenterConfig, env: Mapping[str, str]) -> str:
    if vc.password_env:
        value = env.get(vc.password_env)
        if value is None:
            raise VmkeepError(
                f"vCenter {vc.name!r}: environment variable {vc.password_env} is not set "
                "(it should hold the password)"
            )
        return value
    if vc.password_file:
        try:
            return Path(vc.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise VmkeepError(
                f"vCenter {vc.name!r}: password file {vc.password_file!r} is not UTF-8 text "
                f"(byte {exc.start + 1}); write the password as UTF-8"
            ) from None
        except OSError as exc:
            raise VmkeepError(
                f"vCenter {vc.name!r}: cannot read password file {vc.password_file!r}: "
                f"{exc.strerror}"
            ) from None
    raise VmkeepError(f"vCenter {vc.name!r}: set passwordEnv or passwordFile in the host config")


# ---------------------------------------------------------------------- observing


def _target_points(target: TargetConfig) -> list[ExportPoint]:
    if target.type != "directory":
        raise UsageError(f"target {target.name!r}: type {target.type!r} is not supported")
    if not Path(target.path).exists():
        return []  # nothing exported yet
    from reconciler.adapters.repository import Repository  # zstandard, blake3: when needed

    with Repository.open(target.path, create=False, target=target.name) as repo:
        points = list(repo.points())
        for partial in repo.partials():
            parsed = parse_point_id(partial.id)
            if parsed is None:
                continue
            policy, instance_uuid, slot = parsed
            points.append(
                ExportPoint(
                    id=partial.id,
                    policy=policy,
                    vm=VMRef("", instance_uuid),
                    slot=slot,
                    created_at=partial.started_at,
                    complete=False,
                    target=target.name,
                )
            )
    return points


def _full_read(name: str, vc: VCenterConfig, password: str) -> Inventory:
    from reconciler.adapters.vsphere import VSphereClient  # pyVmomi only when it is needed

    with VSphereClient(vc, password) as client:
        return client.inventory()


def capture(config: HostConfig, now: datetime,
            read: Callable[[str, VCenterConfig, str], Inventory] = _full_read) -> ObservedState:
    """The live observed state of every configured vCenter and target.

    A vCenter that cannot be read (login refused, TLS verification, network: any
    `VCenterError`; or a bug in vmkeep's reading of it) does not stop the others: it is
    recorded in `unobserved` with the reason, and said on stderr. A missing password is a
    configuration error and stops everything.
    `read` gives a vCenter's inventory (default: a full read; the controller: `WatchCaches`).
    """
    passwords = {name: resolve_password(vc) for name, vc in config.vcenters.items()}
    inventories, unobserved = [], {}
    for name, vc in sorted(config.vcenters.items()):
        try:
            inventories.append(read(name, vc, passwords[name]))
        except VCenterError as exc:
            unobserved[name] = exc.detail  # the name is said next to it
        except Exception as exc:  # a bug reading this vCenter must not stop the others
            log.debug("reading vCenter %r failed", name, exc_info=True)
            unobserved[name] = (f"internal error reading it (a bug in vmkeep, please report "
                                f"it; -vv shows the traceback): {type(exc).__name__}: {exc}")
        if name in unobserved:
            print(f"vmkeep: vCenter {name!r} could not be observed: {unobserved[name]}; its "
                  "VMs' coverage is unknown and nothing is decided for them", file=sys.stderr)
    targets = {name: _target_points(t) for name, t in sorted(config.targets.items())}
    return observed.observed_from(inventories, targets, now, unobserved)


# ---------------------------------------------------------------------- one reconcile


def open_state_db(config: HostConfig) -> StateDB:
    """The state DB (journal, leases) of the host config."""
    from reconciler.adapters.statedb import StateDB

    return StateDB(config.state)


@contextmanager
def open_targets(config: HostConfig) -> Iterator[dict[str, ExportStore]]:
    """Every export target of the host config, opened (created when missing)."""
    from reconciler.adapters.repository import Repository

    with ExitStack() as stack:
        targets: dict[str, ExportStore] = {}
        for name, target in sorted(config.targets.items()):
            targets[name] = stack.enter_context(
                Repository.open(target.path, create=True, chunk_size=target.chunk_size,
                                target=name, direct_writes=target.direct_writes)
            )
        yield targets


class _PoolVCenters:
    """The vCenter pool as the reconcile service's `VCenters` port."""

    def __init__(self, pool: VCenterPool) -> None:
        self._pool = pool

    def ops(self) -> Mapping[str, VCenterOps]:
        ops: Mapping[str, VCenterOps] = self._pool.ops()
        return ops

    def prepare_exports(self, exports: Mapping[str, int]) -> None:
        self._pool.prestart_readers(exports)

    def restore_target(self, name: str) -> RestoreTarget:
        from reconciler.adapters.vsphere import VSphereRestore

        return VSphereRestore(self._pool.operations(name).client)


def open_vcenters(config: HostConfig,
                  passwords: Mapping[str, str]) -> AbstractContextManager[_PoolVCenters]:
    """The vCenters of the host config as one pool (sessions opened when first used)."""

    @contextmanager
    def opened() -> Iterator[_PoolVCenters]:
        from reconciler.adapters.vsphere import VCenterPool

        with VCenterPool(config.vcenters, dict(passwords)) as pool:
            yield _PoolVCenters(pool)

    return opened()


def hook_runner(hooks: Mapping[str, HookConfig]) -> HookRunner:
    """The host config's hooks, run as subprocesses."""
    from reconciler.adapters.hooks import SubprocessHooks

    return SubprocessHooks(hooks)


class WatchCaches:
    """The controller's inventories, one watch cache (`VSphereWatch`) per vCenter kept across
    ticks: a full read at the first tick, then only what changed (issue 14 goal 2). A cache
    whose vCenter configuration or password changed, or whose read failed, is started again.
    """

    def __init__(self) -> None:
        self._caches: dict[str, tuple[VCenterConfig, str, Any]] = {}

    def read(self, name: str, vc: VCenterConfig, password: str) -> Inventory:
        from reconciler.adapters.vsphere import VSphereClient, VSphereWatch

        entry = self._caches.get(name)
        if entry is None or entry[:2] != (vc, password):
            self._drop(name)
            entry = self._caches[name] = (vc, password, VSphereWatch(VSphereClient(vc, password)))
        try:
            inventory: Inventory = entry[2].inventory()
        except Exception:
            self._drop(name)
            raise
        return inventory

    def capture(self, config: HostConfig, now: datetime) -> ObservedState:
        return capture(config, now, self.read)

    def _drop(self, name: str) -> None:
        entry = self._caches.pop(name, None)
        if entry is not None:
            entry[2].close()

    def close(self) -> None:
        for name in list(self._caches):
            self._drop(name)


def reconciler(config: HostConfig, passwords: Mapping[str, str], *,
               approve: Callable[[Plan], None], events: ReconcileEvents,
               watch: WatchCaches | None = None) -> Reconciler:
    """The reconcile service on the real adapters of `config` (nothing is opened yet);
    with `watch`, observed through the controller's watch caches."""
    from reconciler.reconcile import Reconciler  # apply and run only: `plan` does not pay

    return Reconciler(
        observe=(lambda now: capture(config, now)) if watch is None else (
            lambda now: watch.capture(config, now)),
        open_journal=lambda: open_state_db(config),
        open_vcenters=lambda: open_vcenters(config, passwords),
        open_targets=lambda: open_targets(config),
        hooks=hook_runner(config.hooks),
        limits=config.limits,
        transports={name: vc.transport for name, vc in config.vcenters.items()},
        approve=approve,
        events=events,
        hygiene=config.hygiene,
    )


# ---------------------------------------------------------------------- adapters for commands
# The shell reaches the adapters through these (tests/unit/test_layering.py): a command
# says what it needs, wiring builds it. Heavy libraries are imported when first used.


def policy_directory(paths: Sequence[str]) -> PolicySource:
    """Local policy files or directories."""
    from reconciler.adapters.policydir import PolicyDirectory

    return PolicyDirectory(list(paths))


def git_source(repo: str, rev: str, path: str = "") -> PolicySource:
    """The policy files of Git `repo` at `rev` (resolved to a commit SHA) under `path`."""
    from reconciler.adapters.git import GitSource  # GitPython only when a repo is read

    return GitSource.open(repo, rev, path)


def open_repository(path: str | Path, *, create: bool = False, chunk_size: int | None = None,
                    target: str = "") -> Repository:
    """An export repository (a target directory)."""
    from reconciler.adapters.repository import Repository  # zstandard, blake3: when needed

    return Repository.open(path, create=create, chunk_size=chunk_size, target=target)


def verify_points(repo: Repository, point_ids: list[str] | None) -> VerifyReport:
    """Check the given points of `repo` (all when None), as `Repository.verify` does for
    one."""
    return repo.verify_points(point_ids)


def missing_chunks(repo: Repository, chunk_ids: Iterable[bytes]) -> int:
    """How many of `chunk_ids` (the zero chunk aside) the repository's index lacks."""
    from reconciler.adapters.repository.format import ZERO_ID

    index = repo.index
    return sum(1 for cid in chunk_ids if cid != ZERO_ID and cid not in index)


def vsphere_client(vc: VCenterConfig, password: str) -> VSphereClient:
    """A session with one vCenter (opened by its context manager)."""
    from reconciler.adapters.vsphere import VSphereClient  # pyVmomi only when it is needed

    return VSphereClient(vc, password)


def vsphere_restore(client: VSphereClient) -> VSphereRestore:
    """The restore side of an open vCenter session."""
    from reconciler.adapters.vsphere import VSphereRestore

    return VSphereRestore(client)


def vsphere_operations(client: VSphereClient) -> VCenterOps:
    """The reconcile side (`VCenterOps`) of an open vCenter session."""
    from reconciler.adapters.vsphere import VSphereOperations

    return VSphereOperations(client)


def open_journal(path: str | Path, *, read_only: bool = False) -> StateDB:
    """The state DB at `path` (read-only: nothing is created or changed)."""
    from reconciler.adapters.statedb import StateDB

    return StateDB(path, read_only=read_only)


def holds_journal(path: Path) -> bool:
    """Whether the existing file `path` holds vmkeep's journal (found out read-only)."""
    from reconciler.adapters.statedb import holds_journal as holds

    return holds(path)


def read_verify_log(state: str | Path) -> list[VerifyEntry]:
    """Scheduled verification's record, kept next to the state DB."""
    from reconciler.adapters.verifylog import read_entries

    return read_entries(state)


def record_verify_log(state: str | Path, entries: list[VerifyEntry]) -> None:
    from reconciler.adapters.verifylog import record_entries

    record_entries(state, entries)


def http_server(address: tuple[str, int], routes: Mapping[str, Callable[[], Response]], *,
                on_error: Callable[[str, BaseException], None] | None = None) -> HttpServer:
    """The controller's HTTP endpoint (started by the caller)."""
    from reconciler.adapters.http_server import HttpServer

    return HttpServer(address, routes, on_error=on_error)


def fuse_available() -> str | None:
    """None when FUSE mounts can be served here, else why not."""
    from reconciler.adapters.fuse_mount import fuse_available as available

    return available()


def serve_mount(tree: Tree, mountpoint: str, *, mtime: float = 0.0) -> None:
    """Serve `tree` read-only at `mountpoint` until unmounted."""
    from reconciler.adapters.fuse_mount import serve

    serve(tree, mountpoint, mtime=mtime)

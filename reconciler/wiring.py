"""Wiring: find and load the host config, resolve secrets, build adapters.

This is the shell: it touches the environment and the file system so the core does not.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler import hostconfig, observed
from reconciler.errors import UsageError, VCenterError, VmkeepError, register_secret
from reconciler.model import (
    ExportPoint,
    HookConfig,
    HostConfig,
    ObservedState,
    Plan,
    TargetConfig,
    VCenterConfig,
    VMRef,
)
from reconciler.ports import ExportStore, HookRunner, RestoreTarget, VCenterOps
from reconciler.reconcile import ReconcileEvents, Reconciler

if TYPE_CHECKING:  # pyVmomi and the repository are imported when they are used
    from reconciler.adapters.statedb import StateDB
    from reconciler.adapters.vsphere import VCenterPool

__all__ = ["capture", "config_path", "hook_runner", "load_host_config", "open_state_db",
           "open_targets", "open_vcenters", "reconciler", "resolve_password"]

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
    for vc in config.vcenters.values():  # masked from here on, even before any login
        if vc.password_env and os.environ.get(vc.password_env):
            register_secret(os.environ[vc.password_env])
    return config


def resolve_password(vc: VCenterConfig, environ: dict[str, str] | None = None) -> str:
    """Read a vCenter password from the environment or a file. Errors never show the value,
    and from now on no message, hook output or journal text does (`errors.mask`)."""
    password = _read_password(vc, os.environ if environ is None else environ)
    register_secret(password)
    return password


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
            parts = partial.id.split("/")
            if len(parts) != 3:
                continue
            try:
                slot = datetime.strptime(parts[2], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            except ValueError:
                continue
            points.append(
                ExportPoint(
                    id=partial.id,
                    policy=parts[0],
                    vm=VMRef("", parts[1]),
                    slot=slot,
                    created_at=partial.started_at,
                    complete=False,
                    target=target.name,
                )
            )
    return points


def capture(config: HostConfig, now: datetime) -> ObservedState:
    """The live observed state of every configured vCenter and target.

    A vCenter that cannot be read (login refused, TLS verification, network: any
    `VCenterError`) does not stop the others: it is recorded in `unobserved` with the reason,
    and said on stderr. A missing password is a configuration error and stops everything.
    """
    from reconciler.adapters.vsphere import VSphereClient  # pyVmomi only when it is needed

    passwords = {name: resolve_password(vc) for name, vc in config.vcenters.items()}
    inventories, unobserved = [], {}
    for name, vc in sorted(config.vcenters.items()):
        try:
            with VSphereClient(vc, passwords[name]) as client:
                inventories.append(client.inventory())
        except VCenterError as exc:
            unobserved[name] = _reason(exc)
            print(f"vmkeep: vCenter {name!r} could not be observed: {unobserved[name]}; its "
                  "VMs' coverage is unknown and nothing is decided for them", file=sys.stderr)
    targets = {name: _target_points(t) for name, t in sorted(config.targets.items())}
    return observed.observed_from(inventories, targets, now, unobserved)


def _reason(exc: VCenterError) -> str:
    """The error without its `vCenter 'name': ` prefix (the name is said next to it)."""
    prefix = f"vCenter {exc.vcenter!r}: "
    text = str(exc)
    return text[len(prefix):] if text.startswith(prefix) else text


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
                                target=name)
            )
        yield targets


class _PoolVCenters:
    """The vCenter pool as the reconcile service's `VCenters` port."""

    def __init__(self, pool: VCenterPool) -> None:
        self._pool = pool

    def ops(self) -> Mapping[str, VCenterOps]:
        ops: Mapping[str, VCenterOps] = self._pool.ops()
        return ops

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


def reconciler(config: HostConfig, passwords: Mapping[str, str], *,
               approve: Callable[[Plan], None], events: ReconcileEvents) -> Reconciler:
    """The reconcile service on the real adapters of `config` (nothing is opened yet)."""
    return Reconciler(
        observe=lambda now: capture(config, now),
        open_journal=lambda: open_state_db(config),
        open_vcenters=lambda: open_vcenters(config, passwords),
        open_targets=lambda: open_targets(config),
        hooks=hook_runner(config.hooks),
        limits=config.limits,
        transports={name: vc.transport for name, vc in config.vcenters.items()},
        approve=approve,
        events=events,
    )

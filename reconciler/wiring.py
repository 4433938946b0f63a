"""Wiring: find and load the host config, resolve secrets, build adapters.

This is the shell: it touches the environment and the file system so the core does not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from reconciler import hostconfig
from reconciler.errors import UsageError, VmkeepError, register_secret
from reconciler.model import HostConfig, VCenterConfig

__all__ = ["config_path", "load_host_config", "resolve_password"]

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

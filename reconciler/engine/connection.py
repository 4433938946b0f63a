"""A Temporal client for `engine:` of the host config (TLS verified when configured)."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client, TLSConfig

from reconciler.errors import VmkeepError
from reconciler.model import EngineConfig

__all__ = ["EngineUnavailableError", "connect"]


class EngineUnavailableError(VmkeepError):
    """The engine's frontend cannot be reached or refused the connection."""


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise VmkeepError(f"engine: cannot read {what} {path!r}: {exc.strerror}") from None


async def connect(engine: EngineConfig) -> Client:
    tls: TLSConfig | bool = False
    if engine.tls is not None:
        tls = TLSConfig(
            server_root_ca_cert=_read(engine.tls.ca_file, "caFile"),
            client_cert=_read(engine.tls.cert_file, "certFile"),
            client_private_key=_read(engine.tls.key_file, "keyFile"),
            domain=engine.tls.server_name,
        )
    try:
        return await Client.connect(engine.address, namespace=engine.namespace, tls=tls)
    except RuntimeError as exc:
        raise EngineUnavailableError(
            f"engine: cannot connect to Temporal at {engine.address} "
            f"(namespace {engine.namespace!r}): {exc}"
        ) from None

"""A Temporal client for `engine:` of the host config (TLS verified when configured)."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client, TLSConfig

from reconciler.errors import EngineUnavailableError, VmkeepError
from reconciler.model import EngineConfig

__all__ = ["EngineUnavailableError", "connect", "leave_process"]

#: Set once this process has made a Temporal client.
_used = False


def leave_process(code: int) -> None:
    """End a command-line process that used the engine without interpreter finalization:
    the SDK's Rust threads can abort a finalizing interpreter ("PyGILState_Release ...
    finalizing", temporalio/sdk-python#300), which would turn any exit code into SIGABRT.
    Does nothing when the engine was not used."""
    if not _used:
        return
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise VmkeepError(f"engine: cannot read {what} {path!r}: {exc.strerror}") from None


async def connect(engine: EngineConfig) -> Client:
    global _used
    _used = True
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

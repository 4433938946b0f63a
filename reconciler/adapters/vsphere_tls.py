"""TLS for vCenter connections: verification on by default, pinning, the insecure opt-out.

Three ways to trust a vCenter, from the host config:

* ``caFile`` (or nothing: the system's CAs) — normal verification, host name included;
* ``thumbprint`` — pin the server certificate's SHA-1 or SHA-256 fingerprint (what vSphere
  shows, ``AA:BB:…``); the chain is not checked, the fingerprint is, on every connection;
* ``insecure: true`` — no verification at all, with a loud warning.

pyVmomi is not used here: `pinned_connection` returns the HTTPS connection class the SOAP
stub and the REST client both use. (pyVmomi's own ``thumbprint=`` checks the fingerprint only
when normal verification fails, and then turns verification off in the shared context for
every later connection; and without an explicit context it skips checks for localhost.)
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from reconciler.errors import VCenterError
from reconciler.model import VCenterConfig

__all__ = [
    "ConnectionFactory",
    "Endpoint",
    "FingerprintMismatch",
    "Pin",
    "certificate_hint",
    "endpoint_of",
    "fingerprint",
    "pin_of",
    "pinned_connection",
    "ssl_context",
]

log = logging.getLogger(__name__)

ConnectionFactory = Callable[..., http.client.HTTPSConnection]


@dataclass(frozen=True)
class Endpoint:
    """Where the vCenter's SOAP API is: https://host:port/path."""

    host: str
    port: int
    path: str

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def endpoint_of(config: VCenterConfig) -> Endpoint:
    try:
        parts = urlsplit(config.url)
        port = parts.port or 443
    except ValueError as exc:
        raise VCenterError(config.name, f"url {config.url!r} is not valid: {exc}") from None
    if parts.scheme != "https" or not parts.hostname:
        raise VCenterError(
            config.name, f"url {config.url!r} must look like https://vcenter.example.com/sdk"
        )
    return Endpoint(parts.hostname, port, parts.path.rstrip("/") or "/sdk")


@dataclass(frozen=True)
class Pin:
    """A pinned certificate fingerprint: hash algorithm and lower-case hex digest."""

    algorithm: str
    digest: str


_HEX = re.compile(r"^[0-9a-f]+$")


def pin_of(config: VCenterConfig) -> Pin | None:
    if not config.thumbprint:
        return None
    digest = config.thumbprint.replace(":", "").replace(" ", "").lower()
    algorithm = {40: "sha1", 64: "sha256"}.get(len(digest))
    if algorithm is None or not _HEX.match(digest):
        raise VCenterError(
            config.name,
            "thumbprint must be the certificate's SHA-1 or SHA-256 fingerprint in hex "
            "(e.g. 'AB:CD:…', 20 or 32 bytes)",
        )
    return Pin(algorithm, digest)


def fingerprint(der: bytes, algorithm: str = "sha256") -> str:
    """A certificate fingerprint the way vSphere shows it: upper-case hex pairs and colons."""
    digest = hashlib.new(algorithm, der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def ssl_context(config: VCenterConfig) -> ssl.SSLContext:
    """The explicit context every connection to this vCenter uses."""
    if config.insecure:
        log.warning(
            "vCenter %r: TLS certificate verification is DISABLED (insecure: true). Anyone on "
            "the network path can impersonate the vCenter and read the password. Set caFile "
            "or thumbprint in the host config instead.",
            config.name,
        )
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if config.thumbprint:
        # The fingerprint is checked by the connection after the handshake.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise VCenterError(
            config.name, f"cannot load caFile {config.ca_file!r}: {exc.strerror or exc}"
        ) from None


class FingerprintMismatch(ssl.SSLError):
    """The server's certificate is not the pinned one."""

    def __init__(self, expected: Pin, actual: str) -> None:
        super().__init__(f"certificate {expected.algorithm} fingerprint is {actual}")
        self.expected = expected
        self.actual = actual


def pinned_connection(
    context: ssl.SSLContext,
    pin: Pin | None,
    *,
    connect_timeout: float,
    read_timeout: float,
) -> ConnectionFactory:
    """A factory of HTTPS connections that check `pin` (if any) before sending a byte."""

    class VerifiedHTTPSConnection(http.client.HTTPSConnection):
        def __init__(self, host: str, port: int | None = None, **kwargs: Any) -> None:
            kwargs["context"] = context
            kwargs["timeout"] = connect_timeout
            super().__init__(host, port, **kwargs)

        def connect(self) -> None:
            super().connect()  # TCP connect and TLS handshake, within connect_timeout
            assert isinstance(self.sock, ssl.SSLSocket)
            if pin is not None:
                der = self.sock.getpeercert(binary_form=True) or b""
                actual = hashlib.new(pin.algorithm, der).hexdigest()
                if actual != pin.digest:
                    self.close()
                    raise FingerprintMismatch(pin, fingerprint(der, pin.algorithm))
            self.sock.settimeout(read_timeout)

    return VerifiedHTTPSConnection


def certificate_hint(config: VCenterConfig, endpoint: Endpoint, exc: ssl.SSLError) -> str:
    """The message of a CertificateError: what failed, what the server showed, what to set."""
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
    if isinstance(exc, FingerprintMismatch):
        algorithm = {"sha1": "SHA-1", "sha256": "SHA-256"}[exc.expected.algorithm]
        return (
            f"TLS certificate of {endpoint.netloc} does not match the pinned thumbprint "
            f"(the server's {algorithm} fingerprint is {exc.actual}); if the "
            "vCenter certificate was replaced on purpose, update thumbprint in the host config"
        )
    presented = _presented_fingerprint(endpoint)
    shown = f"; the server presented a certificate with SHA-256 fingerprint {presented}" if (
        presented
    ) else ""
    trust = f"caFile {config.ca_file!r} does not" if config.ca_file else "the system CAs do not"
    return (
        f"TLS certificate of {endpoint.netloc} could not be verified ({reason}): {trust} "
        f"vouch for it{shown}. Set caFile to the CA that signed the vCenter's certificate, or "
        "thumbprint to pin it after checking the fingerprint out of band"
    )


def _presented_fingerprint(endpoint: Endpoint) -> str:
    """Best effort: fetch the certificate without verifying it, only to show its fingerprint."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((endpoint.host, endpoint.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=endpoint.host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return ""
    return fingerprint(der) if der else ""

"""Errors raised by vmkeep, each with a stable exit code and a message that names the next step.

The tree is shallow on purpose; catch the class that says what you can do about it::

    VmkeepError                      exit 1  base class; never raised directly
    ├── UsageError                   exit 1  bad command line (flags, arguments)
    ├── InputError                   exit 1  bad user input: config or policy files, with locations
    ├── SourceError                  exit 1  a policy source (directory, Git) cannot be read
    ├── VCenterError                 exit 1  talking to a vCenter failed permanently
    │   ├── AuthenticationError              wrong user or password
    │   ├── CertificateError                 TLS verification failed
    │   └── TransientError                   network hiccup, busy, expired session: retry later
    ├── RepositoryError              exit 1  the export repository cannot be used
    │   ├── RepositoryLockedError            another writer holds the lock
    │   └── CorruptionError                  data does not match its checksum
    ├── HookError                    exit 1  a host-config hook failed or timed out
    ├── StalePlanError               exit 1  a saved plan no longer matches reality
    └── BlockedError                 exit 1  a guard (e.g. maxDeletesPerRun) stopped the run

`Diagnostic` is one located problem in an input file; `InputError` carries all of them, so
one run reports every error of every file.

Secrets: `register_secret(value)` is called wherever a configured secret is read (a vCenter
password from its variable or file); `mask(text)` replaces every registered value (and its
URL-encoded form) with `MASK`. It is the one masking mechanism: every `VmkeepError` message
goes through it, and so do the CLI's error and log lines, hook output and the journal's error
texts, so a secret that a hook or a fault echoes is never printed or stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "AuthenticationError",
    "BlockedError",
    "CertificateError",
    "CorruptionError",
    "Diagnostic",
    "HookError",
    "InputError",
    "LeaseHeldError",
    "RepositoryError",
    "RepositoryLockedError",
    "SourceError",
    "StalePlanError",
    "TransientError",
    "UsageError",
    "VCenterError",
    "VmkeepError",
    "backoff_delay",
    "forget_secrets",
    "mask",
    "register_secret",
]

#: What a secret is replaced with wherever it would be printed or stored.
MASK = "***"
#: Shorter values are not masked (masking every "ab" would garble all output; such a
#: password protects nothing anyway).
MIN_SECRET_LENGTH = 4

_secrets: tuple[str, ...] = ()


def register_secret(value: str) -> None:
    """Remember a configured secret so that `mask` hides it from now on (process-wide)."""
    global _secrets
    forms = {value, value.strip(), _percent_encoded(value)}
    fresh = {f for f in forms if len(f) >= MIN_SECRET_LENGTH} - set(_secrets)
    if fresh:  # longest first, so a secret containing another is masked whole
        _secrets = tuple(sorted({*_secrets, *fresh}, key=lambda s: (-len(s), s)))


def forget_secrets() -> None:
    """Forget every registered secret (for tests, each of which configures its own)."""
    global _secrets
    _secrets = ()


def _percent_encoded(value: str) -> str:
    """The value as it would appear in a URL (RFC 3986 percent-encoding)."""
    return "".join(
        c if c.isascii() and (c.isalnum() or c in "-._~") else
        "".join(f"%{byte:02X}" for byte in c.encode("utf-8"))
        for c in value
    )


def mask(text: str) -> str:
    """`text` with every registered secret replaced by `MASK`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class VmkeepError(Exception):
    """Base class of every error vmkeep reports to a user."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        message = mask(message)
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(VmkeepError):
    """The command line is wrong."""


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem located in an input file (1-based line and column)."""

    path: str
    line: int
    column: int
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.path}:{self.line}:{self.column}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "hint": self.hint,
        }


class InputError(VmkeepError):
    """One or more problems in user input (config or policy files), sorted by location."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: Sequence[Diagnostic] = sorted(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics) or "invalid input")


class SourceError(VmkeepError):
    """A policy source (directory or Git repository) cannot be read."""


class VCenterError(VmkeepError):
    """Talking to a vCenter failed; the message names the vCenter."""

    def __init__(self, vcenter: str, message: str) -> None:
        super().__init__(f"vCenter {vcenter!r}: {message}")
        self.vcenter = vcenter


class AuthenticationError(VCenterError):
    """The vCenter refused the credentials."""


class CertificateError(VCenterError):
    """The vCenter's TLS certificate could not be verified."""


class TransientError(VCenterError):
    """A failure that may go away on retry (network, busy, expired session)."""

    def __init__(self, vcenter: str, message: str, delay: float = 1.0) -> None:
        super().__init__(vcenter, message)
        self.delay = delay


def backoff_delay(attempt: int, base: float, *, cap: float | None = None,
                  hint: float = 0.0) -> float:
    """How long to wait after failed try `attempt` (1-based) of a `TransientError`.

    The one backoff formula of every retry loop: base·2^(attempt-1), at least `hint` (the
    error's own `delay`, when the caller honours it), at most `cap`. Pure, no jitter:
    `adapters.retry.RetryPolicy` adds jitter on top.
    """
    wait = max(hint, base * 2 ** (attempt - 1))
    return wait if cap is None else min(cap, wait)


class LeaseHeldError(VmkeepError):
    """Another process holds the lease; the message says who and until when."""

    def __init__(self, name: str, holder: str, expires_at: float) -> None:
        until = datetime.fromtimestamp(expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        super().__init__(
            f"the {name!r} lease is held by {holder} until {until}; wait for that run to "
            "finish, or for the lease to expire if that process is gone"
        )
        self.holder = holder
        self.expires_at = expires_at


class RepositoryError(VmkeepError):
    """The export repository cannot be used as asked."""


class RepositoryLockedError(RepositoryError):
    """Another writer holds the repository lock."""


class CorruptionError(RepositoryError):
    """Stored data does not match its checksum."""


class HookError(VmkeepError):
    """A host-config hook exited non-zero or ran past its timeout."""


class StalePlanError(VmkeepError):
    """A saved plan was made from a policy revision or observed state that changed since."""


class BlockedError(VmkeepError):
    """A safety guard stopped the run before it changed anything."""

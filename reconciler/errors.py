"""Errors raised by vmkeep, each with a stable exit code and a message that names the next step.

The tree is shallow on purpose; catch the class that says what you can do about it::

    VmkeepError                      exit 1  base class; never raised directly
    ├── UsageError                   exit 1  bad command line (flags, arguments)
    │   └── SelectionError                   no restore point, or several, answer a selection
    ├── InputError                   exit 1  bad user input: config or policy files, with locations
    ├── SourceError                  exit 1  a policy source (directory, Git) cannot be read
    ├── VCenterError                 exit 1  talking to a vCenter failed
    │   ├── AuthenticationError              wrong user or password
    │   ├── CertificateError                 TLS verification failed
    │   ├── ShutdownTimedOut                 a guest was not off by shutdownTimeout
    │   └── TransientError                   a VCenterError built transient (the usual spelling)
    ├── RepositoryError              exit 1  the export repository cannot be used
    │   ├── RepositoryLockedError            another writer holds the lock
    │   ├── PointExistsError                 another writer committed the same point
    │   └── CorruptionError                  data does not match its checksum
    │       └── PackMissingError             a pack the index names is gone
    ├── LeaseHeldError               exit 1  another process holds the run lease
    ├── HookError                    exit 1  a host-config hook failed or timed out
    ├── StalePlanError               exit 1  a saved plan no longer matches reality
    ├── BlockedError                 exit 1  a guard (e.g. maxDeletesPerRun) stopped the run
    ├── RecoveryError                exit 1  some repairs of an interrupted run failed
    ├── RestoreRefused               exit 1  a restore into vCenter would not proceed
    ├── RestoreFailed                exit 1  a restore into vCenter failed midway
    ├── UnreadableVolume             exit 1  a partition without a readable file system
    ├── EngineUnavailableError       exit 1  the Temporal frontend cannot be reached
    ├── ReconcileRunning             exit 1  another controller's reconcile is running
    └── ReconcileCancelled         exit 130  apply was interrupted and cancelled its reconciles

Signals that vmkeep catches itself and turns into one of the above (or a diagnostic), never
shown as such: `DurationError`, `ScheduleError`, `TransportUnavailable` (ValueErrors of pure
functions), `VmdkError` and `TagsUnavailable` (inside adapters). `vsphere_tls`'s
`FingerprintMismatch` stays there: it must be an `ssl.SSLError`, and this module does no I/O.

What the caller can do is read from attributes, never from message text:

* **transience** is a classification: `VmkeepError.retry_after` (seconds, or None) says that a
  retry may succeed and how long to wait first; `transient` is ``retry_after is not None``.
  `TransientError` is only the short way to raise a transient `VCenterError`; retry loops
  (`adapters.retry`, the executor) test `exc.transient`, and code catching `VCenterError`
  ("the vCenter failed") sees transient failures too. `amended` adds to a message (e.g. "gave
  up after 3 attempts") keeping class and fields.
* **what vCenter said**: `VCenterError.fault` is the vim/vmodl fault's class name
  (``"InvalidPowerState"``, ``"ManagedObjectNotFound"``) when a SOAP call or a task failed,
  `http_status` the status of a refused datastore or NFC request; `detail` is the message
  without its ``vCenter 'name': `` prefix.

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
from typing import Self

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "AuthenticationError",
    "BlockedError",
    "CertificateError",
    "CorruptionError",
    "Diagnostic",
    "DurationError",
    "EngineUnavailableError",
    "HookError",
    "InputError",
    "LeaseHeldError",
    "PackMissingError",
    "PointExistsError",
    "ReconcileCancelled",
    "ReconcileRunning",
    "RecoveryError",
    "RepositoryError",
    "RepositoryLockedError",
    "RestoreFailed",
    "RestoreRefused",
    "ScheduleError",
    "SelectionError",
    "ShutdownTimedOut",
    "SourceError",
    "StalePlanError",
    "TagsUnavailable",
    "TransientError",
    "TransportUnavailable",
    "UnreadableVolume",
    "UsageError",
    "VCenterError",
    "VmdkError",
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
    """Base class of every error vmkeep reports to a user.

    `retry_after`: seconds after which trying again may succeed; None when it will not.
    """

    exit_code: int = 1

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        message = mask(message)
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """A retry may succeed (the network, a busy object, an expired session)."""
        return self.retry_after is not None

    def amended(self, suffix: str) -> Self:
        """The same error (class and fields) with `suffix` added to its message."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._amend(mask(suffix))
        return clone

    def _amend(self, suffix: str) -> None:
        self.message += suffix
        self.args = (self.message,)

    def __str__(self) -> str:
        return self.message


class UsageError(VmkeepError):
    """The command line is wrong."""


class SelectionError(UsageError):
    """No point, or more than one, answers a selection; the message lists the candidates."""


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
    """Talking to a vCenter failed; the message names the vCenter.

    `fault`: the class name of the vim/vmodl fault a call or task failed with, if one did;
    `http_status`: the status of a refused HTTP request (datastore file, NFC download);
    `detail`: the message without the vCenter's name.
    """

    def __init__(self, vcenter: str, message: str, *, fault: str | None = None,
                 http_status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(f"vCenter {vcenter!r}: {message}", retry_after=retry_after)
        self.vcenter = vcenter
        self.detail = mask(message)
        self.fault = fault
        self.http_status = http_status

    def _amend(self, suffix: str) -> None:
        super()._amend(suffix)
        self.detail += suffix


class AuthenticationError(VCenterError):
    """The vCenter refused the credentials."""


class CertificateError(VCenterError):
    """The vCenter's TLS certificate could not be verified."""


class ShutdownTimedOut(VCenterError):
    """The guest was not off by `shutdownTimeout` (and `hardPowerOff` is not set);
    `requested`: the guest accepted the shutdown, so it may still be going down."""

    def __init__(self, vcenter: str, requested: bool, message: str) -> None:
        super().__init__(vcenter, message)
        self.requested = requested


class TransientError(VCenterError):
    """A vCenter failure that may go away on retry (network, busy, expired session): a
    `VCenterError` whose `retry_after` is `delay`. Decide on `exc.transient`, not this class."""

    def __init__(self, vcenter: str, message: str, delay: float = 1.0, *,
                 fault: str | None = None) -> None:
        super().__init__(vcenter, message, fault=fault, retry_after=delay)


def backoff_delay(attempt: int, base: float, *, cap: float | None = None,
                  hint: float = 0.0) -> float:
    """How long to wait after failed try `attempt` (1-based) of a transient error.

    The one backoff formula of every retry loop: base·2^(attempt-1), at least `hint` (the
    error's own `retry_after`, when the caller honours it), at most `cap`. Pure, no jitter:
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


class PointExistsError(RepositoryError):
    """A commit found its point already committed (by another writer of the same point)."""


class CorruptionError(RepositoryError):
    """Stored data does not match its checksum."""


class PackMissingError(CorruptionError):
    """A pack named by the index is gone (damage, or a concurrent GC moved its chunks)."""


class HookError(VmkeepError):
    """A host-config hook exited non-zero or ran past its timeout."""


class StalePlanError(VmkeepError):
    """A saved plan was made from a policy revision or observed state that changed since."""


class BlockedError(VmkeepError):
    """A safety guard stopped the run before it changed anything."""


class RecoveryError(VmkeepError):
    """Some repairs failed (each named); the others were made."""


class RestoreRefused(VmkeepError):
    """The restore would not proceed; the message gives every reason (exit 1)."""


class RestoreFailed(VmkeepError):
    """The restore failed midway; the message says what failed and what was cleaned."""


class UnreadableVolume(VmkeepError):
    """A partition without a file system The Sleuth Kit reads."""


class EngineUnavailableError(VmkeepError):
    """The engine's frontend cannot be reached or refused the connection."""


class ReconcileRunning(VmkeepError):
    """Another controller's reconcile of the vCenter is running (its workflow ID is taken)."""


class ReconcileCancelled(VmkeepError):
    """Apply was interrupted and cancelled its reconciles (exit 130, as an interrupt)."""

    exit_code = 130


# ---------------------------------------------------------------------- caught inside vmkeep


class DurationError(ValueError):
    """The text is not a duration: `reason` says why (without a location), `hint` how to fix
    it (by default `HINT`); `str()` gives both."""

    HINT = "units y, mo, w, d, h and m for minutes, largest first, each at most once; " \
        "e.g. 48h, 14d, 1y6mo, 90m"

    def __init__(self, reason: str, hint: str | None = None) -> None:
        hint = self.HINT if hint is None else hint
        super().__init__(f"{reason} ({hint})" if hint else reason)
        self.reason = reason
        self.hint = hint


class ScheduleError(ValueError):
    """The cron expression or zone cannot be evaluated (validation should have caught it)."""


class TransportUnavailable(ValueError):
    """The configured transport cannot read the disk (the message says why and what to set)."""


class VmdkError(Exception):
    """The download is not a streamOptimized VMDK vmkeep can read."""


class TagsUnavailable(Exception):
    """The tagging API cannot be used here (not served, or credentials refused)."""

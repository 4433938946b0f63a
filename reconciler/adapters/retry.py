"""Bounded retries with exponential backoff, for operations whose errors may be transient.

Adapters decide what is transient (they raise a `VmkeepError` whose `retry_after` is set,
usually a `TransientError`); this module only decides how often and how long to wait. Only
retry operations that are safe to repeat.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from reconciler.errors import VmkeepError, backoff_delay

__all__ = ["RetryPolicy", "call_with_retries"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; the wait before try n+1 is base·2^(n-1), capped, ±jitter."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.1

    def delay(self, attempt: int, hint: float = 0.0) -> float:
        wait = backoff_delay(attempt, self.base_delay, cap=self.max_delay, hint=hint)
        return max(0.0, wait * (1 + random.uniform(-self.jitter, self.jitter)))


def call_with_retries(
    operation: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `operation`; on a transient error wait and try again, up to `policy.attempts`.

    The last failure is raised with "gave up after N attempts" added to its message.
    """
    attempt = 1
    while True:
        try:
            return operation()
        except VmkeepError as exc:
            if exc.retry_after is None:
                raise
            if attempt >= policy.attempts:
                raise exc.amended(
                    f" (gave up after {attempt} attempt{'s' if attempt > 1 else ''})"
                ) from exc
            wait = policy.delay(attempt, exc.retry_after)
            log.info("%s; retrying in %.1f s (attempt %d of %d)", exc, wait, attempt + 1,
                     policy.attempts)
            sleep(wait)
            attempt += 1

"""The one backoff formula every retry loop uses."""

from __future__ import annotations

from reconciler.adapters.retry import RetryPolicy
from reconciler.errors import backoff_delay


def test_the_wait_doubles_with_each_failed_try() -> None:
    assert [backoff_delay(n, 0.5) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


def test_the_wait_never_exceeds_the_cap() -> None:
    assert backoff_delay(10, 0.5, cap=8.0) == 8.0


def test_a_server_hint_longer_than_the_schedule_wins_but_the_cap_still_holds() -> None:
    assert backoff_delay(1, 0.5, hint=3.0) == 3.0
    assert backoff_delay(1, 0.5, cap=2.0, hint=3.0) == 2.0


def test_the_retry_policy_without_jitter_waits_exactly_the_shared_schedule() -> None:
    policy = RetryPolicy(base_delay=0.25, max_delay=1.0, jitter=0.0)
    shared = [backoff_delay(n, 0.25, cap=1.0) for n in (1, 2, 3, 4)]
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == shared == [0.25, 0.5, 1.0, 1.0]

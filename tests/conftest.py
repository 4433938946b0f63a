"""Fixtures for every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler.errors import forget_secrets


@pytest.fixture(autouse=True)
def secrets_of_this_test_only() -> Iterator[None]:
    """vmkeep masks every password it has read in the process (`errors.mask`); a test starts
    with none, so that another test's password ("wrong", say) is not masked in its messages."""
    forget_secrets()
    yield
    forget_secrets()

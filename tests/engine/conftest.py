"""Fixtures of the engine tests: a Temporal dev server per module, and the simulator fixtures
of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.engine.temporal_server import TemporalServer, start_dev_server
from tests.integration.conftest import (  # noqa: F401  (fixtures, re-exported)
    sim_password,
    start_vcsim,
    vcsim_built,
)


@pytest.fixture(scope="module")
def temporal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemporalServer]:
    """A Temporal dev server on a free loopback port for the tests of one module."""
    with start_dev_server(tmp_path_factory.mktemp("temporal")) as server:
        yield server

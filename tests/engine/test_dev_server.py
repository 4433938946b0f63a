"""The dev server fixture serves a namespace that a client of the SDK can use."""

from __future__ import annotations

import asyncio

import pytest

from tests.engine.temporal_server import TemporalServer

pytestmark = pytest.mark.temporal


def test_the_dev_server_from_the_wheel_answers_a_client_on_loopback(
        temporal: TemporalServer) -> None:
    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
    from temporalio.client import Client

    async def describe() -> str:
        client = await Client.connect(temporal.address, namespace=temporal.namespace)
        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
        return str(info.server_version)

    assert asyncio.run(describe())
    assert temporal.address.startswith("127.0.0.1:")

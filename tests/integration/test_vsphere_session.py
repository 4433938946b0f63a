"""Sessions and transient failures: re-login, retries with backoff, clear errors at the end."""

from __future__ import annotations

import socket

import pytest

from reconciler.adapters.vsphere import VSphereClient
from reconciler.errors import AuthenticationError, TransientError
from reconciler.model import VCenterConfig

from .conftest import Simulator, StartVcsim, no_sleep

pytestmark = pytest.mark.vcsim


def test_a_terminated_session_is_re_established_transparently(start_vcsim: StartVcsim) -> None:
    sim = start_vcsim(vms=10)
    with VSphereClient(sim.config(), sim.password) as client:
        first = client.inventory()
        assert sim.terminate_sessions() >= 1
        second = client.inventory()

    assert [vm.instance_uuid for vm in second.vms] == [vm.instance_uuid for vm in first.vms]
    assert sim.stats()["methods"]["Login"] == 2


def test_a_session_that_dies_between_pages_is_re_established_and_the_read_restarted(
    start_vcsim: StartVcsim,
) -> None:
    # 20 VMs + folders and hosts in pages of 5 objects: login, view, 7 pages, destroy = 10
    # calls. Sessions end after 12 calls, so the second read loses its session mid-way.
    sim = start_vcsim("--session-call-limit", "12", vms=20)
    with VSphereClient(sim.config(), sim.password, page_size=5, sleep=no_sleep) as client:
        first = client.inventory()
        second = client.inventory()

    assert len(first.vms) == len(second.vms) == 20
    stats = sim.stats()
    assert stats["sessionsTerminated"] >= 1
    assert stats["methods"]["Login"] == 2


def test_an_expired_session_reported_only_in_missing_set_is_noticed(
    start_vcsim: StartVcsim,
) -> None:
    # A read takes 3 calls after Login (CreateContainerView, RetrievePropertiesEx,
    # DestroyView); sessions end after 5, so the second read's RetrievePropertiesEx runs
    # without a session. The simulator then answers with no fault: the view's contents are
    # left out and the root folder comes back with every property in missingSet. That must
    # not be taken for an empty inventory.
    sim = start_vcsim("--session-call-limit", "5", vms=4)
    with VSphereClient(sim.config(), sim.password, retries=0, sleep=no_sleep) as client:
        first = client.inventory()
        second = client.inventory()
    assert len(first.vms) == len(second.vms) == 4
    stats = sim.stats()
    assert stats["methods"]["Login"] == 2
    assert stats["methods"]["RetrievePropertiesEx"] == 3


def test_sessions_that_keep_ending_give_a_transient_error_after_bounded_retries(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim("--session-call-limit", "2", vms=4)
    waits: list[float] = []
    with (
        VSphereClient(sim.config(), sim.password, retries=2, sleep=waits.append) as client,
        pytest.raises(TransientError) as caught,
    ):
        client.inventory()

    message = str(caught.value)
    assert message.startswith("vCenter 'sim': read the inventory: the session ended")
    assert "gave up after 3 attempts" in message
    assert len(waits) == 2 and waits[0] < waits[1]  # exponential backoff
    assert sim.stats()["methods"]["Login"] == 9  # 3 attempts x 3 logins, then it stops


def test_http_503_and_dropped_connections_are_retried(start_vcsim: StartVcsim) -> None:
    sim = start_vcsim(vms=3)
    sim.faults(failRequests=2, dropRequests=1)
    waits: list[float] = []
    with VSphereClient(sim.config(), sim.password, retries=3, sleep=waits.append) as client:
        inventory = client.inventory()

    assert len(inventory.vms) == 3
    assert len(waits) == 3
    assert sim.stats()["methods"]["(intercepted)"] == 3
    assert sim.faults() == sim.faults() | {"failRequests": 0, "dropRequests": 0}


def test_a_vcenter_that_keeps_failing_gives_up_with_a_transient_error(
    start_vcsim: StartVcsim,
) -> None:
    sim = start_vcsim(vms=1)
    sim.faults(failRequests=100)
    with (
        VSphereClient(sim.config(), sim.password, retries=2, sleep=no_sleep) as client,
        pytest.raises(TransientError, match=r"HTTP 503 .*gave up after 3 attempts"),
    ):
        client.inventory()


def test_connection_refused_is_transient_and_names_the_address() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    config = VCenterConfig(name="gone", url=f"https://127.0.0.2:{port}/sdk", username="u")
    waits: list[float] = []
    with (
        VSphereClient(config, "pw", retries=3, backoff=0.25, sleep=waits.append) as client,
        pytest.raises(TransientError) as caught,
    ):
        client.inventory()
    assert str(caught.value) == (
        f"vCenter 'gone': read the inventory: connection refused (127.0.0.2:{port}) "
        "(gave up after 4 attempts)"
    )
    assert [round(w / 0.25) for w in waits] == [1, 2, 4]


def test_a_wrong_password_names_the_vcenter_user_and_variable_never_the_password(
    vcsim_small: Simulator,
) -> None:
    with (
        VSphereClient(vcsim_small.config(), "not-the-password", sleep=no_sleep) as client,
        pytest.raises(AuthenticationError) as caught,
    ):
        client.inventory()
    message = str(caught.value)
    assert message == (
        f"vCenter 'sim': login as 'vmkeep' at {vcsim_small.url.split('/')[2]} was refused: "
        "wrong user name or password (the password comes from $VMKEEP_SIM_PASSWORD)"
    )
    assert "not-the-password" not in message and vcsim_small.password not in message

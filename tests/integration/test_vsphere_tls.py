"""TLS: verification is on by default, pinning works, the insecure opt-out warns."""

from __future__ import annotations

import logging

import pytest

from reconciler.adapters.vsphere import VSphereClient
from reconciler.errors import CertificateError, VCenterError
from reconciler.model import VCenterConfig

from .conftest import Simulator, StartVcsim, no_sleep

pytestmark = pytest.mark.vcsim


def count_vms(sim: Simulator, config: VCenterConfig) -> int:
    with VSphereClient(config, sim.password, sleep=no_sleep) as client:
        return len(client.inventory().vms)


def test_a_certificate_from_another_ca_is_refused_before_the_password_is_sent(
    vcsim_small: Simulator, start_vcsim: StartVcsim
) -> None:
    other = start_vcsim(vms=1)
    vcsim_small.reset_stats()
    config = vcsim_small.config(ca_file=other.ca_file)

    with pytest.raises(CertificateError) as caught:
        count_vms(vcsim_small, config)

    message = str(caught.value)
    assert message.startswith("vCenter 'sim': TLS certificate of 127.0.0.2:")
    assert f"caFile {other.ca_file!r} does not vouch for it" in message
    assert vcsim_small.info["thumbprintSha256"] in message  # what the server presented
    assert "Set caFile" in message and "thumbprint" in message
    assert vcsim_small.stats()["requests"] == 0  # not a single SOAP call, so no Login


def test_without_a_ca_file_the_system_cas_are_used_and_refuse_the_simulator(
    vcsim_small: Simulator,
) -> None:
    with pytest.raises(CertificateError, match="the system CAs do not vouch for it"):
        count_vms(vcsim_small, vcsim_small.config(ca_file=None))


@pytest.mark.parametrize("field", ["thumbprint", "thumbprintSha256"])
def test_a_pinned_thumbprint_is_enough_without_a_ca(vcsim_small: Simulator, field: str) -> None:
    config = vcsim_small.config(ca_file=None, thumbprint=vcsim_small.info[field].lower())
    assert count_vms(vcsim_small, config) == vcsim_small.vm_count


def test_a_wrong_thumbprint_is_refused_even_though_the_ca_would_be_trusted(
    vcsim_small: Simulator, start_vcsim: StartVcsim
) -> None:
    other = start_vcsim(vms=1)
    config = vcsim_small.config(ca_file=None, thumbprint=other.info["thumbprint"])
    with pytest.raises(CertificateError) as caught:
        count_vms(vcsim_small, config)
    assert "does not match the pinned thumbprint" in str(caught.value)
    assert vcsim_small.info["thumbprint"] in str(caught.value)


def test_a_malformed_thumbprint_is_a_configuration_error(vcsim_small: Simulator) -> None:
    with pytest.raises(VCenterError, match="SHA-1 or SHA-256 fingerprint"):
        VSphereClient(vcsim_small.config(ca_file=None, thumbprint="AB:CD"), "pw")


def test_insecure_connects_to_any_certificate_and_warns_loudly(
    vcsim_small: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    config = vcsim_small.config(ca_file=None, insecure=True)
    with caplog.at_level(logging.WARNING):
        assert count_vms(vcsim_small, config) == vcsim_small.vm_count
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(
        "vCenter 'sim': TLS certificate verification is DISABLED" in w for w in warnings
    ), warnings


def test_an_http_url_is_refused(vcsim_small: Simulator) -> None:
    config = vcsim_small.config(url=vcsim_small.url.replace("https:", "http:"))
    with pytest.raises(VCenterError, match=r"must look like https://"):
        VSphereClient(config, "pw")

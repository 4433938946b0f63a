"""`engine:` and `proxies:` in the host config: converted, checked at file:line:col, and the
embedded default (no engine) unchanged; `queue_for` routes a VM to its proxy queue."""

from __future__ import annotations

import pytest

from reconciler import hostconfig
from reconciler.engine_config import queue_for
from reconciler.errors import InputError
from reconciler.model import VM, Disk, EngineConfig, EngineTLS, PowerState, ProxyConfig

PATH = "/etc/vmkeep/vmkeep.yaml"
BASE = b"vcenters: {}\ntargets: {}\n"


def problems(text: bytes) -> list[str]:
    with pytest.raises(InputError) as caught:
        hostconfig.parse(text, PATH)
    return [str(d) for d in caught.value.diagnostics]


def test_without_an_engine_the_config_is_the_embedded_default() -> None:
    config = hostconfig.parse(BASE, PATH)
    assert config.engine is None
    assert config.proxies == {}


def test_an_engine_with_tls_and_proxies_is_converted_with_paths_relative_to_the_file() -> None:
    config = hostconfig.parse(BASE + b"""\
engine:
  type: temporal
  address: temporal.example.com:7233
  namespace: backup
  tls: {caFile: certs/ca.pem, certFile: certs/me.pem, keyFile: /k/me.key}
proxies:
  site-a: {hosts: [esx1, esx2], datastores: [ds-a], slots: 4}
  site-b: {datastores: [ds-b]}
""", PATH)
    assert config.engine == EngineConfig(
        "temporal.example.com:7233", "backup", "vmkeep",
        EngineTLS("/etc/vmkeep/certs/ca.pem", "/etc/vmkeep/certs/me.pem", "/k/me.key"))
    assert config.proxies == {
        "site-a": ProxyConfig("site-a", (), ("esx1", "esx2"), ("ds-a",), 4),
        "site-b": ProxyConfig("site-b", (), (), ("ds-b",), 2),
    }


@pytest.mark.parametrize(("text", "expected"), [
    (b"engine: {type: temporal}\n",
     "vmkeep.yaml:3:1: `engine` is missing the required key `address`"),
    (b"engine: {type: celery, address: 'h:1'}\n", "vmkeep.yaml:3:"),
    (b"engine: {type: temporal, address: 'no port'}\n", "vmkeep.yaml:3:35:"),
    (b"engine:\n  type: temporal\n  address: h:7233\n  tls: {certFile: c.pem}\n",
     "vmkeep.yaml:6:8: `engine.tls`: mutual TLS needs both `certFile` and `keyFile`"),
    (b"proxies:\n  a: {hosts: [esx1]}\n  b: {hosts: [esx2, esx1]}\n",
     "vmkeep.yaml:5:21: `proxies.b.hosts`: 'esx1' is already served by proxy queue 'a'"),
    (b"proxies:\n  vmkeep: {hosts: [esx1]}\n",
     "vmkeep.yaml:4:11: `proxies.vmkeep`: 'vmkeep' is the default task queue"),
    (b"proxies:\n  a: {slots: 0}\n", "vmkeep.yaml:4:"),
    (b"proxies:\n  a: {clusters: [c1]}\n  b: {clusters: [c1]}\n",
     "vmkeep.yaml:5:18: `proxies.b.clusters`: 'c1' is already served by proxy queue 'a'"),
    (b"proxies:\n  Site_A: {}\n", "vmkeep.yaml:4:"),
], ids=["address missing", "unknown engine type", "address without port",
        "cert without key", "host claimed twice", "proxy named like the default queue",
        "zero slots", "cluster claimed twice", "bad queue name"])
def test_engine_and_proxy_problems_are_reported_at_their_location(text: bytes,
                                                                 expected: str) -> None:
    found = problems(BASE + text)
    assert any(p.startswith(f"/etc/vmkeep/{expected}") or expected in p for p in found), found
    assert all(p.startswith("/etc/vmkeep/vmkeep.yaml:") for p in found)


def vm(host: str = "", *files: str, cluster: str = "") -> VM:
    disks = tuple(Disk(i, f"Hard disk {i}", f, 1 << 20) for i, f in enumerate(files))
    return VM("vc", "vm1", "uuid-1", "vm-1", "/DC0/vm", PowerState.ON, True, host=host,
              disks=disks, cluster=cluster)


PROXIES = {
    "site-a": ProxyConfig("site-a", hosts=("esx1",)),
    "site-b": ProxyConfig("site-b", clusters=("c2",), datastores=("ds-b",)),
}


@pytest.mark.parametrize(("machine", "queue"), [
    (vm("esx1", "[ds-x] vm1/vm1.vmdk"), "site-a"),
    (vm("esx9", "[ds-x] vm1/a.vmdk", "[ds-b] vm1/b.vmdk"), "site-b"),
    (vm("esx9", cluster="c2"), "site-b"),
    (vm("esx9", "[ds-x] vm1/vm1.vmdk", cluster="c9"), "vmkeep"),
], ids=["by host", "by a datastore of any disk", "by cluster", "nobody claims it"])
def test_a_vm_goes_to_the_proxy_queue_that_claims_its_host_cluster_or_datastore(
        machine: VM, queue: str) -> None:
    assert queue_for(machine, PROXIES, "vmkeep") == queue

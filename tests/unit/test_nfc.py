"""NFC export downloads without vCenter: choosing a disk's URL, keeping the lease alive and
ending it. The simulator tests (tests/integration/test_apply.py) run the real thing."""

from __future__ import annotations

import io

import pytest

from reconciler.adapters.nfc import LeasedStream, NfcDevice, device_for, download_file
from reconciler.errors import VCenterError

DEVICES = [
    NfcDevice("/vm-7/VirtualIDEController0:0", "https://*/nfc/52ab/cdrom.iso", 10, disk=False),
    NfcDevice("/vm-7/ParaVirtualSCSIController0:0", "https://*/nfc/52ab/disk-0.vmdk", 5, True),
    NfcDevice("/vm-7/ParaVirtualSCSIController0:1", "https://*/nfc/52ab/disk-1.vmdk", 6, True),
]


@pytest.mark.parametrize(
    ("slot", "ordinal", "url"),
    [
        ("ParaVirtualSCSIController0:1", 0, "https://*/nfc/52ab/disk-1.vmdk"),
        ("ParaVirtualSCSIController0:0", 1, "https://*/nfc/52ab/disk-0.vmdk"),
        (None, 1, "https://*/nfc/52ab/disk-1.vmdk"),  # no controller known: device order
    ],
)
def test_a_disk_gets_the_download_of_its_controller_slot(slot, ordinal, url) -> None:
    assert device_for(DEVICES, slot, ordinal, "vc", "export").url == url


def test_a_disk_the_lease_does_not_offer_is_a_clear_error() -> None:
    with pytest.raises(VCenterError, match="looked for LsiLogic0:3; offered: /vm-7/Para"):
        device_for(DEVICES, "LsiLogic0:3", 0, "vc", "export of disk 3")
    with pytest.raises(VCenterError, match="disk #5"):
        device_for(DEVICES, None, 5, "vc", "export")


def test_a_star_host_is_the_vcenter_the_client_talks_to_and_other_hosts_are_kept() -> None:
    star = download_file(DEVICES[1], "vc", "vcenter.example", 8443, "disk 0")
    assert (star.host, star.port, star.request_path) == (
        "vcenter.example", 8443, "/nfc/52ab/disk-0.vmdk")
    esx = NfcDevice("k", "https://esx-3.example/nfc/52ab/disk-0.vmdk?x=1", 5, True)
    direct = download_file(esx, "vc", "vcenter.example", 443, "disk 0")
    assert (direct.host, direct.port, direct.request_path) == (
        "esx-3.example", 443, "/nfc/52ab/disk-0.vmdk?x=1")


def test_a_download_url_that_is_not_https_is_refused() -> None:
    plain = NfcDevice("k", "http://*/nfc/52ab/disk-0.vmdk", 5, True)
    with pytest.raises(VCenterError, match="not HTTPS"):
        download_file(plain, "vc", "vcenter.example", 443, "disk 0")


class Calls:
    def __init__(self) -> None:
        self.log: list[str] = []

    def progress(self, percent: int) -> None:
        self.log.append(f"progress {percent}")

    def complete(self) -> None:
        self.log.append("complete")

    def abort(self) -> None:
        self.log.append("abort")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def leased(data: bytes, calls: Calls, clock: Clock) -> LeasedStream:
    return LeasedStream(io.BytesIO(data), len(data), progress=calls.progress,
                        complete=calls.complete, abort=calls.abort, clock=clock, every=30)


def test_reading_reports_lease_progress_every_interval_and_closing_completes_it() -> None:
    calls, clock = Calls(), Clock()
    stream = leased(bytes(100), calls, clock)
    stream.read(10)
    clock.now = 31
    stream.read(40)
    clock.now = 45
    stream.read(10)  # within the interval: no report
    clock.now = 62
    stream.read()
    stream.close()
    stream.close()
    assert calls.log == ["progress 50", "progress 99", "complete"]


def test_a_changed_extent_reader_that_skips_bytes_still_completes_the_lease() -> None:
    calls, clock = Calls(), Clock()
    stream = leased(bytes(100), calls, clock)
    stream.seek(90)
    assert len(stream.read(5)) == 5
    stream.close()
    assert calls.log == ["complete"]


class Failing(io.BytesIO):
    def read(self, size: int | None = -1, /) -> bytes:
        raise OSError("connection reset")


def test_a_failed_read_aborts_the_lease() -> None:
    calls = Calls()
    stream = LeasedStream(Failing(b"x"), 1, progress=calls.progress, complete=calls.complete,
                          abort=calls.abort)
    with pytest.raises(OSError):
        stream.read(1)
    stream.close()
    assert calls.log == ["abort"]


def test_a_lease_that_cannot_be_ended_is_only_a_warning(caplog) -> None:
    def refuse() -> None:
        raise VCenterError("vc", "HttpNfcLeaseComplete: InvalidState")

    stream = LeasedStream(io.BytesIO(b"abc"), 3, progress=lambda _p: None, complete=refuse,
                          abort=refuse)
    stream.read()
    stream.close()
    assert "InvalidState" in caplog.text

"""Which transport reads a disk (`model.choose_transport`), how NFC leases are kept alive and
ended (`adapters.nfc`), and recovery of a lease a crashed run left (`recovery.Recovery`)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from reconciler import hostconfig
from reconciler.adapters.nfc import LeasedStream, progress_interval
from reconciler.adapters.statedb import StateDB
from reconciler.errors import InputError
from reconciler.model import TransportUnavailable, after_refusal, choose_transport
from reconciler.recovery import Recovery

from .fakes import FakeVCenter


@pytest.mark.parametrize(
    ("setting", "powered_off", "datastore_type", "kind", "method"),
    [
        ("auto", False, "VMFS", "http", "datastore HTTP"),
        ("auto", False, "NFS", "http", "datastore HTTP"),
        ("auto", False, "vsan", "nfc", "ExportSnapshot"),
        ("auto", False, "VVOL", "nfc", "ExportSnapshot"),
        ("auto", True, "vsan", "nfc", "ExportVm"),
        ("auto", True, "VMFS", "nfc", "ExportVm"),
        ("http", False, "VMFS", "http", "datastore HTTP"),
        ("http", True, "VMFS", "http", "datastore HTTP"),
        ("nfc", False, "VMFS", "nfc", "ExportSnapshot"),
        ("nfc", True, "VMFS", "nfc", "ExportVm"),
    ],
)
def test_each_disk_gets_the_transport_its_datastore_and_setting_call_for(
    setting: str, powered_off: bool, datastore_type: str, kind: str, method: str
) -> None:
    chosen = choose_transport(setting, powered_off=powered_off, datastore="ds1",
                              datastore_type=datastore_type)
    assert (chosen.kind, chosen.method) == (kind, method)
    assert chosen.ranged is (kind == "http")
    assert chosen.reason and chosen.describe().startswith(
        "NFC (" if kind == "nfc" else "datastore HTTP: ")


@pytest.mark.parametrize(("datastore_type", "name"), [("vsan", "vSAN"), ("VVOL", "VVol")])
def test_transport_http_on_an_object_datastore_says_the_type_and_what_to_set(
    datastore_type: str, name: str
) -> None:
    with pytest.raises(TransportUnavailable) as refused:
        choose_transport("http", powered_off=False, datastore="vsanDatastore",
                         datastore_type=datastore_type)
    message = str(refused.value)
    assert f"datastore 'vsanDatastore' is of type {datastore_type} ({name})" in message
    assert "set transport: auto or nfc" in message and "\n" not in message


def test_a_refused_datastore_read_falls_back_to_the_snapshot_export() -> None:
    chosen = choose_transport("auto", powered_off=False, datastore="nfs1", datastore_type="NFS")
    fallback = after_refusal(chosen, "HTTP 404 Not Found")
    assert (fallback.kind, fallback.method, fallback.datastore) == ("nfc", "ExportSnapshot",
                                                                    "nfs1")
    assert "refused the read of the disk's file (HTTP 404 Not Found)" in fallback.reason


@pytest.mark.parametrize(("timeout", "every"), [(None, 30.0), (0, 30.0), (300, 30.0),
                                                (40, 20.0), (2, 1.0), (1, 0.5)])
def test_progress_is_reported_well_within_the_lease_timeout(timeout, every) -> None:
    assert progress_interval(timeout) == every


def test_a_reader_whose_own_work_failed_aborts_the_lease_instead_of_completing_it() -> None:
    log: list[str] = []
    stream = LeasedStream(io.BytesIO(bytes(10)), 10, progress=lambda _p: None,
                          complete=lambda: log.append("complete"),
                          abort=lambda: log.append("abort"), lease_id="session[1]52")
    stream.read(4)
    stream.fail()  # e.g. the repository could not store a chunk
    stream.close()
    assert log == ["abort"] and stream.lease_id == "session[1]52"


def journal_of_exports(tmp_path: Path, *updates: list[dict[str, object]]) -> StateDB:
    """A journal with one run, killed: an export per item of `updates`, on VMs app, db, …,
    its details updated in turn by the dicts of that item."""
    db = StateDB(tmp_path / "state.db")
    db.start_run("run-1", "test", 0.0)
    for n, (vm, steps) in enumerate(zip(("app", "db", "web"), updates, strict=False)):
        aid = db.record_intent("run-1", kind="export.create", point_id=f"p{n}",
                               vm_uuid=f"uuid-{vm}", vm_name=vm, vcenter="sim", now=1.0)
        for details in steps:
            db.update_details(aid, details)
    return db


def test_recovery_aborts_the_lease_a_crashed_export_left_before_anything_else(
    tmp_path: Path,
) -> None:
    vc = FakeVCenter()
    db = journal_of_exports(tmp_path, [{"nfcLease": "session[7]52ab"}],
                            [{"nfcLease": None}])  # the second one's lease ended in time
    notes = Recovery(db, {"sim": vc}, {}, lambda: 2.0).run(db.unfinished_actions(), {"sim": []})
    assert vc.calls == [("abort_lease", "session[7]52ab")]
    assert notes == ["aborted NFC export lease session[7]52ab a crashed run left (sim)"]


def test_recovery_warns_of_a_lease_a_crashed_export_asked_for_but_never_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    vc = FakeVCenter()
    db = journal_of_exports(
        tmp_path,
        [{"nfcLeaseRequested": True}],  # killed before the lease's id came
        [{"nfcLeaseRequested": True}, {"nfcLease": "session[7]52ab", "nfcLeaseRequested": None}],
    )
    with caplog.at_level(logging.WARNING, logger="reconciler.recovery"):
        notes = Recovery(db, {"sim": vc}, {}, lambda: 2.0).run(db.unfinished_actions(),
                                                                {"sim": []})
    assert vc.calls == [("abort_lease", "session[7]52ab")]  # nothing to abort for the other
    assert notes == ["aborted NFC export lease session[7]52ab a crashed run left (sim)"]
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "NFC export lease of VM 'uuid-app'" in warning and "no run can name it" in warning


def test_the_host_config_sets_the_transport_per_vcenter_and_defaults_to_auto() -> None:
    config = hostconfig.parse(
        b"vcenters:\n"
        b"  a: {url: https://a, username: u, passwordEnv: A}\n"
        b"  b: {url: https://b, username: u, passwordEnv: B, transport: nfc}\n",
        "vmkeep.yaml")
    assert (config.vcenters["a"].transport, config.vcenters["b"].transport) == ("auto", "nfc")


def test_an_unknown_transport_is_one_clear_line_at_its_place() -> None:
    with pytest.raises(InputError) as bad:
        hostconfig.parse(b"vcenters:\n  a: {url: https://a, username: u, passwordEnv: A,"
                         b" transport: vddk}\n", "vmkeep.yaml")
    [line] = str(bad.value).splitlines()
    assert line.startswith("vmkeep.yaml:2:") and "transport" in line and "auto" in line


class SlowLink(io.BytesIO):
    """Every read takes one second of the (fake) clock."""

    def __init__(self, data: bytes, clock: list[float]) -> None:
        super().__init__(data)
        self.clock = clock

    def read(self, size: int | None = -1, /) -> bytes:
        self.clock[0] += 1.0
        return super().read(size)


def test_one_big_read_from_a_slow_link_still_reports_progress_within_the_lease_timeout() -> None:
    now = [0.0]
    reports: list[int] = []
    size = 8 * 256 * 1024
    stream = LeasedStream(SlowLink(bytes(size), now), size, progress=reports.append,
                          complete=lambda: None, abort=lambda: None, clock=lambda: now[0],
                          every=progress_interval(4))
    assert len(stream.read(size)) == size  # 8 pieces, one fake second each
    assert len(reports) >= 3 and reports == sorted(reports)

"""Disk data read by a helper process (`vcenters.<name>.readers: process`, the default),
against the simulator's datastore HTTP interface: the same bytes and errors as a reader in
the export's own thread, one helper kept for the next files, no helper outliving its export,
and the export's own thread reading when no helper can start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from reconciler.adapters.datastore import DatastoreFile
from reconciler.adapters.reader_process import BLOCK, ProcessRangeReader, ReaderProcess
from reconciler.adapters.vsphere import VCenterPool, VSphereClient, VSphereOperations
from reconciler.errors import TransientError, VCenterError

from .apply_world import Estate
from .conftest import Simulator, StartVcsim, module_simulator, process_alive, wait_until
from .kill_world import KillEstate
from .test_apply_kill import check_invariants

pytestmark = pytest.mark.vcsim

sim = module_simulator("vcsim-reader-process", vms=2)
SIZE = 2 * BLOCK + 3 * 4096 + 17  # two full blocks and an odd tail


@pytest.fixture(scope="module")
def estate(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Estate:
    return Estate(sim, tmp_path_factory.mktemp("reader-process"))  # readers: the default


@pytest.fixture(scope="module")
def data(estate: Estate) -> bytes:
    """The first VM's disk, filled with bytes that differ at every position."""
    vm = min(estate.vms().values(), key=lambda v: v.name)
    estate.grow_disk(vm, 3 * BLOCK)
    content = os.urandom(SIZE)
    estate.fill_disk(vm, content)
    return content


@pytest.fixture
def helper(sim: Simulator) -> Iterator[ReaderProcess]:
    process = ReaderProcess(sim.config(), connect_timeout=10, read_timeout=60)
    yield process
    process.close()


def first_file(estate: Estate) -> tuple[DatastoreFile, str]:
    vm = min(estate.vms().values(), key=lambda v: v.name)
    file, _, cookie = estate.flat_file(vm)
    return file, cookie.split(";")[0]


def reader(helper: ReaderProcess, estate: Estate, size: int = SIZE) -> ProcessRangeReader:
    assert helper.take()
    file, cookie = first_file(estate)
    return ProcessRangeReader(helper, file, cookie, size)



def test_a_helper_reads_the_file_whole_in_blocks_of_any_size(
    estate: Estate, data: bytes, helper: ReaderProcess,
) -> None:
    with reader(helper, estate) as stream:
        parts = [stream.read(n) for n in (1, 4096, BLOCK - 1, BLOCK + 5)]
        parts.append(stream.read())
        assert stream.read(10) == b""
    assert b"".join(parts) == data


def test_a_helper_reads_again_from_where_a_seek_goes(
    estate: Estate, data: bytes, helper: ReaderProcess,
) -> None:
    with reader(helper, estate) as stream:
        assert stream.read(1000) == data[:1000]
        stream.seek(BLOCK + 12345)
        assert stream.read(BLOCK) == data[BLOCK + 12345 : 2 * BLOCK + 12345]
        stream.seek(7)
        buffer = bytearray(100)
        assert stream.readinto(buffer) == 100 and bytes(buffer) == data[7:107]
        assert stream.tell() == 107


def test_one_helper_reads_one_file_after_another_without_starting_again(
    estate: Estate, data: bytes, helper: ReaderProcess,
) -> None:
    pids = []
    for _ in range(2):
        with reader(helper, estate) as stream:
            assert stream.read(5000) == data[:5000]  # closed before the end: stopped
            pids.append(helper.pid)
    assert pids[0] is not None and pids == [pids[0], pids[0]]
    assert helper.take()  # free again once its reader is closed
    helper.give_back()


def test_a_file_the_datastore_does_not_have_is_the_error_a_reader_in_a_thread_raises(
    estate: Estate, data: bytes, helper: ReaderProcess,
) -> None:
    file, cookie = first_file(estate)
    gone = DatastoreFile(file.vcenter, file.host, file.port, file.datacenter, file.datastore,
                         "no-such-vm/no-such-flat.vmdk")
    assert helper.take()
    with ProcessRangeReader(helper, gone, cookie, 4096) as stream, \
            pytest.raises(VCenterError) as caught:
        stream.read()
    assert caught.value.http_status == 404 and "no-such-flat.vmdk" in caught.value.message
    with reader(helper, estate) as stream:  # the same helper goes on with the next file
        assert stream.read(100) == data[:100]


def test_a_killed_helper_fails_the_read_as_worth_a_retry_and_the_next_read_starts_anew(
    estate: Estate, data: bytes, helper: ReaderProcess,
) -> None:
    with reader(helper, estate) as stream:
        assert stream.read(10) == data[:10]
        pid = helper.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(TransientError, match="disk reader process ended"):
            stream.read()
        at = stream.tell()  # as with RangeReader: what a failed call copied counts as read
        assert stream.read() == data[at:]  # a retry goes on from where the stream stands
        assert helper.pid not in (None, pid)
    with reader(helper, estate) as stream:
        assert stream.read() == data


def test_a_helper_that_cannot_start_says_why_in_the_error_of_the_read(
    estate: Estate, data: bytes, helper: ReaderProcess, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'Traceback:' >&2\n"
                      "echo \"ModuleNotFoundError: No module named 'ssl'\" >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(broken))
    with reader(helper, estate) as stream, pytest.raises(TransientError) as caught:
        stream.read(10)
    assert "disk reader process ended (exit status 3: ModuleNotFoundError: No module named " \
           "'ssl')" in caught.value.message


@pytest.fixture
def no_helper_can_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Python for the helpers that only says it cannot run and exits 3."""
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'cannot run here' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(broken))


def said_why_no_helper(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "reader process" in r.getMessage()]


NO_HELPER = ("vCenter 'sim': disks are read in the exports' own threads: the disk reader "
             "process could not start: exit status 3: cannot run here")


@pytest.mark.usefixtures("no_helper_can_start")
def test_without_a_helper_the_export_thread_reads_the_disk_and_says_why_once(
    estate: Estate, data: bytes, caplog: pytest.LogCaptureFixture,
) -> None:
    vm = min(estate.vms().values(), key=lambda v: v.name)
    with VSphereClient(estate.sim.config(), estate.sim.password) as client:
        ops = VSphereOperations(client)
        for _ in range(2):
            with closing(ops.open_disk(vm, "", vm.disks[0])) as stream:
                assert stream.read(SIZE) == data
    assert said_why_no_helper(caplog) == [NO_HELPER]


def test_with_readers_thread_no_helper_is_started(estate: Estate, data: bytes) -> None:
    vm = min(estate.vms().values(), key=lambda v: v.name)
    config = estate.sim.config(readers="thread")
    with VSphereClient(config, estate.sim.password) as client:
        with closing(VSphereOperations(client).open_disk(vm, "", vm.disks[0])) as stream:
            assert stream.read(100) == data[:100]
        assert client.reader_process() is None


def test_a_helper_gets_neither_the_password_nor_the_session_cookie_in_its_argv_or_env(
    estate: Estate, data: bytes, helper: ReaderProcess, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VMKEEP_SIM_PASSWORD", estate.sim.password)
    _, cookie = first_file(estate)
    with reader(helper, estate) as stream:
        stream.read(10)
        pid = helper.pid
        seen = Path(f"/proc/{pid}/environ").read_bytes() + Path(f"/proc/{pid}/cmdline").read_bytes()
    assert estate.sim.password.encode() not in seen
    assert cookie.split("=", 1)[1].strip('"').encode() not in seen
    assert b"VMKEEP_SIM_PASSWORD" not in seen


def test_a_helper_ends_when_the_export_that_started_it_is_killed(
    estate: Estate, data: bytes, tmp_path: Path,
) -> None:
    file, cookie = first_file(estate)
    script = tmp_path / "export.py"
    script.write_text(textwrap.dedent(f"""\
        import sys, time
        from reconciler.adapters.datastore import DatastoreFile
        from reconciler.adapters.reader_process import ProcessRangeReader, ReaderProcess
        from reconciler.model import VCenterConfig
        helper = ReaderProcess(VCenterConfig(**{estate.sim.config().__dict__!r}),
                               connect_timeout=10, read_timeout=60)
        helper.take()
        stream = ProcessRangeReader(helper, DatastoreFile(**{file.__dict__!r}), {cookie!r},
                                    {SIZE})
        stream.read(10)
        print(helper.pid, flush=True)
        time.sleep(300)
        """))
    export = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert export.stdout is not None
    pid = int(export.stdout.readline())
    assert process_alive(pid)
    export.kill()
    export.wait()
    wait_until(lambda: not process_alive(pid), timeout=30)


def test_an_apply_whose_disks_are_read_by_helpers_stores_each_disk_as_it_is(
    estate: Estate, data: bytes,
) -> None:
    run = estate.apply("2026-11-25T01:30:00Z", "-o", "json")
    assert run.code == 0, run.err
    vm = min(estate.vms().values(), key=lambda v: v.name)
    [point] = [p for p in estate.points() if p.vm.name == vm.name]
    stored = estate.read_point_disk(point.id, f"disk-{vm.disks[0].key}")
    assert len(stored) == 3 * BLOCK and stored[:SIZE] == data and not stored[SIZE:].strip(b"\0")
    helpers = subprocess.run(["pgrep", "-f", "reconciler.adapters.reader_process"],
                             capture_output=True, text=True).stdout.split()
    assert [p for p in helpers if process_alive(int(p)) and
            Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1] ==
            str(os.getpid())] == []  # every export's helper ended with the apply


def helpers_of(pid: int) -> list[int]:
    """The disk reader processes `pid` started that still run."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if ppid == str(pid) and b"reconciler.adapters.reader_process" in cmdline \
                and process_alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def test_an_apply_killed_while_helpers_read_leaves_none_and_the_next_run_converges(
    start_vcsim: StartVcsim, tmp_path: Path,
) -> None:
    estate = KillEstate(start_vcsim(vms=2), tmp_path)  # readers: the default, process
    for vm in estate.vms().values():
        estate.grow_disk(vm, 3 * BLOCK)
        estate.fill_disk(vm, os.urandom(2 * BLOCK))
    power = {vm.name: vm.power_state for vm in estate.vms().values()}
    estate.set_shape(mode="crash")
    day = "2026-11-25T01:30:00Z"
    export_open = estate.journaled("kind = 'export.create' AND status = 'started'")
    proc = estate.spawn_apply(day)
    estate.wait_for(proc, lambda: export_open() and bool(helpers_of(proc.pid)),
                    "an export read by a helper")
    helpers = helpers_of(proc.pid)
    estate.kill(proc)
    wait_until(lambda: not any(map(process_alive, helpers)), timeout=30)  # none outlives it
    repair = estate.apply(day)
    assert repair.code == 0, repair.out + repair.err
    check_invariants(estate, day, "killed while helpers read", power)


def test_the_threads_of_a_pool_share_helpers_and_one_outlives_the_thread_that_started_it(
    estate: Estate, data: bytes,
) -> None:
    """The second thread reads through the helper the first one started and then ended
    with; a helper spawned by the first thread itself would have died with it
    (`PR_SET_PDEATHSIG` follows the thread)."""
    vm = min(estate.vms().values(), key=lambda v: v.name)
    pool = VCenterPool({"sim": estate.sim.config()}, {"sim": estate.sim.password})
    seen: list[list[int]] = []
    read: list[bytes] = []

    def one_thread() -> None:
        ops = pool.operations("sim")
        with closing(ops.open_disk(vm, "", vm.disks[0])) as stream:
            read.append(stream.read(SIZE))
        seen.append(helpers_of(os.getpid()))

    try:
        for _ in range(2):  # one after the other: the first thread has ended
            worker = threading.Thread(target=one_thread)
            worker.start()
            worker.join()
    finally:
        pool.close()
    assert read == [data, data]
    assert len(seen[0]) == 1 and seen[1] == seen[0]
    assert not any(process_alive(pid) for pid in seen[0])  # the pool's close ended it


def test_helpers_started_ahead_for_the_exports_to_come_are_the_ones_they_read_through(
    estate: Estate, data: bytes,
) -> None:
    vm = min(estate.vms().values(), key=lambda v: v.name)
    pool = VCenterPool({"sim": estate.sim.config()}, {"sim": estate.sim.password})
    both_open = threading.Barrier(2, timeout=60)
    read: list[bytes] = []

    def one_export() -> None:
        with closing(pool.operations("sim").open_disk(vm, "", vm.disks[0])) as stream:
            both_open.wait()  # two disks read at once: two helpers
            read.append(stream.read(SIZE))

    try:
        pool.prestart_readers({"sim": 2})
        wait_until(lambda: len(helpers_of(os.getpid())) == 2)
        ahead = sorted(helpers_of(os.getpid()))
        exports = [threading.Thread(target=one_export) for _ in range(2)]
        for export in exports:
            export.start()
        for export in exports:
            export.join()
        after = sorted(helpers_of(os.getpid()))
    finally:
        pool.close()
    assert read == [data, data]
    assert after == ahead  # the exports started none of their own
    assert not any(process_alive(pid) for pid in ahead)


@pytest.mark.usefixtures("no_helper_can_start")
def test_helpers_that_cannot_start_ahead_say_why_once_and_the_exports_read_in_threads(
    estate: Estate, data: bytes, caplog: pytest.LogCaptureFixture,
) -> None:
    vm = min(estate.vms().values(), key=lambda v: v.name)
    with VCenterPool({"sim": estate.sim.config()}, {"sim": estate.sim.password}) as pool:
        pool.prestart_readers({"sim": 2})
        for _ in range(2):
            with closing(pool.operations("sim").open_disk(vm, "", vm.disks[0])) as stream:
                assert stream.read(SIZE) == data
    assert said_why_no_helper(caplog) == [NO_HELPER]


def test_no_helper_is_started_ahead_for_a_vcenter_read_in_threads(estate: Estate) -> None:
    with VCenterPool({"sim": estate.sim.config(readers="thread")},
                     {"sim": estate.sim.password}) as pool:
        pool.prestart_readers({"sim": 2})
        assert helpers_of(os.getpid()) == []


def test_blocks_lent_from_the_helpers_ring_are_the_files_bytes_and_closing_waits_for_them(
    estate: Estate, data: bytes, helper: ReaderProcess,
) -> None:
    """What the export hashes in place is what the file holds; closing the reader (which
    lets the helper refill its ring for the next file) waits until the last lent block is
    released, and the helper then reads the next file as before."""
    stream = reader(helper, estate)
    first = stream.lend(BLOCK)
    second = stream.lend(BLOCK)
    assert first is not None and second is not None
    assert first.buffer[first.offset : first.offset + first.length] == data[:BLOCK]
    assert second.buffer[second.offset : second.offset + second.length] \
        == data[BLOCK : 2 * BLOCK]
    first.release()
    first.release()  # once is what counts
    assert stream.lend(4096) is None  # the helper read more than that: it is read instead
    assert stream.read() == data[2 * BLOCK :]
    released: list[float] = []

    def release_later() -> None:
        time.sleep(0.3)
        released.append(time.monotonic())
        second.release()

    threading.Thread(target=release_later).start()
    stream.close()
    closed = time.monotonic()
    assert released and released[0] <= closed
    with reader(helper, estate) as again:
        assert again.read() == data

"""No traceback, ever (issue 9 D): input that used to end in a Python traceback gets one line
(`vmkeep: error: ...` or `file:line:col: ...`) and a documented exit code. Real parts: state
DBs on real file systems (an ext4 image made by mkfs.ext4, filled up; a read-only mount),
real repositories, the simulator where apply needs one."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler import observed
from reconciler.adapters.statedb import StateDB
from reconciler.cli import main
from reconciler.errors import VmkeepError, register_secret

from .apply_world import Estate
from .conftest import StartVcsim

ROOT = Path(__file__).resolve().parents[2]
POLICY = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata: {name: gold}
spec:
  vcenter: sim
  selector: {include: {names: ["*"]}}
  schedule: {cron: "0 1 * * *", timezone: UTC}
  snapshots: {keep: {last: 2}}
"""


def one_line_error(err: str) -> str:
    """The single line a command printed on stderr, after checking there is no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if not line.startswith("usage:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A host config whose vCenter is an unreachable loopback port, a policy, a state file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VMKEEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("VC_PW", "not-used-here")
    (tmp_path / "vmkeep.yaml").write_text(
        "vcenters:\n  sim: {url: 'https://127.0.0.2:9/sdk', username: u, passwordEnv: VC_PW}\n"
        "targets:\n  local: {type: directory, path: target}\nstate: state.db\n")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "gold.yaml").write_text(POLICY)
    empty = observed.observed_from([], {}, datetime(2026, 11, 25, 2, tzinfo=UTC))
    (tmp_path / "state.json").write_text(json.dumps(observed.state_to_json(empty)))
    return tmp_path


@pytest.mark.parametrize("now", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00Z"])
@pytest.mark.parametrize(
    "argv",
    [["plan", "--state", "state.json"], ["status", "--state", "state.json"],
     ["apply", "--auto-approve"]],
    ids=["plan", "status", "apply"],
)
def test_a_now_at_the_ends_of_the_calendar_is_one_clear_error(
    world: Path, capsys: pytest.CaptureFixture[str], argv: list[str], now: str
) -> None:
    assert main([*argv, "--now", now]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert line == (f"vmkeep: error: --now {now!r} is not an ISO 8601 time with an offset "
                    "between 1970 and 8999, e.g. 2026-11-25T01:00:00Z")


def test_a_state_file_captured_at_the_ends_of_the_calendar_is_one_clear_error(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = json.loads((world / "state.json").read_text())
    state["capturedAt"] = "0001-01-01T00:00:00+14:00"
    (world / "state.json").write_text(json.dumps(state))
    assert main(["plan", "--state", "state.json", "--now", "2026-11-25T02:00:00Z"]) == 1
    assert one_line_error(capsys.readouterr().err) == (
        "state.json:1:1: $.capturedAt: not an ISO 8601 time with offset: "
        "'0001-01-01T00:00:00+14:00' (write the file with `vmkeep state export`)")


def test_a_state_path_naming_a_directory_or_a_non_sqlite_file_is_one_clear_error(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (world / "state.db").mkdir()
    assert main(["apply", "--auto-approve", "--now", "2026-11-25T02:00:00Z"]) == 1
    assert one_line_error(capsys.readouterr().err) == (
        "vmkeep: error: the state DB 'state.db' is a directory; set `state` in the "
        "host config to a file path")
    assert main(["status", "--now", "2026-11-25T02:00:00Z"]) == 1  # not "no run recorded"
    assert one_line_error(capsys.readouterr().err) == (
        "vmkeep: error: the state DB 'state.db' is a directory; set `state` in the "
        "host config to a file path")
    (world / "state.db").rmdir()
    (world / "state.db").write_text("these are my notes, not a database\n" * 100)
    assert main(["apply", "--auto-approve", "--now", "2026-11-25T02:00:00Z"]) == 1
    assert one_line_error(capsys.readouterr().err) == (
        "vmkeep: error: 'state.db' is not a vmkeep state DB (not an SQLite file); "
        "check `state` in the host config")
    assert (world / "state.db").read_text().startswith("these are my notes")


def test_a_password_file_that_is_not_utf8_is_one_clear_error(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (world / "pw").write_bytes(b"caf\xe9-latin1\n")
    (world / "vmkeep.yaml").write_text(
        "vcenters:\n  sim: {url: 'https://127.0.0.2:9/sdk', username: u, passwordFile: pw}\n")
    assert main(["inventory"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "vCenter 'sim': password file 'pw' is not UTF-8 text (byte 4); write " \
        "the password as UTF-8" in out + err
    assert main(["apply", "--auto-approve", "--now", "2026-11-25T02:00:00Z"]) == 1
    assert one_line_error(capsys.readouterr().err).endswith("write the password as UTF-8")


# --------------------------------------------------------------------------- file systems


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB ext4 file system made by mkfs.ext4 and loop-mounted (no root reserve)."""
    image, mount = tmp_path / "fs.img", tmp_path / "mnt"
    image.write_bytes(b"")
    os.truncate(image, 4 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-m", "0", str(image)], check=True)
    mount.mkdir()
    done = subprocess.run(["mount", "-o", "loop", str(image), str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot loop-mount a file system here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(directory: Path) -> None:
    """Write until the file system says it is full, down to its last block."""
    with open(directory / "filler", "wb", buffering=0) as handle:
        for size in (64 << 10, 4096, 1):
            try:
                while True:
                    handle.write(b"\xaa" * size)
                    os.fsync(handle.fileno())
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


def test_a_state_db_on_a_full_file_system_is_one_clear_error(
    world: Path, ext4: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(ext4)
    with pytest.raises(VmkeepError, match="its file system is full; free some space there"):
        StateDB(ext4 / "state.db")
    (world / "vmkeep.yaml").write_text(
        (world / "vmkeep.yaml").read_text().replace("state: state.db", f"state: {ext4}/s.db"))
    assert main(["apply", "--auto-approve", "--now", "2026-11-25T02:00:00Z"]) == 1
    assert one_line_error(capsys.readouterr().err) == (
        f"vmkeep: error: cannot set up the state DB '{ext4}/s.db': its file system is full; "
        "free some space there")


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A host config naming a real repository with two exported points."""
    sys.path.insert(0, str(ROOT))
    from tests.repository.disks import CHUNK, export, noise, open_repo, point_id

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "vmkeep.yaml").write_text("targets:\n  nas: {type: directory, path: exports}\n")
    repo = open_repo(tmp_path / "exports")
    export(repo, point_id(1), {"d0": noise("one", 4 * CHUNK)})
    export(repo, point_id(2), {"d0": noise("two", 4 * CHUNK)})
    repo.close()
    return tmp_path / "exports"


def test_a_directory_where_a_manifest_belongs_is_damage_for_verify_and_stops_gc(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    squatter = repository / "points" / "nightly%2Fx%2F20260101T030000Z.json"
    squatter.mkdir()
    assert main(["verify", "--all"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert out.splitlines()[:2] == [
        "DAMAGED nightly/x/20260101T030000Z",
        f"  cannot read its manifest 'exports/points/{squatter.name}': Is a directory",
    ]
    assert "3 point(s)" in out
    packs = sorted(repository.glob("packs/*/*"))
    assert main(["gc"]) == 1
    assert one_line_error(capsys.readouterr().err) == (
        f"vmkeep: error: cannot read the restore point manifest 'exports/points/{squatter.name}' "
        "(Is a directory); gc cannot tell what it references, so it deleted nothing (move away "
        "what is not a manifest there)")
    assert sorted(repository.glob("packs/*/*")) == packs


def test_gc_on_a_read_only_target_is_one_clear_error(
    repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(repository), str(repository)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {done.stderr.strip()}")
    try:
        assert main(["gc"]) == 1
        line = one_line_error(capsys.readouterr().err)
    finally:
        subprocess.run(["umount", str(repository)], check=True)
    assert line.startswith("vmkeep: error: repository 'exports': gc stopped: Read-only file "
                           "system: 'exports/locks/writer'; gc needs to write there: mount it "
                           "read-write")


# --------------------------------------------------------------------------- saved plans


@pytest.mark.vcsim
@pytest.mark.parametrize(("field", "value"), [("now", "9999-12-31T23:00:00Z"),
                                             ("slot", "0001-01-01T00:00:00+14:00")])
def test_a_saved_plan_with_a_time_at_the_ends_of_the_calendar_is_one_clear_error(
    start_vcsim: StartVcsim, tmp_path: Path, field: str, value: str
) -> None:
    estate = Estate(start_vcsim(vms=1), tmp_path)
    saved = tmp_path / "plan.json"
    made = estate.plan("2026-11-25T01:30:00Z", "--out", str(saved))
    assert made.code == 0, made.err
    plan = json.loads(saved.read_text())
    if field == "now":
        plan["now"] = value
    else:
        plan["actions"][0]["slot"] = value
    saved.write_text(json.dumps(plan))
    run = estate.vmkeep("apply", str(saved), "--policies", str(estate.policies),
                        "--auto-approve")
    assert run.code == 1
    assert one_line_error(run.err) == (
        f"{saved}:1:1: not a vmkeep plan: {field} {value!r} is outside the years 1970 to 8999 "
        "(write it with `vmkeep plan --out`)")
    assert estate.vms()["DC0_C0_RP0_VM0"].snapshots == ()


# --------------------------------------------------------------------------- bugs


def test_an_unexpected_exception_is_one_line_naming_the_bug_and_where_its_traceback_is(
    world: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.cli import validate

    def broken(args: object) -> int:  # stands in for a bug anywhere below the CLI
        raise ZeroDivisionError("division by zero while counting not-used-here")

    register_secret("not-used-here")  # as reading the vCenter password does
    monkeypatch.setattr(validate, "run", broken)
    assert main(["validate"]) == 1
    line = one_line_error(capsys.readouterr().err)
    prefix = ("vmkeep: error: internal error (a bug in vmkeep, please report it): "
              "ZeroDivisionError: division by zero while counting ***; the details are in ")
    assert line.startswith(prefix) and line.endswith(" (-v shows them here)")
    saved = Path(line[len(prefix):-len(" (-v shows them here)")])
    assert saved.parent == world / "xdg" / "vmkeep"
    details = saved.read_text()
    assert "Traceback (most recent call last)" in details and "in broken" in details
    assert "not-used-here" not in details  # the password of $VC_PW, masked there too

    assert main(["validate", "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert err.splitlines()[-1].startswith(prefix)


def test_the_installed_command_reports_bad_input_without_a_traceback(world: Path) -> None:
    vmkeep = Path(sys.executable).with_name("vmkeep")
    for argv in (["plan", "--state", "state.json", "--now", "9999-12-31T23:00:00Z"],
                 ["apply", "--auto-approve", "--now", "0001-01-01T00:00:00+14:00"]):
        done = subprocess.run([str(vmkeep), *argv], capture_output=True, text=True, timeout=120,
                              check=False, cwd=world)
        assert done.returncode == 1
        assert one_line_error(done.stderr).startswith("vmkeep: error: --now ")


# --------------------------------------------------------------------------- output files


def test_plan_out_into_something_not_a_regular_file_writes_into_it_and_never_replaces_it(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--out /dev/null` as root used to rename a temporary file over /dev/null. A FIFO
    stands in for the device here (a regression must not break the machine's /dev/null)."""
    fifo = world / "plan.fifo"
    os.mkfifo(fifo)
    # Our end, open for reading and writing: opening the other end never blocks, and the
    # plan (a few KB) fits in the pipe's buffer.
    ours = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        code = main(["plan", "--state", "state.json", "--now", "2026-11-25T02:00:00Z",
                     "--out", str(fifo)])
        try:
            received = os.read(ours, 1 << 20)
        except BlockingIOError:
            received = b""
    finally:
        os.close(ours)
    assert code in (0, 2), capsys.readouterr().err
    assert fifo.is_fifo()
    assert json.loads(received)["formatVersion"] == 1
    assert not list(world.glob(".plan.fifo.*"))


def test_a_plan_that_cannot_be_written_leaves_no_temporary_file(
    world: Path, ext4: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(ext4)
    assert main(["plan", "--state", "state.json", "--now", "2026-11-25T02:00:00Z",
                 "--out", str(ext4 / "plan.json")]) == 1
    assert one_line_error(capsys.readouterr().err) == (
        f"vmkeep: error: cannot write '{ext4}/plan.json': No space left on device")
    assert sorted(p.name for p in ext4.iterdir()) == ["filler", "lost+found"]


def test_run_metrics_into_something_not_a_regular_file_never_replace_it(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = world / "metrics.fifo"
    os.mkfifo(fifo)
    ours = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        main(["run", "--once", "--now", "2026-11-25T02:00:00Z", "--metrics-file", str(fifo)])
        try:
            received = os.read(ours, 1 << 20)
        except BlockingIOError:
            received = b""
    finally:
        os.close(ours)
    assert "Traceback" not in capsys.readouterr().err
    assert fifo.is_fifo()
    assert b"# TYPE vmkeep_" in received

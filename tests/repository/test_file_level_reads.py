"""`vmkeep files` against real repositories holding disks built with the real tools: what is
read (counted chunks), what a damaged chunk does, what is never overwritten, and what cannot
be read (LUKS, LVM) — each a one-line answer with a documented exit code."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.adapters.repository import Repository
from reconciler.cli import main
from reconciler.files import PointFiles, extract
from tests.integration.conftest import REPO, wait_until
from tests.integration.guest_disks import (
    blob,
    gpt_ext4,
    partitioned,
    run,
    tools_missing,
    write_tree,
)

from .disks import SLOT, VM, flip_chunk

MiB = 1 << 20
GiB = 1 << 30
CHUNK = 64 * 1024  # the default chunk size
POINT = f"nightly/{VM.instance_uuid}/20260101T020000Z"

pytestmark = pytest.mark.skipif(bool(tools_missing("sfdisk", "mkfs.ext4")),
                                reason="needs sfdisk and mkfs.ext4 (scripts/bootstrap)")


SPEC = {
    "/etc/app.conf": b"setting = 1\n",
    "/etc/other.conf": b"other\n",
    "/data/victim.bin": blob("victim", 300 * 1024),
    "/data/fine.bin": blob("fine", 200 * 1024),
}


def data_extents(path: Path) -> list[tuple[int, int]]:
    """The data (non-hole) extents of a sparse file, as changed block tracking reports."""
    out: list[tuple[int, int]] = []
    size = path.stat().st_size
    with open(path, "rb") as f:
        fd = f.fileno()
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end - start))
            offset = end
    return out


def export_image(target: Path, image: Path, *, files: dict[str, bytes] | None = None) -> None:
    """Export `image` as disk-2000 of POINT. Only its data extents are read (a sparse 4 GiB
    image exports in a moment): on top of a one-chunk base point, as after CBT."""
    with Repository.open(target, chunk_size=CHUNK, threads=2) as repo:
        base = POINT.replace("T020000Z", "T010000Z")
        with repo.begin_point(base, "nightly", VM, SLOT) as writer:
            writer.add_disk("disk-2000", io.BytesIO(bytes(CHUNK)), size=CHUNK)
            writer.commit("crash")
        with repo.begin_point(POINT, "nightly", VM, SLOT) as writer, open(image, "rb") as src:
            writer.add_disk("disk-2000", src, size=image.stat().st_size,
                            changed_extents=data_extents(image), previous=(base, "disk-2000"))
            for name, data in (files or {}).items():
                writer.add_file(name, data)
            writer.commit("crash")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    write_tree(source, SPEC, 1767323045)
    image = tmp_path / "disk.img"
    gpt_ext4(image, source, 16 * MiB, 12 * MiB)
    export_image(tmp_path / "exports", image)
    return host_config(tmp_path)


def host_config(tmp_path: Path) -> Path:
    """A host config whose one target is the repository at tmp_path/exports."""
    path = tmp_path / "vmkeep.yaml"
    path.write_text(f"targets:\n  nas: {{type: directory, path: {tmp_path / 'exports'}}}\n",
                    encoding="utf-8")
    return path


def vmkeep(config: Path, *argv: str) -> int:
    return main([*argv[:2], "--config", str(config), "--point", POINT, *argv[2:]])


def test_getting_one_1_mib_file_from_a_4_gib_disk_reads_under_1_percent_of_its_chunks(
        tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_tree(source, {"/data/one.bin": blob("one", MiB), "/etc/app.conf": b"x\n"})
    image = tmp_path / "disk.img"
    partitioned(image, 4 * GiB, "label: gpt\nstart=2048, type=L\n")
    run("mkfs.ext4", "-q", "-F", "-E", f"offset={MiB},lazy_itable_init=1,lazy_journal_init=1",
        "-d", source, image, f"{(4 * GiB - 2 * MiB) // 1024}k")
    export_image(tmp_path / "exports", image)
    with Repository.open(tmp_path / "exports", create=False) as repo:
        files = PointFiles(repo, POINT)
        fs = files.one_file_system(None, None)
        report = extract(files, fs, ["/data/one.bin"], tmp_path / "out")
        chunks = (4 * GiB) // CHUNK
        print(f"files get of 1 MiB from a 4 GiB disk: {files.fetched} of {chunks} chunks "
              f"({100 * files.fetched / chunks:.3f} %)")
        assert report.files == 1 and not report.failures
        assert (tmp_path / "out/one.bin").read_bytes() == blob("one", MiB)
        assert files.fetched < chunks // 100
        assert files.fetched >= MiB // CHUNK  # the file's own chunks were read: it is counted


def damage_victim(target: Path) -> tuple[int, bytes]:
    """Damage the chunk holding the second 64 KiB of /data/victim.bin; its index and the
    disk's bytes before the damage."""
    with Repository.open(target, create=False) as repo:
        reader = repo.open_disk(POINT, "disk-2000")
        disk = b"".join(reader.blocks())
        index = disk.index(SPEC["/data/victim.bin"][CHUNK : CHUNK + 4096]) // CHUNK
        flip_chunk(repo, reader.ids[index])
    return index, disk


def test_a_damaged_chunk_names_point_disk_file_and_chunk_and_the_other_files_still_extract(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index, _ = damage_victim(tmp_path / "exports")
    out = tmp_path / "out"
    code = vmkeep(config, "files", "get", "/data", "/etc", "--to", str(out))
    err = capsys.readouterr().err
    assert code == 1
    [line] = err.strip().splitlines()
    assert line.startswith("vmkeep: error: ")
    for part in (POINT, "disk-2000", "/data/victim.bin", f"chunk {index} "):
        assert part in line
    assert (out / "data/fine.bin").read_bytes() == SPEC["/data/fine.bin"]
    assert (out / "etc/app.conf").read_bytes() == SPEC["/etc/app.conf"]
    assert not (out / "data/victim.bin").exists()
    assert sorted(p.name for p in out.iterdir()) == ["data", "etc"]  # no staging left


def test_an_existing_target_path_is_refused_and_nothing_is_written(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "app.conf").write_bytes(b"mine\n")
    assert vmkeep(config, "files", "get", "/etc/other.conf", "/etc/app.conf",
                  "--to", str(out)) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out / 'app.conf'} exists" in err
    assert sorted(p.name for p in out.iterdir()) == ["app.conf"]
    assert (out / "app.conf").read_bytes() == b"mine\n"


@pytest.mark.parametrize(("argv", "message"), [
    (["files", "ls", "--disk", "disk-9"], "has no disk 'disk-9' (disks: disk-2000)"),
    (["files", "ls", "--disk", "disk-2000", "--partition", "7"], "has no partition 7"),
    (["files", "ls", "/nowhere"], "no /nowhere on disk 'disk-2000' partition 1"),
    (["files", "get", "/", "--to", "OUT"], "not / itself"),
    (["files", "get", "/etc/missing", "--to", "OUT"], "no /etc/missing"),
    (["files", "find"], "name a restore point"),
], ids=["unknown-disk", "unknown-partition", "missing-path", "root", "missing-file", "no-point"])
def test_bad_requests_get_one_clear_line_exit_1_and_create_nothing(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        argv: list[str], message: str) -> None:
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    if argv[:2] == ["files", "find"]:
        code = main([*argv, "--config", str(config), "*.conf"])
    else:
        code = vmkeep(config, *argv)
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("vmkeep: error: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_luks_and_lvm_partitions_get_one_line_naming_them_and_suggesting_mount(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "disk.img"
    partitioned(image, 24 * MiB, "label: gpt\nstart=2048, size=8192, type=L\n"
                "start=10240, size=8192, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n"
                "start=18432, size=8192, type=L\n")
    with open(image, "r+b") as out:  # the headers cryptsetup luksFormat and pvcreate write
        out.seek(MiB)
        out.write(b"LUKS\xba\xbe\x00\x02" + bytes(504))
        out.seek(5 * MiB + 512)
        out.write(b"LABELONE\x01\x00\x00\x00\x00\x00\x00\x00" + bytes(8) + b"LVM2 001")
    source = tmp_path / "source"
    write_tree(source, {"/readme.txt": b"plain\n"})
    run("mkfs.ext4", "-q", "-F", "-E", f"offset={9 * MiB}", "-d", source, image, "4096k")
    export_image(tmp_path / "exports", image)
    config = host_config(tmp_path)

    assert vmkeep(config, "files", "ls", "--partition", "1") == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "partition 1 (LUKS encrypted volume)" in line and "vmkeep mount" in line
    assert vmkeep(config, "files", "ls", "--partition", "2") == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "partition 2 (LVM physical volume)" in line and "vmkeep mount" in line

    # Without --partition: the readable one is listed, the others are one warning line each.
    assert vmkeep(config, "files", "ls", "-o", "json") == 0
    captured = capsys.readouterr()
    body = json.loads(captured.out)
    assert [e["path"] for e in body["entries"]] == ["/lost+found", "/readme.txt"]
    assert [p["filesystem"] for p in body["partitions"]] == [None, None, "ext4"]
    assert len(captured.err.strip().splitlines()) == 2
    # get picks the only readable file system
    assert vmkeep(config, "files", "get", "/readme.txt", "--to", str(tmp_path / "o")) == 0
    assert (tmp_path / "o/readme.txt").read_bytes() == b"plain\n"


def test_logical_partitions_are_numbered_from_5_as_linux_numbers_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "disk.img"
    partitioned(image, 40 * MiB, "label: dos\nstart=2048, size=16384, type=83\n"
                "start=20480, size=40960, type=5\nstart=22528, size=16384, type=c\n"
                "start=40960, size=16384, type=83\n")
    for number, offset in ((1, 2048), (6, 40960)):
        source = tmp_path / f"p{number}"
        write_tree(source, {f"/on-{number}.txt": f"partition {number}\n".encode()})
        run("mkfs.ext4", "-q", "-F", "-E", f"offset={offset * 512}", "-d", source, image,
            "8192k")
    run("mkfs.fat", "--offset", "22528", image, "8192")
    export_image(tmp_path / "exports", image)
    config = host_config(tmp_path)
    assert vmkeep(config, "files", "ls", "-o", "json") == 0
    body = json.loads(capsys.readouterr().out)
    assert [(p["partition"], p["filesystem"]) for p in body["partitions"]] == \
        [(1, "ext4"), (5, "fat12"), (6, "ext4")]
    assert vmkeep(config, "files", "get", "--partition", "6", "/on-6.txt",
                  "--to", str(tmp_path / "out")) == 0
    assert (tmp_path / "out/on-6.txt").read_bytes() == b"partition 6\n"
    assert vmkeep(config, "files", "get", "/on-1.txt", "--to", str(tmp_path / "x")) == 1
    assert "several file systems" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ mount


def mount(config: Path, where: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "mount", "--config", str(config), "--point",
         POINT, str(where)], stderr=subprocess.PIPE, text=True, cwd=REPO)
    wait_until(lambda: os.path.ismount(where) or process.poll() is not None, timeout=60)
    assert os.path.ismount(where), process.communicate()[1]
    return process


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs FUSE: /dev/fuse is missing")
def test_a_damaged_chunk_fails_that_read_of_the_mounted_image_with_eio_and_one_log_line(
        config: Path, tmp_path: Path) -> None:
    index, disk = damage_victim(tmp_path / "exports")
    where = tmp_path / "mnt"
    where.mkdir()
    process = mount(config, where)
    try:
        [image] = [p for p in where.iterdir() if p.suffix == ".img"]
        with open(image, "rb") as f:
            assert f.read(CHUNK) == disk[:CHUNK]  # the rest of the disk reads
            f.seek(index * CHUNK)
            with pytest.raises(OSError) as caught:
                f.read(CHUNK)
        assert caught.value.errno == errno.EIO
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert f"chunk {index} at offset {index * CHUNK}" in err and "is damaged" in err
    assert not os.path.ismount(where)


def test_mount_refuses_a_mount_point_that_is_not_an_empty_directory(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine").write_text("x")
    assert main(["mount", "--config", str(config), "--point", POINT, str(busy)]) == 1
    assert main(["mount", "--config", str(config), "--point", POINT,
                 str(tmp_path / "missing")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "is not empty" in lines[0] and "is not a directory" in lines[1]
    assert [p.name for p in busy.iterdir()] == ["mine"]


def test_a_windows_dynamic_disk_partition_is_named_as_such(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "disk.img"
    partitioned(image, 8 * MiB, "label: dos\nstart=2048, size=8192, type=42\n")
    export_image(tmp_path / "exports", image)
    assert vmkeep(host_config(tmp_path), "files", "ls") == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "partition 1 (Windows dynamic disk) holds no file system" in line
    assert "vmkeep mount" in line

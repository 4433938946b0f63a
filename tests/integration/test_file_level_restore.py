"""File-level restore end to end: guest disks built with the real tools (GPT + ext4; MBR +
NTFS + FAT) put on simulator VM disks, exported with `vmkeep apply` on two days, then
`vmkeep files ls/get/find` give back each day's exact trees and bytes, and `vmkeep mount`
serves the disks to debugfs, ntfscat and qemu-img."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .apply_world import Estate
from .conftest import REPO, start_simulator, wait_until
from .guest_disks import (
    Item,
    Link,
    Sparse,
    Spec,
    blob,
    gpt_ext4,
    mbr_ntfs_fat,
    snapshot_tree,
    tools_missing,
    write_tree,
)

pytestmark = pytest.mark.vcsim

DAY1 = "2026-11-25T01:30:00Z"
DAY2 = "2026-11-26T01:30:00Z"
MiB = 1 << 20
T1, T2 = 1767323045, 1767409445  # file times of day 1 and day 2
EXT4_VM, WIN_VM = "DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"
NO_FUSE = "needs FUSE: /dev/fuse is missing (ntfs-3g writes the NTFS test disk and `vmkeep " \
    "mount` serves images through it)"
TOOLS = ("sfdisk", "mkfs.ext4", "mkntfs", "mkfs.fat", "mcopy", "mmd", "ntfs-3g", "debugfs",
         "ntfscat", "qemu-img")


def ext4_spec(day: int) -> Spec:
    spec: dict[str, Any] = {
        "/etc/app.conf": f"setting = {day}\n".encode(),
        "/etc/deep/nested/tree/leaf.txt": b"leaf\n",
        "/data/big.bin": blob(f"big{day}", 3 * MiB + 123),
        "/data/sparse.img": Sparse(8 * MiB, {5 * MiB + 17: b"in the middle"}),
        "/data/app.link": Link("../etc/app.conf"),
        "/data/absolute.link": Link("/etc/deep/nested"),
        "/Grüße/Ünïcödé – ✓.txt": "grüß dich\n".encode(),
    }
    if day == 1:
        spec["/data/old.log"] = b"gone tomorrow\n"
    else:
        spec["/etc/new.conf"] = b"added on day 2\n"
    return spec


def ntfs_spec(day: int) -> Spec:
    return {
        "/Users/Jörg/naïve.txt": f"ntfs day {day}\n".encode(),
        "/Users/Jörg/Documents/deep/er/report.bin": blob(f"ntfs{day}", MiB + 5),
        "/sparse.bin": Sparse(3 * MiB, {MiB: b"x"}),
        "/shortcut": Link("Users/Jörg/naïve.txt"),
    }


def fat_spec(day: int) -> Spec:
    return {
        "/docs/Ünïcode name.txt": f"fat day {day}\n".encode(),
        "/docs/sub/deeper/a.txt": b"a" * (day * 1000),
    }


@dataclass
class Day:
    point: dict[str, str]  # vm name -> point id
    ext4: dict[str, Item]
    ntfs: dict[str, Item] | None
    fat: dict[str, Item] | None


@dataclass
class World:
    estate: Estate
    days: list[Day]
    disks: dict[str, str]  # vm name -> disk name in the point

    def vmkeep(self, *args: str) -> Any:
        return self.estate.vmkeep(*args)


@pytest.fixture(scope="module")
def world(vcsim_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    missing = tools_missing(*TOOLS)
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (scripts/bootstrap installs them)")
    root = tmp_path_factory.mktemp("files")
    sim = start_simulator(tmp_path_factory.mktemp("vcsim-files"), vms=2)
    try:
        estate = Estate(sim, root / "estate")
        estate.set_policy(names=[EXT4_VM, WIN_VM], snapshots=0)
        fuse = os.path.exists("/dev/fuse")
        vms = estate.vms()
        estate.grow_disk(vms[EXT4_VM], 48 * MiB)
        if fuse:
            estate.grow_disk(vms[WIN_VM], 40 * MiB)
        days: list[Day] = []
        for day, now in ((1, DAY1), (2, DAY2)):
            work = root / f"day{day}"
            source = work / "ext4-source"
            write_tree(source, ext4_spec(day), T1 if day == 1 else T2)
            os.chmod(source / "etc/app.conf", 0o640)
            gpt_ext4(work / "gpt.img", source, 48 * MiB, 32 * MiB)
            estate.fill_disk(estate.vms()[EXT4_VM], (work / "gpt.img").read_bytes())
            trees: dict[str, dict[str, Item]] = {}
            if fuse:
                trees = mbr_ntfs_fat(work / "mbr.img", ntfs_spec(day), fat_spec(day), work,
                                     mtime=T1 if day == 1 else T2)
                estate.fill_disk(estate.vms()[WIN_VM], (work / "mbr.img").read_bytes())
            applied = estate.apply(now)
            assert applied.code == 0, applied.err
            points = {p.vm.name: p.id for p in estate.points() if
                      p.id not in {q for d in days for q in d.point.values()}}
            days.append(Day(points, snapshot_tree(source), trees.get("ntfs"),
                            trees.get("fat")))
        disks = {name: f"disk-{vm.disks[0].key}" for name, vm in estate.vms().items()}
        yield World(estate, days, disks)
    finally:
        sim.stop()


def listing(world: World, point: str, *args: str) -> dict[str, dict[str, Any]]:
    result = world.vmkeep("files", "ls", "--point", point, "-R", "-o", "json", *args)
    assert result.code == 0, result.err
    return {e["path"]: e for e in result.json()["entries"]}


def iso(seconds: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def assert_same_tree(listed: dict[str, dict[str, Any]], expected: dict[str, Item], *,
                     modes: bool, mtimes: bool) -> None:
    assert sorted(listed) == sorted(expected)
    for path, item in expected.items():
        entry = listed[path]
        assert entry["type"] == item.type, path
        if item.type == "file":
            assert entry["size"] == item.size, path
        if item.type == "symlink":
            assert entry["target"] == item.target, path
        if modes and item.type != "symlink":
            assert entry["mode"] == item.mode, path
        if mtimes and item.type == "file":
            assert entry["mtime"] == iso(item.mtime), path


def assert_extracted(directory: Path, expected: dict[str, Item], *, modes: bool,
                     mtimes: bool) -> None:
    got = snapshot_tree(directory)
    assert sorted(got) == sorted(expected)
    for path, item in expected.items():
        assert got[path].type == item.type, path
        assert got[path].data == item.data, path
        assert got[path].target == item.target, path
        if modes and item.type != "symlink":
            assert got[path].mode == item.mode, path
        if mtimes and item.type == "file":
            assert got[path].mtime == item.mtime, path


def without_lost_found(listed: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p: e for p, e in listed.items() if not p.startswith("/lost+found")}


@pytest.mark.parametrize("day", [0, 1], ids=["day1", "day2"])
def test_files_ls_shows_each_days_exact_ext4_tree_inside_the_gpt_partition(world, day):
    expected = world.days[day]
    listed = listing(world, expected.point[EXT4_VM])
    assert {(e["disk"], e["partition"]) for e in listed.values()} == \
        {(world.disks[EXT4_VM], 1)}
    assert_same_tree(without_lost_found(listed), expected.ext4, modes=True, mtimes=True)
    assert listed["/etc/app.conf"]["mode"] == 0o640


@pytest.mark.parametrize("day", [0, 1], ids=["day1", "day2"])
def test_files_get_extracts_each_days_exact_bytes_modes_times_and_links(world, day, tmp_path):
    expected = world.days[day]
    out = tmp_path / "out"
    result = world.vmkeep("files", "get", "--point", expected.point[EXT4_VM], "/etc", "/data",
                          "/Grüße", "--to", str(out))
    assert result.code == 0, result.err
    assert_extracted(out, expected.ext4, modes=True, mtimes=True)
    sparse = out / "data/sparse.img"
    assert sparse.stat().st_blocks * 512 < 2 * MiB  # holes stay holes


@pytest.mark.parametrize("day", [0, 1], ids=["day1", "day2"])
def test_ntfs_and_fat_partitions_of_an_mbr_disk_list_and_extract_exactly(world, day, tmp_path):
    expected = world.days[day]
    if expected.ntfs is None or expected.fat is None:
        pytest.skip(NO_FUSE)
    point = expected.point[WIN_VM]
    ntfs = listing(world, point, "--partition", "1")
    assert_same_tree(ntfs, expected.ntfs, modes=False, mtimes=True)
    fat = listing(world, point, "--partition", "2")
    assert_same_tree(fat, expected.fat, modes=False, mtimes=False)
    result = world.vmkeep("files", "get", "--point", point, "--partition", "1", "/Users",
                          "/sparse.bin", "/shortcut", "--to", str(tmp_path / "ntfs"))
    assert result.code == 0, result.err
    assert_extracted(tmp_path / "ntfs", expected.ntfs, modes=False, mtimes=True)
    result = world.vmkeep("files", "get", "--point", point, "--disk", world.disks[WIN_VM],
                          "--partition", "2", "/docs", "--to", str(tmp_path / "fat"))
    assert result.code == 0, result.err
    assert_extracted(tmp_path / "fat", expected.fat, modes=False, mtimes=False)


def test_files_ls_without_a_partition_lists_every_file_system_of_the_disk(world):
    if world.days[0].ntfs is None:
        pytest.skip(NO_FUSE)
    result = world.vmkeep("files", "ls", "--point", world.days[0].point[WIN_VM], "-o", "json")
    assert result.code == 0, result.err
    body = result.json()
    assert [(p["partition"], p["filesystem"]) for p in body["partitions"]] == \
        [(1, "ntfs"), (2, "fat16")]
    assert {(e["partition"], e["path"]) for e in body["entries"]} == \
        {(1, "/Users"), (1, "/sparse.bin"), (1, "/shortcut"), (2, "/docs")}
    text = world.vmkeep("files", "ls", "--point", world.days[0].point[WIN_VM])
    assert "partition 1: ntfs" in text.out and "/shortcut -> Users/Jörg/naïve.txt" in text.out


def test_files_find_over_all_points_of_a_vm_shows_the_version_of_each_day(world):
    result = world.vmkeep("files", "find", "--vm", EXT4_VM, "--all-points", "app.conf",
                          "-o", "json")
    assert result.code == 0, result.err
    assert result.json()["matches"] == [
        {"point": day.point[EXT4_VM], "disk": world.disks[EXT4_VM], "partition": 1,
         "path": "/etc/app.conf", "size": day.ext4["/etc/app.conf"].size,
         "mtime": iso(day.ext4["/etc/app.conf"].mtime)}
        for day in world.days
    ]
    only_day2 = world.vmkeep("files", "find", "--vm", EXT4_VM, "--all-points", "/etc/new.*",
                             "-o", "json")
    assert [m["point"] for m in only_day2.json()["matches"]] == [world.days[1].point[EXT4_VM]]
    one = world.vmkeep("files", "find", "--point", world.days[0].point[EXT4_VM], "*.log")
    assert one.code == 0 and one.out.split()[4:6] == ["/data/old.log", "14"]


# ------------------------------------------------------------------------------ mount


@pytest.fixture
def mounted(world: World, tmp_path: Path) -> Iterator[Any]:
    if not os.path.exists("/dev/fuse"):
        pytest.skip(NO_FUSE)
    started: list[tuple[subprocess.Popen[str], Path]] = []

    def mount(*selection: str) -> Mount:
        where = tmp_path / f"mnt{len(started)}"
        where.mkdir()
        env = {**os.environ, "VMKEEP_SIM_PASSWORD": world.estate.sim.password}
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "mount", "--config",
             str(world.estate.config), *selection, str(where)],
            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        started.append((process, where))
        wait_until(lambda: os.path.ismount(where) or process.poll() is not None, timeout=60)
        assert os.path.ismount(where), process.communicate()[1]
        return Mount(process, where)

    yield mount
    for process, where in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        assert not os.path.ismount(where)


@dataclass
class Mount:
    process: subprocess.Popen[str]
    where: Path


def test_a_mounted_point_serves_raw_images_that_debugfs_ntfscat_and_qemu_img_read(
        world, mounted, tmp_path):
    day = world.days[1]
    where = mounted("--point", day.point[EXT4_VM]).where
    names = sorted(os.listdir(where))
    [image] = [n for n in names if n.endswith(".img")]
    assert "vm.json" in names and any(n.endswith(".vmx") for n in names)
    app = subprocess.run(["debugfs", "-R", "cat /etc/app.conf", f"{where / image}?offset={MiB}"],
                         capture_output=True)
    assert app.stdout == b"setting = 2\n"
    restored = tmp_path / "restored"
    result = world.vmkeep("restore", "--point", day.point[EXT4_VM], "--to", str(restored))
    assert result.code == 0, result.err
    [descriptor] = [p for p in restored.glob("*.vmdk") if not p.name.endswith("-flat.vmdk")]
    compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk",
                              str(where / image), str(descriptor)], capture_output=True)
    assert compare.returncode == 0, compare.stdout + compare.stderr

    if day.ntfs is None:
        return
    windows = mounted("--point", day.point[WIN_VM]).where
    [disk] = [n for n in os.listdir(windows) if n.endswith(".img")]
    part = tmp_path / "ntfs-partition"  # ntfscat takes no offset: the partition's bytes,
    subprocess.run(["dd", f"if={windows / disk}", f"of={part}", "bs=1M", "skip=1", "count=16",
                    "status=none"], check=True)  # read through the mount
    text = subprocess.run(["ntfscat", str(part), "/Users/Jörg/naïve.txt"], capture_output=True)
    assert text.stdout == b"ntfs day 2\n", text.stderr


def test_without_a_point_the_mount_is_a_tree_of_vcenter_vm_and_slot(world, mounted):
    where = mounted().where
    assert os.listdir(where) == ["sim"]
    assert sorted(os.listdir(where / "sim")) == sorted(world.days[0].point)
    slots = sorted(os.listdir(where / "sim" / EXT4_VM))
    assert slots == ["2026-11-25T01:00:00Z", "2026-11-26T01:00:00Z"]
    for slot in slots:
        assert "vm.json" in os.listdir(where / "sim" / EXT4_VM / slot)


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "fusermount -u"])
def test_the_mount_ends_on_a_signal_or_fusermount_and_leaves_nothing_behind(
        world, mounted, how):
    mount = mounted("--point", world.days[0].point[EXT4_VM])
    process, where = mount.process, mount.where
    if how == "fusermount -u":
        subprocess.run(["fusermount3", "-u", str(where)], check=True)
    else:
        process.send_signal(getattr(signal, how))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert not os.path.ismount(where) and os.listdir(where) == []
    assert str(where) not in Path("/proc/mounts").read_text()
    assert "unmounted" in err



def test_points_are_chosen_by_vm_name_and_time_as_everywhere_else(world, tmp_path):
    latest = world.vmkeep("files", "get", "--vm", EXT4_VM, "--latest", "/etc/app.conf",
                          "--to", str(tmp_path / "latest"))
    assert latest.code == 0, latest.err
    assert (tmp_path / "latest/app.conf").read_bytes() == b"setting = 2\n"
    before = world.vmkeep("files", "get", "--vm", EXT4_VM, "--at", "2026-11-25T12:00:00Z",
                          "/etc/app.conf", "--to", str(tmp_path / "before"))
    assert before.code == 0, before.err
    assert (tmp_path / "before/app.conf").read_bytes() == b"setting = 1\n"
    listed = world.vmkeep("files", "ls", "--vm", EXT4_VM, "/etc", "-o", "json")
    assert "/etc/new.conf" in {e["path"] for e in listed.json()["entries"]}

"""`vmkeep restore` into a local directory, from real repositories named in a real host config.

The restored disks are read back through their VMDK descriptors with qemu-img (a VMDK reader
that is not ours), compared byte for byte with what was exported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.restore import descriptor, point_vmx_at

from .disks import CHUNK, export, flip_chunk, noise, open_repo, point_id, text

SECTORS = 64 * CHUNK  # a multiple of 512: a descriptor is written
BOOT = noise("boot", 8 * CHUNK) + bytes(48 * CHUNK) + text("boot-tail", 8 * CHUNK)
DATA = text("data", 20 * CHUNK) + noise("data", 3 * CHUNK + 100)  # not whole sectors
VMX = (
    b'.encoding = "UTF-8"\n'
    b'displayName = "vm1"\n'
    b'scsi0:0.fileName = "vm1-000001.vmdk"\n'
    b'scsi0:1.fileName = "/vmfs/volumes/ds2/vm1/vm1_1-000001.vmdk"\n'
    b'nvram = "vm1.nvram"\n'
)
VM_JSON = json.dumps({
    "name": "vm1",
    "disks": [
        {"key": 2000, "file": "[ds1] vm1/vm1.vmdk", "capacityBytes": len(BOOT)},
        {"key": 2001, "file": "[ds2] vm1/vm1_1.vmdk", "capacityBytes": len(DATA)},
    ],
}).encode()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "vmkeep.yaml"
    path.write_text("targets:\n  nas: {type: directory, path: exports}\n", encoding="utf-8")
    repo = open_repo(tmp_path / "exports")
    files = {"vm1.vmx": VMX, "vm1.nvram": noise("nvram", 900), "vm.json": VM_JSON}
    export(repo, point_id(1), {"disk-2000": BOOT, "disk-2001": DATA}, files)
    export(repo, point_id(2), {"disk-2000": BOOT[::-1], "disk-2001": DATA}, files)
    repo.close()
    return path


def restore(config: Path, *argv: str) -> int:
    return main(["restore", "--config", str(config), *argv])


def test_a_restored_point_holds_every_disk_byte_exact_with_descriptors_and_the_vm_files(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "restored"
    assert restore(config, "--point", point_id(1), "--to", str(out)) == 0
    printed = capsys.readouterr()
    assert f"restore point {point_id(1)} from target nas -> {out}" in printed.out
    assert "restored disk-2000 -> vm1-flat.vmdk" in printed.err

    assert sorted(p.name for p in out.iterdir()) == [
        "restore.json", "vm.json", "vm1-flat.vmdk", "vm1.nvram", "vm1.vmdk", "vm1.vmx",
        "vm1_1-flat.vmdk",  # 23 chunks and 100 bytes: not whole sectors, no descriptor
    ]
    assert (out / "vm1-flat.vmdk").read_bytes() == BOOT
    assert (out / "vm1_1-flat.vmdk").read_bytes() == DATA
    assert (out / "vm1.nvram").read_bytes() == noise("nvram", 900)
    assert (out / "vm1.vmdk").read_text() == descriptor("vm1-flat.vmdk", len(BOOT))
    vmx = (out / "vm1.vmx").read_bytes()
    assert b'scsi0:0.fileName = "vm1.vmdk"\n' in vmx  # the delta of the export's snapshot
    assert b'scsi0:1.fileName = "/vmfs/volumes/ds2/vm1/vm1_1-000001.vmdk"' in vmx  # no descriptor
    report = json.loads((out / "restore.json").read_text())
    assert report["point"] == point_id(1) and report["source"] == {"target": "nas"}
    assert [(d["name"], d["sizeBytes"]) for d in report["disks"]] == [
        ("disk-2000", len(BOOT)), ("disk-2001", len(DATA))
    ]
    assert not list(tmp_path.glob(".*vmkeep-restore-*"))


def test_zero_chunks_of_a_restored_disk_are_holes(config: Path, tmp_path: Path) -> None:
    out = tmp_path / "restored"
    assert restore(config, "--point", point_id(1), "--to", str(out), "--disk", "disk-2000") == 0
    image = out / "vm1-flat.vmdk"
    assert image.stat().st_size == len(BOOT)
    assert image.stat().st_blocks * 512 <= len(BOOT) - 40 * CHUNK  # 48 zero chunks not written


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-utils is not installed "
                    "(scripts/bootstrap installs it)")
def test_qemu_img_reads_the_restored_disk_through_its_descriptor(
    config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "restored"
    assert restore(config, "--point", point_id(2), "--to", str(out)) == 0
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "--output=json", str(out / "vm1.vmdk")],
        check=True, capture_output=True, text=True).stdout)
    assert info["format"] == "vmdk" and info["virtual-size"] == len(BOOT)
    raw = tmp_path / "raw.img"
    raw.write_bytes(BOOT[::-1])
    compared = subprocess.run(
        ["qemu-img", "compare", "-f", "vmdk", "-F", "raw", str(out / "vm1.vmdk"), str(raw)],
        capture_output=True, text=True)
    assert compared.returncode == 0, compared.stdout + compared.stderr


def test_only_the_chosen_disks_are_restored_and_the_vmx_points_at_them(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "one"
    assert restore(config, "--point", point_id(1), "--to", str(out), "--disk", "disk-2001",
                   "-o", "json") == 0
    body = json.loads(capsys.readouterr().out)
    assert [d["image"] for d in body["disks"]] == ["vm1_1-flat.vmdk"]
    assert body["target"] == "nas" and body["files"] == ["vm.json", "vm1.nvram", "vm1.vmx"]
    assert not (out / "vm1-flat.vmdk").exists()


def test_a_damaged_chunk_is_named_and_no_directory_appears(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = open_repo(tmp_path / "exports")
    victim = repo.open_disk(point_id(2), "disk-2000").ids[2]
    flip_chunk(repo, victim)
    repo.close()
    out = tmp_path / "restored"
    assert restore(config, "--point", point_id(2), "--to", str(out)) == 1
    err = capsys.readouterr().err
    assert f"disk 'disk-2000': chunk 2 at offset {2 * CHUNK} ({victim.hex()}) is damaged" in err
    assert not out.exists() and not list(tmp_path.glob(".*vmkeep-restore-*"))
    # The other point shares no chunk with the damage: it restores.
    assert restore(config, "--point", point_id(1), "--to", str(out)) == 0
    assert (out / "vm1-flat.vmdk").read_bytes() == BOOT


def test_an_existing_file_is_never_overwritten(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "vm1.vmx").write_text("mine")
    assert restore(config, "--point", point_id(1), "--to", str(out)) == 1
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["vm1.vmx"]
    assert (out / "vm1.vmx").read_text() == "mine"


def test_an_empty_directory_is_filled_and_a_killed_restores_leftovers_are_cleared(
    config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = tmp_path / f".empty.vmkeep-restore-{dead.pid}"  # a killed restore's
    leftover.mkdir()
    (leftover / "vm1-flat.vmdk").write_bytes(b"half")
    running = tmp_path / f".empty.vmkeep-restore-{os.getppid()}"  # a restore still running
    running.mkdir()
    assert restore(config, "--point", point_id(1), "--to", str(out)) == 0
    assert (out / "vm1-flat.vmdk").read_bytes() == BOOT
    assert not leftover.exists() and running.exists()


def test_a_full_disk_is_one_clear_error_and_leaves_nothing_behind(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    from reconciler import restore as restore_module

    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(restore_module, "_write", full)
    out = tmp_path / "restored"
    assert restore(config, "--point", point_id(1), "--to", str(out)) == 1
    err = capsys.readouterr().err
    assert f"restore into {out} failed, nothing was left behind: No space left on device" in err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".*vmkeep-restore-*"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--point", "nightly/x/20260101T000000Z", "--to", "{to}"],
         "no restore point 'nightly/x/"),
        (["--point", point_id(1), "--disk", "disk-9", "--to", "{to}"],
         "has no disk 'disk-9' (disks: disk-2000, disk-2001)"),
        (["--point", point_id(1)], "say where to restore: --to DIR or --vcenter NAME"),
        (["--to", "{to}"], "name a restore point: --point ID, or --vm NAME|UUID"),
    ],
)
def test_bad_requests_give_one_clear_error_line_and_create_nothing(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
    message: str
) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    to = str(tmp_path / "restored")
    assert restore(config, *(a.replace("{to}", to) for a in argv)) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_with_several_targets_the_one_holding_the_point_is_found(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    open_repo(tmp_path / "other").close()
    config.write_text("targets:\n  nas: {type: directory, path: exports}\n"
                      "  other: {type: directory, path: other}\n", encoding="utf-8")
    assert restore(config, "--point", point_id(1), "--to", str(tmp_path / "r")) == 0
    assert "from target nas" in capsys.readouterr().out
    assert restore(config, "--point", "nightly/x/20260101T000000Z", "--to",
                   str(tmp_path / "s")) == 1
    assert "no restore point 'nightly/x/20260101T000000Z'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "restored", "expected"),
    [
        ('scsi0:0.fileName = "vm1-000001.vmdk"', ["vm1.vmdk"], 'scsi0:0.fileName = "vm1.vmdk"'),
        ('scsi0:0.fileName = "vm1-000012.vmdk"', ["vm1.vmdk"], 'scsi0:0.fileName = "vm1.vmdk"'),
        ('sata0:1.fileName = "/vmfs/volumes/ds2/x/data.vmdk"', ["data.vmdk"],
         'sata0:1.fileName = "data.vmdk"'),
        ('nvme0:0.fileName = "VM1.VMDK"', ["vm1.vmdk"], 'nvme0:0.fileName = "vm1.vmdk"'),
        ('scsi0:0.fileName = "vm1.vmdk"', ["vm1.vmdk"], 'scsi0:0.fileName = "vm1.vmdk"'),
        ('scsi0:0.fileName = "other-000001.vmdk"', ["vm1.vmdk"],
         'scsi0:0.fileName = "other-000001.vmdk"'),
        ('ide1:0.fileName = "/usr/lib/vmware/isoimages/linux.iso"', ["vm1.vmdk"],
         'ide1:0.fileName = "/usr/lib/vmware/isoimages/linux.iso"'),
        ('displayName = "vm1-000001.vmdk"', ["vm1.vmdk"], 'displayName = "vm1-000001.vmdk"'),
    ],
)
def test_vmx_disk_names_point_at_the_restored_disks(
    line: str, restored: list[str], expected: str
) -> None:
    vmx, changes = point_vmx_at(f"a = 1\n{line}\n".encode(), restored)
    assert vmx == f"a = 1\n{expected}\n".encode()
    assert bool(changes) == (line != expected)


def test_the_descriptor_names_the_image_and_its_sectors() -> None:
    text_ = descriptor("vm1-flat.vmdk", 10 * 1024**3)
    assert 'RW 20971520 VMFS "vm1-flat.vmdk"' in text_
    assert 'createType="vmfs"' in text_ and 'ddb.geometry.cylinders = "1305"' in text_


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"disk-1": "[ds1] a/a.vmdk", "disk-2": "[ds2] a/a_1.vmdk"}, ["a", "a_1"]),
        ({"disk-1": "[ds1] a/a.vmdk", "disk-2": "[ds2] a/a.vmdk"}, ["a", "disk-2"]),
        ({"disk-1": "[ds1] a/.hidden.vmdk"}, ["disk-1"]),
        ({"disk-1": "[ds1] a/a.raw"}, ["disk-1"]),
        ({}, ["disk-1"]),
    ],
)
def test_restored_disks_take_their_exported_file_names_when_plain_and_unique(
    files: dict[str, str], expected: list[str]
) -> None:
    from reconciler.restore import _image_names

    description = {"disks": [{"key": k.removeprefix("disk-"), "file": f}
                             for k, f in files.items()]}
    names = _image_names(["disk-1", "disk-2"][: max(1, len(files))], description)
    assert list(names.values()) == expected

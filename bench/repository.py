"""Benchmark: vmkeep's export repository against restic and borg on a VM-disk-like image.

    .venv/bin/python bench/repository.py                 # 2 GiB image, all tools
    .venv/bin/python bench/repository.py --size 256M     # quick check
    .venv/bin/python bench/repository.py --tools vmkeep --chunk-size 16K --chunk-size 64K

With a fixed seed it builds a day-1 image (1 MiB regions: ~40 % zero, ~30 % text-like and
compressible, ~30 % random) and two day-2 variants: (a) 1 % of the disk rewritten in
clustered runs of 64 KiB–1 MiB, (b) 1 % of the 4 KiB blocks rewritten at random offsets.
Each tool backs up day 1, then day 2a, then day 2b into one repository, always from the
same path (as a nightly export would); every run is a separate process, measured with
wait4 (wall, user+sys CPU, peak RSS), and "added" is the growth of the repository
directory. vmkeep also runs day 2 with a changed-extent list (what vSphere CBT returns)
against a copy of its day-1 repository. The raw read throughput of the image is the ceiling.
Nothing here is asserted: figures are printed (and written as JSON with --json).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import blake3

MiB = 1024 * 1024
REGION = MiB
TEXT_TABLE = bytes((b" etaoinshrdlucmf"[i % 16]) for i in range(256))


@dataclass
class Run:
    tool: str
    day: str
    wall: float
    cpu: float
    rss_mib: float
    added: int
    read: int = 0  # bytes read from the image, where the tool reports it

    def throughput(self, size: int) -> float:
        return size / self.wall / MiB if self.wall else 0.0


# --------------------------------------------------------------------------- images


def _xof(seed: int, label: str, n: int) -> bytes:
    return blake3.blake3(f"{seed}:{label}".encode()).digest(length=n)


def _text_region(seed: int, region: int) -> bytes:
    """Text-like 1 MiB: 16 symbols (4 bits/byte), half of the 4 KiB lines repeated."""
    noise = _xof(seed, f"text{region}", REGION + 4096)
    lines: list[bytes] = []
    for k in range(REGION // 4096):
        if k and noise[REGION + k] < 128:
            lines.append(lines[noise[REGION + (k + 7) % 4096] % k])
        else:
            lines.append(noise[k * 4096 : (k + 1) * 4096].translate(TEXT_TABLE))
    return b"".join(lines)


def build_day1(path: Path, size: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    counts = {"zero": 0, "text": 0, "random": 0}
    zero = bytes(REGION)
    with open(path, "wb") as f:
        for region in range(size // REGION):
            kind = rng.choices(("zero", "text", "random"), (40, 30, 30))[0]
            counts[kind] += 1
            if kind == "zero":
                f.write(zero)
            elif kind == "text":
                f.write(_text_region(seed, region))
            else:
                f.write(_xof(seed, f"rand{region}", REGION))
    return counts


def changes_clustered(size: int, seed: int) -> list[tuple[int, int]]:
    """(a): runs of 64 KiB–1 MiB (4 KiB aligned) until 1 % of the disk is covered."""
    rng = random.Random(seed + 1)
    target, total, extents = size // 100, 0, []
    while total < target:
        length = min(rng.randrange(16, 257) * 4096, target - total)
        offset = rng.randrange(0, (size - length) // 4096 + 1) * 4096
        extents.append((offset, length))
        total += length
    return extents


def changes_scattered(size: int, seed: int) -> list[tuple[int, int]]:
    """(b): 1 % of the 4 KiB blocks, at random distinct offsets."""
    rng = random.Random(seed + 2)
    blocks = size // 4096
    return [(b * 4096, 4096) for b in sorted(rng.sample(range(blocks), blocks // 100))]


def build_day2(base: Path, path: Path, extents: list[tuple[int, int]], seed: int) -> None:
    shutil.copyfile(base, path)
    with open(path, "r+b") as f:
        for k, (offset, length) in enumerate(extents):
            f.seek(offset)
            f.write(_xof(seed, f"change{path.name}{k}", length))


def raw_read(path: Path) -> float:
    buf = bytearray(8 * MiB)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - start


# --------------------------------------------------------------------------- measuring


def stage(image: Path, disk: Path) -> None:
    """Put a day's image at the disk path, flushed (no writeback during the run) and cached."""
    shutil.copyfile(image, disk)
    os.sync()
    raw_read(disk)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, str]:
    """Run a command; return wall seconds, CPU seconds, peak RSS (MiB) and its stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})}
    )
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.decode()


def ensure_tools(tools: list[str]) -> None:
    missing = [t for t in tools if t in ("restic", "borg") and shutil.which(t) is None]
    if missing:
        packages = ["borgbackup" if t == "borg" else t for t in missing]
        print(f"installing {', '.join(packages)} with apt-get", file=sys.stderr)
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", *packages], check=True)


def run_vmkeep(
    repo: Path,
    image: Path,
    day: str,
    args: argparse.Namespace,
    *,
    previous: str | None = None,
    extents: Path | None = None,
    label: str = "vmkeep",
) -> Run:
    before = dir_bytes(repo) if repo.exists() else 0
    argv = [
        sys.executable,
        __file__,
        "--worker",
        str(repo),
        str(image),
        day,
        "--chunk-size",
        str(args.chunk_size[0]),
        *(["--level", str(args.level)] if args.level is not None else []),
    ]
    if previous and extents:
        argv += ["--previous", previous, "--extents", str(extents)]
    wall, cpu, rss, out = measure(argv)
    result = json.loads(out)
    return Run(label, day, wall, cpu, rss, dir_bytes(repo) - before, result["read_bytes"])


def run_vmkeep_read(repo: Path, out: Path, day: str, args: argparse.Namespace, mode: str) -> Run:
    """Restore a point to `out` (mode "restore") or verify every point (mode "verify")."""
    argv = [
        sys.executable,
        __file__,
        "--worker",
        str(repo),
        str(out),
        day,
        f"--{mode}",
        "--chunk-size",
        str(args.chunk_size[0]),
    ]
    wall, cpu, rss, output = measure(argv)
    return Run("vmkeep", mode, wall, cpu, rss, 0, json.loads(output)["read_bytes"])


def run_restic(repo: Path, image: Path, day: str) -> Run:
    env = {"RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(repo.parent / "restic-cache")}
    if not repo.exists():
        measure(["restic", "-r", str(repo), "init", "--repository-version", "2"], env)
    before = dir_bytes(repo)
    wall, cpu, rss, _ = measure(
        ["restic", "-r", str(repo), "backup", "--compression", "auto", "--quiet", str(image)], env
    )
    return Run("restic", day, wall, cpu, rss, dir_bytes(repo) - before)


def run_borg(repo: Path, image: Path, day: str) -> Run:
    env = {
        "BORG_BASE_DIR": str(repo.parent / "borg-base"),
        "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
    }
    if not repo.exists():
        measure(["borg", "init", "-e", "none", str(repo)], env)
    before = dir_bytes(repo)
    wall, cpu, rss, _ = measure(
        ["borg", "create", "--compression", "zstd,3", f"{repo}::{day}", str(image)], env
    )
    return Run("borg", day, wall, cpu, rss, dir_bytes(repo) - before)


# --------------------------------------------------------------------------- worker


def worker(args: argparse.Namespace) -> None:
    """One vmkeep export in this process (so the parent can measure it alone)."""
    from datetime import UTC, datetime

    from reconciler.adapters.repository import Repository
    from reconciler.model import VMRef

    repo_path, image, day = args.worker
    repo = Repository.open(repo_path, chunk_size=args.chunk_size[0], compression_level=args.level)
    point = f"bench/vm-0001/{day}"
    if args.restore:
        with open(image, "wb") as out:
            written = repo.open_disk(point, "disk0").read_into(out)
            out.flush()
            os.fsync(out.fileno())
        print(json.dumps({"read_bytes": written}))
        return
    if args.verify:
        report = repo.verify()
        print(json.dumps({"read_bytes": report.bytes_checked, "ok": report.ok}))
        return
    vm = VMRef("bench-vm", "vm-0001")
    size = os.path.getsize(image)
    with (
        open(image, "rb", buffering=0) as stream,
        repo.begin_point(point, "bench", vm, datetime.now(UTC)) as writer,
    ):
        if args.previous:
            extents = [(int(o), int(n)) for o, n in json.loads(Path(args.extents).read_text())]
            result = writer.add_disk(
                "disk0",
                stream,
                size=size,
                changed_extents=extents,
                previous=(f"bench/vm-0001/{args.previous}", "disk0"),
            )
        else:
            result = writer.add_disk("disk0", stream, size=size)
        writer.commit("crash")
    repo.close()
    print(json.dumps(asdict(result)))


# --------------------------------------------------------------------------- main


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def report(runs: list[Run], size: int, ceiling: float) -> None:
    print(f"\nimage {size / MiB:.0f} MiB; raw read {size / ceiling / MiB:.0f} MiB/s (ceiling)")
    print(
        f"{'tool':<14}{'day':<8}{'wall s':>8}{'cpu s':>8}{'MiB/s':>8}{'RSS MiB':>9}"
        f"{'added MiB':>11}{'added %':>9}{'read MiB':>10}"
    )
    for r in runs:
        read = f"{r.read / MiB:10.1f}" if r.read else f"{'':>10}"
        print(
            f"{r.tool:<14}{r.day:<8}{r.wall:8.2f}{r.cpu:8.2f}{r.throughput(size):8.0f}"
            f"{r.rss_mib:9.0f}{r.added / MiB:11.1f}{100 * r.added / size:8.2f}%{read}"
        )
    by = {(r.tool, r.day): r for r in runs}
    vm1 = by.get(("vmkeep", "day1"))
    if vm1:
        for other in ("restic", "borg"):
            o = by.get((other, "day1"))
            if o:
                print(f"day-1 throughput vmkeep/{other}: {o.wall / vm1.wall:.2f}x")
        b = by.get(("vmkeep", "day2b"))
        rb = by.get(("restic", "day2b"))
        if b and rb and rb.added:
            print(f"day-2 (b) added vmkeep/restic: {100 * b.added / rb.added:.0f} %")
        for day in ("day2a", "day2b"):
            c = by.get(("vmkeep+cbt", day))
            if c:
                print(f"{day} with changed extents read {100 * c.read / size:.2f} % of the image")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="image size (default 2G)")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--workdir", default="/var/tmp/vmkeep-bench")
    parser.add_argument("--tools", default="vmkeep,restic,borg")
    parser.add_argument("--chunk-size", type=parse_size, action="append", default=[])
    parser.add_argument("--level", type=int, default=None,
                        help="vmkeep zstd level (default: the repository's; 1 when new)")
    parser.add_argument("--json", help="write the runs as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--previous", help=argparse.SUPPRESS)
    parser.add_argument("--extents", help=argparse.SUPPRESS)
    parser.add_argument("--restore", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--verify", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.chunk_size = args.chunk_size or [64 * 1024]
    if args.worker:
        worker(args)
        return
    size = parse_size(args.size) // REGION * REGION
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    ensure_tools(tools)
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    images = work / "images"
    images.mkdir()
    day1 = images / "day1.img"
    start = time.perf_counter()
    counts = build_day1(day1, size, args.seed)
    ext_a, ext_b = changes_clustered(size, args.seed), changes_scattered(size, args.seed)
    build_day2(day1, images / "day2a.img", ext_a, args.seed)
    build_day2(day1, images / "day2b.img", ext_b, args.seed)
    (images / "day2a.json").write_text(json.dumps(ext_a))
    (images / "day2b.json").write_text(json.dumps(ext_b))
    print(f"built images in {time.perf_counter() - start:.1f} s; regions {counts}", flush=True)
    ceiling = min(raw_read(day1) for _ in range(2))
    disk = work / "disk.img"  # every tool reads "the VM's disk" from the same path
    runs: list[Run] = []
    chunk_sizes = list(args.chunk_size)
    for tool in tools:
        for cs in chunk_sizes if tool == "vmkeep" else [0]:
            args.chunk_size = [cs]
            label = tool if len(chunk_sizes) == 1 or tool != "vmkeep" else f"vmkeep/{cs // 1024}K"
            repo = work / f"{tool}-{cs}-repo"
            for day in ("day1", "day2a", "day2b"):
                stage(images / f"{day}.img", disk)
                if tool == "vmkeep":
                    run = run_vmkeep(repo, disk, day, args, label=label)
                elif tool == "restic":
                    run = run_restic(repo, disk, day)
                else:
                    run = run_borg(repo, disk, day)
                runs.append(run)
                print(f"{run.tool} {day}: {run.wall:.2f} s, +{run.added / MiB:.1f} MiB", flush=True)
                if tool == "vmkeep" and day == "day1":
                    shutil.copytree(repo, work / f"cbt-{cs}-repo")
            if tool == "vmkeep" and len(chunk_sizes) == 1:
                restored = work / "restored.img"
                runs.append(run_vmkeep_read(repo, restored, "day1", args, "restore"))
                same = filecmp.cmp(restored, images / "day1.img", shallow=False)
                print(f"vmkeep restore of day 1 byte-exact: {same}", flush=True)
                restored.unlink()
                runs.append(run_vmkeep_read(repo, restored, "-", args, "verify"))
            if tool == "vmkeep":
                cbt = work / f"cbt-{cs}-repo"
                for day in ("day2a", "day2b"):
                    stage(images / f"{day}.img", disk)
                    runs.append(
                        run_vmkeep(
                            cbt,
                            disk,
                            day,
                            args,
                            previous="day1",
                            extents=images / f"{day}.json",
                            label=f"{label}+cbt",
                        )
                    )
    report(runs, size, ceiling)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in runs], indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

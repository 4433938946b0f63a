"""Benchmark: `vmkeep restore --vcenter` of one exported disk into the simulator, against a
raw upload of the same bytes; and what a half-empty disk costs on the wire.

    .venv/bin/python bench/restore.py                  # 256 MiB disk (about 30 s)
    .venv/bin/python bench/restore.py --size 2G        # the issue's 2 GiB figure

Set-up (not measured): a simulator with one VM whose disk is grown to --size; its first half
is a VM-disk-like image (`bench/repository.py`: 1 MiB regions, ~40 % zero, ~30 % text-like,
~30 % random), its second half zeros — a half-empty disk; `vmkeep apply` exports it into an
empty directory target.

Measured:
* **raw upload**: the disk's bytes (the flat file, zeros included) PUT over the datastore
  HTTP interface with vmkeep's own `upload` (TLS-verified, session cookie) — the ceiling for
  moving those bytes into the simulator;
* **restore**: `vmkeep restore --vm … --vcenter sim --name … -o json` as a separate process,
  wall time: finding the point, the plan, NFC import, every chunk read and verified, the
  streamOptimized stream (zeros left out), rename. Its report gives the bytes sent.

Ratio = raw seconds / restore seconds (1.0: as fast as a raw upload; the goal is >= 0.5).
Nothing is asserted; figures are printed (and written as JSON with --json).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from reconciler.adapters.datastore import DatastoreFile, parse_datastore_path, upload
from reconciler.adapters.vsphere import VSphereClient
from reconciler.adapters.vsphere_tls import endpoint_of, pin_of, pinned_connection, ssl_context
from reconciler.model import VCenterConfig

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
DAY1 = "2026-11-25T01:30:00Z"


def _bench_apply() -> Any:
    """`bench/apply.py` (one simulator set-up and one disk image generator for both)."""
    spec = importlib.util.spec_from_file_location("bench_apply", ROOT / "bench" / "apply.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def half_empty(apply: Any, info: dict[str, Any], vm: Any, size: int) -> Path:
    """Make the VM's flat file: a VM-like first half, zeros after; returns its path."""
    images = apply._image_builder()
    _, path = parse_datastore_path(vm.disks[0].file)
    flat = path[: -len(".vmdk")] + "-flat.vmdk"
    [target] = list(Path(info["dataDir"]).rglob(flat))
    images.build_day1(target, size // 2, 1)
    with open(target, "r+b") as f:
        f.truncate(size)
    os.sync()
    images.raw_read(target)
    return target


def raw_upload(config: VCenterConfig, password: str, source: Path) -> float:
    endpoint = endpoint_of(config)
    connect = pinned_connection(ssl_context(config), pin_of(config), connect_timeout=10,
                                read_timeout=300)
    with VSphereClient(config, password) as client:
        client.call("log in", lambda: None)
        cookie = str(client.stub.cookie)
    file = DatastoreFile(config.name, endpoint.host, endpoint.port, "DC0", "LocalDS_0",
                         "bench-raw/raw-flat.vmdk")
    size = source.stat().st_size

    def blocks() -> Any:
        with open(source, "rb") as f:
            while block := f.read(8 * MiB):
                yield block

    started = time.perf_counter()
    upload(file, connect, cookie, blocks(), size)
    return time.perf_counter() - started


def run_restore(root: Path, config: Path, password: str, vm: str) -> tuple[float, dict[str, Any]]:
    argv = [sys.executable, "-m", "reconciler", "restore", "--config", str(config), "--vm", vm,
            "--vcenter", "sim", "--name", "bench-restored", "-o", "json"]
    env = {**os.environ, "VMKEEP_BENCH_PASSWORD": password}
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"vmkeep restore failed: {done.stderr[-2000:]}")
    return wall, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="256M", help="disk size (e.g. 256M, 2G)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    apply = _bench_apply()
    size = apply.parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="vmkeep-bench-restore-") as scratch:
        root = Path(scratch)
        info = apply.start_simulator(root / "sim", 1)
        try:
            password = info["password"]
            config = apply.write_config(root, info, 1)
            vc = VCenterConfig("sim", info["url"], info["username"], ca_file=info["caFile"])
            with VSphereClient(vc, password) as client:
                [vm] = apply.prepare_disks(client, info, size)
            source = half_empty(apply, info, vm, size)
            apply.run_apply(root, config, password, DAY1)
            raw = raw_upload(vc, password, source)
            wall, report = run_restore(root, config, password, vm.name)
        finally:
            apply.stop_simulator(root / "sim")
    [disk] = report["disks"]
    figures = {
        "diskMiB": size // MiB,
        "rawUploadSeconds": round(raw, 3),
        "restoreSeconds": round(wall, 3),
        "ratio": round(raw / wall, 2),
        "sentBytes": disk["sentBytes"],
        "sentShare": round(disk["sentBytes"] / size, 3),
    }
    rows = [
        ("disk", f"{size / MiB:,.0f} MiB (first half VM-like, second half zeros)"),
        ("raw upload (datastore HTTP PUT)", f"{raw:.2f} s, {size / raw / MiB:,.0f} MiB/s"),
        ("vmkeep restore --vcenter (wall)", f"{wall:.2f} s, {size / wall / MiB:,.0f} MiB/s"),
        ("ratio raw / restore (goal >= 0.5)", f"{raw / wall:.2f}"),
        ("bytes sent / disk size", f"{disk['sentBytes'] / MiB:,.1f} MiB / {size / MiB:,.0f} "
                                   f"MiB ({disk['sentBytes'] / size * 100:.0f} %)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

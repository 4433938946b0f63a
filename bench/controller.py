"""Benchmark: the controller's observe with the watch cache vs a full inventory read.

    .venv/bin/python bench/controller.py                     # 10,000 VMs, 100 changed a tick
    .venv/bin/python bench/controller.py --vms 2000 --changed 50 --ticks 3

Starts a simulator (`scripts/vcsim start`, as bench/inventory.py does), then on the same
server:

* **full read** (the baseline, measured in the same run): `VSphereClient.inventory()` on a
  logged-in client — what every tick cost before the watch cache; best of `--repeat`.
* **watch start**: the first `VSphereWatch.inventory()` (login, CreateFilter, everything
  read as `enter` updates, from the SOAP bytes by `vsphere_fast`); before it, the same start
  with the answer read through pyVmomi (`fast_inventory=False`, the way before), which must
  read the same inventory.
* **watch tick**: `--ticks` times, `--changed` VMs are changed between ticks (renamed,
  every other one also powered off or on; not timed), then one `VSphereWatch.inventory()`
  is timed: the observe time of a controller tick (WaitForUpdatesEx with the changes, the
  REST tag read, building the inventory). Best and median are printed.

After the last tick the cached inventory must equal a full read (the bench stops if not).
The ratio is the full read's best over the tick's median. Nothing is asserted beyond that.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyVim.task import WaitForTask
from pyVmomi import vim

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from inventory import machine_reference, naive_connect, simulator  # noqa: E402

from reconciler.adapters.vsphere import VSphereClient, VSphereWatch  # noqa: E402
from reconciler.model import Inventory, VCenterConfig  # noqa: E402


def by_moref(inventory: Inventory) -> Inventory:
    return replace(inventory, vms=tuple(sorted(inventory.vms, key=lambda vm: vm.moref)))


def change(content: Any, vms: list[Any], count: int, tick: int) -> None:
    """Rename `count` VMs (every other one also powered off/on): the tick's changes."""
    tasks = []
    for i, vm in enumerate(vms[tick * count % len(vms):][:count]):
        tasks.append(vm.Rename_Task(f"tick{tick}-{i}-{vm._moId}"))
        if i % 2:
            on = vm.runtime.powerState == "poweredOn"
            tasks.append(vm.PowerOffVM_Task() if on else vm.PowerOnVM_Task())
    for task in tasks:
        WaitForTask(task)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--changed", type=int, default=100)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    print(machine_reference(), flush=True)
    with simulator(args.vms, 0) as (info, start_s):
        print(f"{args.vms} VMs: simulator ready in {start_s:.1f} s", flush=True)
        config = VCenterConfig(name="bench", url=info["url"], username="bench",
                               ca_file=info["caFile"])
        full_runs = []
        with VSphereClient(config, info["password"]) as client:
            client.inventory()  # login and warm-up
            for _ in range(args.repeat):
                started = time.perf_counter()
                client.inventory()
                full_runs.append(time.perf_counter() - started)
        print(f"full read: best {min(full_runs):.2f} s", flush=True)

        content = naive_connect(info)
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True)
        vms = sorted(view.view, key=lambda vm: vm._moId)
        # The start as it was before issue 14's last step: the first update set read through
        # pyVmomi's deserialiser (`fast_inventory=False`), on the same server.
        old = VSphereWatch(VSphereClient(config, info["password"], fast_inventory=False))
        try:
            started = time.perf_counter()
            old_inventory = old.inventory()
            start_pyvmomi = time.perf_counter() - started
        finally:
            old.close()
        print(f"watch start read by pyVmomi: {start_pyvmomi:.2f} s", flush=True)
        watch = VSphereWatch(VSphereClient(config, info["password"]))
        try:
            started = time.perf_counter()
            first = watch.inventory()
            start_watch = time.perf_counter() - started
            print(f"watch start: {start_watch:.2f} s", flush=True)
            if by_moref(first) != by_moref(old_inventory):
                print("the two starts read different inventories", file=sys.stderr)
                return 1
            ticks = []
            for tick in range(args.ticks):
                change(content, vms, args.changed, tick)
                started = time.perf_counter()
                cached = watch.inventory()
                ticks.append(time.perf_counter() - started)
                print(f"tick {tick}: {ticks[-1]:.3f} s", flush=True)
            if by_moref(cached) != by_moref(VSphereClient(config, info["password"]).inventory()):
                print("the cached inventory differs from a full read", file=sys.stderr)
                return 1
            if watch.full_reads != 1:
                print(f"{watch.full_reads} full reads, expected 1", file=sys.stderr)
                return 1
        finally:
            watch.close()
    median = statistics.median(ticks)
    print(machine_reference())
    print("| VMs | changed a tick | full read (best) | watch start, pyVmomi | watch start | "
          "tick (best) | tick (median) | full read / tick |")
    print(f"| {args.vms:,} | {args.changed} | {min(full_runs):.2f} s | {start_pyvmomi:.2f} s | "
          f"{start_watch:.2f} s | "
          f"{min(ticks):.3f} s | {median:.3f} s | {min(full_runs) / median:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

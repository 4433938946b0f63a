"""Benchmark: inventory discovery against the simulator, vmkeep's read vs naive lazy reads.

    .venv/bin/python bench/inventory.py                    # 1,000 / 5,000 / 10,000 VMs
    .venv/bin/python bench/inventory.py --vms 2000 --repeat 1 --sample 50
    .venv/bin/python bench/inventory.py --latency 2    # every SOAP call 2 ms slower

For each size it starts a simulator with `scripts/vcsim start` (1 datacenter, 1 cluster of
3 hosts, VMs spread over four folders), then measures on the same server:

* **vmkeep**: `VSphereClient.inventory()` — a fresh connection, login, one paged
  PropertyCollector read (1,000 objects a page) and the REST tag read — best of `--repeat`;
  HTTP requests are counted at the http.client layer. Each read runs in a fresh process
  (`--child`), so its peak RSS is its own, and the two readers take turns:
  **fast** (the default: pages parsed from their SOAP bytes by `vsphere_fast`) and
  **pyvmomi** (`fast_inventory=False`: pyVmomi's deserialiser, the reader before it); the
  two inventories must be equal. The ratio is pyvmomi's best over fast's best.
* **naive**: what a hand-written pyVmomi script does: list the VMs of a ContainerView, then
  read each VM's properties through pyVmomi's lazy accessors (name, config, runtime,
  runtime.host.name, guest, customValue, snapshot, and parent names up to the datacenter
  for the folder path), each a round trip. Too slow for every VM: it is measured on the
  first `--sample` VMs and extrapolated linearly (listing the view is measured once).

On loopback a round trip costs well under a millisecond, which flatters the naive way;
`--latency MS` makes the simulator delay every SOAP call, like a vCenter across a network
or under load. Prints one line per size and a Markdown table for docs/benchmarks.md.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyVmomi import SoapStubAdapter, vim

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.adapters.vsphere import VSphereClient  # noqa: E402
from reconciler.model import VCenterConfig  # noqa: E402

VCSIM = ROOT / "scripts" / "vcsim"


@dataclass
class Result:
    vms: int
    start_s: float
    vmkeep_s: float
    vmkeep_runs: list[float]
    vmkeep_requests: int
    vmkeep_rss_mib: float
    pyvmomi_s: float
    pyvmomi_runs: list[float]
    pyvmomi_rss_mib: float
    naive_sample: int
    naive_list_s: float
    naive_per_vm_ms: float
    naive_requests_per_vm: float
    naive_extrapolated_s: float

    @property
    def ratio(self) -> float:
        return self.naive_extrapolated_s / self.vmkeep_s


class RequestCounter:
    """Counts http.client requests (pyVmomi's SOAP calls and the REST calls)."""

    def __init__(self) -> None:
        self.count = 0
        self._original = http.client.HTTPConnection.request

    def __enter__(self) -> RequestCounter:
        original = self._original

        def counting(conn: http.client.HTTPConnection, *args: Any, **kwargs: Any) -> None:
            self.count += 1
            original(conn, *args, **kwargs)

        http.client.HTTPConnection.request = counting  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        http.client.HTTPConnection.request = self._original  # type: ignore[method-assign]


@contextmanager
def simulator(vms: int, latency: int) -> Iterator[tuple[dict[str, Any], float]]:
    with tempfile.TemporaryDirectory(prefix="vmkeep-bench-") as state:
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, str(VCSIM), "start", "--vms", str(vms), "--state-dir", state,
             "--username", "bench", "--password", "bench-password", "--timeout", "600",
             "--latency", str(latency)],
            check=True, capture_output=True, text=True,
        ).stdout
        elapsed = time.perf_counter() - started
        try:
            yield json.loads(out), elapsed
        finally:
            subprocess.run([sys.executable, str(VCSIM), "stop", "--state-dir", state],
                           check=True, capture_output=True)


def machine_reference() -> str:
    """This machine's speed right now: best of 3 `sum(range(10**7))` (docs/benchmarks.md)."""
    best = min(timeit.repeat("sum(range(10**7))", number=1, repeat=3))
    return f"reference: sum(range(10**7)) {best * 1000:.0f} ms, load {os.getloadavg()[0]:.2f}"


def child(url: str, ca_file: str, password: str, reader: str) -> None:
    """One inventory read in this process; prints seconds, requests, VMs, peak RSS, digest."""
    import hashlib
    import resource

    import orjson

    from reconciler.observed import canonical_json

    config = VCenterConfig(name="bench", url=url, username="bench", ca_file=ca_file)
    with RequestCounter() as counter:
        started = time.perf_counter()
        with VSphereClient(config, password, fast_inventory=reader == "fast") as client:
            inventory = client.inventory()
        seconds = time.perf_counter() - started
    print(orjson.dumps({
        "seconds": seconds, "requests": counter.count, "vms": len(inventory.vms),
        "rssMiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "digest": hashlib.sha256(canonical_json(inventory.vms)).hexdigest(),
    }).decode())


def measure_vmkeep(info: dict[str, Any], repeat: int, log: Callable[[str], None]
                   ) -> dict[str, list[dict[str, Any]]]:
    """`repeat` reads by each reader, in turns, each in a fresh process."""
    runs: dict[str, list[dict[str, Any]]] = {"fast": [], "pyvmomi": []}
    for _ in range(repeat):
        for reader in runs:
            out = subprocess.run(
                [sys.executable, __file__, "--child", reader, info["url"], info["caFile"],
                 info["password"]], check=True, capture_output=True, text=True).stdout
            runs[reader].append(json.loads(out))
            r = runs[reader][-1]
            log(f"  {reader:>7}: {r['seconds']:6.2f} s, {r['requests']} requests, "
                f"peak RSS {r['rssMiB']:.0f} MiB")
    digests = {r["digest"] for rs in runs.values() for r in rs}
    assert len(digests) == 1, "the readers' inventories differ"
    return runs


def naive_connect(info: dict[str, Any]) -> Any:
    import ssl

    parts = urlsplit(info["url"])
    stub = SoapStubAdapter(host=parts.hostname, port=parts.port, path="/sdk",
                           version="vim.version.version11",
                           sslContext=ssl.create_default_context(cafile=info["caFile"]))
    content: Any = vim.ServiceInstance("ServiceInstance", stub).RetrieveContent()
    content.sessionManager.Login(info["username"], info["password"])
    return content


def naive_read(vm: Any) -> dict[str, Any]:
    """One VM the way a hand-written script reads it: attribute by attribute."""
    config = vm.config
    runtime = vm.runtime
    folder, parent = [], vm.parent
    while parent is not None and not isinstance(parent, vim.Datacenter):
        folder.append(parent.name)
        parent = parent.parent
    return {
        "name": vm.name,
        "instanceUuid": config.instanceUuid,
        "biosUuid": config.uuid,
        "disks": [getattr(d.backing, "fileName", None) for d in config.hardware.device
                  if isinstance(d, vim.vm.device.VirtualDisk)],
        "power": runtime.powerState,
        "host": runtime.host.name,
        "tools": vm.guest.toolsRunningStatus,
        "attributes": list(vm.customValue),
        "snapshots": vm.snapshot,
        "folder": "/".join(reversed(folder)),
    }


def measure_naive(info: dict[str, Any], sample: int) -> tuple[float, float, float]:
    """(seconds to list the VMs, ms per VM read, requests per VM) on `sample` VMs."""
    content = naive_connect(info)
    try:
        started = time.perf_counter()
        view = content.viewManager.CreateContainerView(content.rootFolder,
                                                       [vim.VirtualMachine], True)
        vms = list(view.view)
        listed = time.perf_counter() - started
        with RequestCounter() as counter:
            started = time.perf_counter()
            for vm in vms[:sample]:
                naive_read(vm)
            per_vm = (time.perf_counter() - started) / sample
        view.DestroyView()
        return listed, per_vm * 1000, counter.count / sample
    finally:
        content.sessionManager.Logout()


def bench(
    vms: int, repeat: int, sample: int, latency: int, log: Callable[[str], None]
) -> Result:
    with simulator(vms, latency) as (info, start_s):
        log(f"{vms} VMs: simulator ready in {start_s:.1f} s")
        runs = measure_vmkeep(info, repeat, log)
        assert {r["vms"] for rs in runs.values() for r in rs} == {vms}
        if sample:
            listed, per_vm_ms, per_vm_requests = measure_naive(info, min(sample, vms))
        else:
            listed, per_vm_ms, per_vm_requests = 0.0, 0.0, 0.0
    fast = [r["seconds"] for r in runs["fast"]]
    slow = [r["seconds"] for r in runs["pyvmomi"]]
    return Result(
        vms=vms,
        start_s=start_s,
        vmkeep_s=min(fast),
        vmkeep_runs=fast,
        vmkeep_requests=runs["fast"][-1]["requests"],
        vmkeep_rss_mib=max(r["rssMiB"] for r in runs["fast"]),
        pyvmomi_s=min(slow),
        pyvmomi_runs=slow,
        pyvmomi_rss_mib=max(r["rssMiB"] for r in runs["pyvmomi"]),
        naive_sample=min(sample, vms),
        naive_list_s=listed,
        naive_per_vm_ms=per_vm_ms,
        naive_requests_per_vm=per_vm_requests,
        naive_extrapolated_s=listed + per_vm_ms / 1000 * vms,
    )


def span(runs: list[float]) -> str:
    return f"{min(runs):.2f}–{max(runs):.2f}" if len(runs) > 1 else f"{runs[0]:.2f}"


def markdown(results: list[Result]) -> str:
    lines = [
        "| VMs | simulator start | fast reader (best; range) | pyVmomi reader (best; range) | "
        "pyVmomi / fast | peak RSS fast / pyVmomi | HTTP requests |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.vms:,} | {r.start_s:.1f} s | {r.vmkeep_s:.2f} s ({span(r.vmkeep_runs)}) | "
            f"{r.pyvmomi_s:.2f} s ({span(r.pyvmomi_runs)}) | **{r.pyvmomi_s / r.vmkeep_s:.1f}×** | "
            f"{r.vmkeep_rss_mib:.0f} / {r.pyvmomi_rss_mib:.0f} MiB | {r.vmkeep_requests} |"
        )
    lines += [
        "",
        "| VMs | naive, measured per VM | naive, extrapolated | naive / fast |",
        "|---|---|---|---|",
    ]
    for r in results:
        if not r.naive_sample:
            continue
        lines.append(
            f"| {r.vms:,} | "
            f"{r.naive_per_vm_ms:.1f} ms ({r.naive_requests_per_vm:.0f} requests, "
            f"{r.naive_sample} VMs) | {r.naive_extrapolated_s:.0f} s | {r.ratio:.0f}× |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, action="append",
                        help="inventory sizes (default: 1000, 5000, 10000)")
    parser.add_argument("--repeat", type=int, default=3, help="vmkeep reads per size")
    parser.add_argument("--sample", type=int, default=100, help="VMs read the naive way")
    parser.add_argument("--latency", type=int, default=0, metavar="MS",
                        help="the simulator delays every SOAP call by MS ms")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--child", nargs=4, metavar=("READER", "URL", "CA", "PASSWORD"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        reader, url, ca_file, password = args.child
        child(url, ca_file, password, reader)
        return 0

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    results = []
    print(machine_reference(), flush=True)
    for vms in args.vms or [1000, 5000, 10000]:
        r = bench(vms, args.repeat, args.sample, args.latency, log)
        runs = ", ".join(f"{t:.2f}" for t in r.vmkeep_runs)
        print(
            f"{r.vms:>6} VMs: fast {r.vmkeep_s:6.2f} s (runs {runs}; median "
            f"{statistics.median(r.vmkeep_runs):.2f} s; {r.vmkeep_requests} HTTP requests)  "
            f"pyvmomi {r.pyvmomi_s:6.2f} s ({span(r.pyvmomi_runs)})  "
            f"ratio {r.pyvmomi_s / r.vmkeep_s:.1f}x  "
            f"RSS {r.vmkeep_rss_mib:.0f}/{r.pyvmomi_rss_mib:.0f} MiB  "
            f"naive {r.naive_per_vm_ms:.1f} ms/VM x {r.vms} = {r.naive_extrapolated_s:.0f} s "
            f"(measured on {r.naive_sample} VMs, extrapolated)  ratio {r.ratio:.0f}x",
            flush=True,
        )
        results.append(r)
    print(machine_reference())
    print(f"\nSOAP latency added by the simulator: {args.latency} ms per call\n")
    print(markdown(results))
    print(f"\n(load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())})")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: one `vmkeep apply` exporting many VMs from the simulator, against the raw
datastore HTTP download of the same bytes.

    .venv/bin/python bench/apply.py                       # 20 VMs x 256 MiB (about 2 min)
    .venv/bin/python bench/apply.py --vms 4 --size 64M    # quick check
    .venv/bin/python bench/apply.py --day2                # also a next day, 1 % changed
    .venv/bin/python bench/apply.py --transport nfc       # vSAN: NFC ExportSnapshot leases
    .venv/bin/python bench/apply.py --baseline main --rounds 3   # against main's code, 3 times

Set-up (not measured): a simulator with --vms VMs; each VM's disk grown to --size and its
flat file filled with a VM-disk-like image (1 MiB regions: ~40 % zero, ~30 % text-like,
~30 % random; a different seed per VM, so nothing dedups across VMs), written straight into
the simulator's datastore directory and read once so it is page-cached; an export-only,
crash-consistent policy; an empty directory target.

With `--transport nfc` the simulator's datastores are vSAN (`--datastore-type vsan`: no flat
file can be read over datastore HTTP) and the host config says `transport: nfc`: every
running VM's disk comes through its snapshot's `ExportSnapshot` NFC lease.

Measured, in the same run:
* **raw**: every disk downloaded over the datastore HTTP interface with vmkeep's own reader
  (`RangeReader.readinto` into a reused 8 MiB buffer, as an export reads: TLS-verified,
  session cookie) — or, with `--transport nfc`, the same lease
  URLs vmkeep reads (a snapshot and its `ExportSnapshot` lease per VM made beforehand, one
  plain GET per URL) — as many at a time as `limits.concurrentExports`, bytes thrown away: the
  ceiling for data movement;
* **apply**: `vmkeep apply --auto-approve -o json` as a separate process (wall, user+sys CPU,
  peak RSS and context switches via wait4). Its JSON outcomes carry when each export's data
  transfer started and how long it took; the union of those intervals is the time data was
  moving, the rest of the wall time (start-up, capture and plan, snapshots, journal,
  summary) is "outside data movement".

`--readers thread|process` sets `vcenters.<name>.readers` for this tree's code only (a
baseline keeps its own default, `process` since it was added), so `--readers thread
--baseline HEAD` compares the two ways of reading on the same code.

Also printed, to tell where the time goes: the CPU per GiB of the raw download's reader and
of the simulator (during the raw download and during the apply, from /proc/<pid>/stat), and
the share of the machine's cores busy during each (/proc/stat; idle and iowait count as
idle): on two cores, idle time during an apply is time its threads wait for one another.

With `--baseline REF` (say `main`) the same day is also exported by that revision's code
(`git archive REF`, run from its own directory into its own empty target) next to the new
code's run, after the same raw download: on a shared machine the ratio between the two is
what to compare. `--rounds N` repeats day 1 (raw, new, baseline; the order of the two
alternating) into fresh targets and prints one line per round.

Both codes are byte-compiled first (`compileall`), as an installed package is, so neither
pays for compiling its modules in every process it starts.

Nothing is asserted; figures are printed (and written as JSON with --json).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pyVmomi import vim

from reconciler.adapters.datastore import DatastoreFile, RangeReader, parse_datastore_path
from reconciler.adapters.vsphere import VSphereClient
from reconciler.adapters.vsphere_tls import endpoint_of, pin_of, pinned_connection, ssl_context
from reconciler.model import VCenterConfig

ROOT = Path(__file__).resolve().parents[1]
VCSIM = ROOT / "scripts" / "vcsim"
MiB = 1 << 20
DAY1 = "2026-11-25T01:30:00Z"
DAY2 = "2026-11-26T01:30:00Z"

POLICY = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata: {name: bench}
spec:
  vcenter: sim
  selector: {include: {names: ["*"]}}
  schedule: {cron: "0 1 * * *", timezone: UTC}
  consistency: {mode: crash}
  exports: {target: local, keep: {daily: 7}}
"""


@functools.cache
def _bench_module(name: str) -> Any:
    """Another benchmark's module, `bench/<name>.py`."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _image_builder() -> Any:
    """`bench/repository.py`'s image generator (one definition of "VM-disk-like")."""
    return _bench_module("repository")


def machine_reference() -> str:
    """`bench/inventory.py`'s reference timing of this machine, with the load average."""
    return str(_bench_module("inventory").machine_reference())


@dataclass
class Figures:
    transport: str
    vms: int
    size_mib: int
    parallel: int
    day: str
    raw_seconds: float
    apply_seconds: float
    apply_cpu: float
    apply_rss_mib: float
    transfer_seconds: float  # union of the exports' transfer intervals
    bytes_read: int
    bytes_stored: int
    apply_switches: int = 0  # voluntary + involuntary context switches (wait4)
    transfer_total: float = 0.0  # the exports' transfer seconds, added up
    raw_server_cpu: float = 0.0  # the simulator's user+sys CPU during the raw download
    apply_server_cpu: float = 0.0  # ... and during the apply
    raw_client_cpu: float = 0.0  # this process's CPU during the raw download
    raw_busy: float = 0.0  # share of the machine's cores busy (/proc/stat) during the raw download
    apply_busy: float = 0.0  # ... and during the apply

    @property
    def total(self) -> int:
        return self.vms * self.size_mib * MiB

    def rows(self) -> list[tuple[str, str]]:
        raw = self.total / self.raw_seconds / MiB
        apply = self.total / self.apply_seconds / MiB
        outside = 1 - self.transfer_seconds / self.apply_seconds
        gib = self.total / (1 << 30)
        return [
            ("VMs x disk", f"{self.vms} x {self.size_mib} MiB ({self.total / MiB:,.0f} MiB)"),
            ("exports at a time", str(self.parallel)),
            ("transport", self.transport),
            ("raw download" + (" (datastore HTTP)" if self.transport == "http"
                               else " (the NFC lease URLs)"),
             f"{self.raw_seconds:.2f} s, {raw:,.0f} MiB/s"),
            ("vmkeep apply (wall)", f"{self.apply_seconds:.2f} s, {apply:,.0f} MiB/s"),
            ("apply / raw throughput", f"{apply / raw:.2f}"),
            ("apply CPU (user+sys), peak RSS",
             f"{self.apply_cpu:.2f} s, {self.apply_rss_mib:.0f} MiB"),
            ("apply CPU per GiB read, context switches",
             f"{self.apply_cpu / (self.bytes_read / (1 << 30)):.2f} s, {self.apply_switches:,}"
             if self.bytes_read else "-"),
            ("raw download CPU per GiB: the reader, the simulator",
             f"{self.raw_client_cpu / gib:.2f} s, {self.raw_server_cpu / gib:.2f} s"),
            ("simulator CPU per GiB during apply", f"{self.apply_server_cpu / gib:.2f} s"),
            ("machine's cores busy: raw, apply",
             f"{self.raw_busy * 100:.0f} %, {self.apply_busy * 100:.0f} %"),
            ("data moving (union of transfers)",
             f"{self.transfer_seconds:.2f} s, {self.total / self.transfer_seconds / MiB:,.0f} "
             "MiB/s" if self.transfer_seconds else "-"),
            ("share of wall time outside data movement", f"{outside * 100:.1f} %"),
            ("exports moving data at once (mean, while any does)",
             f"{self.transfer_total / self.transfer_seconds:.2f} of {self.parallel}"
             if self.transfer_seconds else "-"),
            ("read / stored", f"{self.bytes_read / MiB:,.1f} MiB / "
                              f"{self.bytes_stored / MiB:,.1f} MiB"),
        ]


# --------------------------------------------------------------------------- set-up


def start_simulator(state: Path, vms: int, transport: str = "http") -> dict[str, Any]:
    kind = ["--datastore-type", "vsan"] if transport == "nfc" else []
    out = subprocess.run(
        [sys.executable, str(VCSIM), "start", "--vms", str(vms), "--hosts", "2",
         "--state-dir", str(state), "--timeout", "600", *kind],
        check=True, capture_output=True, text=True,
    ).stdout
    return dict(json.loads(out))


def stop_simulator(state: Path) -> None:
    subprocess.run([sys.executable, str(VCSIM), "stop", "--state-dir", str(state)],
                   check=False, capture_output=True)


def wait(task: Any) -> None:
    while task.info.state not in ("success", "error"):
        time.sleep(0.02)
    if task.info.state == "error":
        raise RuntimeError(task.info.error)


def prepare_disks(client: VSphereClient, info: dict[str, Any], size: int) -> list[Any]:
    """Grow every VM's disk to `size` and write its image into the datastore directory."""
    images = _image_builder()
    client.call("log in", lambda: None)
    content = client.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    refs = sorted(view.view, key=lambda v: v.name)
    view.DestroyView()
    data_dir = Path(info["dataDir"])
    for seed, ref in enumerate(refs, start=1):
        disk: Any = next(d for d in ref.config.hardware.device
                         if isinstance(d, vim.vm.device.VirtualDisk))
        disk.capacityInKB, disk.capacityInBytes = size // 1024, size
        change = vim.vm.device.VirtualDeviceSpec(
            operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=disk)
        wait(ref.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change])))
        _, path = parse_datastore_path(disk.backing.fileName)
        flat = path[: -len(".vmdk")] + "-flat.vmdk"
        [target] = list(data_dir.glob(f"*/{flat}")) or list(data_dir.rglob(flat))
        images.build_day1(target, size, seed)
    os.sync()
    vms = sorted(client.inventory().vms, key=lambda vm: vm.name)
    for vm in vms:  # read once: page-cached for both measurements alike
        _, path = parse_datastore_path(vm.disks[0].file)
        flat = path[: -len(".vmdk")] + "-flat.vmdk"
        for target in data_dir.rglob(flat):
            images.raw_read(target)
    return vms


def change_disks(info: dict[str, Any], vms: list[Any], share: float) -> None:
    """A next day: `share` of each disk's 64 KiB blocks get a new 4 KiB."""
    images = _image_builder()
    data_dir = Path(info["dataDir"])
    for seed, vm in enumerate(vms, start=1):
        _, path = parse_datastore_path(vm.disks[0].file)
        flat = path[: -len(".vmdk")] + "-flat.vmdk"
        for target in data_dir.rglob(flat):
            size = target.stat().st_size
            step = int(64 * 1024 / share)
            with open(target, "r+b") as f:
                for k, offset in enumerate(range(0, size, step)):
                    f.seek(offset)
                    f.write(images._xof(seed, f"day2-{k}", 4096))
    os.sync()


def write_config(root: Path, info: dict[str, Any], parallel: int,
                 transport: str = "http", readers: str | None = None) -> Path:
    (root / "policies").mkdir(parents=True, exist_ok=True)
    (root / "policies" / "bench.yaml").write_text(POLICY)
    config = root / "vmkeep.yaml"
    config.write_text(textwrap.dedent(f"""\
        vcenters:
          sim:
            url: "{info['url']}"
            username: {info['username']}
            passwordEnv: VMKEEP_BENCH_PASSWORD
            caFile: "{info['caFile']}"
            transport: {"nfc" if transport == "nfc" else "auto"}
            {f"readers: {readers}" if readers else ""}
        targets:
          local: {{type: directory, path: "{root / 'target'}"}}
        state: "{root / 'state.db'}"
        limits: {{maxDeletesPerRun: 100, concurrentExports: {parallel},
                  concurrentSnapshotsPerHost: {parallel}}}
        """))
    return config


# --------------------------------------------------------------------------- measuring


def process_cpu(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, in /proc/stat's ticks."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle), sum(ticks)


@dataclass
class Costs:
    """What one measured step cost: the simulator's CPU, this process's, the cores' use."""

    server: float = 0.0
    client: float = 0.0
    busy: float = 0.0


def costs_of(info: dict[str, Any], work: Any) -> tuple[Any, Costs]:
    """`work()`'s result, and what it cost while it ran."""
    pid = int(info.get("pid", 0))
    server, mine, (busy, total) = process_cpu(pid), time.process_time(), machine_busy()
    result = work()
    busy_after, total_after = machine_busy()
    return result, Costs(process_cpu(pid) - server, time.process_time() - mine,
                         (busy_after - busy) / max(1, total_after - total))


def raw_download(config: VCenterConfig, password: str, vms: list[Any], parallel: int) -> float:
    """Every disk over the datastore HTTP interface, `parallel` at a time, bytes discarded."""
    endpoint = endpoint_of(config)
    connect = pinned_connection(ssl_context(config), pin_of(config), connect_timeout=10,
                                read_timeout=120)
    with VSphereClient(config, password) as client:
        client.call("log in", lambda: None)
        cookie = str(client.stub.cookie)

        def one(vm: Any) -> int:
            datastore, path = parse_datastore_path(vm.disks[0].file)
            file = DatastoreFile(config.name, endpoint.host, endpoint.port, "DC0", datastore,
                                 path[: -len(".vmdk")] + "-flat.vmdk")
            total = 0
            buffer = bytearray(8 * MiB)  # as an export reads: into a reused buffer
            with RangeReader(file, connect, cookie) as reader:
                while n := reader.readinto(buffer):
                    total += n
            return total

        started = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            read = sum(pool.map(one, vms))
        seconds = time.perf_counter() - started
    assert read == sum(vm.disks[0].capacity_bytes for vm in vms), read
    return seconds


def raw_nfc_download(config: VCenterConfig, password: str, vms: list[Any],
                     parallel: int) -> float:
    """Every disk through its snapshot's ExportSnapshot lease URL (leases made beforehand, not
    timed), `parallel` at a time, one GET each, bytes discarded."""
    endpoint = endpoint_of(config)
    connect = pinned_connection(ssl_context(config), pin_of(config), connect_timeout=10,
                                read_timeout=120)
    with VSphereClient(config, password) as client:
        client.call("log in", lambda: None)
        cookie = str(client.stub.cookie)
        prepared = []
        for vm in vms:
            ref = vim.VirtualMachine(vm.moref, client.stub)
            task = ref.CreateSnapshot_Task(name="bench-raw", description="", memory=False,
                                           quiesce=False)
            wait(task)
            snapshot = task.info.result
            lease = snapshot.ExportSnapshot()
            while lease.state != "ready":
                time.sleep(0.02)
            path = urlsplit(lease.info.deviceUrl[0].url).path
            prepared.append((snapshot, lease, path))

        def one(item: tuple[Any, Any, str]) -> int:
            conn = connect(endpoint.host, endpoint.port)
            try:
                conn.request("GET", item[2], headers={"Cookie": cookie})
                response = conn.getresponse()
                total = 0
                while chunk := response.read(8 * MiB):
                    total += len(chunk)
                return total
            finally:
                conn.close()

        started = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            read = sum(pool.map(one, prepared))
        seconds = time.perf_counter() - started
        for snapshot, lease, _ in prepared:
            lease.HttpNfcLeaseComplete()
            wait(snapshot.RemoveSnapshot_Task(removeChildren=False))
    assert read == sum(vm.disks[0].capacity_bytes for vm in vms), read
    return seconds


def run_apply(root: Path, config: Path, password: str, now: str, code: Path = ROOT
              ) -> tuple[float, float, float, int, dict[str, Any]]:
    """`vmkeep apply` of the code in `code` (the working tree, or a baseline's checkout)."""
    argv = [sys.executable, "-m", "reconciler", "apply", "--config", str(config),
            "--policies", str(root / "policies"), "--now", now, "--auto-approve", "-o", "json"]
    env = {**os.environ, "VMKEEP_BENCH_PASSWORD": password, "PYTHONPATH": str(code)}
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=code, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"vmkeep apply failed: {out.decode()[-2000:]}")
    return (wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024,
            usage.ru_nvcsw + usage.ru_nivcsw, json.loads(out))


def transfer_union(report: dict[str, Any]) -> float:
    """Seconds during which at least one export was moving data."""
    spans = sorted(
        (start, start + o["transfer"]["seconds"])
        for o in report["outcomes"] if "transfer" in o
        for start in [datetime.fromisoformat(o["transfer"]["startedAt"]).timestamp()]
    )
    total, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def measure_day(day: str, now: str, args: argparse.Namespace, root: Path, config: Path,
                info: dict[str, Any], vc: VCenterConfig, vms: list[Any],
                code: Path = ROOT, raw: tuple[float, Costs] | None = None) -> Figures:
    if raw is None:
        download = raw_nfc_download if args.transport == "nfc" else raw_download
        raw = costs_of(info, lambda: download(vc, info["password"], vms, args.parallel))
    raw_seconds, raw_costs = raw
    (wall, cpu, rss, switches, report), apply_costs = costs_of(
        info, lambda: run_apply(root, config, info["password"], now, code))
    exports = [o for o in report["outcomes"] if o["kind"] == "export.create"]
    failed = [o for o in report["outcomes"] if o["status"] == "failed"]
    if failed or len(exports) != len(vms):
        raise SystemExit(f"apply did not export every VM: {failed or exports}")
    wrong = [o for o in exports if o.get("transport") != args.transport]
    if wrong:
        raise SystemExit(f"exports did not go through {args.transport}: {wrong}")
    return Figures(
        transport=args.transport,
        vms=len(vms), size_mib=args.size // MiB, parallel=args.parallel, day=day,
        raw_seconds=raw_seconds, apply_seconds=wall, apply_cpu=cpu, apply_rss_mib=rss,
        transfer_seconds=transfer_union(report),
        transfer_total=sum(o["transfer"]["seconds"] for o in exports if "transfer" in o),
        bytes_read=sum(o["bytesRead"] for o in exports),
        bytes_stored=sum(o["bytesStored"] for o in exports),
        apply_switches=switches,
        raw_server_cpu=raw_costs.server, apply_server_cpu=apply_costs.server,
        raw_client_cpu=raw_costs.client, raw_busy=raw_costs.busy, apply_busy=apply_costs.busy,
    )


def measure_round(turn: int, day: str, now: str, args: argparse.Namespace,
                  info: dict[str, Any], vc: VCenterConfig, vms: list[Any],
                  base: Path | None) -> list[Figures]:
    """One raw download, then the new code's apply and (with a baseline) the baseline's, each
    into its own target (fresh in every round of day 1); the baseline goes first in odd
    rounds, so neither always runs on a machine the other has just warmed up."""
    runs = [("", args.work / f"new-{turn}", ROOT)]
    if base is not None:
        runs.append((f", baseline {args.baseline}", args.work / f"baseline-{turn}", base))
        if turn % 2:
            runs.reverse()
    download = raw_nfc_download if args.transport == "nfc" else raw_download
    raw = costs_of(info, lambda: download(vc, info["password"], vms, args.parallel))
    out = {label: measure_day(day + label, now, args, root,
                              write_config(root, info, args.parallel, args.transport,
                                           args.readers if code == ROOT else None),
                              info, vc, vms, code, raw)
           for label, root, code in runs}
    return sorted(out.values(), key=lambda f: "baseline" in f.day)  # new code first


def summarise(results: list[Figures], baseline: bool) -> None:
    """Per round: apply / raw of the new code (and of the baseline), and new / baseline."""
    step = 2 if baseline else 1
    for k in range(0, len(results), step):
        new = results[k]
        line = f"day {new.day}: apply / raw {new.raw_seconds / new.apply_seconds:.2f}"
        if baseline:
            old = results[k + 1]
            line += (f", baseline {old.raw_seconds / old.apply_seconds:.2f}; apply wall new / "
                     f"baseline {new.apply_seconds / old.apply_seconds:.2f}, apply CPU new / "
                     f"baseline {new.apply_cpu / old.apply_cpu:.2f}")
        print(line)
    rounds = results[: len(results) // step * step]
    day1 = [f for f in rounds if f.day.startswith("1")]
    if len(day1) > step:  # several rounds: what the noise leaves of each code
        codes = [("new", day1[::step])] + ([("baseline", day1[1::step])] if step == 2 else [])
        for label, runs in codes:
            ratios = sorted(f.raw_seconds / f.apply_seconds for f in runs)
            best = min(f.raw_seconds for f in runs) / min(f.apply_seconds for f in runs)
            cpu = statistics.median(f.apply_cpu / (f.bytes_read / (1 << 30)) for f in runs)
            print(f"day 1, {label}, {len(runs)} rounds: apply / raw median "
                  f"{statistics.median(ratios):.2f} (range {ratios[0]:.2f}-{ratios[-1]:.2f}), "
                  f"best apply over best raw {best:.2f}; apply CPU per GiB median {cpu:.2f} s")


def checkout(ref: str, into: Path) -> Path:
    """The tree of git revision `ref`, unpacked into `into` (no worktree is registered)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def compile_code(code: Path) -> None:
    """Byte-compile `code`'s package, as installing it does: with PYTHONDONTWRITEBYTECODE set
    (as in some shells) every apply and every disk reader process would otherwise compile
    vmkeep's modules from source again, about 0.1 s of CPU each."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(code / "reconciler")],
                   check=True, stdout=subprocess.DEVNULL)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=20)
    parser.add_argument("--size", type=parse_size, default=parse_size("256M"))
    parser.add_argument("--parallel", type=int, default=2,
                        help="limits.concurrentExports, and downloads at a time for raw")
    parser.add_argument("--day2", action="store_true", help="also a next day, 1 %% changed")
    parser.add_argument("--transport", choices=("http", "nfc"), default="http",
                        help="nfc: vSAN datastores, transport: nfc, raw = the lease URLs")
    parser.add_argument("--readers", choices=("thread", "process"),
                        help="vcenters.<name>.readers for this tree's code (a baseline "
                             "keeps its default)")
    parser.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-apply")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--rounds", type=int, default=1,
                        help="day 1 this many times (fresh targets), one line per round")
    parser.add_argument("--baseline", metavar="REF",
                        help="also run this git revision's code (e.g. main) for each day")
    args = parser.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    state = args.work / "sim"
    print(f"set-up: simulator with {args.vms} VMs, {args.size // MiB} MiB of data each",
          file=sys.stderr)
    reference = machine_reference()
    info = start_simulator(state, args.vms, args.transport)
    results: list[Figures] = []
    try:
        vc = VCenterConfig(name="sim", url=info["url"], username=info["username"],
                           ca_file=info["caFile"])
        with VSphereClient(vc, info["password"]) as client:
            vms = prepare_disks(client, info, args.size)
        base = checkout(args.baseline, args.work / "baseline-code") if args.baseline else None
        for code in (ROOT, base):
            if code is not None:
                compile_code(code)
        for number, (day, now) in enumerate([("1", DAY1), ("2 (1 % changed)", DAY2)]):
            if number and not args.day2:
                break
            if number:
                change_disks(info, vms, 0.01)
            for turn in range(args.rounds if not number else 1):
                results.extend(measure_round(turn, day, now, args, info, vc, vms, base))
    finally:
        stop_simulator(state)
    print(f"before: {reference}; after: {machine_reference()}")
    for figures in results[: 2 if base else 1] + results[2 * args.rounds if base
                                                           else args.rounds:]:
        print(f"\n| day {figures.day} | |\n|---|---|")
        for name, value in figures.rows():
            print(f"| {name} | {value} |")
    summarise(results, base is not None)
    if args.json:
        args.json.write_text(json.dumps([asdict(f) for f in results], indent=2))


if __name__ == "__main__":
    main()

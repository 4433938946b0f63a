"""Benchmark the planner: N VMs x 30 restore points x 20 policies, planned in one call.

    .venv/bin/python bench/plan.py [--vms 10000] [--points 30] [--policies 20] [--repeat 3]

Builds a synthetic estate (not timed): every policy selects its share of the VMs by name,
takes nightly snapshots and weekly-spaced exports; every VM has `points` restore points (half
snapshots with ownership markers, half exports) as a steady state leaves them, with about
one VM in ten missing a random day so histories differ. `now` is just after the nightly
slot, so the plan holds the nightly creates and the deletions they make due (a normal
night). Prints the best of `repeat` wall-clock and CPU timings for the full estate and for
a tenth of it, and their ratio (the bar: <= 3 s for 10,000 VMs, ratio <= 12); the two
sizes are planned in turns, so a drift in the machine's speed does not skew the ratio.

    .venv/bin/python bench/plan.py --whole [--vms 10000] [--repeat 3] [--baseline REV]

`--whole` times the whole command instead, as a user runs it: the estate is written as
`state.json` (what `vmkeep state export` writes) and the policies as YAML files, then
`python -m reconciler plan --state state.json --policies DIR --now ... -o json` runs as a
separate process, its output going to a file (wall time, user+sys CPU and peak RSS from
`wait4`). The same command of the baseline revision (default: where this branch left
`main`, exported with `git archive`) runs in turns with this tree's, in the same run, and
both outputs must be byte-identical.

    .venv/bin/python bench/plan.py [--whole] --noop

`--noop` plans the no-op estate of issue 14 instead (fully covered, nothing due): the estate
above after its plans were applied until nothing is left to do (not timed).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
import timeit
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.collector import collector_paused  # noqa: E402
from reconciler.markers import (  # noqa: E402
    Marker,
    MarkerKind,
    format_description,
    format_name,
    point_id,
)
from reconciler.model import (  # noqa: E402
    VM,
    Action,
    ActionKind,
    Duration,
    ExportPoint,
    ExportSpec,
    KeepRules,
    Limits,
    ObservedState,
    Policy,
    PolicySet,
    PowerState,
    Schedule,
    Selector,
    Snapshot,
    SnapshotSpec,
)
from reconciler.observed import state_to_json  # noqa: E402
from reconciler.planner import plan  # noqa: E402

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ZONES = ("Europe/Berlin", "America/New_York", "UTC", "Asia/Tokyo")


def policies(count: int) -> PolicySet:
    out = []
    for i in range(count):
        out.append(
            Policy(
                name=f"policy-{i:02d}",
                vcenter="vc1",
                include=Selector(names=(f"p{i:02d}-*",)),
                schedule=Schedule(f"{i % 60} {i % 5} * * *", ZONES[i % len(ZONES)]),
                snapshots=SnapshotSpec(
                    KeepRules(last=3, daily=15), max_age=Duration(days=20, text="20d")
                ),
                exports=ExportSpec("nas", KeepRules(weekly=12, monthly=6, yearly=1)),
            )
        )
    return PolicySet(tuple(out), "bench")


def estate(vms: int, points: int, policy_set: PolicySet, seed: int = 1) -> ObservedState:
    rnd = random.Random(seed)
    machines: list[VM] = []
    exports: list[ExportPoint] = []
    per_kind = points // 2
    count = len(policy_set.policies)
    for n in range(vms):
        pol = policy_set.policies[n % count]
        name = f"p{n % count:02d}-vm{n:06d}"
        iuuid = str(uuid.UUID(int=rnd.getrandbits(128)))
        days = list(range(1, per_kind + 1))
        if rnd.random() < 0.1:
            days.remove(rnd.choice(days))
            days.append(per_kind + 1)
        base = datetime(2026, 11, 25, n % count % 5, tzinfo=UTC)
        snaps = []
        for d in days:
            slot = base - timedelta(days=d)
            marker = Marker(pol.name, point_id(pol.name, iuuid, slot), slot, MarkerKind.POINT)
            snaps.append(
                Snapshot(
                    f"snapshot-{n}-{d}",
                    format_name(marker),
                    format_description(marker),
                    slot,
                    False,
                )
            )
        machines.append(
            VM(
                "vc1",
                name,
                iuuid,
                f"vm-{n}",
                "/DC0/vm",
                PowerState.ON,
                True,
                snapshots=tuple(snaps),
            )
        )
        for d in days:
            slot = base - timedelta(days=d * 7)
            exports.append(
                ExportPoint(
                    point_id(pol.name, iuuid, slot),
                    pol.name,
                    machines[-1].ref,
                    slot,
                    slot,
                    True,
                    "nas",
                )
            )
    return ObservedState(NOW, {"vc1": tuple(machines)}, {"nas": tuple(exports)})


def settled(observed: ObservedState, policy_set: PolicySet) -> ObservedState:
    """`observed` after applying its plans until nothing is left to do: the no-op estate of
    issue 14 (every VM covered for the current slot, retention keeps every point)."""
    for _ in range(4):
        result = plan(policy_set, observed, NOW, Limits(max_deletes_per_run=10**9))
        if not result.actions:
            return observed
        by_vm: dict[str, list[Action]] = {}
        for action in result.actions:
            by_vm.setdefault(action.vm.instance_uuid, []).append(action)
        gone = {a.snapshot_id for a in result.actions if a.kind is ActionKind.SNAPSHOT_DELETE}
        dropped = {a.point_id for a in result.actions if a.kind is ActionKind.EXPORT_DELETE}
        machines = []
        exports = [e for e in observed.targets["nas"] if e.id not in dropped]
        for vm in observed.vcenters["vc1"]:
            snaps = [s for s in vm.snapshots if s.id not in gone]
            for a in by_vm.get(vm.instance_uuid, ()):
                if a.kind is ActionKind.SNAPSHOT_CREATE:
                    marker = Marker(a.policy, a.point_id, a.slot, MarkerKind.POINT)
                    snaps.append(Snapshot(f"snapshot-{vm.moref}-{a.slot:%Y%m%d%H%M}",
                                          format_name(marker), format_description(marker),
                                          a.slot, False))
                elif a.kind is ActionKind.EXPORT_CREATE:
                    exports.append(ExportPoint(a.point_id, a.policy, vm.ref, a.slot, a.slot,
                                               True, "nas"))
            machines.append(replace(vm, snapshots=tuple(snaps)))
        observed = ObservedState(NOW, {"vc1": tuple(machines)}, {"nas": tuple(exports)})
    raise SystemExit("the no-op estate did not settle")


def timed(policy_set: PolicySet, observed: ObservedState) -> tuple[float, float, int]:
    """Wall-clock and CPU time of one plan; the plan is freed after the clock stops."""
    wall, cpu = time.perf_counter(), time.process_time()
    with collector_paused():  # as every caller of the planner runs it
        result = plan(policy_set, observed, NOW, Limits(max_deletes_per_run=10**9))
    return time.perf_counter() - wall, time.process_time() - cpu, len(result.actions)


def best_of(
    repeat: int, policy_set: PolicySet, estates: list[ObservedState]
) -> list[tuple[float, float, int]]:
    """Best wall-clock and CPU time of `repeat` runs per estate. The machine may be shared
    and its speed drifts, so the estates take turns: each round plans every estate once, and
    the ratio compares runs made under the same conditions."""
    runs: list[list[tuple[float, float, int]]] = [[] for _ in estates]
    for _ in range(repeat):
        for i, observed in enumerate(estates):
            runs[i].append(timed(policy_set, observed))
    return [(min(r[0] for r in rs), min(r[1] for r in rs), rs[-1][2]) for rs in runs]


def policy_yaml(policy: Policy) -> str:
    """The YAML file of one bench policy (the same values as `policies`)."""
    assert policy.snapshots is not None and policy.exports is not None
    snap, exp = policy.snapshots.keep, policy.exports.keep
    return (
        "apiVersion: vmkeep/v1\nkind: BackupPolicy\n"
        f"metadata:\n  name: {policy.name}\n"
        f"spec:\n  vcenter: {policy.vcenter}\n"
        f"  selector:\n    include:\n      names: [\"{policy.include.names[0]}\"]\n"
        f"  schedule:\n    cron: \"{policy.schedule.cron}\"\n"
        f"    timezone: {policy.schedule.timezone}\n"
        f"  snapshots:\n    keep: {{last: {snap.last}, daily: {snap.daily}}}\n    maxAge: 20d\n"
        f"  exports:\n    target: {policy.exports.target}\n"
        f"    keep: {{weekly: {exp.weekly}, monthly: {exp.monthly}, yearly: {exp.yearly}}}\n"
    )


def baseline_tree(rev: str, into: Path) -> Path:
    """The `reconciler` package of revision `rev`, exported into `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "reconciler", "schemas"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_command(tree: Path, work: Path, out: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (KiB) of one `plan` process."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, "-m", "reconciler", "plan", "--state", str(work / "state.json"),
            "--policies", str(work / "policies"), "--now", NOW.isoformat(), "-o", "json"]
    with out.open("wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=sink, env=env, cwd=tree)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 2):
        raise SystemExit(f"{tree}: plan exited {process.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def machine_reference() -> str:
    """This machine's speed right now: best of 3 `sum(range(10**7))` (docs/benchmarks.md)."""
    best = min(timeit.repeat("sum(range(10**7))", number=1, repeat=3))
    return f"reference: sum(range(10**7)) {best * 1000:.0f} ms, load {os.getloadavg()[0]:.2f}"


def whole(args: argparse.Namespace, policy_set: PolicySet) -> None:
    import orjson

    rev = args.baseline or subprocess.run(
        ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
        check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="vmkeep-bench-plan-") as tmp:
        work = Path(tmp)
        (work / "policies").mkdir()
        for policy in policy_set.policies:
            (work / "policies" / f"{policy.name}.yaml").write_text(policy_yaml(policy))
        started = time.perf_counter()
        state = estate(args.vms, args.points, policy_set)
        if args.noop:
            state = settled(state, policy_set)
        (work / "state.json").write_bytes(orjson.dumps(state_to_json(state)))
        points = sum(len(v.snapshots) for v in state.vcenters["vc1"]) + len(state.targets["nas"])
        del state
        size = (work / "state.json").stat().st_size
        print(f"{'no-op' if args.noop else 'nightly'} estate: {args.vms} VMs, {points} points")
        print(f"estate written in {time.perf_counter() - started:.1f} s: state.json "
              f"{size / 2**20:.0f} MiB; baseline {rev[:10]}", flush=True)
        trees = {"baseline": baseline_tree(rev, work / "baseline"), "this tree": ROOT}
        runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in trees}
        print(machine_reference(), flush=True)
        for _ in range(args.repeat):
            for name, tree in trees.items():  # in turns: a drift hits both alike
                runs[name].append(run_command(tree, work, work / f"{name}.json"))
                wall, cpu, rss = runs[name][-1]
                print(f"  {name:>9}: {wall:6.2f} s wall, {cpu:6.2f} s CPU, "
                      f"{rss / 1024:6.0f} MiB peak RSS", flush=True)
        same = (work / "baseline.json").read_bytes() == (work / "this tree.json").read_bytes()
        out_size = (work / "this tree.json").stat().st_size
        print(f"plan JSON {out_size / 2**20:.0f} MiB; outputs byte-identical: {same}")
        best = {name: min(r[0] for r in rs) for name, rs in runs.items()}
        for name, rs in runs.items():
            walls = sorted(r[0] for r in rs)
            print(f"{name:>9}: best {walls[0]:.2f} s (range {walls[0]:.2f}-{walls[-1]:.2f}), "
                  f"CPU {min(r[1] for r in rs):.2f} s, peak RSS "
                  f"{max(r[2] for r in rs) / 1024:.0f} MiB")
        print(machine_reference())
        print(f"speed-up (best baseline / best this tree): "
              f"{best['baseline'] / best['this tree']:.2f}x")
        if not same:
            raise SystemExit("the outputs differ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=30)
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--whole", action="store_true",
                        help="time the whole `vmkeep plan` command, JSON in and out")
    parser.add_argument("--baseline", metavar="REV",
                        help="with --whole: the revision to compare with (default: merge-base "
                        "with main)")
    parser.add_argument("--noop", action="store_true",
                        help="the no-op estate: the normal night's estate after its plans "
                        "were applied (fully covered, nothing due)")
    args = parser.parse_args()
    if args.whole:
        whole(args, policies(args.policies))
        return
    policy_set = policies(args.policies)
    small_n = max(1, args.vms // 10)
    small = estate(small_n, args.points, policy_set)
    large = estate(args.vms, args.points, policy_set)
    if args.noop:
        small, large = settled(small, policy_set), settled(large, policy_set)
    total_points = sum(len(v.snapshots) for v in large.vcenters["vc1"]) + len(large.targets["nas"])
    (t_small, c_small, a_small), (t_large, c_large, a_large) = best_of(
        args.repeat, policy_set, [small, large]
    )
    print(f"policies: {args.policies}, points per VM: {args.points}, best of {args.repeat}")
    print(f"{small_n:>7} VMs: {t_small:7.3f} s wall, {c_small:7.3f} s CPU  ({a_small} actions)")
    print(
        f"{args.vms:>7} VMs: {t_large:7.3f} s wall, {c_large:7.3f} s CPU  "
        f"({a_large} actions, {total_points} points)"
    )
    print(
        f"ratio {args.vms // small_n}x VMs -> {t_large / t_small:.2f}x wall time, "
        f"{c_large / c_small:.2f}x CPU time"
    )


if __name__ == "__main__":
    main()

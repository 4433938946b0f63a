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
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

from reconciler.markers import Marker, MarkerKind, format_description, format_name, point_id
from reconciler.model import (
    VM,
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
from reconciler.planner import plan

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


def timed(policy_set: PolicySet, observed: ObservedState) -> tuple[float, float, int]:
    """Wall-clock and CPU time of one plan; the plan is freed after the clock stops."""
    wall, cpu = time.perf_counter(), time.process_time()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=30)
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    policy_set = policies(args.policies)
    small_n = max(1, args.vms // 10)
    small = estate(small_n, args.points, policy_set)
    large = estate(args.vms, args.points, policy_set)
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

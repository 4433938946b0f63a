"""Scheduled verification (`exports.verify.every`) over simulated days: a real repository
directory, a real SQLite state DB, the controller's verifier driven by an injected clock."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from reconciler import policies
from reconciler.adapters.repository import Repository
from reconciler.adapters.verifylog import read_entries
from reconciler.cli.scheduled_verify import ScheduledVerifier, verification_view
from reconciler.model import HostConfig, Limits, PolicySet, TargetConfig, VMRef
from reconciler.ports import PolicyFile

from ..repository.disks import CHUNK, flip_chunk, noise

DAY = 86400.0
HOUR = 3600.0
START = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata: {name: gold}
spec:
  vcenter: sim
  selector: {include: {names: ["*"]}}
  schedule: {cron: "0 2 * * *", timezone: UTC}
  exports: {target: local, keep: {daily: 30}, verify: {every: 1d}}
"""


class World:
    def __init__(self, root: Path, bytes_per_hour: int) -> None:
        self.now = START
        self.target = root / "target"
        self.config = HostConfig(
            path=str(root / "vmkeep.yaml"),
            targets={"local": TargetConfig("local", "directory", str(self.target), CHUNK)},
            state=str(root / "state.db"),
            limits=Limits(verify_bytes_per_hour=bytes_per_hour),
        )
        self.policies: PolicySet = policies.parse_policies(
            [PolicyFile("policies/gold.yaml", POLICY.encode())])
        self.repo = Repository.open(self.target, chunk_size=CHUNK, clock=lambda: self.now)

    def export(self, n: int) -> str:
        vm = VMRef(f"vm{n}", f"5003aaaa-0000-0000-0000-{n:012d}")
        point_id = f"gold/{vm.instance_uuid}/{self.now:%Y%m%dT%H%M%SZ}"
        data = noise(("disk", n, self.now), 10 * CHUNK)
        with self.repo.begin_point(point_id, "gold", vm, self.now) as writer:
            writer.add_disk("disk-2000", io.BytesIO(data), size=len(data))
            writer.commit("crash")
        return point_id


def test_every_point_is_verified_within_its_period_and_a_flipped_byte_within_one_period(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, bytes_per_hour=12 * CHUNK)  # a bit more than one point an hour
    verifier = ScheduledVerifier()
    created: dict[str, float] = {}
    verified: dict[str, list[float]] = {}
    damaged_at: dict[str, float] = {}
    flipped: tuple[str, float] | None = None
    most_in_one_tick = 0
    for hour in range(6 * 24):
        world.now = START + timedelta(hours=hour)
        t = world.now.timestamp()
        if hour % 24 == 2 and hour < 4 * 24:  # the nightly exports of three VMs
            for n in range(3):
                created[world.export(n)] = t
        if hour == 3 * 24 + 5:  # a bit rots in a point exported on day 1
            victim = sorted(created)[0]
            flip_chunk(world.repo, world.repo.open_disk(victim, "disk-2000").ids[4])
            flipped = (victim, t)
        tick = verifier.tick(world.config, world.policies, t)
        assert not tick.skipped
        most_in_one_tick = max(most_in_one_tick, len(tick.verified))
        for point in tick.verified:
            verified.setdefault(point, []).append(t)
        for point in tick.damaged:
            damaged_at.setdefault(point, t)

    end = (START + timedelta(hours=6 * 24 - 1)).timestamp()
    assert len(created) == 12
    for point, at in created.items():
        times = [at, *verified.get(point, []), end]
        gaps = [b - a for a, b in pairwise(times)]
        assert max(gaps) <= DAY, (point, gaps)
    assert most_in_one_tick < len(created)  # the budget spread the work over ticks

    assert flipped is not None
    victim, when = flipped
    assert set(damaged_at) == {victim}
    assert 0 < damaged_at[victim] - when <= DAY

    view = verification_view(world.config, world.policies, None, end)
    assert [(r.target, r.point_id) for r in view.damaged] == [("local", victim)]
    assert not view.overdue
    assert {e.point_id for e in read_entries(world.config.state)} == set(created)


def test_verification_waits_while_another_holds_the_targets_lock(tmp_path: Path) -> None:
    """GC holds the writer lock: scheduled verification leaves the target for a later tick."""
    world = World(tmp_path, bytes_per_hour=1 << 30)
    world.export(1)
    world.now += timedelta(days=1)
    gc_holder = Repository.open(world.target, create=False)
    gc_holder.lock.acquire("gc")
    try:
        tick = ScheduledVerifier().tick(world.config, world.policies, world.now.timestamp())
    finally:
        gc_holder.lock.release()
    assert tick.verified == () and len(tick.skipped) == 1
    assert "locked by" in tick.skipped[0] and "(gc," in tick.skipped[0]
    assert read_entries(world.config.state) == []
    later = ScheduledVerifier().tick(world.config, world.policies, world.now.timestamp())
    assert len(later.verified) == 1 and later.damaged == ()


def test_a_point_is_not_verified_before_half_its_period(tmp_path: Path) -> None:
    world = World(tmp_path, bytes_per_hour=1 << 30)
    world.export(1)
    verifier = ScheduledVerifier()
    assert verifier.tick(world.config, world.policies,
                         (world.now + timedelta(hours=11)).timestamp()).verified == ()
    assert len(verifier.tick(world.config, world.policies,
                             (world.now + timedelta(hours=12)).timestamp()).verified) == 1


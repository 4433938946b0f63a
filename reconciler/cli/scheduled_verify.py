"""Scheduled verification as the controller runs it on every tick (`exports.verify`).

    verifier = ScheduledVerifier()
    result = verifier.tick(config, policy_set, now)   # verifies what is due, within budget
    view = verification_view(config, policy_set, targets, now)   # for status and metrics

Which points and how many bytes: `reconciler.verify_schedule` (pure). Here: the export
points are read from each target's manifests, the chosen ones re-read and re-hashed with
the repository's `verify` while this process holds the target's writer lock — the lock GC
takes, so verification and GC never run at the same time on one target (a busy target is
left for the next tick) — and every outcome is recorded in the state DB
(`reconciler.adapters.verifylog`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reconciler import verify_schedule as schedule
from reconciler import wiring
from reconciler.errors import RepositoryLockedError, VmkeepError
from reconciler.model import ExportPoint, HostConfig, PolicySet, VerifyEntry

if TYPE_CHECKING:  # the repository (zstandard, blake3) is imported when a tick verifies
    from reconciler.adapters.repository import VerifyReport

__all__ = ["ScheduledVerifier", "TickResult", "verification_view"]


@dataclass(frozen=True)
class TickResult:
    verified: tuple[str, ...] = ()  # point ids verified this tick
    damaged: tuple[str, ...] = ()  # of those, the damaged ones
    bytes_read: int = 0
    skipped: tuple[str, ...] = ()  # "target: why" for targets left for a later tick
    due: int = 0  # points eligible before this tick


@dataclass
class ScheduledVerifier:
    """Keeps the byte budget between ticks; one per controller."""

    budget: schedule.Budget | None = None
    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def tick(self, config: HostConfig, policy_set: PolicySet, now: float) -> TickResult:
        every = verify_periods(policy_set)
        if not every:
            return TickResult()
        if self.budget is None or self.budget.per_hour != config.limits.verify_bytes_per_hour:
            self.budget = schedule.Budget.full(config.limits.verify_bytes_per_hour, now)
        points = export_points(config, _targets_of(policy_set))
        records = {(r.target, r.point_id): r for r in _records(config)}
        found = schedule.candidates(_rows(points), every, records)
        due = len(schedule.due_points(found, now))
        chosen, self.budget = schedule.choose(found, self.budget, now)
        by_target: dict[str, list[str]] = defaultdict(list)
        for c in chosen:
            by_target[c.target].append(c.point_id)
        verified: list[str] = []
        damaged: list[str] = []
        skipped: list[str] = []
        entries: list[VerifyEntry] = []
        read = 0
        for target, ids in sorted(by_target.items()):
            try:
                report = _verify(config, target, ids)
            except RepositoryLockedError as exc:
                skipped.append(f"{target}: {exc}")
                continue
            except VmkeepError as exc:
                skipped.append(f"{target}: {exc}")
                continue
            bad = {d.point: d for d in report.damaged}
            share = report.bytes_checked // max(1, len(ids))
            for point_id in ids:
                damage = bad.get(point_id)
                message = "" if damage is None else "; ".join(
                    [damage.message] * bool(damage.message) + [str(c) for c in damage.chunks[:3]])
                entries.append(VerifyEntry(target, point_id, now, damage is None,
                                           message or ("damaged" if damage else ""), share))
                verified.append(point_id)
                if damage is not None:
                    damaged.append(point_id)
            read += report.bytes_checked
            self.totals[target] += report.bytes_checked
        if entries:
            wiring.record_verify_log(config.state, entries)
        return TickResult(tuple(verified), tuple(damaged), read, tuple(skipped), due)


def verify_periods(policy_set: PolicySet) -> dict[str, float]:
    """Policy name -> `exports.verify.every` in seconds, for policies that have one."""
    return {p.name: p.exports.verify_every_seconds for p in policy_set.policies
            if p.exports is not None and p.exports.verify_every_seconds}


def _targets_of(policy_set: PolicySet) -> set[str]:
    return {p.exports.target for p in policy_set.policies
            if p.exports is not None and p.exports.verify_every_seconds}


def export_points(config: HostConfig, targets: Iterable[str]) -> dict[str, list[ExportPoint]]:
    """The committed points of each named target (a missing repository has none)."""
    out: dict[str, list[ExportPoint]] = {}
    for name in sorted(targets):
        target = config.targets.get(name)
        if target is None or target.type != "directory":
            continue
        try:
            with wiring.open_repository(target.path, create=False, target=name) as repo:
                out[name] = repo.points()
        except VmkeepError:
            out[name] = []
    return out


def _rows(points: Mapping[str, list[ExportPoint]]
          ) -> list[tuple[str, str, str, int, float]]:
    return [(target, p.id, p.policy, p.size_bytes, p.created_at.timestamp())
            for target, found in sorted(points.items()) for p in found]


def _records(config: HostConfig) -> list[schedule.VerifyRecord]:
    return [schedule.VerifyRecord(e.target, e.point_id, e.verified_at, e.ok, e.message)
            for e in wiring.read_verify_log(config.state)]


def _verify(config: HostConfig, target: str, ids: list[str]) -> VerifyReport:
    with wiring.open_repository(config.targets[target].path, create=False,
                                target=target) as repo:
        repo.lock.acquire("scheduled verification", 0.0)  # the lock GC takes: never both
        try:
            return wiring.verify_points(repo, ids)
        finally:
            repo.lock.release()


def verification_view(config: HostConfig, policy_set: PolicySet,
                      targets: Mapping[str, Iterable[ExportPoint]] | None, now: float,
                      ) -> schedule.VerificationView:
    """Where verification stands: `targets` are the observed export points (read from the
    targets when None)."""
    every = verify_periods(policy_set)
    points = ({k: list(v) for k, v in targets.items()} if targets is not None
              else export_points(config, _targets_of(policy_set)))
    records = _records(config)
    by_key = {(r.target, r.point_id): r for r in records}
    found = schedule.candidates(_rows(points), every, by_key)
    present = {(t, p.id) for t, found_points in points.items() for p in found_points}
    return schedule.view(found, records, now, present)

"""Scheduled verification: which export points to re-read and re-hash on this tick.

A policy's `exports.verify.every` asks that each of its export points be verified at least
that often. The controller calls `choose` on every tick; the work is spread over ticks by a
byte budget (`limits.verifyBytesPerHour`, a token bucket that fills at that rate and holds
at most one hour's worth), and a point becomes eligible once half its period has passed
since it was last verified (or created), most overdue first. So with a budget that covers
the estate and ticks shorter than half a period, every point is verified within its period;
when the budget is short, the points nearest their deadline go first and the ones past it
show as overdue.

Pure: records, points and the time come in, a decision comes out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Budget", "Candidate", "VerificationView", "VerifyRecord", "candidates", "choose",
    "due_points", "view",
]

HOUR = 3600.0


@dataclass(frozen=True)
class VerifyRecord:
    """The last verification of one export point (from the state DB)."""

    target: str
    point_id: str
    verified_at: float  # Unix time
    ok: bool
    message: str = ""


@dataclass(frozen=True)
class Candidate:
    """An export point of a policy with `exports.verify`, and where it stands."""

    target: str
    point_id: str
    policy: str
    size_bytes: int
    created_at: float
    every_seconds: float
    last_verified: float | None = None
    ok: bool | None = None  # None: never verified

    @property
    def since(self) -> float:
        return self.created_at if self.last_verified is None else self.last_verified

    @property
    def due_at(self) -> float:
        """When the point must have been verified again at the latest."""
        return self.since + self.every_seconds

    def eligible(self, now: float) -> bool:
        return now - self.since >= self.every_seconds / 2


@dataclass(frozen=True)
class Budget:
    """A token bucket of bytes: fills at `per_hour`, holds at most one hour's worth."""

    per_hour: int
    credit: float
    at: float

    @classmethod
    def full(cls, per_hour: int, now: float) -> Budget:
        return cls(per_hour, float(per_hour), now)

    def at_time(self, now: float) -> Budget:
        gained = max(0.0, now - self.at) / HOUR * self.per_hour
        return Budget(self.per_hour, min(float(self.per_hour), self.credit + gained), now)

    def spend(self, size: int) -> Budget:
        return Budget(self.per_hour, self.credit - size, self.at)


def candidates(
    points: Iterable[tuple[str, str, str, int, float]],
    every: Mapping[str, float],
    records: Mapping[tuple[str, str], VerifyRecord],
) -> list[Candidate]:
    """Points (target, id, policy, size, created) of policies with a verify period."""
    out = []
    for target, point_id, policy, size, created in points:
        if policy not in every:
            continue
        record = records.get((target, point_id))
        out.append(Candidate(target, point_id, policy, size, created, every[policy],
                             record.verified_at if record else None,
                             record.ok if record else None))
    return out


def choose(points: Sequence[Candidate], budget: Budget, now: float
           ) -> tuple[list[Candidate], Budget]:
    """The points to verify now, most overdue first, within the budget (which may go into
    debt by one point, so a point larger than an hour's budget is still verified), and the
    budget left."""
    budget = budget.at_time(now)
    chosen: list[Candidate] = []
    for point in sorted((p for p in points if p.eligible(now)),
                        key=lambda p: (p.due_at, p.target, p.point_id)):
        if budget.credit <= 0:
            break
        chosen.append(point)
        budget = budget.spend(point.size_bytes)
    return chosen, budget


def due_points(points: Iterable[Candidate], now: float) -> list[Candidate]:
    """Points whose verification is due (eligible now), most overdue first."""
    return sorted((p for p in points if p.eligible(now)), key=lambda p: (p.due_at, p.point_id))


@dataclass(frozen=True)
class VerificationView:
    """Where scheduled verification stands, for status, metrics and the page."""

    points: tuple[Candidate, ...]  # export points of policies with `exports.verify`
    damaged: tuple[VerifyRecord, ...]  # points whose last verification found damage
    due: tuple[Candidate, ...]  # eligible for verification now, most overdue first
    overdue: tuple[Candidate, ...]  # not verified within their period
    oldest: Mapping[str, float]  # target -> oldest verification (or creation) time

    def to_json(self, iso: Callable[[float], str]) -> dict[str, Any]:
        def point(c: Candidate) -> dict[str, Any]:
            return {"target": c.target, "pointId": c.point_id, "policy": c.policy,
                    "lastVerified": iso(c.last_verified) if c.last_verified else None,
                    "dueAt": iso(c.due_at)}

        return {
            "points": len(self.points),
            "damaged": [{"target": r.target, "pointId": r.point_id,
                         "verifiedAt": iso(r.verified_at), "message": r.message}
                        for r in self.damaged],
            "due": [point(c) for c in self.due],
            "overdue": [point(c) for c in self.overdue],
            "oldestVerified": {t: iso(v) for t, v in sorted(self.oldest.items())},
        }


def view(points: Sequence[Candidate], records: Iterable[VerifyRecord], now: float,
         present: set[tuple[str, str]] | None = None) -> VerificationView:
    """The view at `now`; `present` (target, id) limits damage to points that still exist."""
    damaged = tuple(r for r in sorted(records, key=lambda r: (r.target, r.point_id))
                    if not r.ok and (present is None or (r.target, r.point_id) in present))
    oldest: dict[str, float] = {}
    for p in points:
        oldest[p.target] = min(oldest.get(p.target, p.since), p.since)
    return VerificationView(
        points=tuple(points),
        damaged=damaged,
        due=tuple(due_points(points, now)),
        overdue=tuple(p for p in due_points(points, now) if p.due_at < now),
        oldest=oldest,
    )

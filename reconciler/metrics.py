"""The controller's metrics as Prometheus metric families (prometheus-client's exposition).

`exposition(families)` is the text both `/metrics` and the `--metrics-file` carry. The
families come from two places: what the loop counted (`LoopCounts`: reconciles, actions,
durations) and what the last observation saw (`estate_families(status)`: per VM and policy
the newest restore point and the coverage state, hygiene findings, scheduled verification).

Pure: values in, families out; nothing here reads the clock or the world.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import (
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from reconciler.model import CoverageState
from reconciler.status import Status

__all__ = [
    "COVERAGE_STATES",
    "DURATION_BUCKETS",
    "HYGIENE_CODES",
    "Histogram",
    "estate_families",
    "exposition",
    "textfile",
]

#: Reconcile durations (seconds): from a quiet tick to a night of exports.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0)

#: Finding codes always exported (0 when none), so an alert rule has a series to watch.
HYGIENE_CODES = ("foreign-snapshot-old", "snapshot-chain-deep")


@dataclass
class Histogram:
    """Cumulative-bucket histogram of observed values."""

    buckets: Sequence[float] = DURATION_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1

    def family(self, name: str, text: str) -> HistogramMetricFamily:
        counts = self.counts or [0] * len(self.buckets)
        buckets = [(_bound(b), float(n)) for b, n in zip(self.buckets, counts, strict=True)]
        buckets.append(("+Inf", float(self.count)))
        return HistogramMetricFamily(name, text, buckets=buckets, sum_value=self.total)


def _bound(value: float) -> str:
    return str(int(value)) + ".0" if float(value).is_integer() else repr(value)


#: The coverage states of `vmkeep_vm_coverage`: the plan's (`unknown` also while the last
#: observation is stale: the reconciles after it failed).
COVERAGE_STATES = tuple(s.value for s in CoverageState)


def estate_families(status: Status, *, stale: bool = False) -> list[Metric]:
    """Per VM and policy, findings and verification, from one `Status` (with its plan).
    `stale`: the status is the last good one and the world could not be observed since:
    every pair's coverage is `unknown` (the newest points stay: they existed)."""
    out: list[Metric] = []
    plan = status.plan
    if plan is not None:
        last = GaugeMetricFamily(
            "vmkeep_vm_last_point_timestamp_seconds",
            "Slot time (Unix) of the newest restore point of a VM under a policy, by kind "
            "(snapshot, export).", labels=["vcenter", "vm", "policy", "kind"])
        vcenter_of = {(c.policy, c.vm.instance_uuid): c.vcenter for c in plan.coverage}
        newest: dict[tuple[str, str, str, str], float] = {}
        for d in plan.retention:
            vcenter = vcenter_of.get((d.policy, d.vm.instance_uuid))
            if vcenter is None:
                continue  # not a selected pair (orphans are findings, not coverage)
            key = (vcenter, d.vm.name, d.policy, d.kind.value)
            newest[key] = max(newest.get(key, 0.0), d.slot.timestamp())
        for key, value in sorted(newest.items()):
            last.add_metric(list(key), value)
        out.append(last)
        coverage = GaugeMetricFamily(
            "vmkeep_vm_coverage", "1 for the current coverage state of a VM under a policy "
            "(covered, due, late, missing, unknown), 0 for the others.",
            labels=["vcenter", "vm", "policy", "state"])
        for c in sorted(plan.coverage, key=lambda c: (c.vcenter, c.vm.name, c.policy)):
            current = "unknown" if stale else c.state.value
            for state in COVERAGE_STATES:
                coverage.add_metric([c.vcenter, c.vm.name, c.policy, state],
                                    float(state == current))
        out.append(coverage)
        findings = GaugeMetricFamily(
            "vmkeep_findings", "Findings of the last observation by code (snapshot hygiene "
            "with the host config's thresholds, orphaned points, unprotected VMs, ...).",
            labels=["code"])
        counts = Counter(w.code for w in plan.warnings)
        for code in sorted(set(HYGIENE_CODES) | set(counts)):
            findings.add_metric([code], float(counts[code]))
        out.append(findings)
    v = status.verification
    if v is not None:
        oldest = GaugeMetricFamily(
            "vmkeep_point_verified_timestamp_seconds", "Per target, the oldest last "
            "verification (Unix time) among export points of policies with exports.verify "
            "(a point never verified counts from its creation).", labels=["target"])
        for target, value in sorted(v.oldest.items()):
            oldest.add_metric([target], value)
        out.append(oldest)
        damaged = GaugeMetricFamily(
            "vmkeep_points_damaged", "Export points whose last verification found damage.",
            labels=["target"])
        per_target = Counter(r.target for r in v.damaged)
        for target in sorted(set(v.oldest) | set(per_target)):
            damaged.add_metric([target], float(per_target[target]))
        out.append(damaged)
        out.append(GaugeMetricFamily("vmkeep_points_verify_due", "Export points due for "
                                     "verification now.", value=float(len(v.due))))
        out.append(GaugeMetricFamily("vmkeep_points_verify_overdue", "Export points not "
                                     "verified within their period.",
                                     value=float(len(v.overdue))))
    return out


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


def exposition(families: Iterable[Metric]) -> str:
    """The Prometheus text format of the families (prometheus-client's encoder)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry).decode("utf-8")


def textfile(families: Iterable[Metric]) -> str:
    """The same families in the text format with exact values (for the `--metrics-file`:
    an integer stays an integer, a Unix time keeps all its digits)."""
    out: list[str] = []
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        out.append(f"# HELP {name} {_escape(family.documentation, label=False)}")
        out.append(f"# TYPE {name} {family.type}")
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
            out.append(f"{sample.name}{{{labels}}} {_number(sample.value)}" if labels
                       else f"{sample.name} {_number(sample.value)}")
    return "\n".join(out) + "\n"


def _escape(text: str, *, label: bool = True) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if label else text


def _number(value: float) -> str:
    """A sample value exactly (`:g` would round a Unix time to 6 digits)."""
    if value != value or value in (float("inf"), float("-inf")):
        return {"inf": "+Inf", "-inf": "-Inf"}.get(str(value), "NaN")
    return str(int(value)) if float(value).is_integer() else repr(float(value))

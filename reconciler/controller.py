"""The controller loop behind `vmkeep run`: reconcile on every tick and on every policy change.

One reconcile is exactly `vmkeep apply --auto-approve` (the journal, the applier lease, the
repair of interrupted runs, the guards), run in this process. What the loop adds:

* **when**: at start, every `interval`, and as soon as the policies change — a new commit on
  the followed branch (polled every `poll`), or a file event in a local policy directory
  (watchdog, settled for a moment so an editor's save is one change);
* **bad policies never stop backups**: a commit whose policies do not validate is reported
  (every `file:line:col`) and not applied; the loop keeps reconciling the last revision that
  did validate, until a good one arrives. A local directory has no earlier revision to keep:
  nothing is applied until it is valid again;
* **errors do not end the loop**: an unreachable vCenter, a failed action or a held lease
  is logged and counted, and the next tick tries again. A vCenter that cannot be observed
  does not stop the others: they are reconciled, its VMs are left alone (`attention`;
  `error` when no vCenter could be observed, so nothing was reconciled);
* **the deletion budget holds deletions back, never the backups**: as in apply, the creates
  run and the held deletions are logged with how to allow them (`--max-deletes N`,
  `limits.maxDeletesPerRun`); the reconcile counts as `attention` and
  `vmkeep_held_deletions` says how many;
* **metrics** in Prometheus' text format, written atomically after every reconcile to
  `metrics_file` (for node_exporter's textfile collector);
* **stopping**: SIGTERM or SIGINT ends the loop after the running reconcile; a second one
  stops that reconcile too (the next start repairs what it left, from the journal). With an
  engine the first one cancels the running reconcile on the engine (its exports stop at
  their next heartbeat, their temporary snapshots are removed) and `run` exits 130.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from reconciler import policies, wiring
from reconciler.cli import apply, common
from reconciler.cli.operations import Operations
from reconciler.errors import (
    InputError,
    LeaseHeldError,
    ReconcileCancelled,
    ReconcileRunning,
    VmkeepError,
)
from reconciler.executor import OutcomeStatus, RunReport
from reconciler.metrics import Histogram, textfile
from reconciler.model import CoverageState, HostConfig, Plan, PolicySet
from reconciler.reconcile import ReconcileRequest, check_overrides

__all__ = ["Controller", "Metrics", "covered_after"]

#: How long a local policy directory must be quiet after a change before it is read.
SETTLE_SECONDS = 0.5


@dataclass
class Metrics:
    """What the controller has done since it started, as Prometheus gauges and counters."""

    reconciles: Counter[str] = field(default_factory=Counter)  # result -> count
    actions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, status)
    coverage: dict[str, int] = field(default_factory=dict)
    last_started: float | None = None
    last_seconds: float | None = None
    last_success: bool | None = None
    last_success_time: float | None = None
    policies_valid: bool | None = None
    revision: str | None = None  # the revision the last reconcile applied
    rejected_revision: str | None = None  # the newest revision that did not validate
    held_deletions: int | None = None  # deletions the last reconcile's budget held back

    #: reconcile durations (seconds) as a histogram
    durations: Histogram = field(default_factory=Histogram)
    #: per VM/policy, findings and verification, from the last observation (`metrics`)
    estate: list[Any] = field(default_factory=list)
    verified_points: Counter[str] = field(default_factory=Counter)  # result -> points
    verified_bytes: int = 0

    def families(self) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily as Counted
        from prometheus_client.core import GaugeMetricFamily as Gauge

        out: list[Any] = []
        results = ("ok", "failed_actions", "attention", "error", "invalid_policies",
                   "skipped")
        reconciles = Counted("vmkeep_reconciles", "Reconciles since the controller started, "
                             "by result.", labels=["result"])
        for r in results:
            reconciles.add_metric([r], self.reconciles[r])
        out.append(reconciles)
        actions = Counted("vmkeep_actions", "Actions carried out since the controller "
                          "started, by kind and outcome.", labels=["kind", "status"])
        for (k, st), n in sorted(self.actions.items()):
            actions.add_metric([k, st], n)
        out.append(actions)
        out.append(self.durations.family("vmkeep_reconcile_duration_seconds",
                                         "How long reconciles took."))
        if self.last_started is not None:
            out.append(Gauge("vmkeep_last_reconcile_timestamp_seconds",
                             "When the last reconcile started (Unix time).",
                             value=self.last_started))
            out.append(Gauge("vmkeep_last_reconcile_duration_seconds",
                             "How long the last reconcile took.", value=self.last_seconds or 0.0))
            out.append(Gauge("vmkeep_last_reconcile_success", "1 when the last reconcile "
                             "completed every action, else 0.",
                             value=float(bool(self.last_success))))
        if self.last_success_time is not None:
            out.append(Gauge("vmkeep_last_success_timestamp_seconds", "When the last fully "
                             "successful reconcile started (Unix time).",
                             value=self.last_success_time))
        if self.policies_valid is not None:
            out.append(Gauge("vmkeep_policies_valid", "1 when the newest policy revision "
                             "validates, 0 when it was rejected.",
                             value=float(self.policies_valid)))
        if self.revision:
            info = Gauge("vmkeep_policy_revision_info", "The policy revision applied last.",
                         labels=["revision"])
            info.add_metric([self.revision], 1)
            out.append(info)
        if self.rejected_revision:
            info = Gauge("vmkeep_rejected_revision_info", "The newest policy revision that "
                         "did not validate.", labels=["revision"])
            info.add_metric([self.rejected_revision], 1)
            out.append(info)
        if self.held_deletions is not None:
            out.append(Gauge("vmkeep_held_deletions", "Deletions the last reconcile held "
                             "back (limits.maxDeletesPerRun, --max-deletes).",
                             value=float(self.held_deletions)))
        if self.coverage:
            coverage = Gauge("vmkeep_coverage", "VM/policy pairs by coverage state after the "
                             "last reconcile.", labels=["state"])
            for state, n in sorted(self.coverage.items()):
                coverage.add_metric([state], n)
            out.append(coverage)
        verified = Counted("vmkeep_verified_points", "Export points verified by the "
                           "schedule since the controller started, by result.",
                           labels=["result"])
        for result in ("ok", "damaged"):
            verified.add_metric([result], self.verified_points[result])
        out.append(verified)
        out.append(Counted("vmkeep_verified_bytes", "Bytes re-read by scheduled "
                           "verification since the controller started.",
                           value=self.verified_bytes))
        return out + list(self.estate)

    def render(self) -> str:
        """The `--metrics-file` text (`/metrics` serves the same families)."""
        return textfile(self.families())

    def write(self, path: Path) -> None:
        """Replace `path` atomically (a scraper never reads half a file); something that is
        not a regular file (`/dev/null`, a FIFO) is written into, never replaced."""
        if path.exists() and not path.is_file() and not path.is_dir():
            path.write_text(self.render(), encoding="utf-8")
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(self.render(), encoding="utf-8")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def covered_after(plan: Plan, report: RunReport | None) -> list[CoverageState]:
    """Each VM/policy pair's coverage once the run is over: a pair whose creates all
    succeeded (done, or already there) is covered; the others keep the plan's state."""
    created: dict[tuple[str, str], bool] = {}
    for o in report.outcomes if report else ():
        if not o.action.kind.is_delete:
            key = (o.action.policy, o.action.vm.instance_uuid)
            ok = o.status in (OutcomeStatus.DONE, OutcomeStatus.NOOP)
            created[key] = created.get(key, True) and ok
    return [
        CoverageState.COVERED if created.get((c.policy, c.vm.instance_uuid)) else c.state
        for c in plan.coverage
    ]


class Controller:
    """Runs reconciles on a schedule and on policy changes; see the module documentation.

    `args` are `vmkeep run`'s: the policy source (`policies` | `repo`, `rev`, `path`),
    `interval` and `poll` (seconds), `metrics_file`, `once`, `now`, `parallel`, `output`,
    `max_deletes`, `config`.
    """

    def __init__(self, args: argparse.Namespace, *, log: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.args = args
        self.log = log or sys.stderr
        self.clock = clock
        self.wall = wall
        self.metrics = Metrics()
        self.stop = threading.Event()
        self.changed = threading.Event()
        self.last_good: str | None = None  # newest Git revision that validated
        self.seen: str | None = None  # newest Git revision looked at
        self._signals = 0
        self._engine_running = False  # a stop cancels an engine reconcile at once
        self.cancelled = False  # a stop cancelled a reconcile: run exits 130
        self.ops = Operations(self)  # endpoints, health, logs, scheduled verification
        #: Inventories kept current across ticks with WaitForUpdatesEx (docs/controller.md).
        self.watch = wiring.WatchCaches()

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        wiring.load_host_config(self.args.config)  # a broken host config stops us at once
        common.use_configured_source(self.args)  # no source flag: the host config's
        self.ops.start()
        try:
            return self._run()
        finally:
            self.ops.stop()
            self.watch.close()

    def _run(self) -> int:
        if self.args.once:
            with self._signal_handlers():  # a stop lets this reconcile finish too
                return self.reconcile("once")
        with self._signal_handlers(), self._watching():
            next_tick = self.clock()
            next_poll = next_tick + self.args.poll
            while not self.stop.is_set():
                now = self.clock()
                reason = ""
                if now >= next_tick:
                    reason = "interval" if self.metrics.last_started else "start"
                elif self.changed.is_set():
                    self._settle()
                    reason = "policy files changed"
                elif self.args.repo and now >= next_poll:
                    next_poll = now + self.args.poll
                    reason = self._new_commit()
                if reason and not self.stop.is_set():
                    self.reconcile(reason)
                    next_tick = self.clock() + self.args.interval
                    continue
                wake = min(next_tick, next_poll) if self.args.repo else next_tick
                self.stop.wait(max(0.05, min(1.0, wake - now)))
        self._say("stopped")
        return 130 if self.cancelled else 0

    def reconcile(self, reason: str) -> int:
        """One reconcile; never raises for what a next tick may fix (returns the exit code)."""
        started, began = self.wall(), self.clock()
        self.metrics.last_started = started
        self._say(f"reconcile ({reason})")
        code, result = 1, "error"
        outcome: apply.ApplyResult | None = None
        rev: str | None = None
        try:
            config = wiring.load_host_config(self.args.config)
            valid, rev, policy_set = self._valid_revision(config)
            if not valid:
                code, result = 1, "invalid_policies"
            else:
                with self.ops.quiet():  # the plan is not the controller's output
                    outcome = self._reconcile(config, rev, policy_set)
                code = outcome.code
                failed = outcome.report is not None and outcome.report.failed
                result = "ok" if code == 0 else "failed_actions" if failed else "attention"
                if outcome.plan is not None and outcome.plan.unobserved and set(
                        outcome.plan.unobserved) >= set(config.vcenters):
                    result = "error"  # no vCenter could be observed: nothing was reconciled
                self.metrics.revision = outcome.revision
                if outcome.plan is not None:
                    for name, reason in sorted(outcome.plan.unobserved.items()):
                        self._say(f"vCenter {name!r} could not be observed ({reason}): its "
                                  "VMs were left alone; the others were reconciled")
                    self.metrics.held_deletions = len(outcome.plan.held)
                    if outcome.plan.held:
                        self._say(f"held back: {outcome.plan.held_reason}; the backups "
                                  f"ran. To allow them: {outcome.plan.held_hint}")
                    counts = Counter(covered_after(outcome.plan, outcome.report))
                    self.metrics.coverage = {s.value: counts[s] for s in CoverageState}
                if outcome.report is not None:
                    self.metrics.actions.update(
                        (o.action.kind.value, o.status) for o in outcome.report.outcomes)
        except (LeaseHeldError, ReconcileRunning) as exc:  # engine: another controller's run
            code, result = 0, "skipped"
            self._say(f"skipped: {exc}")
        except ReconcileCancelled as exc:  # engine: stopped by a signal
            code, result, self.cancelled = exc.exit_code, "cancelled", True
            self._say(str(exc))
        except VmkeepError as exc:
            code = exc.exit_code
            self._say(f"error: {exc}")
        except Exception:  # a bug must not end the backups: log it, try again next tick
            self._say("unexpected error:\n" + traceback.format_exc().rstrip())
        self.metrics.reconciles[result] += 1
        self.metrics.last_seconds = self.clock() - began
        self.metrics.last_success = result == "ok"
        if result == "ok":
            self.metrics.last_success_time = started
        self.metrics.durations.observe(self.metrics.last_seconds)
        self.ops.after_reconcile(result, outcome, self.metrics.last_seconds, rev)
        if self.args.metrics_file:
            try:
                self.metrics.write(Path(self.args.metrics_file))
            except OSError as exc:  # a full disk must not end the backups either
                self._say(f"cannot write metrics to {self.args.metrics_file}: "
                          f"{exc.strerror or exc}")
        return code

    # ------------------------------------------------------------------ policies

    def _source(self, rev: str | None = None) -> Any:
        if self.args.repo:
            return common.open_git_source(self.args.repo, rev or self.args.rev,
                                          self.args.path or "")
        return common.policy_source_from_args(self.args)

    def _reconcile(self, config: HostConfig, rev: str | None,
                   policy_set: PolicySet | None) -> apply.ApplyResult:
        """One `vmkeep apply --auto-approve` of `policy_set` (None: the last good revision,
        read again), through the reconcile service."""
        a = self.args
        check_overrides(config, a.max_deletes, a.parallel)
        now = common.parse_now(a.now)
        if policy_set is None:
            source = self._source(rev) if a.repo else common.policy_source_from_args(a)
            policy_set = policies.parse_policies(source.files(), config, source.revision)
        if config.engine is not None:  # the scaled tier: docs/scale-out.md
            return self._on_engine(config, rev, now)
        passwords = {name: wiring.resolve_password(vc) for name, vc in config.vcenters.items()}
        service = wiring.reconciler(config, passwords, approve=lambda _plan: None,
                                    events=apply.ApplyEvents(a.output), watch=self.watch)
        return service.run(ReconcileRequest(policy_set, now, None, a.max_deletes, a.parallel))

    def _on_engine(self, config: HostConfig, rev: str | None,
                   now: datetime) -> apply.ApplyResult:
        """The reconcile as one run on the engine, followed until it ends; a stop (SIGTERM,
        SIGINT) cancels it rather than waiting for it (`ReconcileCancelled`, exit 130)."""
        from reconciler.engine.submit import engine_reconcile

        source = self._source(rev)
        self._engine_running = True
        try:
            done = engine_reconcile(config, list(source.files()), source.revision, now,
                                    self.args.max_deletes, self.args.output, stop=self.stop)
        finally:
            self._engine_running = False
        return apply.ApplyResult(done.code, done.revision, None, done.report)

    def _valid_revision(self, config: HostConfig) -> tuple[bool, str | None, PolicySet | None]:
        """Whether to apply, which revision and, when it is the newest, its policies (parsed
        once per tick): the newest when its policies validate; else, for Git, the last one
        that did (its policies None: read again). An invalid local directory (or a
        repository with no valid revision yet) is not applied at all."""
        source = self._source()
        self.seen = source.revision
        try:
            policy_set = policies.parse_policies(source.files(), config, source.revision)
        except InputError as exc:
            self.metrics.policies_valid = False
            self.metrics.rejected_revision = source.revision
            where = f"revision {source.revision}" if source.revision else "the policy directory"
            keep = (f"; still applying {self.last_good}" if self.last_good
                    else "; nothing is applied until they are valid")
            self._say(f"policies at {where} are invalid{keep}:\n{exc}")
            return self.last_good is not None, self.last_good, None
        self.metrics.policies_valid = True
        self.metrics.rejected_revision = None
        if source.revision:
            self.last_good = source.revision
        return True, source.revision, policy_set

    def _new_commit(self) -> str:
        """'new commit …' when the followed branch moved since the last look, else ''."""
        try:
            revision = self._source().revision
        except Exception as exc:  # as in a reconcile: no error ends the loop
            why = exc if isinstance(exc, VmkeepError) else f"{type(exc).__name__}: {exc}"
            self._say(f"cannot read {self.args.repo}: {why}")
            return ""
        if revision == self.seen:
            return ""
        return f"new commit {revision}"

    # ------------------------------------------------------------------ plumbing

    def _say(self, message: str) -> None:
        self.ops.log(message)

    def _settle(self) -> None:
        """Wait until the policy directory has been quiet for `SETTLE_SECONDS`."""
        while self.changed.is_set() and not self.stop.is_set():
            self.changed.clear()
            self.stop.wait(SETTLE_SECONDS)

    @contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        def handle(signum: int, frame: FrameType | None) -> None:
            self._signals += 1
            if self._signals > 1:
                raise KeyboardInterrupt  # stop the running reconcile too
            if self._engine_running:
                self._say(f"{signal.Signals(signum).name}: cancelling the running reconcile "
                          "on the engine")
            else:
                self._say(f"{signal.Signals(signum).name}: stopping after the running "
                          "reconcile (send it again to stop at once)")
            self.stop.set()

        if threading.current_thread() is not threading.main_thread():
            yield  # signals reach only the main thread (tests run loops in threads)
            return
        previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, old in previous.items():
                signal.signal(s, old)

    @contextmanager
    def _watching(self) -> Iterator[None]:
        """Watch a local policy directory for changes (watchdog); nothing to do for Git."""
        if self.args.repo:
            yield
            return
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        changed = self.changed

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return  # read, not changed
                paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
                if event.is_directory:
                    if event.event_type in ("created", "deleted", "moved"):
                        changed.set()  # a folder of policies came or went
                elif any(p.endswith((".yaml", ".yml")) for p in paths):
                    changed.set()

        observer = Observer()
        roots = [self.args.policies or common.DEFAULT_POLICIES]
        for root in roots:
            if Path(root).is_dir():
                observer.schedule(Handler(), str(root), recursive=True)
        observer.start()
        try:
            yield
        finally:
            observer.stop()
            observer.join()

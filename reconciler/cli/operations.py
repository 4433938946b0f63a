"""What makes `vmkeep run` a service admins can watch: endpoints, health, logs, verification.

The controller (`reconciler.controller`) owns one `Operations` and calls it at a few points:
`start()`/`stop()` around the loop, `quiet()` around each apply (the plan and apply's own
summary are not the controller's output), and `after_reconcile(...)` once a reconcile is
over. That last step:

1. logs the tick's summary (text, or JSON lines with run id, vcenter, vm, action, point);
2. runs scheduled verification (`exports.verify`) within `limits.verifyBytesPerHour`;
3. observes the estate as `vmkeep status` does (the same function), which becomes
   `/api/status`, the page at `/` and the per-VM metrics.

Endpoints (`--listen HOST:PORT`, loopback in the docs, port 0 picks a free one; the bound
address is logged): `/metrics`, `/healthz`, `/readyz`, `/api/status`, `/`.
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler import policies, wiring
from reconciler.cli import status as status_cli
from reconciler.cli.scheduled_verify import ScheduledVerifier
from reconciler.errors import UsageError, VmkeepError
from reconciler.metrics import estate_families, exposition
from reconciler.ports import Response
from reconciler.render.page import status_page
from reconciler.render.status import status_to_json
from reconciler.status import Status

if TYPE_CHECKING:
    from reconciler.adapters.http_server import HttpServer
    from reconciler.cli.apply import ApplyResult
    from reconciler.controller import Controller

__all__ = ["ERRORED_RECONCILES", "Health", "Operations"]

#: /healthz answers 503 when this many reconciles in a row errored.
ERRORED_RECONCILES = 3
#: Results that mean a reconcile made no progress.
_NO_PROGRESS = ("error", "invalid_policies")


@dataclass(frozen=True)
class Health:
    """The verdict of /healthz at one moment (pure: everything comes in)."""

    healthy: bool
    reason: str

    @classmethod
    def judge(cls, *, now: float, last_progress: float, interval: float,
              recent: list[str], alive: bool) -> Health:
        if not alive:
            return cls(False, "the controller loop is not running")
        if now - last_progress > 2 * interval:
            return cls(False, f"no reconcile finished for {now - last_progress:.0f} s "
                       f"(more than two intervals of {interval:g} s)")
        if len(recent) >= ERRORED_RECONCILES and all(
                r in _NO_PROGRESS for r in recent[-ERRORED_RECONCILES:]):
            return cls(False, f"the last {ERRORED_RECONCILES} reconciles failed: "
                       + ", ".join(recent[-ERRORED_RECONCILES:]))
        return cls(True, "ok")


class Operations:
    def __init__(self, controller: Controller) -> None:
        self.c = controller
        self.args = controller.args
        self.json_logs = getattr(self.args, "log_format", "text") == "json"
        self.server: HttpServer | None = None
        self.verifier = ScheduledVerifier()
        self.status: Status | None = None
        self.status_body = b""
        self.page_body = b""
        self.ready = False
        self.recent: deque[str] = deque(maxlen=ERRORED_RECONCILES)
        self.started = controller.clock()
        self.last_finished: float | None = None
        self.loop_alive = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.started = self.c.clock()
        self.loop_alive = True
        listen = getattr(self.args, "listen", None)
        if not listen:
            return
        routes = {
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/api/status": self._api_status,
            "/": self._page,
        }
        try:
            self.server = wiring.http_server(listen, routes, on_error=self._route_failed)
        except OSError as exc:
            raise UsageError(f"cannot listen on {listen[0]}:{listen[1]}: "
                             f"{exc.strerror or exc}") from None
        self.server.start()
        host, port = self.server.address
        shown = f"[{host}]" if ":" in host else host
        self.log(f"listening on http://{shown}:{port}/ (metrics, healthz, readyz, api/status)",
                 listen=f"{shown}:{port}")
        # also on stdout (otherwise quiet), for whoever started it on port 0 to find it
        print(f"vmkeep run: listening on http://{shown}:{port}/", flush=True)

    def stop(self) -> None:
        self.loop_alive = False
        if self.server is not None:
            self.server.stop()
            self.server = None

    # ------------------------------------------------------------------ logs

    def log(self, message: str, **fields: Any) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.c.wall()))
        if self.json_logs:
            line = json.dumps({"time": stamp, "msg": message,
                               **{k: v for k, v in fields.items() if v is not None}},
                              ensure_ascii=False)
        else:
            line = f"{stamp} vmkeep run: {message}"
        print(line, file=self.c.log, flush=True)

    @contextmanager
    def quiet(self) -> Iterator[io.StringIO]:
        """Around apply: its plan and summary (stdout) are not the controller's output; in
        JSON mode its progress lines (stderr) are dropped too, so every line is JSON."""
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out):
            if self.json_logs:
                with redirect_stderr(err):
                    yield err
            else:
                yield err

    # ------------------------------------------------------------------ after a reconcile

    def after_reconcile(self, result: str, outcome: ApplyResult | None, seconds: float,
                        revision: str | None) -> None:
        self.recent.append(result)
        self.last_finished = self.c.clock()
        self._summary(result, outcome, seconds)
        if result in _NO_PROGRESS:
            self._stale()
            return
        try:
            config = wiring.load_host_config(self.args.config)
            source = self.c._source(revision)
            policy_set = policies.parse_policies(source.files(), config, source.revision)
            self._verify(config, policy_set)
            self._observe(revision)
        except VmkeepError as exc:
            self.log(f"cannot observe the estate after the reconcile: {exc}")
            self._stale()
        except Exception as exc:  # a bug here must not end the backups
            self.log(f"cannot observe the estate after the reconcile: "
                     f"{type(exc).__name__}: {exc}")
            self._stale()

    def _stale(self) -> None:
        """The world could not be observed: coverage is `unknown` until it can again."""
        with self._lock:
            if self.status is not None:
                self.c.metrics.estate = estate_families(self.status, stale=True)

    def _summary(self, result: str, outcome: ApplyResult | None, seconds: float) -> None:
        report = outcome.report if outcome else None
        counts = report.counts() if report else {}
        text = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no actions"
        self.log(f"reconcile done: {result} in {seconds:.1f} s ({text})", result=result,
                 runId=report.run_id if report else None, counts=counts or None)
        if report is None:
            return
        for note in report.recovered:
            self.log(f"repaired: {note}", runId=report.run_id)
        for o in report.outcomes:
            a = o.action
            if self.json_logs or o.status in ("failed", "skipped"):
                message = f"{o.status}: {a.kind.value} {a.point_id} ({a.vm.name})"
                if o.message:
                    message += f": {o.message}"
                self.log(message, runId=report.run_id, vcenter=a.vcenter, vm=a.vm.name,
                         action=a.kind.value, point=a.point_id, status=o.status)

    def _verify(self, config: Any, policy_set: Any) -> None:
        tick = self.verifier.tick(config, policy_set, self.c.wall())
        for why in tick.skipped:
            self.log(f"verification left for a later tick: {why}")
        if not tick.verified:
            return
        m = self.c.metrics
        m.verified_points["damaged"] += len(tick.damaged)
        m.verified_points["ok"] += len(tick.verified) - len(tick.damaged)
        m.verified_bytes += tick.bytes_read
        self.log(f"verified {len(tick.verified)} export point(s), "
                 f"{tick.bytes_read / 2**20:.1f} MiB read, {len(tick.damaged)} damaged")
        for point in tick.damaged:
            self.log(f"DAMAGED export point {point}: restore another point; the next "
                     "export stores the damaged data again", point=point, action="verify")

    def _observe(self, revision: str | None) -> None:
        """Status as `vmkeep status` computes it, for /api/status, / and the metrics."""
        a = self.args
        ns = argparse.Namespace(
            config=a.config, policies=a.policies, repo=a.repo,
            rev=revision if a.repo else None, path=a.path if a.repo else "",
            state=None, now=a.now, runs=5, check=False, output="json")
        status = status_cli.collect_status(ns)
        body = (json.dumps(status_to_json(status), indent=2) + "\n").encode("utf-8")
        page = status_page(status, title="vmkeep", controller=self._controller_lines())
        with self._lock:
            self.status = status
            self.status_body = body
            self.page_body = page.encode("utf-8")
            self.c.metrics.estate = estate_families(status)
            self.ready = True

    def _controller_lines(self) -> list[str]:
        m = self.c.metrics
        lines = [f"controller: reconcile every {self.args.interval:g} s; "
                 f"last reconcile {'ok' if m.last_success else 'not ok'}"]
        if m.revision:
            lines.append(f"policy revision {m.revision}")
        if m.rejected_revision:
            lines.append(f"rejected revision {m.rejected_revision} (policies invalid)")
        return lines

    # ------------------------------------------------------------------ endpoints

    def health(self) -> Health:
        return Health.judge(now=self.c.clock(),
                            last_progress=self.last_finished or self.started,
                            interval=self.args.interval, recent=list(self.recent),
                            alive=self.loop_alive)

    def _metrics(self) -> Response:
        from prometheus_client.exposition import CONTENT_TYPE_LATEST

        with self._lock:
            text = exposition(self.c.metrics.families())
        return Response(200, CONTENT_TYPE_LATEST, text.encode("utf-8"))

    def _healthz(self) -> Response:
        verdict = self.health()
        return Response(200 if verdict.healthy else 503, "text/plain; charset=utf-8",
                        (verdict.reason + "\n").encode("utf-8"))

    def _readyz(self) -> Response:
        if self.ready:
            return Response(200, "text/plain; charset=utf-8", b"ready\n")
        return Response(503, "text/plain; charset=utf-8",
                        b"not ready: no successful observation yet\n")

    def _api_status(self) -> Response:
        with self._lock:
            body = self.status_body
        if not body:
            return Response(503, "application/json",
                            b'{"error": "no status yet: the first reconcile is running"}\n')
        return Response(200, "application/json", body)

    def _page(self) -> Response:
        with self._lock:
            body = self.page_body
        if not body:
            body = (b"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>vmkeep</title>"
                    b"</head><body><p>vmkeep: the first reconcile is running.</p></body></html>")
        return Response(200, "text/html; charset=utf-8", body)

    def _route_failed(self, path: str, exc: BaseException) -> None:
        self.log(f"{path}: {type(exc).__name__}: {exc}")

"""The status value: what needs attention, from journal records and a plan's coverage."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.model import Action, ActionKind, Coverage, CoverageState, Plan, VMRef
from reconciler.render.status import status_text, status_to_json
from reconciler.status import JournalAction, RunRecord, summarize

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
VM = VMRef("web-01", "5003aaaa-0000-0000-0000-000000000001")
HELD = Action(ActionKind.SNAPSHOT_DELETE, "gold", "vc1", VM,
              f"gold/{VM.instance_uuid}/20261101T010000Z", NOW - timedelta(days=24),
              "kept by no rule (keep daily 7)", snapshot_id="snapshot-1")


def run(n: int, *, failed: int = 0, finished: bool = True) -> RunRecord:
    start = NOW - timedelta(days=10 - n)
    counts = {"done": 4, **({"failed": failed} if failed else {})}
    return RunRecord(f"run-{n}", "host/1/run", start,
                     start + timedelta(minutes=3) if finished else None, "abc123", counts)


def action(run_id: str, status: str) -> JournalAction:
    return JournalAction(run_id, "export.create", f"gold/{VM.instance_uuid}/20261125T010000Z",
                         VM.name, VM.instance_uuid, "vc1", NOW - timedelta(hours=1), status,
                         "NoDiskSpace: no space" if status == "failed" else None)


def plan(*states: CoverageState, blocked: str = "") -> Plan:
    coverage = tuple(
        Coverage("gold", "vc1", replace(VM, name=f"vm-{i}"), state, NOW, 43200)
        for i, state in enumerate(states)
    )
    return Plan(1, "abc123", "sha256:0", NOW, (), coverage, blocked=bool(blocked),
                blocked_reason=blocked)


@pytest.mark.parametrize(
    ("runs", "failures", "unfinished", "holder", "the_plan", "attention"),
    [
        ([], [], [], None, None, []),
        ([run(1), run(2)], [], [], None, plan(CoverageState.COVERED, CoverageState.DUE), []),
        ([run(1, failed=1), run(2)], [action("run-1", "failed")], [], None, None, []),
        ([run(1), run(2, failed=2)], [action("run-2", "failed")], [], None, None,
         ["the last finished run (run-2) had 2 failed action(s)"]),
        ([run(1), run(2, finished=False)], [], [action("run-2", "started")], None, None,
         ["1 action(s) of an interrupted run (run-2) have no outcome; the next apply checks "
          "what they left behind and repairs it"]),
        ([run(1), run(2, finished=False)], [], [action("run-2", "started")], "host/2/run-2",
         None, []),
        ([], [], [], None, plan(CoverageState.LATE, CoverageState.MISSING, CoverageState.LATE),
         ["2 VM/policy pair(s) late: their newest restore point is older than the schedule "
          "allows", "1 VM/policy pair(s) without any restore point past their first slot"]),
        ([], [], [], None, plan(blocked="17 deletions exceed limits.maxDeletesPerRun (10)"),
         ["the next apply is blocked: 17 deletions exceed limits.maxDeletesPerRun (10)"]),
        ([], [], [], None, replace(plan(), held=(HELD,), held_reason="1 deletions exceed …"),
         ["the next apply holds deletions back: 1 deletions exceed …; to allow them: pass "
          "--max-deletes 1 (apply, run) or raise limits.maxDeletesPerRun to 1 in the host "
          "config"]),
    ],
    ids=["nothing-yet", "all-well", "old-failure-retried", "last-run-failed", "interrupted",
         "interrupted-but-running-now", "late-and-missing", "blocked", "held-deletions"],
)
def test_attention_names_what_a_person_should_look_at(
    runs, failures, unfinished, holder, the_plan, attention
) -> None:
    status = summarize(NOW, runs, failures, unfinished, holder, the_plan)
    assert list(status.attention) == attention
    assert status_to_json(status)["ok"] is (not attention)
    text = status_text(status)
    assert ("All well." in text) is (not attention)
    assert all(item in text for item in attention)


def test_only_the_newest_runs_are_kept_newest_first_with_the_last_finished_runs_failures(
) -> None:
    runs = [run(n) for n in range(8)] + [run(8, failed=1), run(9, finished=False)]
    failures = [action("run-3", "failed"), action("run-8", "failed")]
    status = summarize(NOW, runs[::-1], failures, [], "host/1/run-9", keep_runs=3)
    assert [r.run_id for r in status.runs] == ["run-9", "run-8", "run-7"]
    assert [a.run_id for a in status.failures] == ["run-8"]
    body = status_to_json(status)
    assert body["apply"] == {"running": True, "holder": "host/1/run-9"}
    assert body["runs"][0]["finishedAt"] is None
    assert body["lastRunFailures"][0]["error"] == "NoDiskSpace: no space"
    assert body["coverage"] is None and body["pending"] is None


def test_the_text_view_lists_runs_failures_and_coverage_problems() -> None:
    status = summarize(NOW, [run(1, failed=1)], [action("run-1", "failed")], [], None,
                       plan(CoverageState.COVERED, CoverageState.LATE))
    text = status_text(status)
    assert "run-1  2026-11-16T12:00:00Z  3 min 0 s    4 done, 1 failed  revision abc123" in text
    assert "export.create vc1/web-01 gold/" in text and "NoDiskSpace: no space" in text
    assert "Coverage (revision abc123): 1 covered, 0 due, 1 late, 0 missing" in text
    assert "  late     vc1/vm-1 [gold] slot 2026-11-25T12:00:00Z, last point never" in text
    assert "an apply now would create 0 and delete 0 restore point(s)" in text


def test_the_json_pending_counts_the_deletions_the_budget_holds_back() -> None:
    reason = "1 deletions exceed limits.maxDeletesPerRun (0)"
    held = replace(plan(), held=(HELD,), held_reason=reason)
    pending = status_to_json(summarize(NOW, [], [], [], None, held))["pending"]
    assert pending["held"] == 1
    assert pending["heldReason"] == reason
    assert status_to_json(summarize(NOW, [], [], [], None, plan()))["pending"]["held"] == 0

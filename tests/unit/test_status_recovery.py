"""Status tells the truth about killed runs and recoveries (issue 9 A, K): a failed or
interrupted recovery, a killed run not yet repaired and pending repairs need attention and are
named; a killed run shows its real counts; a repaired one is shown, and is not a problem."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reconciler.render.status import status_text, status_to_json
from reconciler.status import RecoveryInfo, RunRecord, summarize

from .test_status import NOW, action

KILLED = RunRecord("run-k", "host/1/run-k", NOW - timedelta(hours=2), None, "abc",
                   {"done": 1, "interrupted": 2})


def recovery(*, error: str | None = None, finished: bool = True,
             repairs: tuple[str, ...] = ()) -> RecoveryInfo:
    return RecoveryInfo("host/2/run-n", NOW - timedelta(hours=1),
                        NOW - timedelta(minutes=59) if finished else None, error, repairs)


@pytest.mark.parametrize(
    ("kwargs", "attention"),
    [
        ({"recovery": recovery(error="recovery of an interrupted run failed: AttributeError")},
         ["the last recovery (host/2/run-n) failed: recovery of an interrupted run failed: "
          "AttributeError"]),
        ({"recovery": recovery(finished=False)},
         ["the last recovery (host/2/run-n) was interrupted; the next apply repeats it"]),
        ({"runs": [KILLED]},
         ["run run-k was interrupted (its process is gone); the next apply settles it"]),
        ({"runs": [KILLED], "unfinished": [action("run-k", "started")]},
         ["1 action(s) of an interrupted run (run-k) have no outcome; the next apply checks "
          "what they left behind and repairs it"]),
        ({"pending_repairs": ["VM 'db' (sim) may be off"]},
         ["repair pending: VM 'db' (sim) may be off"]),
        ({"runs": [RunRecord("run-k", "host/1/run-k", NOW - timedelta(hours=2), None, "abc",
                             {"done": 1, "interrupted": 2}, repaired_by="run-n")],
          "recovery": recovery(repairs=("run run-k was interrupted: …",))}, []),
        ({"runs": [KILLED], "apply_holder": "host/1/run-k",
          "recovery": recovery(finished=False)}, []),
    ],
    ids=["recovery-failed", "recovery-interrupted", "run-killed", "run-killed-with-actions",
         "repair-pending", "run-killed-and-repaired", "still-running"],
)
def test_killed_runs_and_recoveries_need_attention_until_repaired(kwargs, attention) -> None:
    runs = kwargs.pop("runs", [])
    unfinished = kwargs.pop("unfinished", [])
    holder = kwargs.pop("apply_holder", None)
    if holder is not None and "recovery" in kwargs:
        kwargs["recovery"] = RecoveryInfo(holder, NOW, None, None)
    status = summarize(NOW, runs, [], unfinished, holder, None, **kwargs)
    assert list(status.attention) == attention
    text = status_text(status)
    assert all(item in text for item in attention)
    assert ("All well." in text) is (not attention)


def test_a_killed_run_shows_its_real_counts_and_who_repaired_it() -> None:
    repaired = RunRecord("run-k", "host/1/run-k", NOW - timedelta(hours=2), None, "abc",
                         {"done": 1, "interrupted": 2}, repaired_by="run-n")
    status = summarize(NOW, [repaired], [], [], None, None,
                       recovery=recovery(repairs=("removed leftover export snapshot s-1",)))
    text = status_text(status)
    assert "interrupted  1 done, 2 interrupted" in text
    assert "(repaired by run-n)" in text
    assert "  repaired: removed leftover export snapshot s-1" in text
    body = status_to_json(status)
    assert body["runs"][0]["counts"] == {"done": 1, "interrupted": 2}
    assert body["runs"][0]["interrupted"] is True and body["runs"][0]["repairedBy"] == "run-n"
    assert body["recovery"]["repairs"] == ["removed leftover export snapshot s-1"]

"""The pure parts of operating the controller: verification scheduling, health, the metric
families, the status page, and the host config and policy fields they read."""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler import hostconfig, policies
from reconciler.cli import main
from reconciler.cli.operations import Health
from reconciler.cli.run import parse_listen
from reconciler.errors import InputError
from reconciler.metrics import estate_families, exposition
from reconciler.model import (
    Coverage,
    CoverageState,
    Plan,
    PlanWarning,
    PointKind,
    RetentionDecision,
    Severity,
    VMRef,
)
from reconciler.ports import PolicyFile
from reconciler.render.page import status_page
from reconciler.render.status import status_text, status_to_json
from reconciler.status import summarize
from reconciler.verify_schedule import Budget, Candidate, VerifyRecord, choose, view

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
T = NOW.timestamp()
DAY = 86400.0
VM = VMRef("web-01", "5003aaaa-0000-0000-0000-000000000001")


def candidate(n: int, age_days: float, size: int = 100, verified: bool = False) -> Candidate:
    since = T - age_days * DAY
    return Candidate("nas", f"gold/{n}", "gold", size, since if not verified else since - DAY,
                     DAY, since if verified else None, True if verified else None)


# ---------------------------------------------------------------- scheduling


@pytest.mark.parametrize(
    ("ages", "credit", "chosen"),
    [
        ([0.1, 0.4, 0.49], 1000, []),  # nothing is half a period old
        ([0.5, 0.9, 0.7], 1000, ["gold/1", "gold/2", "gold/0"]),  # most overdue first
        ([0.5, 0.9, 0.7], 150, ["gold/1", "gold/2"]),  # the budget may go into debt once
        ([0.5, 0.9, 0.7], 0, []),  # no credit, no work
        ([1.5, 0.6], 50, ["gold/0"]),  # an overdue point goes first
    ],
    ids=["too-early", "all-fit", "budget-stops", "empty-budget", "overdue-first"],
)
def test_verification_chooses_the_points_nearest_their_deadline_within_the_budget(
    ages: list[float], credit: int, chosen: list[str],
) -> None:
    points = [candidate(n, age) for n, age in enumerate(ages)]
    picked, left = choose(points, Budget(1000, credit, T), T)
    assert [p.point_id for p in picked] == chosen
    assert left.credit == credit - 100 * len(chosen)


def test_the_budget_refills_at_its_rate_up_to_one_hours_worth() -> None:
    budget = Budget(3600, -1800.0, T)
    assert budget.at_time(T + 1800).credit == 0.0
    assert budget.at_time(T + 7200).credit == 3600.0  # capped
    assert budget.at_time(T - 10).credit == -1800.0  # a clock going back adds nothing


def test_the_view_lists_damaged_points_that_still_exist_and_overdue_ones() -> None:
    points = [candidate(0, 1.2), candidate(1, 0.6, verified=True), candidate(2, 0.1)]
    records = [VerifyRecord("nas", "gold/1", T - 0.6 * DAY, False, "disk d0: chunk 3"),
               VerifyRecord("nas", "gold/gone", T - DAY, False, "forgotten since")]
    v = view(points, records, T, present={("nas", p.point_id) for p in points})
    assert [r.point_id for r in v.damaged] == ["gold/1"]
    assert [c.point_id for c in v.overdue] == ["gold/0"]
    assert [c.point_id for c in v.due] == ["gold/0", "gold/1"]
    assert v.oldest == {"nas": T - 1.2 * DAY}
    status = summarize(NOW, (), (), (), verification=v)
    assert any("1 export point(s) damaged" in a for a in status.attention)
    assert any("not verified within their exports.verify period" in a
               for a in status.attention)
    assert status_to_json(status)["verification"]["damaged"][0]["pointId"] == "gold/1"
    text = status_text(status)
    assert "3 export point(s) on a schedule, 2 due, 1 overdue, 1 damaged" in text
    assert "DAMAGED nas:gold/1: disk d0: chunk 3" in text


# ---------------------------------------------------------------- health


@pytest.mark.parametrize(
    ("since_progress", "recent", "alive", "healthy"),
    [
        (10, ["ok"], True, True),
        (7199, ["ok"], True, True),
        (7201, ["ok"], True, False),  # nothing finished for more than two intervals
        (10, ["error", "error", "error"], True, False),
        (10, ["error", "invalid_policies", "error"], True, False),
        (10, ["error", "ok", "error"], True, True),
        (10, ["failed_actions"] * 3, True, True),  # failed actions are progress
        (10, ["ok"], False, False),  # the loop ended
    ],
)
def test_health_fails_when_the_loop_stops_progressing(
    since_progress: float, recent: list[str], alive: bool, healthy: bool,
) -> None:
    verdict = Health.judge(now=T, last_progress=T - since_progress, interval=3600,
                           recent=recent, alive=alive)
    assert verdict.healthy is healthy, verdict.reason


# ---------------------------------------------------------------- metrics and the page


def estate_status(name: str = "web-01") -> object:
    vm = replace(VM, name=name)
    slot = NOW - timedelta(hours=11)
    coverage = (Coverage("gold", "vc1", vm, CoverageState.COVERED, slot, 43200, slot),)
    retention = tuple(RetentionDecision(f"gold/{vm.instance_uuid}/{k}", kind, "gold", vm,
                                        slot - timedelta(days=d), True, ("last",))
                      for k, (kind, d) in enumerate([(PointKind.SNAPSHOT, 0),
                                                     (PointKind.EXPORT, 0),
                                                     (PointKind.EXPORT, 1)]))
    warnings = (PlanWarning("snapshot-chain-deep", Severity.HYGIENE, "chain is 5 deep",
                            vcenter="vc1", vm=vm),)
    plan = Plan(1, "abc", "sha256:0", NOW, (), coverage, warnings, retention)
    return summarize(NOW, (), (), (), plan=plan,
                     verification=view([candidate(0, 0.7)], [], T))


def test_the_estate_metrics_parse_and_hold_the_newest_point_per_kind() -> None:
    status = estate_status()
    text = exposition(estate_families(status))  # type: ignore[arg-type]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    slot = (NOW - timedelta(hours=11)).timestamp()
    labels = (("kind", "export"), ("policy", "gold"), ("vcenter", "vc1"), ("vm", "web-01"))
    assert samples[("vmkeep_vm_last_point_timestamp_seconds", labels)] == slot
    assert samples[("vmkeep_vm_coverage", (("policy", "gold"), ("state", "covered"),
                                           ("vcenter", "vc1"), ("vm", "web-01")))] == 1
    assert samples[("vmkeep_findings", (("code", "snapshot-chain-deep"),))] == 1
    assert samples[("vmkeep_findings", (("code", "foreign-snapshot-old"),))] == 0
    assert samples[("vmkeep_point_verified_timestamp_seconds", (("target", "nas"),))] == \
        T - 0.7 * DAY
    assert samples[("vmkeep_points_verify_due", ())] == 1


class Texts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.data: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.data.append(data)


def test_the_status_page_escapes_names_and_loads_nothing() -> None:
    evil = '<script>alert("x")</script><img src=x onerror=y>'
    page = status_page(estate_status(evil))  # type: ignore[arg-type]
    parsed = Texts()
    parsed.feed(page)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert any(evil in d for d in parsed.data)  # shown as text
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert 'class="state covered"' in page and "point due for verification" in page


# ---------------------------------------------------------------- configuration


def test_the_host_config_reads_policies_hygiene_and_the_verify_budget() -> None:
    config = hostconfig.parse(
        b"policies: {repo: ../policy-repo, rev: main, path: policies}\n"
        b"hygiene: {snapshotMaxAge: 2d, chainDepth: 5}\n"
        b"limits: {verifyBytesPerHour: 1048576}\n", "/etc/vmkeep/vmkeep.yaml")
    assert config.policies is not None
    assert (config.policies.repo, config.policies.rev, config.policies.path) == \
        ("/etc/policy-repo", "main", "policies")
    assert config.hygiene.snapshot_max_age_seconds == 2 * DAY
    assert config.hygiene.chain_depth == 5
    assert config.limits.verify_bytes_per_hour == 1048576
    local = hostconfig.parse(b"policies: {path: pol}\n", "/etc/vmkeep/vmkeep.yaml")
    assert local.policies is not None and local.policies.path == "/etc/vmkeep/pol"
    assert local.policies.repo is None
    remote = hostconfig.parse(b"policies: {repo: 'https://git.example.com/p.git', path: ''}\n",
                              "/etc/vmkeep/vmkeep.yaml")
    assert remote.policies is not None and remote.policies.repo == "https://git.example.com/p.git"


@pytest.mark.parametrize(("text", "message"), [
    (b"hygiene: {snapshotMaxAge: 1mo}\n", "vmkeep.yaml:1:27: `hygiene.snapshotMaxAge`"),
    (b"hygiene: {chainDepth: 0}\n", "vmkeep.yaml:1:23:"),
    (b"policies: {rev: main}\n", "vmkeep.yaml:1:17: `policies.rev` needs `repo`"),
    (b"policies: {}\n", "vmkeep.yaml:1:11: `policies` names no source"),
    (b"policies: {path: p, branch: main}\n", "vmkeep.yaml:1:"),
    (b"limits: {verifyBytesPerHour: 0}\n", "vmkeep.yaml:1:30:"),
])
def test_bad_operations_fields_in_the_host_config_are_located(text: bytes, message: str) -> None:
    with pytest.raises(InputError) as caught:
        hostconfig.parse(text, "vmkeep.yaml")
    assert message in str(caught.value)


POLICY = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata: {{name: gold}}
spec:
  vcenter: sim
  selector: {{include: {{names: ["*"]}}}}
  schedule: {{cron: "0 1 * * *"}}
  exports: {{target: nas, keep: {{daily: 7}}, verify: {verify}}}
"""


@pytest.mark.parametrize(("verify", "seconds", "error"), [
    ("{every: 30d}", 30 * DAY, None),
    ("{every: 12h}", DAY / 2, None),
    ("{every: 1mo}", None, "`spec.exports.verify.every`: duration 1mo uses calendar units"),
    ("{every: soon}", None, "spec.exports.verify.every"),
    ("{}", None, "every"),
])
def test_the_verify_period_of_a_policy(verify: str, seconds: float | None,
                                       error: str | None) -> None:
    files = [PolicyFile("policies/gold.yaml", POLICY.format(verify=verify).encode())]
    if error is None:
        exports = policies.parse_policies(files).policies[0].exports
        assert exports is not None and exports.verify_every_seconds == seconds
        return
    with pytest.raises(InputError) as caught:
        policies.parse_policies(files)
    assert error in str(caught.value) and "policies/gold.yaml:8:" in str(caught.value)


@pytest.mark.parametrize(("text", "address"), [
    ("127.0.0.1:9469", ("127.0.0.1", 9469)),
    ("[::1]:0", ("::1", 0)),
    ("9469", ("127.0.0.1", 9469)),  # a port alone binds loopback
    (":9469", ("127.0.0.1", 9469)),
    ("x", None),
    ("host:", None),
    ("host:65536", None),
])
def test_listen_addresses(text: str, address: tuple[str, int] | None) -> None:
    if address is None:
        with pytest.raises(argparse.ArgumentTypeError):
            parse_listen(text)
    else:
        assert parse_listen(text) == address


def test_a_bad_listen_address_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--listen", "nowhere"]) == 1
    err = capsys.readouterr().err
    assert "'nowhere' is not HOST:PORT" in err and "Traceback" not in err

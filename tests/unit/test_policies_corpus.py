"""A corpus of invalid policy documents: each must fail at an exact line:column with a message.

Every case also has golden output (`tests/golden/validate/<case>.txt`, all diagnostics as
`vmkeep validate` prints them); regenerate with `VMKEEP_UPDATE_GOLDEN=1 pytest ...` and
review the diff.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.model import HookConfig, HostConfig, TargetConfig, VCenterConfig
from reconciler.policies import check_policies
from reconciler.ports import PolicyFile

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "validate"
UPDATE = os.environ.get("VMKEEP_UPDATE_GOLDEN") == "1"

BASE = """\
apiVersion: vmkeep/v1
kind: BackupPolicy
metadata:
  name: db
spec:
  vcenter: prod
  selector:
    include:
      names: ["db-*"]
  schedule:
    cron: "0 1 * * *"
    timezone: Europe/Berlin
  consistency:
    mode: crash
  snapshots:
    keep: {last: 2}
    maxAge: 48h
  exports:
    target: nas
    keep: {daily: 7}
"""

CONFIG = HostConfig(
    path="/etc/vmkeep.yaml",
    vcenters={"prod": VCenterConfig("prod", "https://vc", "u", password_env="P")},
    targets={"nas": TargetConfig("nas", "directory", "/mnt/nas")},
    hooks={"flush-db": HookConfig("flush-db", ("/bin/true",))},
)


def edit(changes: dict[int, str], text: str = BASE) -> str:
    """BASE with whole lines replaced (1-based); a replacement may span several lines."""
    lines = text.splitlines()
    for number, new in sorted(changes.items(), reverse=True):
        lines[number - 1 : number] = new.splitlines()
    return "\n".join(lines) + "\n"


def window(body: str) -> str:
    """BASE with `schedule.window: {<body>}` on line 13."""
    return edit({12: "    timezone: UTC\n    window: {" + body + "}"})


@dataclass(frozen=True)
class Case:
    id: str
    files: dict[str, bytes | str]
    line: int
    column: int
    fragment: str
    config: HostConfig | None = None
    path: str = "p.yaml"
    extra: tuple[str, ...] = field(default=())


def case(id: str, text: bytes | str, line: int, column: int, fragment: str, **kw: object) -> Case:
    return Case(id, {"p.yaml": text}, line, column, fragment, **kw)  # type: ignore[arg-type]


BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)

CASES = [
    # --- YAML syntax
    case("syntax-unclosed-flow", edit({16: "    keep: {last: 2"}), 17, 11, "YAML syntax error"),
    case("syntax-bad-indent", edit({6: "  vcenter: prod\n   extra: 1"}), 7, 9,
         "mapping values are not allowed"),
    case("syntax-tab-indent", edit({6: "\tvcenter: prod"}), 6, 1, "'\\t'"),
    case("syntax-unclosed-quote", edit({11: '    cron: "0 1 * * *'}), 21, 1, "YAML syntax error"),
    case("control-character", edit({4: "  name: d\x07b"}), 4, 10, "U+0007"),
    case("invalid-utf8", edit({4: "  name: db"}).encode().replace(b"db", b"d\xffb", 1), 4, 10,
         "invalid UTF-8"),
    # --- tags, aliases, keys
    case("python-tag", edit({6: "  vcenter: !!python/object/apply:os.system [id]"}), 6, 12,
         "tag `!!python/object/apply:os.system` is not allowed"),
    case("python-tag-on-a-mapping", edit({6: "  vcenter: !!python/object:os.Thing {a: 1}"}), 6, 12,
         "remove the tag"),
    case("unknown-tag", edit({6: "  vcenter: !include prod.yaml"}), 6, 12,
         "tag `!include` is not allowed"),
    case("binary-tag", edit({6: "  vcenter: !!binary cHJvZA=="}), 6, 12, "`!!binary`"),
    case("alias-bomb", BOMB, 5, 8, "too large once aliases are expanded"),
    case("recursive-alias", "a: &x [1, *x]\n", 1, 11, "contains it"),
    case("unknown-alias", edit({6: "  vcenter: *prod"}), 6, 12, "unknown alias `*prod`"),
    case("merge-key", edit({13: "  consistency:\n    <<: {mode: crash}"}), 14, 5, "merge keys"),
    case("duplicate-key", edit({6: "  vcenter: prod\n  vcenter: lab"}), 7, 3,
         "duplicate key `vcenter` in `spec`"),
    case("duplicate-key-in-flow-mapping", edit({16: "    keep: {last: 2, last: 3}"}), 16, 21,
         "duplicate key `last`"),
    case("complex-key", edit({6: "  ? [a, b]\n  : prod"}), 6, 5, "key must be a plain string"),
    case("too-deep", "a: " + "[" * 40 + "]" * 40 + "\n", 1, 35, "nesting is deeper than 32"),
    # --- document shape
    case("list-document", "- name: db\n", 1, 1, "must be a mapping"),
    case("scalar-document", "just text\n", 1, 1, "must be a mapping"),
    case("error-in-second-document",
         BASE + "---\n" + edit({4: "  name: web", 11: '    cron: "0 1 * *"'}),
         32, 11, "must have 5 fields"),
    # --- schema: types, required, constants
    case("wrong-api-version", edit({1: "apiVersion: vmkeep/v2"}), 1, 13,
         "must be one of `vmkeep/v1`"),
    case("wrong-kind", edit({2: "kind: Policy"}), 2, 7, "`kind` must be one of `BackupPolicy`"),
    case("missing-metadata-name", edit({4: "  labels: {team: dba}"}), 3, 1,
         "missing the required key `name`"),
    case("missing-schedule", edit({10: "", 11: "", 12: ""}), 5, 1,
         "missing the required key `schedule`"),
    case("missing-cron", edit({11: ""}), 10, 3, "missing the required key `cron`"),
    case("name-not-string", edit({4: "  name: 42"}), 4, 9, "must be a string, not an integer"),
    case("name-pattern", edit({4: "  name: DB_Prod"}), 4, 9, "not a valid policy name"),
    case("name-too-long", edit({4: "  name: " + "a" * 64}), 4, 9, "not a valid policy name"),
    case("spec-is-a-list", edit({5: "spec: []"}, "\n".join(BASE.splitlines()[:5]) + "\n"), 5, 7,
         "`spec` must be a mapping, not a list"),
    case("names-not-a-list", edit({9: '      names: "db-*"'}), 9, 14, "must be a list"),
    case("count-not-integer", edit({16: "    keep: {last: two}"}), 16, 18, "must be an integer"),
    case("negative-count", edit({16: "    keep: {last: -2}"}), 16, 18, "must be at least -1"),
    case("window-time-unquoted", window("start: 22:00, end: '05:00'"),
         13, 21, "put it in quotes"),
    case("attribute-value-number", edit({9: "      attributes: {backup: 1}"}), 9, 28,
         "must be a string, not an integer"),
    case("mode-enum", edit({14: "    mode: snapshot"}), 14, 11, "`crash`, `quiesce`, `poweroff`"),
    case("on-policy-removal-enum", edit({6: "  vcenter: prod\n  onPolicyRemoval: delete"}), 7, 20,
         "must be one of `retain`"),
    case("folder-without-slash", edit({9: '      folders: ["DC1/vm"]'}), 9, 17, "folder path"),
    case("tag-without-category", edit({9: '      tags: ["gold"]'}), 9, 14, "tag (category/name)"),
    # --- unknown keys with hints
    case("unknown-key-exports", edit({18: "  exprots:"}), 18, 3, "did you mean `exports`?"),
    case("unknown-top-level-key", edit({5: "specs:"}), 5, 1, "unknown key `specs`"),
    case("unknown-keep-rule", edit({20: "    keep: {dayly: 7}"}), 20, 12, "did you mean `daily`?"),
    case("unknown-selector-key", edit({8: "    includes:"}), 8, 5, "did you mean `include`?"),
    # --- keep, snapshots/exports
    case("empty-keep", edit({20: "    keep: {}"}), 20, 11, "must not be empty"),
    case("empty-include", edit({8: "    include: {}", 9: ""}), 8, 14, "must not be empty"),
    case("no-snapshots-no-exports", "\n".join(BASE.splitlines()[:14]) + "\n", 5, 1,
         "at least one of `snapshots` or `exports` (add a `snapshots:` section"),
    # --- semantics: cron, time zone, durations, window, modes
    case("cron-four-fields", edit({11: '    cron: "0 1 * *"'}), 11, 11, "must have 5 fields"),
    case("cron-six-fields", edit({11: '    cron: "0 0 1 * * *"'}), 11, 11, "found 6"),
    case("cron-out-of-range", edit({11: '    cron: "61 1 * * *"'}), 11, 11,
         "(minute `61`: out of range)"),
    case("cron-bad-hour", edit({11: '    cron: "0 25 * * *"'}), 11, 11, "hour `25`"),
    case("cron-bad-day-name", edit({11: '    cron: "0 1 * * mon-fry"'}), 11, 11,
         "day-of-week `mon-fry`"),
    case("cron-zero-step", edit({11: '    cron: "*/0 1 * * *"'}), 11, 11, "minute `*/0`"),
    case("cron-garbage", edit({11: '    cron: "at one"'}), 11, 11, "must have 5 fields"),
    case("cron-nickname", edit({11: '    cron: "@daily"'}), 11, 11,
         'write "0 0 * * *" instead of `@daily`'),
    case("cron-never-fires", edit({11: '    cron: "0 0 30 2 *"'}), 11, 11,
         "`0 0 30 2 *` never fires (day-of-month `30` never falls in month `2`)"),
    case("cron-never-fires-in-short-months", edit({11: '    cron: "0 1 31 4,6,9,11 *"'}), 11, 11,
         "never fires"),
    case("cron-last-day-extension", edit({11: '    cron: "0 1 L * *"'}), 11, 11,
         'day-of-month `L`: `L` for "last" is a croniter extension'),
    case("cron-last-weekday-extension", edit({11: '    cron: "0 1 * * 5L"'}), 11, 11,
         "day-of-week `5L`"),
    case("cron-nth-weekday-extension", edit({11: '    cron: "0 1 * * mon#2"'}), 11, 11,
         "day-of-week `mon#2`: `#` for the n-th weekday"),
    case("cron-question-mark-extension", edit({11: '    cron: "0 1 ? * 1"'}), 11, 11,
         "write `*` instead of `?`"),
    case("cron-nearest-weekday-extension", edit({11: '    cron: "0 1 15W * *"'}), 11, 11,
         "day-of-month `15W`: `W` for the nearest weekday"),
    case("cron-random-extension", edit({11: '    cron: "R 1 * * *"'}), 11, 11,
         "minute `R`: `R` for a random value"),
    case("cron-hashed-extension", edit({11: '    cron: "H(0-29) 1 * * *"'}), 11, 11,
         "minute `H(0-29)`: `H` for a hashed value"),
    case("unknown-time-zone", edit({12: "    timezone: Europe/Berln"}), 12, 15,
         "did you mean `Europe/Berlin`?"),
    case("time-zone-wrong-case", edit({12: "    timezone: europe/berlin"}), 12, 15,
         "unknown time zone"),
    case("duration-bad-unit", edit({17: "    maxAge: 48x"}), 17, 13, "not a valid duration"),
    case("duration-units-out-of-order", edit({17: "    maxAge: 1d1y"}), 17, 13,
         "from largest to smallest"),
    case("duration-unit-twice", edit({17: "    maxAge: 1h1h"}), 17, 13,
         "appears twice in duration '1h1h' (units y, mo, w, d, h and m for minutes"),
    case("duration-zero", edit({17: "    maxAge: 0h"}), 17, 13, "is zero"),
    case("duration-with-spaces", edit({20: '    keep: {within: "2 days"}'}), 20, 20,
         "not a valid duration"),
    case("window-hour-out-of-range", window("start: '25:00', end: '05:00'"),
         13, 21, "not a valid time of day"),
    case("window-empty", window("start: '05:00', end: '05:00'"),
         13, 35, "window is empty"),
    case("window-missing-end", window("start: '22:00'"), 13, 5,
         "missing the required key `end`"),
    case("shutdown-timeout-with-crash", edit({14: "    mode: crash\n    shutdownTimeout: 5m"}),
         15, 5, "`shutdownTimeout` only applies to mode `poweroff`"),
    case("fallback-with-poweroff", edit({14: "    mode: poweroff\n    fallback: crash"}), 15, 5,
         "`fallback` only applies to mode `quiesce`"),
    case("hard-power-off-with-default-mode", edit({14: "    hardPowerOff: true"}), 14, 5,
         "uses mode `crash`"),
    # --- across files and references
    Case("duplicate-names-across-files", {"a.yaml": BASE, "b/c.yaml": BASE}, 4, 9,
         "already used at a.yaml:4:9", path="b/c.yaml"),
    case("duplicate-names-in-one-file", BASE + "---\n" + BASE, 25, 9, "already used at p.yaml:4:9"),
    case("dangling-vcenter", edit({6: "  vcenter: prd"}), 6, 12, "unknown vCenter `prd`",
         config=CONFIG),
    case("dangling-vcenter-nothing-close", edit({6: "  vcenter: xyz"}), 6, 12,
         "expected one of: prod; see `vcenters` in /etc/vmkeep.yaml", config=CONFIG),
    case("dangling-target", edit({19: "    target: tape"}), 19, 13, "unknown target `tape`",
         config=CONFIG),
    case("dangling-hook", edit({14: "    mode: crash\n    hooks: {pre: [flush-db, flush-dbs]}"}),
         15, 29, "unknown hook `flush-dbs`", config=CONFIG),
]


def render(diagnostics: object) -> str:
    return "".join(f"{d}\n" for d in diagnostics)  # type: ignore[attr-defined]


def test_the_corpus_is_large_and_has_unique_ids() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_document_is_reported_at_its_location(case: Case) -> None:
    files = [PolicyFile(name, text.encode() if isinstance(text, str) else text)
             for name, text in case.files.items()]
    report = check_policies(files, case.config)
    assert not report.valid
    located = [d for d in report.diagnostics
               if (d.path, d.line, d.column) == (case.path, case.line, case.column)]
    assert located, f"nothing at {case.path}:{case.line}:{case.column}:\n" + render(
        report.diagnostics)
    assert any(case.fragment in f"{d.message} ({d.hint})" for d in located), render(located)
    golden = GOLDEN / f"{case.id}.txt"
    output = render(report.diagnostics)
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(output, encoding="utf-8")
    assert golden.read_text(encoding="utf-8") == output


@pytest.mark.parametrize(
    "cron",
    [
        "0 0 29 2 *",  # fires every four years
        "0 0 30 2 1",  # day of month or day of week: the Mondays of February
        "0 1 31 1,2 *",  # January has a 31st
        "0 1 * jul wed",  # names that contain L, W, H or R are not extensions
        "30 9 * mar-apr thu,fri",
        "0 1 * * 7",
        "*/15 8-18 * * MON-FRI",
        "0 1 1-7 * *",
    ],
)
def test_plain_cron_that_fires_is_accepted(cron: str) -> None:
    report = check_policies([PolicyFile("p.yaml", edit({11: f'    cron: "{cron}"'}).encode())])
    assert report.valid, render(report.diagnostics)


def test_every_golden_file_belongs_to_a_case() -> None:
    names = {f"{c.id}.txt" for c in CASES}
    assert {p.name for p in GOLDEN.glob("*.txt")} <= names

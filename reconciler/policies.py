"""Policies: from policy files to a `model.PolicySet`, or every problem at once.

Three passes over each YAML document, each reporting at `file:line:column`:

1. `documents.load`: safe YAML, duplicate keys, limits (see `reconciler.documents`);
2. `schemas/policy.schema.json` (draft 2020-12), errors mapped to the offending key/value;
3. semantic checks the schema cannot express: a valid plain 5-field cron expression (no
   croniter extensions such as `L`, `#`, `?`) that fires at least once (searched from a fixed
   reference time, never the clock), a known IANA time zone, durations, a non-empty window,
   fields that only apply to another consistency mode, names unique across the whole
   repository (the second use is reported), and - when a host config is given - that the
   referenced vCenter, target and hooks exist.

`parse_policies` raises `InputError` with all diagnostics of all files, sorted;
`check_policies` returns them instead (for `vmkeep validate`). Pure: bytes in, values out.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time
from functools import cache
from pathlib import Path
from typing import Any

from croniter import CroniterBadDateError, croniter
from jsonschema import Draft202012Validator

from reconciler import documents, durations, schema_messages
from reconciler.documents import Document, Where, did_you_mean, dotted
from reconciler.errors import Diagnostic, InputError
from reconciler.model import (
    Consistency,
    ConsistencyMode,
    Duration,
    ExportSpec,
    Fallback,
    HostConfig,
    KeepRules,
    Policy,
    PolicySet,
    Schedule,
    Selector,
    SnapshotSpec,
    SourceLocation,
    Window,
)
from reconciler.ports import PolicyFile

__all__ = ["SCHEMA_PATH", "PolicyReport", "check_policies", "parse_policies", "schema"]

#: `reconciler/schemas` links to the project's `schemas/` and is shipped in the wheel.
SCHEMA_PATH = Path(__file__).parent / "schemas" / "policy.schema.json"

CRON_FIELDS = "minute hour day-of-month month day-of-week"
#: Fire times are looked for from this fixed instant, never from the clock, so validation is
#: deterministic. Whatever fires at all fires within 4 years (29 February); 5 is the horizon.
CRON_REFERENCE = datetime(2024, 1, 1)
CRON_HORIZON_YEARS = 5
#: croniter (and Quartz) syntax beyond plain 5-field cron: (pattern in one field, what it
#: means, how to fix it). Names of months and days (`jul`, `wed`, `thu`, `fri`) are not matched.
_CRON_EXTENSIONS: tuple[tuple[re.Pattern[str], str, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), meaning, hint) for pattern, meaning, hint in [
        (r"#", "`#` for the n-th weekday of a month",
         "plain cron has no n-th weekday; give days of the week, e.g. `1` for Mondays, or days "
         "of the month"),
        (r"\?", "`?` for no specific value", "write `*` instead of `?`"),
        (r"(?<![a-z])\d*lw?(?![a-z])", "`L` for \"last\"",
         "plain cron has no \"last\"; give fixed days, e.g. `1` for the first of the month"),
        (r"(?<![a-z])\d*w(?![a-z])", "`W` for the nearest weekday",
         "plain cron has no nearest weekday; give days of the month or of the week"),
        (r"(?<![a-z])h(?![a-z])", "`H` for a hashed value", "give a fixed number, e.g. `17`"),
        (r"(?<![a-z])r(?![a-z])", "`R` for a random value", "give a fixed number, e.g. `17`"),
    ]
)
#: Nicknames some crons accept, in plain 5-field form.
_CRON_NICKNAMES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
                   "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
                   "@hourly": "0 * * * *"}
_KEEP_DURATIONS = ("within", "withinHourly", "withinDaily", "withinWeekly", "withinMonthly",
                   "withinYearly")
#: Consistency fields that only mean something in one mode.
_MODE_ONLY = {"fallback": "quiesce", "shutdownTimeout": "poweroff", "hardPowerOff": "poweroff"}


@cache
def schema() -> dict[str, Any]:
    """The policy JSON Schema (read once, from the package's `schemas/`)."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@dataclass(frozen=True)
class PolicyReport:
    """The outcome of checking a set of policy files: valid policies and every problem."""

    policies: tuple[Policy, ...]
    diagnostics: tuple[Diagnostic, ...]
    revision: str | None = None

    @property
    def valid(self) -> bool:
        return not self.diagnostics


def parse_policies(
    files: Iterable[PolicyFile], config: HostConfig | None = None, revision: str | None = None
) -> PolicySet:
    """All policies of the files, or `InputError` listing every problem of every file."""
    report = check_policies(files, config, revision)
    if report.diagnostics:
        raise InputError(report.diagnostics)
    return PolicySet(report.policies, revision)


def check_policies(
    files: Iterable[PolicyFile], config: HostConfig | None = None, revision: str | None = None
) -> PolicyReport:
    """Check every document of every file; never raises for bad input."""
    problems: list[Diagnostic] = []
    policies: list[Policy] = []
    names: dict[str, SourceLocation] = {}
    for file in files:
        loaded = documents.load(file.data, file.path)
        problems.extend(loaded.diagnostics)
        for doc in loaded.documents:
            found, wrong = schema_messages.schema_diagnostics(doc, _validator())
            checker = _Semantics(doc, wrong, config)
            checker.check()
            found.extend(checker.problems)
            name = _get(doc.data, ("metadata", "name"))
            if isinstance(name, str) and ("metadata", "name") not in wrong:
                here = SourceLocation(doc.path, *doc.position(("metadata", "name")))
                first = names.setdefault(name, here)
                if first != here:
                    found.append(doc.diagnostic(
                        ("metadata", "name"), f"policy name `{name}` is already used at {first}",
                        "policy names must be unique across the repository; rename one",
                    ))
            problems.extend(found)
            if not found:
                policies.append(_convert(doc))
    policies.sort(key=lambda p: p.name)
    return PolicyReport(tuple(policies), tuple(sorted(set(problems))), revision)


def _cron_extension(fields: list[str]) -> tuple[str, str] | None:
    """(what is wrong, how to fix it) for the first field using non-standard syntax."""
    for name, value in zip(CRON_FIELDS.split(), fields, strict=True):
        for pattern, meaning, hint in _CRON_EXTENSIONS:
            if pattern.search(value):
                return f"{name} `{value}`: {meaning} is a croniter extension", hint
    return None


def _bad_cron_field(fields: list[str]) -> str:
    """Name the first field that is wrong on its own (others as `*`), e.g. "hour `25`: "."""
    for index, name in enumerate(CRON_FIELDS.split()):
        alone = ["*"] * 5
        alone[index] = fields[index]
        try:
            croniter.expand(" ".join(alone))
        except (ValueError, KeyError):
            return f"{name} `{fields[index]}`: "
    return ""


def _get(data: Any, where: Where) -> Any:
    """The value at `where`, or None when any step is missing or of the wrong kind."""
    for part in where:
        if isinstance(part, str) and isinstance(data, dict):
            data = data.get(part)
        elif isinstance(part, int) and isinstance(data, list) and part < len(data):
            data = data[part]
        else:
            return None
    return data


class _Semantics:
    """Checks of one document beyond the schema; parts the schema rejected are skipped."""

    def __init__(self, doc: Document, wrong: set[Where], config: HostConfig | None) -> None:
        self.doc = doc
        self.wrong = wrong
        self.config = config
        self.problems: list[Diagnostic] = []

    def value(self, *where: str | int) -> Any:
        for cut in range(len(where) + 1):
            if where[:cut] in self.wrong:
                return None
        return _get(self.doc.data, where)

    def report(self, where: Where, message: str, hint: str = "", *, key: bool = False) -> None:
        self.problems.append(self.doc.diagnostic(where, message, hint, key=key))

    def check(self) -> None:
        self.cron()
        self.timezone()
        self.window()
        self.durations()
        self.mode_fields()
        if self.config is not None:
            self.references(self.config)

    def cron(self) -> None:
        where = ("spec", "schedule", "cron")
        expr = self.value(*where)
        if not isinstance(expr, str):
            return
        fields = expr.split()
        name = f"`{dotted(where)}`"
        if len(fields) != 5:
            hint = 'e.g. "0 1 * * *" for 01:00 every day'
            if len(fields) > 5:
                hint = f"plain cron has no seconds or year field; {hint}"
            elif fields and fields[0].lower() in _CRON_NICKNAMES:
                hint = f'write "{_CRON_NICKNAMES[fields[0].lower()]}" instead of `{fields[0]}`'
            self.report(where, f"{name} must have 5 fields ({CRON_FIELDS}), found {len(fields)}",
                        hint)
            return
        extension = _cron_extension(fields)
        if extension is not None:
            self.report(where, f"{name}: `{expr}` is not plain 5-field cron "
                        f"({extension[0]})", extension[1])
            return
        try:
            walker = croniter(expr, CRON_REFERENCE,
                              max_years_between_matches=CRON_HORIZON_YEARS)
        except (ValueError, KeyError) as exc:
            reason = "out of range" if "out of range" in str(exc) else "not a valid value"
            culprit = _bad_cron_field(fields)
            self.report(where, f"{name}: `{expr}` is not a valid cron expression "
                        f"({culprit}{reason})", f"fields: {CRON_FIELDS}")
            return
        days, weekdays = walker.expanded[2], walker.expanded[4]
        if days == ["*"] or weekdays != ["*"]:
            return  # fires every month (croniter ORs days of month and of week): skip the search
        try:
            walker.get_next(datetime)
        except CroniterBadDateError:
            self.report(where, f"{name}: `{expr}` never fires (day-of-month `{fields[2]}` "
                        f"never falls in month `{fields[3]}`)",
                        "February has at most 29 days; April, June, September and November 30")

    def timezone(self) -> None:
        where = ("spec", "schedule", "timezone")
        name = self.value(*where)
        if not isinstance(name, str) or name in _zones():
            return
        hint = did_you_mean(name, _zones(), listing=False) or \
            "use an IANA name such as Europe/Berlin or America/New_York"
        self.report(where, f"`{dotted(where)}`: unknown time zone `{name}`", hint)

    def window(self) -> None:
        where = ("spec", "schedule", "window")
        start, end = self.value(*where, "start"), self.value(*where, "end")
        if isinstance(start, str) and start == end:
            self.report((*where, "end"), "the window is empty: start and end are equal",
                        "a window that wraps midnight runs from start to end of the next day")

    def durations(self) -> None:
        places: list[Where] = [("spec", "consistency", "shutdownTimeout"),
                               ("spec", "snapshots", "maxAge")]
        for part in ("snapshots", "exports"):
            places.extend(("spec", part, "keep", rule) for rule in _KEEP_DURATIONS)
        for where in places:
            text = self.value(*where)
            if not isinstance(text, str):
                continue
            try:
                durations.parse(text)
            except durations.DurationError as exc:
                self.report(where, f"`{dotted(where)}`: {exc.reason}", exc.hint)
        where = ("spec", "exports", "verify", "every")
        text = self.value(*where)
        if isinstance(text, str):
            try:
                durations.to_timedelta(durations.parse(text))
            except durations.DurationError as exc:
                self.report(where, f"`{dotted(where)}`: {exc.reason}",
                            exc.hint or "e.g. 30d or 4w")

    def mode_fields(self) -> None:
        consistency = self.value("spec", "consistency")
        if not isinstance(consistency, dict):
            return
        mode = consistency.get("mode", ConsistencyMode.CRASH.value)
        if not isinstance(mode, str) or ("spec", "consistency", "mode") in self.wrong:
            return
        for key, only in _MODE_ONLY.items():
            if key in consistency and mode != only:
                self.report(("spec", "consistency", key),
                            f"`{key}` only applies to mode `{only}`, this policy uses mode "
                            f"`{mode}`", f"remove `{key}` or set `mode: {only}`", key=True)

    def references(self, config: HostConfig) -> None:
        where_vc = ("spec", "vcenter")
        self.reference(where_vc, self.value(*where_vc), "vCenter", "vcenters",
                       config.vcenters, config.path)
        where_target = ("spec", "exports", "target")
        self.reference(where_target, self.value(*where_target), "target", "targets",
                       config.targets, config.path)
        for phase in ("pre", "post"):
            hooks = self.value("spec", "consistency", "hooks", phase)
            for index, name in enumerate(hooks if isinstance(hooks, list) else []):
                where = ("spec", "consistency", "hooks", phase, index)
                self.reference(where, name, "hook", "hooks", config.hooks, config.path)

    def reference(self, where: Where, name: Any, what: str, section: str,
                  defined: Iterable[str], config_path: str) -> None:
        names = sorted(defined)
        if not isinstance(name, str) or name in names:
            return
        if names:
            closest = did_you_mean(name, names)  # a question, a listing or nothing
            see = f"`{section}` in {config_path}"
            hint = f"{closest} See {see}" if closest.endswith("?") else \
                f"{closest}; see {see}" if closest else f"see {see}"
        else:
            hint = f"{config_path} defines no {section}"
        self.report(where, f"unknown {what} `{name}`", hint)


# --------------------------------------------------------------------------- conversion


def _duration(text: str | None) -> Duration | None:
    return durations.parse(text) if text is not None else None


def _selector(data: dict[str, Any]) -> Selector:
    return Selector(
        names=tuple(data.get("names", ())),
        folders=tuple(data.get("folders", ())),
        tags=tuple(data.get("tags", ())),
        attributes=dict(data.get("attributes", {})),
    )


def _verify_every(data: Any) -> float | None:
    if not isinstance(data, dict) or not isinstance(data.get("every"), str):
        return None
    return durations.to_timedelta(durations.parse(data["every"])).total_seconds()


def _keep(data: dict[str, Any]) -> KeepRules:
    return KeepRules(
        last=data.get("last"),
        hourly=data.get("hourly"),
        daily=data.get("daily"),
        weekly=data.get("weekly"),
        monthly=data.get("monthly"),
        yearly=data.get("yearly"),
        within=_duration(data.get("within")),
        within_hourly=_duration(data.get("withinHourly")),
        within_daily=_duration(data.get("withinDaily")),
        within_weekly=_duration(data.get("withinWeekly")),
        within_monthly=_duration(data.get("withinMonthly")),
        within_yearly=_duration(data.get("withinYearly")),
    )


def _time(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _convert(doc: Document) -> Policy:
    """The model of a document that passed every check."""
    data: dict[str, Any] = doc.data
    meta: dict[str, Any] = data["metadata"]
    spec: dict[str, Any] = data["spec"]
    selector: dict[str, Any] = spec["selector"]
    schedule: dict[str, Any] = spec["schedule"]
    window = schedule.get("window")
    consistency: dict[str, Any] = spec.get("consistency", {})
    hooks: dict[str, Any] = consistency.get("hooks", {})
    defaults = Consistency()
    snapshots = spec.get("snapshots")
    exports = spec.get("exports")
    return Policy(
        name=meta["name"],
        vcenter=spec["vcenter"],
        include=_selector(selector["include"]),
        exclude=_selector(selector["exclude"]) if "exclude" in selector else None,
        schedule=Schedule(
            cron=" ".join(schedule["cron"].split()),
            timezone=schedule.get("timezone", "UTC"),
            window=Window(_time(window["start"]), _time(window["end"])) if window else None,
        ),
        consistency=Consistency(
            mode=ConsistencyMode(consistency.get("mode", defaults.mode.value)),
            fallback=Fallback(consistency.get("fallback", defaults.fallback.value)),
            shutdown_timeout=_duration(consistency.get("shutdownTimeout"))
            or defaults.shutdown_timeout,
            hard_power_off=bool(consistency.get("hardPowerOff", False)),
            pre_hooks=tuple(hooks.get("pre", ())),
            post_hooks=tuple(hooks.get("post", ())),
        ),
        snapshots=SnapshotSpec(_keep(snapshots["keep"]), _duration(snapshots.get("maxAge")))
        if snapshots is not None else None,
        exports=ExportSpec(exports["target"], _keep(exports["keep"]),
                           _verify_every(exports.get("verify")))
        if exports is not None else None,
        description=meta.get("description", ""),
        labels=dict(meta.get("labels", {})),
        on_policy_removal=spec.get("onPolicyRemoval", "retain"),
        source=SourceLocation(doc.path, *doc.position(())),
    )

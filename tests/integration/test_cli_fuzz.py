"""The real CLI against random arguments and random files: never a traceback (issue 9).

Arguments are drawn from the real option set (the argparse parsers are walked, so a new
option is fuzzed as soon as it exists), values by what each option takes; the files it
names — host config, policies, a saved plan, a state file, the state DB — are valid ones
(made by vmkeep itself against a simulator), mutated ones or garbage. Every run must end
with an exit code from the documented set and without a traceback or an "internal error"
(a bug) line. The vCenter is a simulator of this test's own (2 VMs); Git repositories are
local; nothing else is reached, and no drawn path leaves the example's own directory.

`VMKEEP_FUZZ_EXAMPLES` (default 500) sets the in-process examples; a few more are run as
real processes of the installed `vmkeep` (`VMKEEP_FUZZ_PROCESS_EXAMPLES`, default 4).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.adapters.repository import Repository
from reconciler.cli import build_parser, main

from .conftest import Simulator

#: Exit codes documented in README.md ("Exit codes"); 130 needs a Ctrl-C.
DOCUMENTED = {0, 1, 2, 3}
EXAMPLES = int(os.environ.get("VMKEEP_FUZZ_EXAMPLES", "500"))
PROCESS_EXAMPLES = int(os.environ.get("VMKEEP_FUZZ_PROCESS_EXAMPLES", "4"))
NOW = "2026-11-25T01:30:00Z"

POLICY = textwrap.dedent("""\
    apiVersion: vmkeep/v1
    kind: BackupPolicy
    metadata:
      name: gold
      description: fuzzed
    spec:
      vcenter: sim
      selector:
        include:
          names: ["*"]
      schedule:
        cron: "0 1 * * *"
        timezone: UTC
      consistency:
        mode: crash
      snapshots:
        keep: {last: 1}
    """)


#: Applied once by the seeds, so that the target holds restore points to verify and restore.
EXPORTS = POLICY.replace("name: gold", "name: silver").replace(
    "snapshots:\n    keep: {last: 1}", "exports:\n    target: local\n    keep: {last: 1}")


def config_text(sim: Simulator, state: str = "state.db") -> str:
    return textwrap.dedent(f"""\
        vcenters:
          sim:
            url: "{sim.url}"
            username: {sim.username}
            passwordEnv: VMKEEP_SIM_PASSWORD
            caFile: "{sim.ca_file}"
        targets:
          local: {{type: directory, path: target}}
        state: {state}
        limits: {{maxDeletesPerRun: 5}}
        """)


# --------------------------------------------------------------------------- the parsers


@dataclass(frozen=True)
class Option:
    flags: tuple[str, ...]  # () for a positional argument
    metavar: str
    takes_value: bool
    required: bool
    choices: tuple[str, ...]
    integer: bool
    many: bool  # nargs "*"


def commands() -> dict[tuple[str, ...], list[Option]]:
    """Every (sub)command of the real parser and its options, `-h` left out."""
    found: dict[tuple[str, ...], list[Option]] = {}

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        options: list[Option] = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))
            elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
                options.append(Option(
                    tuple(action.option_strings),
                    str(action.metavar or action.dest).upper(),
                    action.nargs != 0,
                    bool(action.required) and bool(action.option_strings),
                    tuple(str(c) for c in action.choices or ()),
                    action.type is int,
                    action.nargs == "*",
                ))
        if path and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            found[path] = options

    walk(build_parser(), ())
    return found


#: Commands that serve until stopped (a FUSE mount, an engine worker): a drawn empty
#: directory would start one that never ends. Their argument errors are their own tests'.
#: (`run` is fuzzed with `--once`.)
SERVING = {("mount",), ("worker",)}
COMMANDS = {path: options for path, options in commands().items() if path not in SERVING}

# --------------------------------------------------------------------------- values

TIMES = st.sampled_from([
    NOW, "2026-11-25T01:30:00+14:00", "0001-01-01T00:00:00+14:00", "9999-12-31T23:00:00Z",
    "1969-12-31T23:59:59Z", "2026-11-25", "2026-11-25T01:30:00", "now", "", "2026-13-45T99:00Z",
])
#: Random text; never a `/`, so that no drawn path leaves the example's directory (the
#: tests run as root: an absolute path could be anywhere on the machine).
JUNK = st.text(st.characters(codec="utf-8"), max_size=12).map(lambda t: t.replace("/", "_"))
DURATIONS = st.sampled_from(["0", "30s", "5m", "1h", "1d", "1mo", "-1m", "0.01s", "1e9d", "x"])
#: The restore points the seeds exported (filled in by the `seeds` fixture).
POINTS: list[str] = []
#: Paths prepared in each example's directory (see `Workspace`), and some that are not files.
PATHS = st.sampled_from([
    "vmkeep.yaml", "other.yaml", "policies", "policies/gold.yaml", "plan.json", "state.json",
    "state.db", "target", "missing/nowhere", "a-directory", "restored/new", "",
])


def value_for(option: Option) -> st.SearchStrategy[str]:
    name = option.metavar
    if option.choices:
        return st.one_of(*[st.sampled_from(option.choices)] * 4, JUNK)
    if option.integer:
        return st.one_of(st.integers(-3, 10).map(str), st.integers().map(str), JUNK)
    if name == "ISO":
        return TIMES
    if name == "DURATION":
        return DURATIONS
    if name == "URL|PATH":  # local repositories only: nothing is fetched from elsewhere
        return st.sampled_from(["repo", "missing-repo", "a-directory", "policies"])
    if name in ("REV", "SUBDIR"):
        return st.one_of(st.sampled_from(["HEAD", "main", "HEAD~1", "", "policies", "-x"]), JUNK)
    if name in ("NAME",):
        return st.one_of(st.sampled_from(["sim", "local", "other", "disk-0"]), JUNK)
    if name == "ID":
        return st.one_of(st.sampled_from(["gold/x/20261125T010000Z", "a/b/c", "../x"]),
                         st.sampled_from(POINTS), st.sampled_from(POINTS), JUNK)
    if name in ("FILE", "PATH", "DIR", "PLAN.JSON", "FORMAT"):
        return st.one_of(*[PATHS] * 4, JUNK)
    return st.one_of(PATHS, JUNK)


@st.composite
def argument_lists(draw: st.DrawFn) -> list[str]:
    path = draw(st.sampled_from(sorted(COMMANDS)))
    argv = list(path)
    options = COMMANDS[path]
    chosen = draw(st.lists(st.sampled_from(options), max_size=5)) if options else []
    required = [o for o in options if o.required and draw(st.integers(0, 9))]
    for option in [*required, *chosen]:
        flag = [draw(st.sampled_from(option.flags))] if option.flags else []
        if not option.takes_value:
            argv += flag
        elif option.many:
            argv += flag + draw(st.lists(value_for(option), max_size=2))
        else:
            argv += [*flag, draw(value_for(option))]
    if draw(st.integers(0, 19)) == 0:  # now and then something no parser knows
        argv.insert(draw(st.integers(0, len(argv))), draw(st.one_of(
            st.sampled_from(["--nope", "-x", "--", "--now=", "--config"]), JUNK)))
    if path == ("apply",) and draw(st.integers(0, 9)) < 7:
        argv.append("--auto-approve")  # else it refuses at once: there is no terminal
    if path == ("run",) and "--once" not in argv:
        argv.append("--once")  # the loop itself never ends: its ticks are tested elsewhere
    return argv


# --------------------------------------------------------------------------- files


def mutate_json(draw: st.DrawFn, document: Any) -> Any:
    """`document` with one value somewhere in it replaced by a random one."""
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), JUNK, TIMES,
                     st.just([]), st.just({}), st.just([[[[[]]]]]))
    if isinstance(document, str) and re.match(r"\d{4}-\d\d-\d\dT", document):
        return draw(st.one_of(TIMES, TIMES, leaf))  # a time: most likely another time
    if not isinstance(document, dict | list) or not document or draw(st.integers(0, 3)) == 0:
        return draw(leaf)
    copy: Any = dict(document) if isinstance(document, dict) else list(document)
    key = draw(st.sampled_from(sorted(copy) if isinstance(copy, dict) else range(len(copy))))
    if isinstance(copy, dict) and draw(st.integers(0, 5)) == 0:
        del copy[key]
    else:
        copy[key] = mutate_json(draw, copy[key])
    return copy


def mutate_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        cut = draw(st.integers(0, 4))
        insert = draw(st.sampled_from([b":", b" ", b"\n", b"[", b"{", b"'", b"\xff", b"- ",
                                       b"&a", b"*a", b"!!python/object:os.system ", b"\t",
                                       b"9999", b"-1", b"@"]))
        data = data[:at] + insert + data[at + cut:]
    return data


@dataclass
class Seeds:
    """Valid files, made once by vmkeep itself against the simulator."""

    sim: Simulator
    plan: Any
    state: Any
    root: Path


@st.composite
def file_sets(draw: st.DrawFn, seeds: Seeds) -> dict[str, bytes]:
    def pick(valid: bytes, *, as_json: Any = None, intact: int = 4) -> bytes:
        how = draw(st.integers(0, 9))
        if how < intact:
            return valid
        if how < 7 and as_json is not None:
            return json.dumps(mutate_json(draw, as_json)).encode()
        if how < 9:
            return mutate_bytes(draw, valid)
        return draw(st.binary(max_size=64))

    state_path = draw(st.sampled_from(["state.db"] * 6 + ["a-directory", "plan.json",
                                                          "missing/deeper/state.db"]))
    return {
        "vmkeep.yaml": pick(config_text(seeds.sim, state_path).encode(), intact=7),
        "other.yaml": pick(config_text(seeds.sim).encode()),
        "policies/gold.yaml": pick(POLICY.encode(), intact=7),
        "plan.json": pick(json.dumps(seeds.plan).encode(), as_json=seeds.plan),
        "state.json": pick(json.dumps(seeds.state).encode(), as_json=seeds.state),
    }


class Workspace:
    """One example's directory: its files written, the shared target and state DB linked."""

    def __init__(self, root: Path, seeds: Seeds, files: dict[str, bytes]) -> None:
        self.dir = root
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        (root / "a-directory").mkdir()
        (root / "target").symlink_to(seeds.root / "target")
        (root / "repo").symlink_to(seeds.root / "repo")


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def check(outcome: Outcome, argv: list[str]) -> None:
    text = outcome.out + outcome.err
    assert "Traceback (most recent call last)" not in text, (argv, text)
    assert "internal error" not in outcome.err, (argv, outcome.err)
    assert outcome.code in DOCUMENTED, (argv, outcome.code, outcome.err)


# --------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def seeds(vcsim_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeds]:
    from .conftest import start_simulator

    root = tmp_path_factory.mktemp("fuzz-seeds")
    sim = start_simulator(root / "sim", vms=2)
    os.environ["VMKEEP_SIM_PASSWORD"] = sim.password
    try:
        (root / "policies").mkdir()
        (root / "policies" / "gold.yaml").write_text(POLICY)
        (root / "vmkeep.yaml").write_text(config_text(sim))
        Repository.open(root / "target", create=True).close()
        git = ["git", "-C", str(root / "repo"), "-c", "user.name=t", "-c", "user.email=t@t"]
        (root / "repo").mkdir()
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
        (root / "repo" / "gold.yaml").write_text(POLICY)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "gold"], check=True)
        base = ["--config", str(root / "vmkeep.yaml")]
        err = io.StringIO()
        with redirect_stdout(io.StringIO()), redirect_stderr(err):
            (root / "exports").mkdir()
            (root / "exports" / "silver.yaml").write_text(EXPORTS)
            assert main(["apply", *base, "--policies", str(root / "exports"), "--now", NOW,
                         "--auto-approve"]) == 0, err.getvalue()
            made = main(["plan", *base, "--policies", str(root / "policies"), "--now", NOW,
                         "--out", str(root / "plan.json")])
            assert made in (0, 2), err.getvalue()
            assert main(["state", "export", *base, "--now", NOW, "-o",
                         str(root / "state.json")]) == 0, err.getvalue()
        with Repository.open(root / "target", create=False) as repo:
            POINTS[:] = [point.id for point in repo.points()]
        assert POINTS
        yield Seeds(sim, json.loads((root / "plan.json").read_text()),
                    json.loads((root / "state.json").read_text()), root)
    finally:
        sim.stop()


@pytest.mark.vcsim
def test_random_arguments_and_files_never_give_a_traceback(
    seeds: Seeds, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMKEEP_SIM_PASSWORD", seeds.sim.password)
    monkeypatch.setenv("VMKEEP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("VMKEEP_CONFIG", raising=False)
    counter = iter(range(10**9))

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(argv=argument_lists(), files=file_sets(seeds))
    def one(argv: list[str], files: dict[str, bytes]) -> None:
        work = tmp_path / f"example-{next(counter)}"
        work.mkdir()
        Workspace(work, seeds, files)
        monkeypatch.chdir(work)
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(argv)
        if os.environ.get("VMKEEP_FUZZ_LOG"):  # what the examples did, to tune the strategies
            with open(os.environ["VMKEEP_FUZZ_LOG"], "a", encoding="utf-8") as log:
                log.write(f"{' '.join(argv)!r} {code} {err.getvalue().strip()[-150:]!r}\n")
        check(Outcome(code, out.getvalue(), err.getvalue()), argv)

    one()


@pytest.mark.vcsim
def test_random_arguments_in_a_real_process_never_give_a_traceback(
    seeds: Seeds, tmp_path: Path
) -> None:
    vmkeep = Path(sys.executable).with_name("vmkeep")
    env = {**os.environ, "VMKEEP_SIM_PASSWORD": seeds.sim.password,
           "VMKEEP_CACHE_DIR": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "xdg")}
    env.pop("VMKEEP_CONFIG", None)
    counter = iter(range(10**9))

    # a process's arguments are C strings: none can hold a NUL (exec refuses it before vmkeep
    # runs; the in-process test above still passes them)
    process_argv = argument_lists().map(lambda argv: [a.replace("\x00", "_") for a in argv])

    @settings(max_examples=PROCESS_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(argv=process_argv, files=file_sets(seeds))
    def one(argv: list[str], files: dict[str, bytes]) -> None:
        work = tmp_path / f"example-{next(counter)}"
        work.mkdir()
        Workspace(work, seeds, files)
        done = subprocess.run([str(vmkeep), *argv], cwd=work, env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
        check(Outcome(done.returncode, done.stdout, done.stderr), argv)

    one()

"""Benchmark: `vmkeep validate` on a generated policy repository (target: 1,000 files < 5 s).

    .venv/bin/python bench/validate.py                  # 1,000 files, 3 runs
    .venv/bin/python bench/validate.py --files 5000 --runs 1 --docs-per-file 2

Generates realistic policy files (every section used, a mix of consistency modes, keep
rules, selectors, windows and time zones; 23-34 lines each) in a temporary directory plus a
matching host config, then runs the real command (`python -m reconciler validate`, a fresh
process each time, so interpreter start and imports are included) and reports wall time,
CPU time and peak RSS per run. It also times the phases in-process (read files, YAML with
locations, schema, semantics) to show where the time goes. Figures are printed (and written
as JSON with --json). The exit status is 1 when the best run misses the target (5 s for the
standard 1,000 files; `--target SECONDS` for other sizes, 0 for none): the benchmark checks
its target, tests never assert timings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The target of the standard run (1,000 files, one document each), from the Policy issue.
TARGET_S = 5.0
STANDARD_FILES = 1000

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]
MODES = ["crash", "quiesce", "poweroff"]

HOST_CONFIG = """\
vcenters:
  prod: {url: https://vc.example.com, username: svc, passwordEnv: VC_PASSWORD}
  lab: {url: https://vc-lab.example.com, username: svc, passwordEnv: VC_LAB_PASSWORD}
targets:
  nas: {type: directory, path: /mnt/nas}
  offsite: {type: directory, path: /mnt/offsite}
hooks:
  flush: {command: [/usr/local/bin/flush], timeout: 2m}
  notify: {command: [/usr/bin/logger, vmkeep]}
"""


def policy(index: int, rng: random.Random) -> str:
    """One policy of 23 lines (crash mode, snapshots or exports, no options) to 34 (all)."""
    mode = MODES[index % 3]
    lines = [
        "# yaml-language-server: $schema=../schemas/policy.schema.json",
        "apiVersion: vmkeep/v1",
        "kind: BackupPolicy",
        "metadata:",
        f"  name: policy-{index:05d}",
        f'  description: "Generated policy number {index} for the validate benchmark."',
        f"  labels: {{team: team-{index % 17}, tier: {rng.choice(['gold', 'silver'])}}}",
        "spec:",
        f"  vcenter: {rng.choice(['prod', 'lab'])}",
        "  selector:",
        "    include:",
        f'      names: ["app{index}-*", "svc{index}-??"]',
        f'      folders: ["/DC{index % 4}/vm/team-{index % 17}"]',
    ]
    if rng.random() < 0.5:
        lines.append(f'      tags: ["backup/{rng.choice(["gold", "silver"])}"]')
    if rng.random() < 0.3:
        lines.append(f"      attributes: {{owner: team-{index % 17}}}")
    lines += [
        "    exclude:",
        '      names: ["*-test", "*-tmp"]',
        "  schedule:",
        f'    cron: "{rng.randrange(60)} {rng.randrange(24)} * * {rng.choice(["*", "1-5", "0"])}"',
        f"    timezone: {rng.choice(ZONES)}",
    ]
    if rng.random() < 0.5:
        lines.append('    window: {start: "22:00", end: "05:00"}')
    lines += ["  consistency:", f"    mode: {mode}"]
    if mode == "quiesce":
        lines.append(f"    fallback: {rng.choice(['crash', 'fail'])}")
    if mode == "poweroff":
        lines += ["    shutdownTimeout: 15m", "    hardPowerOff: false"]
    if rng.random() < 0.4:
        lines += ["    hooks:", "      pre: [flush]", "      post: [notify]"]
    if rng.random() < 0.8:
        lines += ["  snapshots:", f"    keep: {{last: {rng.randrange(1, 5)}, within: 2d}}",
                  "    maxAge: 72h"]
    if rng.random() < 0.7 or "  snapshots:" not in lines:
        lines += ["  exports:", f"    target: {rng.choice(['nas', 'offsite'])}",
                  "    keep: {daily: 7, weekly: 4, monthly: 12, yearly: -1, withinDaily: 1mo}"]
    return "\n".join(lines) + "\n"


def generate(root: Path, files: int, docs_per_file: int, seed: int) -> int:
    rng = random.Random(seed)
    count = 0
    for number in range(files):
        folder = root / "policies" / f"team-{number % 17:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        docs = [policy(count + d, rng) for d in range(docs_per_file)]
        count += docs_per_file
        (folder / f"policy-{number:05d}.yaml").write_text("---\n".join(docs))
    (root / "vmkeep.yaml").write_text(HOST_CONFIG)
    return count


def run_cli(root: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "reconciler", "validate", "--config",
               str(root / "vmkeep.yaml"), str(root / "policies")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"validate failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return {
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "max_rss_mib": after.ru_maxrss / 1024,
        "summary": done.stdout.strip().splitlines()[-1],  # type: ignore[dict-item]
    }


def phases(root: Path) -> dict[str, float]:
    """Where the time goes, measured in this process (imports excluded)."""
    from reconciler import documents, hostconfig, policies, schema_messages
    from reconciler.adapters.policydir import PolicyDirectory

    started = time.perf_counter()
    files = list(PolicyDirectory([root / "policies"]).files())
    read = time.perf_counter()
    loaded = [documents.load(f.data, f.path) for f in files]
    yaml_done = time.perf_counter()
    validator = policies._validator()
    for result in loaded:
        for doc in result.documents:
            schema_messages.schema_diagnostics(doc, validator)
    schema_done = time.perf_counter()
    config = hostconfig.parse((root / "vmkeep.yaml").read_bytes(), str(root / "vmkeep.yaml"))
    report = policies.check_policies(files, config)
    total = time.perf_counter()
    assert report.valid, report.diagnostics[:3]
    return {
        "read_s": read - started,
        "yaml_s": yaml_done - read,
        "schema_s": schema_done - yaml_done,
        "full_check_s": total - schema_done,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--docs-per-file", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--target", type=float, metavar="SECONDS",
                        help=f"exit 1 when the best wall time is above this (default: "
                        f"{TARGET_S:g} for {STANDARD_FILES} files of one document, else none; "
                        "0: none)")
    args = parser.parse_args()
    target = args.target
    if target is None and args.files == STANDARD_FILES and args.docs_per_file == 1:
        target = TARGET_S
    with tempfile.TemporaryDirectory(prefix="vmkeep-bench-validate-") as tmp:
        root = Path(tmp)
        policies_count = generate(root, args.files, args.docs_per_file, args.seed)
        size = sum(p.stat().st_size for p in (root / "policies").rglob("*.yaml"))
        print(f"{args.files} files, {policies_count} policies, {size / 1024:.0f} KiB, "
              f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
        runs = [run_cli(root) for _ in range(args.runs)]
        for number, figures in enumerate(runs, 1):
            print(f"run {number}: wall {figures['wall_s']:.2f} s, cpu {figures['cpu_s']:.2f} s,"
                  f" max RSS {figures['max_rss_mib']:.0f} MiB  ({figures['summary']})")
        split = phases(root)
        print("in-process: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in split.items()))
        best = min(r["wall_s"] for r in runs)
        goal = f"target < {target:g} s" if target else "no target"
        print(f"best wall time: {best:.2f} s for {args.files} files ({goal})")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"files": args.files, "policies": policies_count, "bytes": size,
                 "runs": runs, "phases": split, "target_s": target}, indent=2))
    if target and best > target:
        print(f"FAILED: best wall time {best:.2f} s is above the target of {target:g} s",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`vmkeep restore … --vcenter NAME`: a restore point back into vCenter as a VM.

    vmkeep restore (--point ID | --vm NAME|UUID [--latest | --at ISO]) --vcenter NAME
        [--name NEW] [--datastore DS] [--folder PATH] [--host H | --cluster C]
        [--resource-pool RP] [--network OLD=NEW]... [--power-on] [--replace] [--revert]
        [--plan] [--yes] [--now ISO] [-o text|json]

The shell around `reconciler.vcenter_restore`: it finds the point, reads its saved
configuration and checks its disks, opens the destination vCenter and the state DB, shows
progress, and prints the plan or the report. Exit 0 when restored (or already restored, or
`--plan` says it could proceed), 1 when refused or failed — one line saying why.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import uuid
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from reconciler import wiring
from reconciler.cli.common import parse_now
from reconciler.cli.selection import open_point_target, resolve_point
from reconciler.errors import CorruptionError, RepositoryError, UsageError
from reconciler.model import PointKind
from reconciler.points import Point
from reconciler.restore_plan import RestorePlan, RestoreRequest
from reconciler.vcenter_restore import (
    DiskSource,
    RestoreOutcome,
    RestoreRefused,
    carry_out,
    clean_leftovers,
    prepare,
)
from reconciler.vmconfig import CONFIG_FILE, VMConfig

if TYPE_CHECKING:
    from reconciler.adapters.repository import Repository
    from reconciler.adapters.vsphere import VSphereRestore

__all__ = ["add_arguments", "run"]

MiB = 1 << 20
#: Options that only a restore into vCenter takes.
VCENTER_ONLY = ("name", "datastore", "folder", "host", "cluster", "resource_pool", "networks",
                "power_on", "replace", "revert", "plan", "yes")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "into vCenter", "restore the point as a VM (docs/restore.md); without --vcenter, "
        "--to DIR writes it into a directory")
    group.add_argument("--vcenter", metavar="NAME", help="the vCenter to restore into")
    group.add_argument("--name", metavar="NEW", help="the VM's name (default: the original)")
    group.add_argument("--datastore", metavar="DS",
                       help="datastore for the VM's files and disks (default: the original)")
    group.add_argument("--folder", metavar="PATH",
                       help="VM folder, as an inventory path (/DC0/vm/restored)")
    place = group.add_mutually_exclusive_group()
    place.add_argument("--host", metavar="H", help="the host to run the VM on")
    place.add_argument("--cluster", metavar="C", help="the cluster to run the VM in")
    group.add_argument("--resource-pool", metavar="RP", help="resource pool (by name)")
    group.add_argument("--network", metavar="OLD=NEW", action="append", default=[],
                       dest="networks", help="connect NICs on network OLD to NEW; repeatable")
    group.add_argument("--power-on", action="store_true", help="power the VM on at the end")
    group.add_argument("--replace", action="store_true",
                       help="power off a VM with the same name and rename it aside "
                       "(<name>.replaced-<UTC time>); it is never deleted")
    group.add_argument("--revert", action="store_true",
                       help="snapshot points: revert the VM in place (needs --yes)")
    group.add_argument("--plan", action="store_true",
                       help="show what would happen and change nothing (exit 0: could "
                       "proceed, 1: would be refused)")
    group.add_argument("--yes", action="store_true", help="confirm a --revert")
    group.add_argument("--now", metavar="ISO",
                       help="the time to use for the name of a replaced VM (default: now)")


def check_options(args: argparse.Namespace) -> None:
    """Refuse vCenter options without --vcenter (a restore to a directory)."""
    if args.vcenter is not None:
        if args.to is not None:
            raise UsageError("give either --to DIR or --vcenter NAME, not both")
        if args.disk:
            raise UsageError("--disk restores single disks to a directory (--to DIR); a "
                             "restore into vCenter brings the whole VM back")
        return
    given = ["--network" if o == "networks" else f"--{o.replace('_', '-')}"
             for o in VCENTER_ONLY if getattr(args, o, None)]
    if given:
        raise UsageError(f"{given[0]} is for a restore into vCenter: add --vcenter NAME")


def _networks(values: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise UsageError(f"--network {value!r}: write it as OLD=NEW (port group names)")
        mapping[old.strip()] = new.strip()
    return mapping


def run(args: argparse.Namespace) -> int:
    config = wiring.load_host_config(args.config)
    if args.vcenter not in config.vcenters:
        listed = ", ".join(sorted(config.vcenters)) or "none configured"
        raise UsageError(f"no vCenter {args.vcenter!r} in {config.path} (vCenters: {listed})")
    networks = _networks(args.networks)
    now = parse_now(args.now)
    # a snapshot point can only be restored in its own vCenter: only that one is asked
    point = resolve_point(args, kind=PointKind.SNAPSHOT if args.revert else None,
                          config=config, vcenters=[args.vcenter])
    request = RestoreRequest(
        point=point, vcenter=args.vcenter, name=args.name, datastore=args.datastore,
        folder=args.folder, host=args.host, cluster=args.cluster,
        resource_pool=args.resource_pool, networks=networks, power_on=args.power_on,
        replace=args.replace, revert=args.revert)
    with ExitStack() as stack:
        clients: dict[str, VSphereRestore] = {}

        def target_for(name: str) -> VSphereRestore | None:
            if name not in config.vcenters:
                return None
            if name not in clients:
                vc = config.vcenters[name]
                client = stack.enter_context(
                    wiring.vsphere_client(vc, wiring.resolve_password(vc)))
                clients[name] = wiring.vsphere_restore(client)
            return clients[name]

        target = target_for(args.vcenter)
        assert target is not None
        repo: Repository | None = None
        if point.kind is PointKind.EXPORT:
            repo = stack.enter_context(open_point_target(config, point))
        vm_config, disks, data, problems = _point_contents(point, repo, target_for)
        journal = None
        if not args.plan:
            from reconciler.lease import holder_is_dead

            journal = stack.enter_context(wiring.open_journal(config.state))
            for note in clean_leftovers(journal, target_for, holder_is_dead):
                print(f"vmkeep: repaired: {note}", file=sys.stderr)
        token = uuid.uuid4().hex[:8]
        plan = prepare(request, target, vm_config, now=now, token=token, data_bytes=data,
                       point_problems=problems)
        if args.plan:
            _print_plan(plan, args.output)
            return 0 if plan.proceeds else 1
        if not plan.proceeds:
            raise RestoreRefused(f"restore of {point.id} refused: " + "; ".join(plan.refusals))
        if plan.mode == "revert" and not args.yes and args.output == "text":
            print("\n".join(plan.lines()))
        progress = _Progress(args.output == "text")
        assert journal is not None
        outcome = carry_out(
            plan, request, target, journal, config=vm_config, disks=disks,
            run_id=f"restore-{time.strftime('%Y%m%dT%H%M%S')}-{token}",
            holder=f"{socket.gethostname()}/{os.getpid()}/restore-{token}",
            progress=progress, confirmed=args.yes)
    _print_outcome(outcome, args.output)
    return 0


def _point_contents(point: Point, repo: Repository | None, target_for: Any
                    ) -> tuple[VMConfig | None, list[DiskSource], dict[str, int], list[str]]:
    """The saved configuration, the disks as sources, their data bytes, and what is wrong
    with the point (missing disks or chunks, a damaged chunk table)."""
    if repo is None:  # a snapshot: the VM itself holds the configuration
        target = target_for(point.vcenter)
        if target is None:
            return None, [], {}, [f"vCenter {point.vcenter!r} of the snapshot point is not in "
                                  "the host config"]
        vm = wiring.vsphere_operations(target.client).find_vm(point.vm.instance_uuid)
        return (target.vm_config(vm) if vm is not None else None), [], {}, []
    manifest = repo.manifest(point.id)
    problems: list[str] = []
    config: VMConfig | None = None
    if any(f.name == CONFIG_FILE for f in manifest.files):
        config = VMConfig.decode(repo.read_file(point.id, CONFIG_FILE),
                                 f"restore point {point.id} {CONFIG_FILE}")
    stored = {d.name: d for d in manifest.disks}
    disks: list[DiskSource] = []
    data: dict[str, int] = {}
    for disk in (config.disks if config else ()):
        record = stored.get(disk.name)
        if record is None:
            problems.append(f"restore point {point.id} is incomplete: it holds no data for "
                            f"{disk.name}")
            continue
        try:
            reader = repo.open_disk(point.id, disk.name)
        except (CorruptionError, RepositoryError) as exc:
            problems.append(f"restore point {point.id} is damaged: {exc}")
            continue
        missing = wiring.missing_chunks(repo, reader.ids)
        if missing:
            problems.append(f"restore point {point.id} is damaged: {disk.name} lacks "
                            f"{missing} chunk(s) (`vmkeep verify --point {point.id}`)")
        disks.append(DiskSource(disk.name, record.size, reader.blocks))
        data[disk.name] = min(record.size, (record.chunks - record.zero_chunks)
                              * manifest.chunk_size)
    return config, disks, data, problems


class _Progress:
    """Per disk on a TTY: bytes, rate and ETA on one line; otherwise a line when done."""

    def __init__(self, text: bool) -> None:
        self.text = text
        self.tty = text and sys.stderr.isatty()
        self.started: dict[str, float] = {}

    def __call__(self, name: str, done: int, total: int) -> None:
        if not self.text:
            return
        now = time.monotonic()
        began = self.started.setdefault(name, now)
        elapsed = max(now - began, 1e-6)
        rate = done / elapsed
        if self.tty:
            eta = (total - done) / rate if rate > 0 else 0.0
            print(f"\r  {name}: {done / MiB:.1f}/{total / MiB:.1f} MiB, {rate / MiB:.0f} MiB/s, "
                  f"ETA {eta:.0f} s   ", end="" if done < total else "\n", file=sys.stderr,
                  flush=True)
        elif done >= total:
            print(f"  {name}: {total / MiB:.1f} MiB in {elapsed:.1f} s", file=sys.stderr)


def _print_plan(plan: RestorePlan, output: str) -> None:
    if output == "json":
        print(json.dumps({"plan": plan.to_json()}, indent=2))
    else:
        print("\n".join(plan.lines()))


def _print_outcome(outcome: RestoreOutcome, output: str) -> None:
    if output == "json":
        print(json.dumps(outcome.to_json(), indent=2))
        return
    vm = outcome.vm
    plan = outcome.plan
    if outcome.status == "already-restored":
        print(f"VM {vm.name!r} ({vm.moref}) was already restored from {plan.point_id}; "
              "nothing to do" if vm else "already restored; nothing to do")
        return
    if outcome.status == "reverted":
        print(f"reverted VM {vm.name!r} ({vm.moref}) to {plan.point_id}" if vm else "reverted")
        return
    assert vm is not None
    print(f"restored {plan.point_id} as VM {vm.name!r} ({vm.moref}, instance UUID "
          f"{vm.instance_uuid}) in vCenter {plan.vcenter} in {outcome.seconds:.1f} s")
    if outcome.replaced:
        print(f"  the VM that had the name is now {outcome.replaced!r} (powered off)")
    if plan.power_on:
        print("  powered on")

"""`vmkeep inventory`: list the VMs of the configured vCenters, as vmkeep sees them.

    vmkeep inventory [--config FILE] [--vcenter NAME] [-o text|json]

Text output is one table per vCenter. JSON output (stable; `formatVersion` changes when it
does) is::

    {"formatVersion": 1,
     "capturedAt": "2026-01-31T12:00:00Z",
     "vcenters": {
       "<name>": {"url": "...", "tagsAvailable": true, "error": null,
                  "vms": [VM, ...]}}}

where each VM has the shape of `vmkeep state export` (`reconciler.observed`): name,
instanceUuid, moref, folder, tags, attributes, powerState, toolsRunning, toolsStatus, biosUuid,
host, changeTracking, disks [{key, label, file, capacityBytes, changeId}] and snapshots
[{id, name, description, createdAt, quiesced, parentId}] (the tree flattened, parents first).
A vCenter that could not be read has `"error": "<message>"` and no VMs; the exit code is
then 1, else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from reconciler import observed, wiring
from reconciler.cli import common
from reconciler.errors import UsageError, VmkeepError
from reconciler.model import Inventory, ObservedState, VCenterConfig

__all__ = ["FORMAT_VERSION", "register", "render_text", "run", "to_json"]

FORMAT_VERSION = 1


def register(sub: Any, common_parser: argparse.ArgumentParser) -> None:
    parser = sub.add_parser(
        "inventory",
        parents=[common_parser],
        help="list the VMs of the configured vCenters (disks, snapshots, tags)",
        description="Read every VM of the configured vCenters in one paged PropertyCollector "
        "traversal and print it: folder, power and Tools state, disks, snapshot trees, custom "
        "attributes and tags.",
    )
    parser.add_argument("--vcenter", metavar="NAME", action="append",
                        help="only this vCenter of the host config (repeatable)")
    common.add_output_argument(parser, ("text", "json"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = wiring.load_host_config(args.config)
    selected = _select(config.vcenters, args.vcenter)
    results: list[tuple[VCenterConfig, Inventory | None, str | None]] = []
    for vc in selected:
        try:
            password = wiring.resolve_password(vc)
            with wiring.vsphere_client(vc, password) as client:
                results.append((vc, client.inventory(), None))
        except VmkeepError as exc:
            results.append((vc, None, str(exc)))
    document = to_json(results, datetime.now(UTC))
    if args.output == "json":
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(document))
    failed = [error for _, _, error in results if error]
    for error in failed:
        print(f"vmkeep: error: {error}", file=sys.stderr)
    return 1 if failed else 0


def _select(vcenters: Any, names: Sequence[str] | None) -> list[VCenterConfig]:
    if not vcenters:
        raise UsageError("the host config has no vCenters: add one under `vcenters:`")
    if not names:
        return [vcenters[name] for name in sorted(vcenters)]
    unknown = [n for n in names if n not in vcenters]
    if unknown:
        raise UsageError(
            f"no vCenter named {', '.join(map(repr, unknown))} in the host config "
            f"(known: {', '.join(sorted(vcenters))})"
        )
    return [vcenters[n] for n in dict.fromkeys(names)]


def to_json(
    results: Sequence[tuple[VCenterConfig, Inventory | None, str | None]],
    captured_at: datetime,
) -> dict[str, Any]:
    """The JSON document; the text view is rendered from it."""
    state = observed.state_to_json(
        ObservedState(
            captured_at=captured_at,
            vcenters={vc.name: inv.vms for vc, inv, _ in results if inv is not None},
            targets={},
        )
    )
    vcenters: dict[str, Any] = {}
    for vc, inv, error in results:
        vms = state["vcenters"][vc.name]["vms"] if inv is not None else []
        vcenters[vc.name] = {
            "url": vc.url,
            "tagsAvailable": bool(inv and inv.tags_available),
            "error": error,
            "vms": vms,
        }
    return {
        "formatVersion": FORMAT_VERSION,
        "capturedAt": state["capturedAt"],
        "vcenters": vcenters,
    }


COLUMNS = ("NAME", "FOLDER", "POWER", "TOOLS", "HOST", "DISKS", "SNAPSHOTS", "CBT", "LABELS")
POWER = {"poweredOn": "on", "poweredOff": "off", "suspended": "suspended"}


def _size(n: int) -> str:
    """1048576 → "1 MiB", 1610612736 → "1.5 GiB"."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _tools(vm: dict[str, Any]) -> str:
    if vm["toolsRunning"]:
        return "running"
    status = vm.get("toolsStatus", "")
    return "none" if status == "notInstalled" else "stopped" if status else "-"


def _row(vm: dict[str, Any]) -> tuple[str, ...]:
    capacity = sum(d["capacityBytes"] for d in vm["disks"])
    labels = [*(f"{k}={v}" for k, v in vm["attributes"].items()), *vm["tags"]]
    return (
        vm["name"],
        vm["folder"],
        POWER.get(vm["powerState"], vm["powerState"]),
        _tools(vm),
        vm["host"],
        f"{len(vm['disks'])} ({_size(capacity)})" if vm["disks"] else "0",
        str(len(vm["snapshots"])),
        "on" if vm["changeTracking"] else "-",
        ", ".join(labels) or "-",
    )


def render_text(document: dict[str, Any]) -> str:
    """One table per vCenter, then a blank line."""
    out: list[str] = []
    for name, vc in document["vcenters"].items():
        if vc["error"]:
            out.append(f"vCenter {name} ({vc['url']}): not read: {vc['error']}\n\n")
            continue
        tags = "tags read" if vc["tagsAvailable"] else "tags not available"
        count = len(vc["vms"])
        out.append(f"vCenter {name} ({vc['url']}): {count} VM{'s' * (count != 1)}, {tags}\n")
        rows = [COLUMNS, *(_row(vm) for vm in vc["vms"])]
        widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
        for row in rows:
            line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            out.append(line.rstrip() + "\n")
        out.append("\n")
    return "".join(out)

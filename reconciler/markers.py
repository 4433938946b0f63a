"""The ownership marker on snapshots vmkeep creates.

vmkeep only ever touches snapshots it made. It recognises them by a marker in two places:

* the snapshot **name** starts with ``vmkeep:`` and reads ``vmkeep:<policy>:<slot compact>``
  (for people browsing the vSphere client; informative only);
* the snapshot **description** is one JSON object (format version 1)::

      {"vmkeep": 1, "policy": "gold", "pointId": "gold/<instanceUuid>/20261125T010000Z",
       "slot": "2026-11-25T01:00:00Z", "kind": "point"}

  `kind` is ``point`` for a snapshot restore point and ``export-temp`` for the temporary
  snapshot an export reads from (removed after the export; a leftover one is cleaned up).

A snapshot is vmkeep's only when the name has the prefix *and* the description parses as a
marker of a known format version whose point id names that policy and slot. Anything else is
*foreign*: listed, never planned against.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

__all__ = [
    "FORMAT_VERSION",
    "PREFIX",
    "Marker",
    "MarkerKind",
    "format_description",
    "format_name",
    "parse_marker",
    "point_id",
]

PREFIX = "vmkeep:"
FORMAT_VERSION = 1


class MarkerKind(enum.StrEnum):
    POINT = "point"
    EXPORT_TEMP = "export-temp"


_KINDS = {kind.value: kind for kind in MarkerKind}


@dataclass(frozen=True)
class Marker:
    policy: str
    point_id: str
    slot: datetime
    kind: MarkerKind
    format_version: int = FORMAT_VERSION

    @property
    def instance_uuid(self) -> str:
        return self.point_id.split("/")[1]


@lru_cache(maxsize=65536)
def _compact(slot: datetime) -> str:
    return slot.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


@lru_cache(maxsize=65536)
def _slot_of(text: str) -> tuple[datetime, str] | None:
    """A marker's slot text as (UTC instant, compact form); cached: slots repeat across VMs."""
    try:
        slot = datetime.fromisoformat(text)
    except ValueError:
        return None
    if slot.tzinfo is None:
        return None
    return slot.astimezone(UTC), _compact(slot)


def point_id(policy: str, instance_uuid: str, slot: datetime) -> str:
    """The deterministic restore point id: ``<policy>/<instanceUuid>/<slot UTC compact>``."""
    return f"{policy}/{instance_uuid}/{_compact(slot)}"


def format_name(marker: Marker) -> str:
    suffix = "" if marker.kind is MarkerKind.POINT else f":{marker.kind.value}"
    return f"{PREFIX}{marker.policy}:{_compact(marker.slot)}{suffix}"


def format_description(marker: Marker) -> str:
    return json.dumps(
        {
            "vmkeep": marker.format_version,
            "policy": marker.policy,
            "pointId": marker.point_id,
            "slot": marker.slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "kind": marker.kind.value,
        },
        sort_keys=True,
        separators=(",", ":"),
    )


@lru_cache(maxsize=65536)
def _slot_of_compact(compact: str) -> tuple[datetime, str] | None:
    try:
        slot = datetime.strptime(compact, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return slot, slot.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fast_point(name: str, description: str, instance_uuid: str) -> Marker | None:
    """The common case without JSON parsing: a point marker exactly as vmkeep writes it.

    The description must equal, byte for byte, what `format_description` writes for the
    policy and slot in the name and the VM's instance UUID; anything else takes the full path.
    """
    policy, _, compact = name[len(PREFIX) :].rpartition(":")
    parsed = _slot_of_compact(compact) if policy else None
    if parsed is None:
        return None
    pid = f"{policy}/{instance_uuid}/{compact}"
    expected = (
        f'{{"kind":"point","pointId":"{pid}","policy":"{policy}",'
        f'"slot":"{parsed[1]}","vmkeep":{FORMAT_VERSION}}}'
    )
    if description != expected:
        return None
    return Marker(policy=policy, point_id=pid, slot=parsed[0], kind=MarkerKind.POINT)


def parse_marker(name: str, description: str, instance_uuid: str = "") -> Marker | None:
    """The marker of a snapshot, or None when the snapshot is foreign (never raises).

    `instance_uuid` (the VM's) enables a fast path for the markers vmkeep writes itself.
    """
    if not name.startswith(PREFIX):
        return None
    if instance_uuid:
        fast = _fast_point(name, description, instance_uuid)
        if fast is not None:
            return fast
    try:
        data = json.loads(description)
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or type(data.get("vmkeep")) is not int:
        return None
    if data["vmkeep"] != FORMAT_VERSION:
        return None
    policy, pid = data.get("policy"), data.get("pointId")
    slot_text, kind_text = data.get("slot"), data.get("kind")
    if (
        not (type(policy) is str and type(pid) is str and type(slot_text) is str and policy)
        or type(kind_text) is not str
    ):
        return None
    kind = _KINDS.get(kind_text)
    parsed = _slot_of(slot_text)
    if kind is None or parsed is None:
        return None
    slot, compact = parsed
    parts = pid.split("/")
    if len(parts) != 3 or parts[0] != policy or not parts[1] or parts[2] != compact:
        return None
    return Marker(policy=policy, point_id=pid, slot=slot, kind=kind)

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


def _compact(slot: datetime) -> str:
    return slot.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


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


def parse_marker(name: str, description: str) -> Marker | None:
    """The marker of a snapshot, or None when the snapshot is foreign (never raises)."""
    if not name.startswith(PREFIX):
        return None
    try:
        data = json.loads(description)
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or data.get("vmkeep") != FORMAT_VERSION:
        return None
    policy, pid, slot_text, kind_text = (
        data.get("policy"),
        data.get("pointId"),
        data.get("slot"),
        data.get("kind"),
    )
    if not all(isinstance(v, str) and v for v in (policy, pid, slot_text, kind_text)):
        return None
    assert isinstance(policy, str) and isinstance(pid, str)
    assert isinstance(slot_text, str) and isinstance(kind_text, str)
    try:
        kind = MarkerKind(kind_text)
        slot = datetime.fromisoformat(slot_text)
    except ValueError:
        return None
    if slot.tzinfo is None:
        return None
    parts = pid.split("/")
    if len(parts) != 3 or parts[0] != policy or not parts[1] or parts[2] != _compact(slot):
        return None
    return Marker(policy=policy, point_id=pid, slot=slot.astimezone(UTC), kind=kind)

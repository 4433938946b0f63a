"""The ownership marker on snapshots vmkeep creates.

vmkeep only ever touches snapshots it made. It recognises them by a marker in two places:

* the snapshot **name** starts with ``vmkeep:`` and reads ``vmkeep:<policy>:<slot compact>``
  (for people browsing the vSphere client; informative only);
* the snapshot **description** is one JSON object (format version 1)::

      {"vmkeep": 1, "policy": "gold", "pointId": "gold/<instanceUuid>/20261125T010000Z",
       "slot": "2026-11-25T01:00:00Z", "kind": "point"}

  `kind` is ``point`` for a snapshot restore point and ``export-temp`` for the temporary
  snapshot an export reads from (removed after the export; a leftover one is cleaned up).
  A temporary snapshot's marker also names the **installation** that made it
  (``"installation": "<id>"``, the random id kept in that installation's state DB): crash
  recovery removes only its own installation's temporaries and reports the others'.
  Markers written before the field existed have no installation (`Marker.installation` is
  None) and still parse; see `reconciler.recovery` for what recovery does with them.

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
    "parse_point",
    "parse_point_id",
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
    #: The installation that made the snapshot (temporaries); None in older markers.
    installation: str | None = None

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


def parse_point_id(text: str) -> tuple[str, str, datetime] | None:
    """The inverse of `point_id`: (policy, instanceUuid, slot), or None when `text` is not
    three parts of which the last is a compact UTC slot."""
    parts = text.split("/")
    if len(parts) != 3:
        return None
    try:
        slot = datetime.strptime(parts[2], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return parts[0], parts[1], slot


def format_name(marker: Marker) -> str:
    suffix = "" if marker.kind is MarkerKind.POINT else f":{marker.kind.value}"
    return f"{PREFIX}{marker.policy}:{_compact(marker.slot)}{suffix}"


def format_description(marker: Marker) -> str:
    body: dict[str, object] = {
        "vmkeep": marker.format_version,
        "policy": marker.policy,
        "pointId": marker.point_id,
        "slot": marker.slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kind": marker.kind.value,
    }
    if marker.installation:
        body["installation"] = marker.installation
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


@lru_cache(maxsize=65536)
def _point_name(name: str) -> tuple[str, str, datetime, str, str] | None:
    """What a point's name `vmkeep:<policy>:<slot compact>` implies, cached: names repeat on
    every VM of a policy. (policy, compact slot, slot, and the description vmkeep writes for
    it, split around the instance UUID), or None when the name is not of that form."""
    if not name.startswith(PREFIX):
        return None
    policy, _, compact = name[len(PREFIX) :].rpartition(":")
    if not policy:
        return None
    try:
        slot = datetime.strptime(compact, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    head = f'{{"kind":"point","pointId":"{policy}/'
    tail = (
        f'/{compact}","policy":"{policy}",'
        f'"slot":"{slot.strftime("%Y-%m-%dT%H:%M:%SZ")}","vmkeep":{FORMAT_VERSION}}}'
    )
    return policy, compact, slot, head, tail


def _fast_point(
    name: str, description: str, instance_uuid: str
) -> tuple[str, str, datetime] | None:
    """The common case without JSON parsing: a point marker exactly as vmkeep writes it.

    The description must equal, byte for byte, what `format_description` writes for the
    policy and slot in the name and the VM's instance UUID; anything else takes the full path.
    Returns (policy, point id, slot).
    """
    parts = _point_name(name)
    if parts is None:
        return None
    policy, compact, slot, head, tail = parts
    if description != f"{head}{instance_uuid}{tail}":
        return None
    return policy, f"{policy}/{instance_uuid}/{compact}", slot


def parse_point(
    name: str, description: str, instance_uuid: str
) -> tuple[str, str, datetime] | None:
    """(policy, point id, slot) of a point marker as vmkeep writes it on a snapshot of the VM
    `instance_uuid`, without building a `Marker` (the catalog reads hundreds of thousands).

    None means "not in that exact form": ask `parse_marker`, which also reads markers written
    differently and temporary-snapshot markers. A returned point id always names this VM.
    """
    if not instance_uuid or "/" in instance_uuid:
        return None
    found = _fast_point(name, description, instance_uuid)
    if found is None or "/" in found[0]:
        return None
    return found


def parse_marker(name: str, description: str, instance_uuid: str = "") -> Marker | None:
    """The marker of a snapshot, or None when the snapshot is foreign (never raises).

    `instance_uuid` (the VM's) enables a fast path for the markers vmkeep writes itself.
    """
    if not name.startswith(PREFIX):
        return None
    if instance_uuid:
        fast = _fast_point(name, description, instance_uuid)
        if fast is not None:
            return Marker(policy=fast[0], point_id=fast[1], slot=fast[2], kind=MarkerKind.POINT)
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
    installation = data.get("installation")
    if installation is not None and not (type(installation) is str and installation):
        return None
    slot, compact = parsed
    parts = pid.split("/")
    if len(parts) != 3 or parts[0] != policy or not parts[1] or parts[2] != compact:
        return None
    return Marker(policy=policy, point_id=pid, slot=slot, kind=kind, installation=installation)

"""On-disk format of the export repository: descriptor, layout, ids and the manifest codec.

Everything that decides what bytes land where lives here, so `docs/repository-format.md`
can be checked against one file. Layout of a repository directory::

    vmkeep-repository.json      descriptor (format version, chunk size, hash, compression)
    packs/<xx>/<pack>.pack      chunk data, many chunks per file; <xx> = first two hex digits
    index/<pack>.idx            index of one pack; rebuildable from the pack alone
    points/<quoted id>.json     committed manifests: one per restore point
    partial/<quoted id>.json    markers of exports in progress (or crashed)
    quarantine/<pack>-<chunk>   chunk copies that failed verification; never deduplicated against
    locks/writer                writer lock (flock) and locks/writer.json, its holder and lease
    tmp/                        files being written; renamed into place when complete
"""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3

from reconciler.errors import CorruptionError, RepositoryError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_COMPRESSION_LEVEL",
    "FORMAT_VERSION",
    "ID_SIZE",
    "TABLE_ENTRIES",
    "ZERO_ID",
    "Descriptor",
    "DiskRecord",
    "FileRecord",
    "Layout",
    "Manifest",
    "atomic_write",
    "chunk_id",
    "decode_manifest",
    "disk_digest",
    "encode_manifest",
    "fsync_dir",
    "new_pack_id",
]

FORMAT_VERSION = 1
DESCRIPTOR_NAME = "vmkeep-repository.json"
DEFAULT_CHUNK_SIZE = 64 * 1024
MIN_CHUNK_SIZE = 4 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024
ID_SIZE = 32
#: The id of an all-zero chunk: never stored, never hashed, read back as zeros.
ZERO_ID = bytes(ID_SIZE)
#: Chunk ids per table block (a disk's chunk list is stored as chunks of this many ids).
TABLE_ENTRIES = 2048
#: The zstd level of a repository created now (a repository's level is in its descriptor).
DEFAULT_COMPRESSION_LEVEL = 1
#: The level of a repository whose descriptor names none: created before the setting was.
LEGACY_COMPRESSION_LEVEL = 3
MAX_COMPRESSION_LEVEL = 22


def chunk_id(data: bytes | bytearray | memoryview) -> bytes:
    """The content address of a chunk: BLAKE3-256 of its uncompressed bytes."""
    return blake3.blake3(data).digest()


def new_pack_id() -> str:
    """Pack ids sort by creation time (nanoseconds, hex) with a random tail against clashes."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, tmp_dir: Path, *, sync_dir: bool = True) -> None:
    """Write `data` to a temporary file, fsync it, rename it over `path`, fsync the directory."""
    tmp = tmp_dir / f"{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


@dataclass(frozen=True)
class Descriptor:
    """The versioned format descriptor at the top of a repository."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    format: int = FORMAT_VERSION
    hash: str = "blake3-256"
    compression: str = "zstd"
    repository_id: str = ""
    compression_level: int = DEFAULT_COMPRESSION_LEVEL

    def to_json(self) -> bytes:
        body = {
            "kind": "vmkeep-repository",
            "format": self.format,
            "chunkSize": self.chunk_size,
            "hash": self.hash,
            "compression": self.compression,
            "compressionLevel": self.compression_level,
            "id": self.repository_id,
        }
        return json.dumps(body, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Descriptor:
        try:
            body = json.loads(data)
            if body.get("kind") != "vmkeep-repository":
                raise ValueError("not a vmkeep repository descriptor")
            desc = cls(
                chunk_size=int(body["chunkSize"]),
                format=int(body["format"]),
                hash=str(body["hash"]),
                compression=str(body["compression"]),
                repository_id=str(body.get("id", "")),
                compression_level=int(body.get("compressionLevel", LEGACY_COMPRESSION_LEVEL)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RepositoryError(f"{where}: unreadable repository descriptor ({exc})") from None
        if desc.format != FORMAT_VERSION:
            raise RepositoryError(
                f"{where}: repository format {desc.format} is not supported by this vmkeep "
                f"(it reads format {FORMAT_VERSION}); upgrade vmkeep"
            )
        validate_chunk_size(desc.chunk_size, where)
        validate_compression_level(desc.compression_level, where)
        return desc


def validate_compression_level(level: int, where: str) -> None:
    if not 1 <= level <= MAX_COMPRESSION_LEVEL:
        raise RepositoryError(
            f"{where}: zstd compression level {level} must be between 1 and "
            f"{MAX_COMPRESSION_LEVEL}"
        )


def validate_chunk_size(size: int, where: str) -> None:
    if not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE or size & (size - 1):
        raise RepositoryError(
            f"{where}: chunk size {size} must be a power of two between "
            f"{MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes"
        )


class Layout:
    """Paths inside one repository directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._durable: set[Path] = set()  # directories whose entry is known to be durable
        self.descriptor = root / DESCRIPTOR_NAME
        self.packs = root / "packs"
        self.index = root / "index"
        self.points = root / "points"
        self.partial = root / "partial"
        self.quarantine = root / "quarantine"
        self.locks = root / "locks"
        self.tmp = root / "tmp"

    def directories(self) -> tuple[Path, ...]:
        return (
            self.packs,
            self.index,
            self.points,
            self.partial,
            self.quarantine,
            self.locks,
            self.tmp,
        )

    def make_dir(self, path: Path) -> None:
        """Create `path` (and missing parents) and make its entry durable.

        A new directory's name lives in its parent: fsyncing the directory, or files inside
        it, does not persist that name, so after a power loss a pack renamed into a fresh
        `packs/<xx>/` could vanish with its directory while the manifest naming it survived.
        The parent is therefore fsynced after the mkdir — also when the directory already
        existed the first time this layout meets it, since its creator may have died before
        its own fsync. Concurrent callers may both fsync; nobody skips it before it is done.
        """
        if path in self._durable:
            return
        if not path.parent.is_dir():
            self.make_dir(path.parent)
        path.mkdir(exist_ok=True)
        fsync_dir(path.parent)
        self._durable.add(path)

    def pack(self, pack_id: str) -> Path:
        return self.packs / pack_id[:2] / f"{pack_id}.pack"

    def index_file(self, pack_id: str) -> Path:
        return self.index / f"{pack_id}.idx"

    def point(self, point_id: str) -> Path:
        return self.points / f"{quote_id(point_id)}.json"

    def partial_marker(self, point_id: str) -> Path:
        return self.partial / f"{quote_id(point_id)}.json"


def quote_id(point_id: str) -> str:
    """Point ids contain slashes; every byte outside [A-Za-z0-9_.-] is percent-encoded."""
    if not point_id or point_id in {".", ".."}:
        raise RepositoryError(f"invalid restore point id {point_id!r}")
    return urllib.parse.quote(point_id, safe="")


def unquote_id(name: str) -> str:
    return urllib.parse.unquote(name)


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class DiskRecord:
    """One disk of a restore point: its size, content digest and chunk-table blocks."""

    name: str
    size: int
    digest: str  # hex BLAKE3 over (size, chunk ids); equal contents give equal digests
    chunks: int
    zero_chunks: int
    tables: tuple[str, ...]  # hex ids of the table blocks, in order
    stored_bytes: int = 0  # bytes this export added to the repository for the disk
    read_bytes: int = 0  # bytes read from the source


@dataclass(frozen=True)
class FileRecord:
    """A small file of a restore point (.vmx, .nvram, description), stored as chunks."""

    name: str
    size: int
    digest: str  # hex BLAKE3 of the whole file
    chunks: tuple[str, ...]


@dataclass(frozen=True)
class Manifest:
    id: str
    policy: str
    vm_name: str
    vm_instance_uuid: str
    slot: datetime
    created_at: datetime
    chunk_size: int
    consistency: str = ""
    policy_revision: str | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    disks: tuple[DiskRecord, ...] = ()
    files: tuple[FileRecord, ...] = ()

    @property
    def size_bytes(self) -> int:
        return sum(d.size for d in self.disks) + sum(f.size for f in self.files)

    def disk(self, name: str) -> DiskRecord:
        for disk in self.disks:
            if disk.name == name:
                return disk
        raise RepositoryError(f"restore point {self.id!r} has no disk {name!r}")

    def file(self, name: str) -> FileRecord:
        for record in self.files:
            if record.name == name:
                return record
        raise RepositoryError(f"restore point {self.id!r} has no file {name!r}")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _manifest_body(m: Manifest) -> dict[str, Any]:
    return {
        "id": m.id,
        "policy": m.policy,
        "vm": {"name": m.vm_name, "instanceUuid": m.vm_instance_uuid},
        "slot": _iso(m.slot),
        "createdAt": _iso(m.created_at),
        "chunkSize": m.chunk_size,
        "consistency": m.consistency,
        "policyRevision": m.policy_revision,
        "timings": dict(m.timings),
        "metadata": dict(m.metadata),
        "disks": [
            {
                "name": d.name,
                "size": d.size,
                "digest": d.digest,
                "chunks": d.chunks,
                "zeroChunks": d.zero_chunks,
                "tables": list(d.tables),
                "storedBytes": d.stored_bytes,
                "readBytes": d.read_bytes,
            }
            for d in m.disks
        ],
        "files": [
            {"name": f.name, "size": f.size, "digest": f.digest, "chunks": list(f.chunks)}
            for f in m.files
        ],
    }


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def encode_manifest(m: Manifest) -> bytes:
    """JSON with the body's BLAKE3 alongside, so a damaged manifest is detected, not trusted."""
    body = _manifest_body(m)
    envelope = {
        "kind": "vmkeep-manifest",
        "format": FORMAT_VERSION,
        "manifest": body,
        "blake3": blake3.blake3(_canonical(body)).hexdigest(),
    }
    return json.dumps(envelope, indent=1, sort_keys=True).encode() + b"\n"


def decode_manifest(data: bytes, where: str) -> Manifest:
    try:
        envelope = json.loads(data)
        body = envelope["manifest"]
        if envelope.get("kind") != "vmkeep-manifest":
            raise ValueError("not a vmkeep manifest")
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptionError(f"{where}: unreadable manifest ({exc})") from None
    if blake3.blake3(_canonical(body)).hexdigest() != envelope.get("blake3"):
        raise CorruptionError(f"{where}: manifest checksum mismatch (the file is damaged)")
    try:
        return Manifest(
            id=body["id"],
            policy=body["policy"],
            vm_name=body["vm"]["name"],
            vm_instance_uuid=body["vm"]["instanceUuid"],
            slot=_parse_iso(body["slot"]),
            created_at=_parse_iso(body["createdAt"]),
            chunk_size=int(body["chunkSize"]),
            consistency=body.get("consistency", ""),
            policy_revision=body.get("policyRevision"),
            timings={k: float(v) for k, v in body.get("timings", {}).items()},
            metadata=body.get("metadata", {}),
            disks=tuple(
                DiskRecord(
                    name=d["name"],
                    size=int(d["size"]),
                    digest=d["digest"],
                    chunks=int(d["chunks"]),
                    zero_chunks=int(d["zeroChunks"]),
                    tables=tuple(d["tables"]),
                    stored_bytes=int(d.get("storedBytes", 0)),
                    read_bytes=int(d.get("readBytes", 0)),
                )
                for d in body["disks"]
            ),
            files=tuple(
                FileRecord(
                    name=f["name"],
                    size=int(f["size"]),
                    digest=f["digest"],
                    chunks=tuple(f["chunks"]),
                )
                for f in body["files"]
            ),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptionError(f"{where}: manifest is missing a field ({exc})") from None


def disk_digest(size: int, ids: Sequence[bytes]) -> str:
    """Whole-disk checksum: BLAKE3 over the size and every chunk id (zero chunks included).

    It is computed from chunk ids, so a changed-extent export that never reads unchanged
    regions yields the same digest as a full read of the same contents.
    """
    h = blake3.blake3(size.to_bytes(8, "little"))
    h.update(b"".join(ids))
    return h.hexdigest()

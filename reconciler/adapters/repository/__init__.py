"""The export repository: an incremental-forever store for VM disk images.

Disks are cut into fixed-size chunks addressed by their BLAKE3 hash, compressed with zstd
and stored once in pack files; a restore point is a manifest, committed last by atomic
rename. See `docs/repository-format.md` for the on-disk format.

    repo = Repository.open("/backups/target1")
    with repo.begin_point(point_id, policy, vm, slot) as w:
        w.add_disk("disk-2000", stream, size=n)
        w.add_file("vm.vmx", vmx)
        w.commit("crash", policy_revision="abc123")
    repo.open_disk(point_id, "disk-2000").read_into(out)
"""

from .format import DEFAULT_CHUNK_SIZE, DEFAULT_COMPRESSION_LEVEL, DiskRecord, FileRecord, Manifest
from .gc import GcReport
from .lock import Holder
from .reader import DiskReader
from .store import PartialExport, Repository
from .verification import ChunkDamage, PointDamage, VerifyReport
from .writer import DiskResult, PointWriter

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_COMPRESSION_LEVEL",
    "ChunkDamage",
    "DiskReader",
    "DiskRecord",
    "DiskResult",
    "FileRecord",
    "GcReport",
    "Holder",
    "Manifest",
    "PartialExport",
    "PointDamage",
    "PointWriter",
    "Repository",
    "VerifyReport",
]

"""Disk downloads through an NFC export lease: `ExportVm` for VMs that are powered off,
`VirtualMachineSnapshot.ExportSnapshot` for running VMs whose disks are not files the
datastore interface can read (vSAN, VVol) or when `transport: nfc` asks for it.

vCenter answers either call with an `HttpNfcLease`; once the lease is `ready`, its
`info.deviceUrl` lists one download URL per virtual disk, keyed by the disk's controller slot
(`/vm-42/ParaVirtualSCSIController0:0`). The URL's host may be `*`: the client puts in the
host it talks to. The lease must hear `HttpNfcLeaseProgress` within its `info.leaseTimeout`
(seconds; vCenter times an idle lease out, about five minutes) and ends with
`HttpNfcLeaseComplete`, or `HttpNfcLeaseAbort` on any failure: a held lease blocks power
operations and migration of the VM.

What a download serves differs: vCenter streams a **streamOptimized VMDK** (compressed
grains, no Range support); vmkeep's simulator serves the raw disk bytes by default. The first
sector tells them apart (`open_disk_download`): a VMDK is inflated on the fly
(`adapters.vmdk`), raw bytes are passed through. Either way the download is one sequential GET
(the changed-extent reader only ever seeks forward; skipped bytes are read and dropped), and a
failure mid-way fails the action, which is retried from the start.

This module is the part that needs no pyVmomi: picking a disk's URL, the download, and the
wrapper that keeps the lease alive while it is read and ends it on close. The SOAP calls come
in as callables from `reconciler.adapters.vsphere`.
"""

from __future__ import annotations

import http.client
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from reconciler.adapters.datastore import Connect, HttpFile, ZeroExtended
from reconciler.adapters.vmdk import SECTOR, StreamOptimizedReader, VmdkError, is_sparse_vmdk
from reconciler.errors import TransientError, VCenterError
from reconciler.ports import DiskStream, Lent, lend_from, read_into

__all__ = [
    "LeasedStream",
    "NfcDevice",
    "SequentialDownload",
    "Transported",
    "device_for",
    "download_file",
    "open_disk_download",
    "progress_interval",
]

log = logging.getLogger(__name__)

#: Seconds between lease progress reports while a download goes on (at most).
PROGRESS_EVERY = 30.0
#: The most bytes read from a download between two progress checks.
PIECE = 256 * 1024


def progress_interval(lease_timeout: int | None) -> float:
    """Seconds between progress reports for a lease that times out after `lease_timeout`
    seconds without one: half of it (at most `PROGRESS_EVERY`), so a slow read between two
    reports still lands in time."""
    if not lease_timeout or lease_timeout <= 0:
        return PROGRESS_EVERY
    return max(0.5, min(PROGRESS_EVERY, lease_timeout / 2))


@dataclass(frozen=True)
class NfcDevice:
    """One entry of a lease's `info.deviceUrl`."""

    key: str
    url: str
    size: int | None
    disk: bool


def device_for(devices: Sequence[NfcDevice], slot: str | None, ordinal: int,
               vcenter: str, what: str) -> NfcDevice:
    """The download of one disk: by its controller slot, else by its place among the disks
    (leases list disks in device order)."""
    disks = [d for d in devices if d.disk]
    if slot:
        for device in disks:
            if device.key.rsplit("/", 1)[-1] == slot:
                return device
    if slot is None and 0 <= ordinal < len(disks):
        return disks[ordinal]
    offered = ", ".join(d.key for d in disks) or "none"
    raise VCenterError(vcenter, f"{what}: the export lease offers no download for it "
                       f"(looked for {slot or f'disk #{ordinal}'}; offered: {offered})")


def download_file(device: NfcDevice, vcenter: str, host: str, port: int,
                  label: str) -> HttpFile:
    """Where to GET a device URL: a `*` host means the host the client talks to."""
    parts = urlsplit(device.url)
    if parts.scheme != "https":
        raise VCenterError(vcenter, f"{label}: refusing a download URL that is not HTTPS "
                           f"({parts.scheme}://…)")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    if parts.hostname in (None, "", "*"):
        return HttpFile(vcenter, host, port, path, label)
    return HttpFile(vcenter, parts.hostname, parts.port or 443, path, label)


class SequentialDownload:
    """One HTTPS GET of a file, read front to back; seeking forward reads and drops bytes."""

    def __init__(self, file: HttpFile, connect: Connect, cookie: str) -> None:
        self.file = file
        self._conn = connect(file.host, file.port)
        self._pos = 0
        try:
            self._conn.request("GET", file.request_path, headers={"Cookie": cookie})
            self._resp = self._conn.getresponse()
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise VCenterError(file.vcenter, f"{file}: TLS verification failed: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TransientError(file.vcenter, f"{file}: {type(exc).__name__}: {exc}") from exc
        if self._resp.status != 200:
            status, reason = self._resp.status, self._resp.reason
            self.close()
            error = TransientError if status >= 500 else VCenterError
            raise error(file.vcenter, f"{file}: HTTP {status} {reason}")
        length = self._resp.getheader("Content-Length")
        self.size = int(length) if length and length.isdigit() else -1

    def read(self, size: int = -1, /) -> bytes:
        try:
            data = self._resp.read(None if size is None or size < 0 else size)
        except (OSError, http.client.HTTPException) as exc:
            raise TransientError(self.file.vcenter, f"{self.file} at byte {self._pos}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0, /) -> int:
        if whence != 0 or offset < self._pos:
            raise VCenterError(self.file.vcenter, f"{self.file}: a download cannot seek back")
        while self._pos < offset and self.read(min(offset - self._pos, 1 << 20)):
            pass
        return self._pos

    def close(self) -> None:
        self._conn.close()


class _Prefixed:
    """A stream whose first bytes were already read (to look at them)."""

    def __init__(self, prefix: bytes, rest: SequentialDownload) -> None:
        self._prefix = prefix
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if self._prefix:
            n = len(self._prefix) if size is None or size < 0 else min(size, len(self._prefix))
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            return data
        return self._rest.read(size)


class _Raw:
    """Raw disk bytes of a known length behind a peeked prefix; forward seeks only."""

    def __init__(self, prefix: bytes, rest: SequentialDownload, size: int) -> None:
        self._stream = _Prefixed(prefix, rest)
        self._rest = rest
        self.size = size
        self._pos = 0

    def read(self, size: int = -1, /) -> bytes:
        want = self.size - self._pos if size is None or size < 0 else min(size,
                                                                           self.size - self._pos)
        data = self._stream.read(want) if want > 0 else b""
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0, /) -> int:
        target = {0: offset, 1: self._pos + offset, 2: self.size + offset}[whence]
        if target < self._pos:
            raise VCenterError(self._rest.file.vcenter,
                               f"{self._rest.file}: a download cannot seek back")
        while self._pos < target and self.read(min(target - self._pos, 1 << 20)):
            pass
        return self._pos

    def close(self) -> None:
        self._rest.close()


def open_disk_download(file: HttpFile, connect: Connect, cookie: str,
                       capacity: int) -> DiskStream:
    """A disk's NFC download as exactly `capacity` flat bytes: a streamOptimized VMDK is
    inflated, raw bytes are checked against the capacity (a shorter file reads as zeros to
    the end)."""
    download = SequentialDownload(file, connect, cookie)
    try:
        prefix = b""
        while len(prefix) < SECTOR and (data := download.read(SECTOR - len(prefix))):
            prefix += data
        if is_sparse_vmdk(prefix):
            try:
                vmdk = StreamOptimizedReader(_Prefixed(prefix, download), close=download.close)
            except VmdkError as exc:
                raise VCenterError(file.vcenter, f"{file}: {exc}") from None
            if vmdk.size != capacity:
                raise VCenterError(file.vcenter, f"{file}: the VMDK holds {vmdk.size} bytes, "
                                   f"the disk {capacity}")
            return _Checked(vmdk, file)
        if download.size > capacity:
            raise VCenterError(file.vcenter, f"{file}: {download.size} bytes, more than the "
                               f"disk's capacity of {capacity}")
        known = download.size if download.size >= 0 else capacity
        if known < capacity:
            log.warning("vCenter %r: %s holds %d of %d bytes; the rest reads as zeros",
                        file.vcenter, file, known, capacity)
        return ZeroExtended(_Raw(prefix, download, known), capacity)
    except BaseException:
        download.close()
        raise


class _Checked:
    """Turns format errors of a VMDK being read into `VCenterError`s naming the download."""

    def __init__(self, inner: StreamOptimizedReader, file: HttpFile) -> None:
        self._inner = inner
        self._file = file
        self.size = inner.size

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self._inner.read(size)
        except VmdkError as exc:
            raise VCenterError(self._file.vcenter, f"{self._file}: {exc}") from None

    def seek(self, offset: int, whence: int = 0, /) -> int:
        try:
            return self._inner.seek(offset, whence)
        except VmdkError as exc:
            raise VCenterError(self._file.vcenter, f"{self._file}: {exc}") from None

    def close(self) -> None:
        self._inner.close()


class LeasedStream:
    """A disk download that keeps its lease alive while it is read and ends it on close:
    `HttpNfcLeaseComplete` unless a read failed or the reader called `fail()` (its own work
    with the data failed), then `HttpNfcLeaseAbort`. (A reader of changed extents skips bytes
    on purpose, so "read to the end" cannot be the test.) `lease_id` names the lease, for
    the journal."""

    def __init__(
        self,
        inner: DiskStream,
        size: int,
        *,
        progress: Callable[[int], None],
        complete: Callable[[], None],
        abort: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
        every: float = PROGRESS_EVERY,
        lease_id: str = "",
    ) -> None:
        self.lease_id = lease_id
        self._inner = inner
        self.size = size
        self._progress = progress
        self._complete = complete
        self._abort = abort
        self._clock = clock
        self._every = every
        self._last = clock()
        self._pos = 0
        self._failed = False
        self._closed = False

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes, read in pieces of at most `PIECE` with a progress check
        between them: a reader asking for 8 MiB from a slow link must not keep the lease
        silent for longer than its timeout."""
        want = self.size - self._pos if size is None or size < 0 else size
        if want <= PIECE:
            return self._piece(want if size is not None and size >= 0 else -1)
        parts: list[bytes] = []
        got = 0
        while got < want:
            data = self._piece(min(PIECE, want - got))
            if not data:
                break
            parts.append(data)
            got += len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _piece(self, size: int) -> bytes:
        try:
            data = self._inner.read(size)
        except BaseException:
            self._failed = True
            raise
        self._pos += len(data)
        if self._clock() - self._last >= self._every:
            self._last = self._clock()
            self._progress(min(99, 100 * self._pos // max(1, self.size)))
        return data

    def seek(self, offset: int, whence: int = 0, /) -> int:
        try:
            self._pos = self._inner.seek(offset, whence)
        except BaseException:
            self._failed = True
            raise
        return self._pos

    def fail(self) -> None:
        """The reader's work with the data failed: close aborts the lease."""
        self._failed = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._inner.close()
        finally:
            try:
                if self._failed:
                    self._abort()
                else:
                    self._complete()
            except VCenterError as exc:  # the lease times out by itself anyway
                log.warning("%s (ending the export lease)", exc)


class Transported:
    """A disk stream that says how it is read (`transport`, a `DiskTransport`) and, for an
    NFC download, which lease serves it (`lease_id`); `fail()` is passed on."""

    def __init__(self, inner: DiskStream, transport: object, lease_id: str = "") -> None:
        self._inner = inner
        self.transport = transport
        self.lease_id = lease_id
        self.size = getattr(inner, "size", None)

    def read(self, size: int = -1, /) -> bytes:
        return self._inner.read(size)

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        return read_into(self._inner, buffer)

    def lend(self, n: int) -> Lent | None:
        return lend_from(self._inner, n)

    def seek(self, offset: int, whence: int = 0, /) -> int:
        return self._inner.seek(offset, whence)

    def fail(self) -> None:
        fail = getattr(self._inner, "fail", None)
        if fail is not None:
            fail()

    def close(self) -> None:
        self._inner.close()

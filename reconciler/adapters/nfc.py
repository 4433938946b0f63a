"""Disk downloads through an NFC export lease (`ExportVm`), for VMs that are powered off.

vCenter answers `ExportVm` with an `HttpNfcLease`; once the lease is `ready`, its
`info.deviceUrl` lists one download URL per virtual disk, keyed by the disk's controller slot
(`/vm-42/ParaVirtualSCSIController0:0`). The URL's host may be `*`: the client puts in the
host it talks to. The lease must hear `HttpNfcLeaseProgress` regularly (vCenter times an idle
lease out after about five minutes) and ends with `HttpNfcLeaseComplete`, or
`HttpNfcLeaseAbort` when the download did not finish.

This module is the part that needs no pyVmomi: picking a disk's URL and wrapping the download
so that reading it keeps the lease alive and closing it ends the lease. The SOAP calls come in
as callables from `reconciler.adapters.vsphere`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from reconciler.adapters.datastore import HttpFile
from reconciler.errors import VCenterError
from reconciler.ports import DiskStream

__all__ = ["LeasedStream", "NfcDevice", "device_for", "download_file"]

log = logging.getLogger(__name__)

#: Seconds between lease progress reports while a download goes on.
PROGRESS_EVERY = 30.0


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


class LeasedStream:
    """A disk download that keeps its lease alive while it is read and ends it on close:
    `HttpNfcLeaseComplete` unless a read failed, then `HttpNfcLeaseAbort`. (A reader of
    changed extents skips bytes on purpose, so "read to the end" cannot be the test.)"""

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
    ) -> None:
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
        self._pos = self._inner.seek(offset, whence)
        return self._pos

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

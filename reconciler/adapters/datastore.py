"""Datastore files over vCenter's HTTPS file interface: resumable Range reads, uploads.

    GET|PUT|HEAD https://<vcenter>/folder/<path>?dcPath=<datacenter>&dsName=<datastore>

A disk's data lives in its extent file (`<name>-flat.vmdk` beside the `<name>.vmdk`
descriptor). `RangeReader` streams it with HTTP Range requests: a dropped connection or an
HTTP 5xx is retried with backoff from the byte where it stopped, so a long export survives a
network hiccup without starting over. Every connection comes from the vCenter's verified TLS
connection factory (`vsphere_tls.pinned_connection`) and carries the session cookie.
"""

from __future__ import annotations

import http.client
import re
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, Self
from urllib.parse import quote

from reconciler.errors import TransientError, VCenterError, backoff_delay
from reconciler.ports import Lent, lend_from, read_into

__all__ = [
    "DatastoreFile",
    "HttpFile",
    "PositionedReader",
    "RangeReader",
    "ZeroExtended",
    "parse_datastore_path",
    "upload",
]

#: Bytes asked for per Range request; large enough to stream at full speed.
REQUEST_BYTES = 64 << 20

_DS_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<path>.*)$")


def parse_datastore_path(path: str) -> tuple[str, str]:
    """`"[LocalDS_0] vm1/disk.vmdk"` → `("LocalDS_0", "vm1/disk.vmdk")`."""
    match = _DS_PATH.match(path)
    if not match:
        raise ValueError(f"not a datastore path: {path!r}")
    return match["ds"], match["path"]


def flat_extent(descriptor_path: str) -> str:
    """The extent file holding a disk's data: `disk.vmdk` → `disk-flat.vmdk`."""
    return descriptor_path[: -len(".vmdk")] + "-flat.vmdk" if descriptor_path.endswith(
        ".vmdk") else descriptor_path


@dataclass(frozen=True)
class DatastoreFile:
    """One file on a datastore, and how to reach it."""

    vcenter: str
    host: str
    port: int
    datacenter: str
    datastore: str
    path: str

    @property
    def request_path(self) -> str:
        return (
            f"/folder/{quote(self.path)}?dcPath={quote(self.datacenter, safe='')}"
            f"&dsName={quote(self.datastore, safe='')}"
        )

    def __str__(self) -> str:
        return f"[{self.datastore}] {self.path}"


@dataclass(frozen=True)
class HttpFile:
    """Any other file served by path over the vCenter's (or a host's) HTTPS, such as the
    download URL of an NFC export lease."""

    vcenter: str
    host: str
    port: int
    request_path: str
    label: str

    def __str__(self) -> str:
        return self.label


Connect = Callable[[str, int], http.client.HTTPConnection]


class PositionedReader:
    """What a sized, seekable reader of a remote file shares (`RangeReader`, and
    `reader_process.ProcessRangeReader`): `read` by way of `readinto`, a `seek` that lets go
    of the stream at the old position when the position moves, `tell`, and closing as a
    context manager."""

    file: DatastoreFile | HttpFile
    size: int
    _pos: int

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _let_go(self) -> None:
        """Forget the stream at the old position (a seek moved away from it)."""
        raise NotImplementedError

    def read(self, size: int = -1, /) -> bytes:
        want = self.size - self._pos if size is None or size < 0 else size
        buffer = bytearray(max(0, min(want, self.size - self._pos)))
        return bytes(buffer[: self.readinto(buffer)])

    def seek(self, offset: int, whence: int = 0, /) -> int:
        target = max(0, {0: offset, 1: self._pos + offset, 2: self.size + offset}[whence])
        if target != self._pos:
            self._let_go()
            self._pos = target
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RangeReader(PositionedReader):
    """A file-like, seekable reader of a datastore file that resumes after failures."""

    def __init__(
        self,
        file: DatastoreFile | HttpFile,
        connect: Connect,
        cookie: str,
        *,
        size: int | None = None,
        attempts: int = 6,
        base_delay: float = 0.5,
        request_bytes: int = REQUEST_BYTES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.file = file
        self._connect = connect
        self._cookie = cookie
        self._attempts = attempts
        self._base_delay = base_delay
        self._request_bytes = request_bytes
        self._sleep = sleep
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._body: _Body | None = None  # the current response's body, read off the socket
        self._resp_end = 0  # the response serves bytes up to here (exclusive)
        self._pos = 0
        self.requests = 0
        self.resumes = 0
        self.size = size if size is not None else self._head()

    # ------------------------------------------------------------------ file-like

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        """Fill `buffer` (up to the end of the file) straight from the socket: no new bytes
        object per read, so a reused buffer costs no fresh pages."""
        view = memoryview(buffer).cast("B")
        start = self._pos
        end = min(self.size, start + len(view))

        def step(resp: http.client.HTTPResponse, n: int) -> int:
            at = self._pos - start  # not moved by a failed attempt: a retry fills it again
            if self._body is not None:
                return self._body.readinto(view[at : at + n])
            return resp.readinto(view[at : at + n])

        while self._pos < end:
            self._pos += self._read_some(step, end - self._pos)
        return end - start if end > start else 0

    def close(self) -> None:
        self._drop_response()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _let_go(self) -> None:
        self._drop_response()

    # ------------------------------------------------------------------ internals

    def _read_some(self, step: Callable[[http.client.HTTPResponse, int], int], want: int) -> int:
        """`step(response, n)` reads at most n (> 0) bytes of the current range at `_pos`;
        dropped connections and 5xx answers are retried from `_pos`."""
        for attempt in range(1, self._attempts + 1):
            try:
                if self._resp is None or self._pos >= self._resp_end:
                    self._open_range()
                assert self._resp is not None
                data = step(self._resp, min(want, self._resp_end - self._pos))
                if not data:
                    raise http.client.IncompleteRead(b"")
                return data
            except (OSError, http.client.HTTPException, _Retryable) as exc:
                if isinstance(exc, ssl.SSLCertVerificationError):
                    raise VCenterError(self.file.vcenter, f"TLS verification failed: {exc}") \
                        from None
                self._reset()
                if attempt == self._attempts:
                    raise TransientError(
                        self.file.vcenter,
                        f"reading {self.file} at byte {self._pos} failed {attempt} times: "
                        f"{type(exc).__name__}: {exc}",
                    ) from exc
                self.resumes += 1
                self._sleep(backoff_delay(attempt, self._base_delay, cap=8.0))
        raise AssertionError("unreachable")

    def _open_range(self) -> None:
        self._drop_response()
        if self._conn is None:
            self._conn = self._connect(self.file.host, self.file.port)
        end = min(self.size, self._pos + self._request_bytes) - 1
        self._conn.request(
            "GET",
            self.file.request_path,
            headers={"Cookie": self._cookie, "Range": f"bytes={self._pos}-{end}"},
        )
        self.requests += 1
        resp = self._conn.getresponse()
        if resp.status == 206:
            self._resp, self._resp_end = resp, end + 1
            self._body = _Body.of(resp, self._conn.sock, end + 1 - self._pos)
            return
        resp.read()
        if resp.status == 200 and self._pos == 0:
            raise VCenterError(self.file.vcenter, f"{self.file}: server ignores Range requests")
        if resp.status >= 500:
            raise _Retryable(f"HTTP {resp.status} {resp.reason}")
        raise VCenterError(
            self.file.vcenter, f"reading {self.file} failed: HTTP {resp.status} {resp.reason}",
            http_status=resp.status,
        )

    def _head(self) -> int:
        for attempt in range(1, self._attempts + 1):
            try:
                if self._conn is None:
                    self._conn = self._connect(self.file.host, self.file.port)
                self._conn.request("HEAD", self.file.request_path,
                                   headers={"Cookie": self._cookie})
                self.requests += 1
                resp = self._conn.getresponse()
                resp.read()
                if resp.status == 200:
                    return int(resp.getheader("Content-Length") or 0)
                if resp.status == 404:
                    raise VCenterError(self.file.vcenter, f"{self.file} does not exist",
                                       http_status=404)
                if resp.status < 500:
                    raise VCenterError(self.file.vcenter,
                                       f"{self.file}: HTTP {resp.status} {resp.reason}",
                                       http_status=resp.status)
                raise _Retryable(f"HTTP {resp.status}")
            except (OSError, http.client.HTTPException, _Retryable) as exc:
                self._reset()
                if attempt == self._attempts:
                    raise TransientError(self.file.vcenter,
                                         f"HEAD {self.file} failed: {exc}") from exc
                self._sleep(backoff_delay(attempt, self._base_delay, cap=8.0))
        raise AssertionError("unreachable")

    def _drop_response(self) -> None:
        if self._resp is not None:
            # Leaving a partial body unread poisons the keep-alive connection: start afresh.
            if self._pos < self._resp_end and self._conn is not None:
                self._conn.close()
                self._conn = None
            elif self._body is not None:
                self._resp.close()  # read past http.client: it must be told it is done
            self._resp = None
            self._body = None

    def _reset(self) -> None:
        self._resp = None
        self._body = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Body:
    """A ranged response's body read straight off the connection's socket.

    `HTTPResponse.readinto` goes through a buffered file object whose every TLS record (at
    most 16 KiB) costs three Python calls (`SocketIO.readinto`, `SSLSocket.recv_into`,
    `SSLSocket.read`): about a quarter of the reader's CPU at 64 MiB ranges. Here a record
    costs one `recv_into`, in a loop that fills the caller's buffer. Whatever the buffered
    file object already holds (read with the headers) is taken from it first. Used only
    when the response's length is the range asked for and not chunked, so it never reads
    past the body; the reader then closes the response itself.
    """

    __slots__ = ("_buffered", "_fp", "_recv_into")

    def __init__(self, fp: Any, buffered: int, recv_into: Callable[[memoryview], int]) -> None:
        self._fp = fp
        self._buffered = buffered
        self._recv_into = recv_into

    @classmethod
    def of(cls, resp: http.client.HTTPResponse, sock: Any, length: int) -> _Body | None:
        fp = resp.fp
        if sock is None or resp.chunked or resp.length != length \
                or not hasattr(fp, "peek") or not hasattr(sock, "recv_into"):
            return None  # http.client reads it, as for any other response
        return cls(fp, len(fp.peek()), sock.recv_into)

    def readinto(self, view: memoryview) -> int:
        """Fill `view` (at most the rest of the body); short only at the end of the stream."""
        if self._buffered:
            got = int(self._fp.readinto(view[: self._buffered]))
            self._buffered -= got
            return got
        recv_into, want, got = self._recv_into, len(view), 0
        while got < want:
            n = recv_into(view[got:])
            if not n:
                break
            got += n
        return got


class SizedStream(Protocol):
    """A readable, seekable stream of a known number of bytes."""

    size: int

    def read(self, size: int = -1, /) -> bytes: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def close(self) -> None: ...


class ZeroExtended:
    """A stream read as exactly `size` bytes: past the end of `inner` it yields zeros (a
    disk's data file may be shorter than the disk: the rest was never written)."""

    def __init__(self, inner: SizedStream, size: int) -> None:
        self._inner = inner
        self.size = size
        self._pos = 0

    def read(self, n: int = -1, /) -> bytes:
        n = self.size - self._pos if n is None or n < 0 else min(n, self.size - self._pos)
        if n <= 0:
            return b""
        data = self._inner.read(n) if self._pos < self._inner.size else b""
        if len(data) < n and self._pos + len(data) >= self._inner.size:
            data += bytes(n - len(data))
        self._pos += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        """`read` into a caller's buffer (through the inner stream's `readinto` if any)."""
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.size - self._pos)
        if n <= 0:
            return 0
        inner_left = max(0, self._inner.size - self._pos)
        got = read_into(self._inner, view[: min(n, inner_left)]) if inner_left else 0
        if got < n and self._pos + got >= self._inner.size:
            view[got:n] = bytes(n - got)
            got = n
        self._pos += got
        return got

    def lend(self, n: int) -> Lent | None:
        """`n` bytes in place from the inner stream while they are all within it (the zeros
        past its end are read, not lent)."""
        if self._pos + n > self._inner.size:
            return None
        lent = lend_from(self._inner, n)
        if lent is not None:
            self._pos += lent.length
        return lent

    def seek(self, offset: int, whence: int = 0, /) -> int:
        target = {0: offset, 1: self._pos + offset, 2: self.size + offset}[whence]
        self._pos = max(0, min(target, self.size))
        self._inner.seek(min(self._pos, self._inner.size))
        return self._pos

    def close(self) -> None:
        self._inner.close()


class _Retryable(Exception):
    """An HTTP answer worth retrying (5xx)."""


def upload(
    file: DatastoreFile,
    connect: Connect,
    cookie: str,
    chunks: Iterable[bytes],
    size: int,
) -> None:
    """PUT a whole file (the datastore interface replaces it and creates directories)."""
    conn = connect(file.host, file.port)
    try:
        conn.putrequest("PUT", file.request_path)
        conn.putheader("Cookie", cookie)
        conn.putheader("Content-Length", str(size))
        conn.putheader("Content-Type", "application/octet-stream")
        conn.endheaders()
        sent = 0
        for chunk in chunks:
            conn.send(chunk)
            sent += len(chunk)
        if sent != size:
            raise VCenterError(file.vcenter, f"upload of {file}: sent {sent} of {size} bytes")
        resp = conn.getresponse()
        resp.read()
        if resp.status not in (200, 201, 204):
            raise VCenterError(file.vcenter, f"upload of {file} failed: HTTP {resp.status}")
    except (OSError, http.client.HTTPException) as exc:
        raise TransientError(file.vcenter, f"upload of {file} failed: {exc}") from exc
    finally:
        conn.close()

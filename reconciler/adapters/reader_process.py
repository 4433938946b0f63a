"""Datastore files read by a helper process, into memory the export reads from.

An export's thread reads a disk over TLS one record (at most 16 KiB) at a time, and every
record hands Python's GIL back and forth: on two busy cores the reading threads wait for the
GIL about a third of their time while the hashing and compressing threads hold it, and a
core idles meanwhile (`docs/benchmarks.md`, apply, "A sixth round"). With the host config's
`vcenters.<name>.readers: process` (the default) an export's thread reads through a helper
process of its own instead: it runs the same `RangeReader` (same TLS verification, retries
and resumption) and decrypts into a shared ring of `SLOTS` blocks of `BLOCK` bytes (a memfd).
The export hashes and compresses each block where it is (`ProcessRangeReader.lend`: no copy)
and hands the slot back once the block is encoded; a block only partly wanted is copied out
with one `memmove` (no GIL held) by `readinto`.

A helper is started on first use and kept for the next files; the threads of a
`VCenterPool` share them (`ReaderPool`: as many as read at once). It gets the vCenter's TLS
settings and the session cookie over a socket, never the password, and an environment
without the password variables. It dies with the thread that started it, a thread of the
pool's own (`PR_SET_PDEATHSIG`), so with its export, and ends by itself when its socket
closes. Errors come back as messages and are raised in the export as the errors
`RangeReader` would raise.

Messages (length-prefixed JSON, `multiprocessing.connection`): the parent sends `hello` (the
vCenter's TLS settings, timeouts), then per file `read` (file, cookie, size, position), `free`
(a slot read out) and `stop`; the helper answers `ready` (or `error` when it cannot verify
TLS as told), `filled` (slot, bytes), `error` (type, message, HTTP status) and, after
`stop`, `stopped`. A helper that cannot start leaves the reading to the export's thread
(`VSphereClient.reader_process`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from reconciler.errors import CertificateError, TransientError, VCenterError, VmkeepError
from reconciler.model import VCenterConfig
from reconciler.ports import Lent

from .datastore import DatastoreFile, HttpFile, PositionedReader, RangeReader
from .vsphere_tls import pin_of, pinned_connection, ssl_context

__all__ = ["BLOCK", "SLOTS", "ProcessRangeReader", "ReaderPool", "ReaderProcess"]

log = logging.getLogger(__name__)

BLOCK = 8 << 20  #: bytes per slot: the export writer's block
#: Blocks in the ring: an export encodes up to four lent blocks at once (`PointWriter`'s
#: window) while the helper reads the next.
SLOTS = 5
#: How long closing a reader waits for the blocks it lent to be released (encoding a block
#: takes milliseconds); after that the helper is stopped rather than reused.
LEND_WAIT = 60.0
START_TIMEOUT = 60.0  #: seconds a new helper may take to say it is ready
#: Variables the helper inherits (never a password's `passwordEnv`).
_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR", "TMPDIR")
_ERRORS: dict[str, type[VCenterError]] = {
    "VCenterError": VCenterError, "CertificateError": CertificateError,
}


Spawn = Callable[[Callable[[], "subprocess.Popen[bytes]"]], "subprocess.Popen[bytes]"]


def _here(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    return start()


class ReaderPool:
    """The helpers of one vCenter, shared by the threads of a `VCenterPool`.

    A thread takes an idle helper (or a new one) for a disk and gives it back when the disk
    is read, so an apply starts as many helpers as it reads disks at once, not one per
    thread (`limits.concurrentExports` runs twice as many threads). Helpers are started by
    a thread of the pool's own: Linux's `PR_SET_PDEATHSIG` fires when the *thread* that
    started a process ends, and an export thread may end while another still reads
    through its helper. Once a helper could not start, the pool warns why (once), `take`
    gives None from then on and no more are started (the exports read in their own
    threads).
    """

    def __init__(self, config: VCenterConfig, *, connect_timeout: float,
                 read_timeout: float) -> None:
        self.config = config
        self._timeouts = (connect_timeout, read_timeout)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a helper became idle or failed
        self._idle: list[ReaderProcess] = []
        self._all: list[ReaderProcess] = []
        self._starting = 0  # helpers `prestart` is starting now
        self._spawner: ThreadPoolExecutor | None = None
        self._closed = False
        self.failed: str | None = None  # why no helper could start

    def prestart(self, count: int) -> None:
        """Start helpers in the background until `count` run or are starting. An apply
        calls this for the exports it is about to run once its plan is approved, so the
        first exports find their helpers ready while they look up their VMs and take
        their snapshots, instead of each waiting for one to start."""
        with self._lock:
            if self.failed is not None or self._closed:
                return
            helpers = [self._new() for _ in range(count - len(self._all))]
            for helper in helpers:
                helper.take()
            self._starting += len(helpers)
        for helper in helpers:
            threading.Thread(target=self._start_idle, args=(helper,), daemon=True,
                             name="vmkeep-readers-prestart").start()

    def take(self) -> ReaderProcess | None:
        """A running helper reserved for one reader; None once one could not start. While
        helpers are being started for it (`prestart`) and none is idle, it waits for one."""
        with self._changed:
            self._changed.wait_for(lambda: self.failed is not None or bool(self._idle)
                                   or not self._starting)
            if self.failed is not None:
                return None
            helper = self._idle.pop() if self._idle else self._new()
            helper.take()
        why = helper.start()
        if why is not None:
            self._cannot_start(why)
            helper.give_back()
            return None
        return helper

    def _new(self) -> ReaderProcess:
        """A helper not started yet, counted in `_all` (call with the lock held)."""
        helper = ReaderProcess(self.config, connect_timeout=self._timeouts[0],
                               read_timeout=self._timeouts[1], spawn=self._spawn,
                               returned=self._give_back)
        self._all.append(helper)
        return helper

    def _start_idle(self, helper: ReaderProcess) -> None:
        why = helper.start()
        if why is not None:
            self._cannot_start(why)
        helper.give_back()  # idle before it stops counting as starting: no waiter starts
        with self._changed:  # another one in between
            self._starting -= 1
            self._changed.notify_all()

    def _cannot_start(self, why: str) -> None:
        with self._changed:
            first = self.failed is None and not self._closed
            self.failed = why
            self._changed.notify_all()
        if first:
            log.warning("vCenter %r: disks are read in the exports' own threads: the disk "
                        "reader process could not start: %s", self.config.name, why)

    def _give_back(self, helper: ReaderProcess) -> None:
        with self._changed:
            self._idle.append(helper)
            self._changed.notify_all()

    def _spawn(self, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._spawner is None:
                self._spawner = ThreadPoolExecutor(1, thread_name_prefix="vmkeep-readers")
            spawner = self._spawner
        return spawner.submit(start).result()

    def close(self) -> None:
        """Stop every helper (after the readers are done with them, and once those
        `prestart` started have said they are ready, or could not start)."""
        with self._changed:
            self._closed = True
            self._changed.wait_for(lambda: not self._starting, timeout=START_TIMEOUT + 5)
            helpers, self._all, self._idle = self._all, [], []
            spawner, self._spawner = self._spawner, None
        for helper in helpers:
            helper.close()
        if spawner is not None:
            spawner.shutdown()


class ReaderProcess:
    """One helper process that reads one datastore file at a time (see the module)."""

    def __init__(self, config: VCenterConfig, *, connect_timeout: float,
                 read_timeout: float, spawn: Spawn = _here,
                 returned: Callable[[ReaderProcess], None] | None = None) -> None:
        self.config = config
        self._timeouts = {"connect": connect_timeout, "read": read_timeout}
        self._spawn = spawn  # runs Popen: in the thread the helper's life is tied to
        self._returned = returned  # told when a reader gives the helper back
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._ring: mmap.mmap | None = None  # the shared ring (a memfd), mapped here too
        self._anchor: ctypes.Array[ctypes.c_char] | None = None  # the ring, for memmove
        self._lock = threading.Lock()
        self._sending = threading.Lock()  # lent blocks are given back from other threads
        self.generation = 0  # counts the processes started: a block names the one it is in
        self.busy = False  # a reader holds it
        self._last_end = "not started"  # why the last helper ended, as `_ended` said

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def take(self) -> bool:
        """Reserve the helper for one reader; False when another reader holds it."""
        with self._lock:
            if self.busy:
                return False
            self.busy = True
            return True

    def give_back(self) -> None:
        with self._lock:
            was, self.busy = self.busy, False
        if was and self._returned is not None:
            self._returned(self)

    # ------------------------------------------------------------------ the process

    def _start(self) -> Connection:
        mine, theirs = socket.socketpair()
        ring = os.memfd_create("vmkeep-reader")
        try:
            os.ftruncate(ring, BLOCK * SLOTS)
            package = str(Path(__file__).resolve().parents[2])  # this very code, not another
            env = {k: os.environ[k] for k in _ENVIRONMENT if k in os.environ}
            env["PYTHONPATH"] = os.pathsep.join(
                [package, *filter(None, [os.environ.get("PYTHONPATH")])])
            env["PYTHONWARNINGS"] = "ignore"  # its stderr is read only once it has ended
            argv = [sys.executable, "-m", "reconciler.adapters.reader_process",
                    str(theirs.fileno()), str(ring)]
            self._proc = self._spawn(lambda: subprocess.Popen(
                argv, pass_fds=(theirs.fileno(), ring), env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        except BaseException:
            os.close(ring)
            mine.close()
            raise
        finally:
            theirs.close()
        self._ring = mmap.mmap(ring, BLOCK * SLOTS)
        os.close(ring)  # the mapping keeps it
        self.generation += 1
        self._anchor = (ctypes.c_char * (BLOCK * SLOTS)).from_buffer(self._ring)
        self._conn = Connection(mine.detach())
        self._send({"op": "hello", "config": asdict(self.config), "timeouts": self._timeouts})
        if not self._conn.poll(START_TIMEOUT):
            raise OSError(f"no answer within {START_TIMEOUT:.0f} s")
        answer = self._receive(self.config.name)
        if answer["op"] != "ready":
            raise OSError(str(answer.get("detail") or answer.get("op")))
        return self._conn

    def start(self) -> str | None:
        """Make sure the helper runs (a new one if it ended); None when it does, else why
        none could be started (the caller then reads in its own thread)."""
        if self._conn is not None and self._proc is not None and self._proc.poll() is None:
            return None
        self.close()
        try:
            self._start()
        except OSError as exc:  # it could not be run, or it ended before `hello` or `ready`
            why = self._why_ended() if self._proc is not None else str(exc)
            self.close()
            return why
        except VmkeepError:  # it ended while saying it is ready (`_receive` closed it)
            return self._last_end
        return None

    def _send(self, message: dict[str, Any]) -> None:
        with self._sending:
            if self._conn is None:
                raise OSError("the disk reader process is not running")
            self._conn.send_bytes(json.dumps(message).encode())

    def _receive(self, vcenter: str) -> dict[str, Any]:
        assert self._conn is not None
        try:
            message: dict[str, Any] = json.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            raise self._ended(vcenter) from None
        return message

    def _ended(self, vcenter: str, exc: OSError | None = None) -> TransientError:
        """The error of a read whose helper is gone (or could not start); closes this side."""
        why = self._why_ended() if exc is None or self._proc is not None else str(exc)
        self._last_end = why
        self.close()
        return TransientError(vcenter, f"the disk reader process ended ({why}); the export "
                                       "can be retried")

    def _why_ended(self) -> str:
        """The helper's exit status and the last line it wrote (a Python error, say)."""
        proc = self._proc
        if proc is None:
            return "not running"
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "it runs but does not answer"
        said = proc.stderr.read(4096).decode(errors="replace").strip() if proc.stderr else ""
        last = said.splitlines()[-1] if said else ""
        return f"exit status {code}" + (f": {last}" if last else "")

    def begin(self, file: DatastoreFile | HttpFile, cookie: str, size: int, pos: int) -> None:
        """Start reading `file` from `pos` (the helper is started when there is none)."""
        spec = {"kind": type(file).__name__, **asdict(file)}
        try:
            if self._conn is None:
                self._start()
            self._send({"op": "read", "file": spec, "cookie": cookie, "size": size,
                        "pos": pos})
        except OSError as exc:
            raise self._ended(file.vcenter, exc) from None

    def next_block(self, vcenter: str) -> tuple[int, int]:
        """(slot, bytes) of the next block read; raises what reading it raised."""
        message = self._receive(vcenter)
        if message["op"] == "filled":
            slot, n = int(message["slot"]), int(message["n"])
            if not 0 <= slot < SLOTS or not 0 < n <= BLOCK:
                self.close()
                raise VCenterError(vcenter, "the disk reader process sent a bad block")
            return slot, n
        if message["op"] == "error":
            cls = _ERRORS.get(str(message.get("type")))
            if cls is None:  # TransientError and anything unforeseen: worth a retry
                raise TransientError(vcenter, str(message.get("detail")),
                                     float(message.get("retryAfter") or 1.0))
            raise cls(vcenter, str(message.get("detail")), http_status=message.get("status"))
        self.close()
        raise VCenterError(vcenter, f"the disk reader process said {message.get('op')!r}")

    def copy(self, slot: int, offset: int, into: memoryview) -> None:
        """Copy `len(into)` bytes of a filled slot from `offset` into `into`. A `memmove`
        through ctypes, which lets go of the GIL while it copies (a slice assignment holds
        it); `next_block` checked the slot, the reader keeps within the block's bytes."""
        if self._anchor is None or not 0 <= slot < SLOTS or offset < 0 \
                or offset + len(into) > BLOCK:  # memory safety: never trust a caller here
            raise ValueError(f"no such bytes in the reader's ring: {slot}, {offset}, {len(into)}")
        target = (ctypes.c_char * len(into)).from_buffer(into)
        try:
            ctypes.memmove(target, ctypes.addressof(self._anchor) + slot * BLOCK + offset,
                           len(into))
        finally:
            del target

    def free(self, slot: int, generation: int | None = None) -> None:
        """The export is done with a slot; `generation`: of the process it was filled by
        (a block lent by one that has ended since is not the new one's to reuse)."""
        if generation is not None and generation != self.generation:
            return
        with contextlib.suppress(OSError):
            self._send({"op": "free", "slot": slot})

    def lend(self, slot: int, n: int, release: Callable[[], None]) -> Lent:
        """`n` bytes of a filled slot in place, until `release()`."""
        if self._ring is None or not 0 <= slot < SLOTS or not 0 < n <= BLOCK:
            raise ValueError(f"no such bytes in the reader's ring: {slot}, {n}")
        return Lent(self._ring, slot * BLOCK, n, release)

    def stop(self, vcenter: str) -> None:
        """End the current file; the helper is ready for the next one."""
        if self._conn is None:
            return
        try:
            self._send({"op": "stop"})
            while self._receive(vcenter)["op"] != "stopped":
                pass
        except (OSError, VmkeepError):
            self.close()

    def close(self) -> None:
        """Stop the helper (it also ends by itself when this side's socket closes)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._anchor = None
        if self._ring is not None:
            with contextlib.suppress(BufferError):  # a lent block is still read: the mapping
                self._ring.close()  # goes when the last view of it does
            self._ring = None
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()


class ProcessRangeReader(PositionedReader):
    """A seekable file-like reader of a datastore file, read by a `ReaderProcess`."""

    def __init__(self, helper: ReaderProcess, file: DatastoreFile | HttpFile, cookie: str,
                 size: int) -> None:
        self.file = file
        self.size = size
        self._helper = helper
        self._cookie = cookie
        self._pos = 0
        self._reading = False  # the helper reads this file from where `_pos` was
        self._block: tuple[int, int, int] | None = None  # slot, bytes taken, bytes in it
        self._lent = 0  # blocks lent and not released yet
        self._returned = threading.Condition()

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        view = memoryview(buffer).cast("B")
        want = max(0, min(len(view), self.size - self._pos))
        got = 0
        while got < want:
            if self._block is None:
                slot, n = self._next_block()
                self._block = (slot, 0, n)
            slot, taken, n = self._block
            step = min(want - got, n - taken)
            self._helper.copy(slot, taken, view[got : got + step])
            got += step
            self._pos += step
            taken += step
            if taken == n:
                self._helper.free(slot)
                self._block = None
            else:
                self._block = (slot, taken, n)
        return got

    def lend(self, n: int) -> Lent | None:
        """The next `n` bytes in the helper's ring itself, not copied: a whole block the
        helper read (blocks are `BLOCK` bytes from where reading started, the last one
        shorter). None when that is not exactly `n` bytes, or part of the block was taken
        by `readinto`; then `readinto` reads them. The slot is the helper's again once the
        block is released; stopping or closing waits for every lent block first."""
        want = min(n, self.size - self._pos)
        if self._block is not None or want <= 0:
            return None
        slot, got = self._next_block()
        if got != want:
            self._block = (slot, 0, got)
            return None
        lent = self._helper.lend(slot, got, self._release_once(slot, self._helper.generation))
        with self._returned:
            self._lent += 1
        self._pos += got
        return lent

    def _next_block(self) -> tuple[int, int]:
        """(slot, bytes) of the next block the helper read from `_pos` on (it is asked to
        start reading there first); on any failure a next read asks again from `_pos`."""
        try:
            if not self._reading:
                self._helper.begin(self.file, self._cookie, self.size, self._pos)
                self._reading = True
            return self._helper.next_block(self.file.vcenter)
        except BaseException:
            self._let_go()
            raise

    def _release_once(self, slot: int, generation: int) -> Callable[[], None]:
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            self._helper.free(slot, generation)
            with self._returned:
                self._lent -= 1
                self._returned.notify_all()

        return release

    def _let_go(self) -> None:
        with self._returned:
            back = self._returned.wait_for(lambda: self._lent == 0, timeout=LEND_WAIT)
        if not back:  # never expected: stop this helper rather than refill what is read
            log.warning("%s: blocks lent by the disk reader process were not released within "
                        "%.0f s; the process is stopped", self.file, LEND_WAIT)
            self._helper.close()
            self._reading = False
            self._block = None
        if self._reading:
            self._helper.stop(self.file.vcenter)
            self._reading = False
            self._block = None

    def close(self) -> None:
        self._let_go()
        self._helper.give_back()


# --------------------------------------------------------------------------- the helper


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the thread that started it ends (the pool's
    spawning thread: with the run, or at once when the run is killed)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before the line above
        os._exit(1)


def _error_message(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, VCenterError):
        return {"op": "error", "type": type(exc).__name__, "detail": exc.detail,
                "status": exc.http_status, "retryAfter": exc.retry_after}
    return {"op": "error", "type": "TransientError",
            "detail": f"reading failed: {type(exc).__name__}: {exc}"}


class _Gone(Exception):
    """The export's side of the socket is closed (it finished, or died)."""


class _Helper:
    """The helper's side: one file at a time, read ahead into free slots."""

    def __init__(self, conn: Connection, ring: memoryview) -> None:
        self.conn = conn
        self.ring = ring
        hello = self._receive()
        try:
            config = VCenterConfig(**hello["config"])
            self.connect = pinned_connection(ssl_context(config), pin_of(config),
                                             connect_timeout=hello["timeouts"]["connect"],
                                             read_timeout=hello["timeouts"]["read"])
        except Exception as exc:  # a CA file it cannot read, say: the export is told
            self._send(_error_message(exc))
            raise _Gone from None
        self._send({"op": "ready"})

    def _receive(self) -> dict[str, Any]:
        try:
            message: dict[str, Any] = json.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            raise _Gone from None
        return message

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.conn.send_bytes(json.dumps(message).encode())
        except OSError:
            raise _Gone from None

    def _waiting(self) -> bool:
        try:
            return self.conn.poll()
        except (EOFError, OSError):
            raise _Gone from None

    def serve(self) -> None:
        """Files, one at a time, until the export's side closes."""
        with contextlib.suppress(_Gone):
            while True:
                self._serve_one()

    def _serve_one(self) -> None:
        message = self._receive()
        if message["op"] == "read":
            self._read(message)
        elif message["op"] == "stop":  # nothing being read
            self._send({"op": "stopped"})

    def _read(self, job: dict[str, Any]) -> None:
        spec = dict(job["file"])
        kind = DatastoreFile if spec.pop("kind") == "DatastoreFile" else HttpFile
        size = int(job["size"])
        free = list(range(SLOTS))
        try:
            with RangeReader(kind(**spec), self.connect, job["cookie"], size=size) as reader:
                reader.seek(int(job["pos"]))
                while reader.tell() < size:
                    while not free or self._waiting():
                        message = self._receive()
                        if message["op"] == "free":
                            free.append(int(message["slot"]))
                        elif message["op"] == "stop":
                            self._send({"op": "stopped"})
                            return
                    slot = free.pop(0)
                    block = self.ring[slot * BLOCK : slot * BLOCK + min(BLOCK, size -
                                                                       reader.tell())]
                    self._send({"op": "filled", "slot": slot, "n": reader.readinto(block)})
        except _Gone:
            raise
        except Exception as exc:  # every failure goes back to the export, as a message
            self._send(_error_message(exc))
        while self._receive()["op"] != "stop":  # the export reads out what was sent
            pass
        self._send({"op": "stopped"})


def main(argv: list[str]) -> int:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the export's to handle
    conn = Connection(int(argv[0]))
    with mmap.mmap(int(argv[1]), BLOCK * SLOTS) as ring:
        view = memoryview(ring)
        try:
            _Helper(conn, view).serve()
        except (_Gone, EOFError, OSError):
            pass  # the export is gone: nothing to report to
        finally:
            view.release()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

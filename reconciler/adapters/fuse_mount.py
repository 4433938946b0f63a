"""A read-only FUSE file system serving a fixed tree of files read on demand (`vmkeep mount`).

    tree = {"vm1.img": Leaf(size, mtime, read), "vm.json": Leaf(...), "sub": {...}}
    serve(tree, "/mnt/point")       # blocks until Ctrl-C, SIGTERM or `fusermount -u`

The binding is `mfusepy` (ctypes over Debian's libfuse 3, package `fuse3`: no compiler and no
event loop needed, the high-level API that `fuse_main` runs). libfuse installs its own
handlers for SIGINT, SIGTERM and SIGHUP: each ends the loop and unmounts, as `fusermount -u`
does; `serve` then returns. A read that fails (a damaged chunk) answers EIO and logs the
repository's one-line error; every write is refused (EROFS).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Union

from reconciler.errors import VmkeepError

__all__ = ["Leaf", "Tree", "fuse_available", "serve"]

log = logging.getLogger("reconciler.mount")


@dataclass(frozen=True)
class Leaf:
    """A read-only file: its size, modification time and a reader of byte ranges."""

    size: int
    mtime: float
    read: Callable[[int, int], bytes]


Tree = dict[str, Union[Leaf, "Tree"]]


def fuse_available() -> str | None:
    """None when FUSE can be used here, else why not (one line)."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this kernel or container)"
    try:
        _binding()
    except (OSError, ImportError) as exc:
        return f"libfuse 3 is not installed (Debian package fuse3): {exc}"
    return None


def _binding() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mfusepy

    return mfusepy


def _find(tree: Tree, path: str) -> Leaf | Tree | None:
    node: Leaf | Tree = tree
    for part in (p for p in path.split("/") if p):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _count_dirs(tree: Tree) -> Iterator[Tree]:
    return (v for v in tree.values() if isinstance(v, dict))


def serve(tree: Tree, mountpoint: str, *, mtime: float = 0.0, name: str = "vmkeep") -> None:
    """Mount `tree` read-only at `mountpoint` and serve it until unmounted or signalled."""
    fuse = _binding()
    uid, gid = os.getuid(), os.getgid()
    lock = threading.Lock()

    operations: Any = fuse.Operations

    class ReadOnly(operations):
        use_ns = True

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            node = _find(tree, path)
            if node is None:
                raise fuse.FuseOSError(errno.ENOENT)
            if isinstance(node, dict):
                ns = int(mtime * 1e9)
                return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2 + sum(
                    1 for _ in _count_dirs(node)), "st_size": 0, "st_uid": uid, "st_gid": gid,
                    "st_mtime": ns, "st_atime": ns, "st_ctime": ns}
            ns = int(node.mtime * 1e9)
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": node.size,
                    "st_uid": uid, "st_gid": gid, "st_mtime": ns, "st_atime": ns,
                    "st_ctime": ns, "st_blocks": (node.size + 511) // 512}

        def readdir(self, path: str, fh: int) -> list[str]:
            node = _find(tree, path)
            if not isinstance(node, dict):
                raise fuse.FuseOSError(errno.ENOTDIR)
            return [".", "..", *sorted(node)]

        def open(self, path: str, flags: int) -> int:
            node = _find(tree, path)
            if node is None:
                raise fuse.FuseOSError(errno.ENOENT)
            if isinstance(node, dict):
                raise fuse.FuseOSError(errno.EISDIR)
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
                raise fuse.FuseOSError(errno.EROFS)
            return 0

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            node = _find(tree, path)
            if not isinstance(node, Leaf):
                raise fuse.FuseOSError(errno.EISDIR)
            try:
                with lock:
                    return node.read(offset, min(size, max(0, node.size - offset)))
            except VmkeepError as exc:
                log.error("%s: %s", path.lstrip("/"), exc)
                raise fuse.FuseOSError(errno.EIO) from None

        def statfs(self, path: str) -> dict[str, int]:
            return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    # libfuse handles SIGINT/SIGTERM/SIGHUP (end the loop, unmount) only where no handler
    # is set: give it SIGINT back from Python's KeyboardInterrupt for the mount's lifetime.
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            fuse.FUSE(ReadOnly(), mountpoint, foreground=True, ro=True, nothreads=True,
                      fsname=name, subtype="vmkeep")
    except RuntimeError as exc:
        # fuse_main's codes: 8 = the loop ended by a signal (unmounted), else no mount at all
        if str(exc) != "8" or os.path.ismount(mountpoint):
            raise VmkeepError(f"cannot mount at {mountpoint} (libfuse error {exc}; is it "
                              "already mounted, or is FUSE not allowed here?)") from None
    finally:
        signal.signal(signal.SIGINT, previous)

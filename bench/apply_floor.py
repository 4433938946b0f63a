"""Benchmark: the CPU floor of an export on this machine — what apply must spend per GiB.

    .venv/bin/python bench/apply_floor.py              # 256 MiB of VM-disk-like data
    .venv/bin/python bench/apply_floor.py --size 64M

`bench/apply.py` compares `vmkeep apply` with a raw datastore download of the same bytes. On
a machine with 2 cores both are CPU-bound, so their ratio cannot exceed the ratio of the
CPU each needs per byte. This script measures, on one core and on the same kind of data
(`bench/repository.py`'s image generator), the per-GiB CPU of every stage an export cannot
skip:

* **TLS**: a loopback TLS 1.3 connection with the default cipher (what the datastore
  interface serves), 8 MiB writes and reads — the server's encryption and the client's
  decryption, each timed in its own thread (`time.thread_time`);
* **BLAKE3** of 64 KiB chunks (the chunk ids);
* **zstd** of the same chunks (compression of what is new, all of it on day 1), at level 1
  (a new repository's level) and level 3 (a repository created before the setting).

The raw download pays TLS on both ends; apply pays TLS on both ends plus hashing and
compression. On two cores shared by the simulator and vmkeep, the best apply/raw
throughput ratio is therefore (TLS server + TLS client) / (TLS server + TLS client + BLAKE3
+ zstd): printed as the "ceiling", for each zstd level. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import blake3
import zstandard

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
CHUNK = 64 * 1024


def image(size: int, seed: int = 7) -> bytes:
    spec = importlib.util.spec_from_file_location("bench_repository",
                                                  ROOT / "bench" / "repository.py")
    assert spec and spec.loader
    module: Any = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "disk.img"
        module.build_day1(path, size, seed)
        return path.read_bytes()


def tls_cpu(data: bytes) -> tuple[float, float]:
    """CPU seconds of the TLS server (encrypting) and client (decrypting) moving `data`."""
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = Path(tmp) / "key.pem", Path(tmp) / "cert.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"],
                       check=True, capture_output=True)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        client_ctx = ssl.create_default_context(cafile=str(cert))
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        cpu: dict[str, float] = {}

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                started = time.thread_time()
                view = memoryview(data)
                for start in range(0, len(data), 8 * MiB):
                    tls.sendall(view[start:start + 8 * MiB])
                cpu["server"] = time.thread_time() - started

        thread = threading.Thread(target=serve)
        thread.start()
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                client_ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            started = time.thread_time()
            buffer = bytearray(8 * MiB)
            received = 0
            while received < len(data):
                n = tls.recv_into(buffer)
                if not n:
                    break
                received += n
            cpu["client"] = time.thread_time() - started
        thread.join()
        listener.close()
        return cpu["server"], cpu["client"]


def per_chunk_cpu(data: bytes, work: Any) -> float:
    started = time.thread_time()
    view = memoryview(data)
    for start in range(0, len(data), CHUNK):
        work(view[start:start + CHUNK])
    return time.thread_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M", help="bytes of image data (K/M/G suffix)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    units = {"K": 1 << 10, "M": MiB, "G": 1 << 30}
    size = int(args.size[:-1]) * units[args.size[-1].upper()] if args.size[-1].isalpha() \
        else int(args.size)
    data = image(size)
    levels = (1, 3)
    compressors = {level: zstandard.ZstdCompressor(level=level) for level in levels}
    best: dict[str, float] = {}
    for _ in range(args.repeat):
        server, client = tls_cpu(data)
        figures = {
            "TLS server (encrypt)": server,
            "TLS client (decrypt)": client,
            "BLAKE3, 64 KiB chunks": per_chunk_cpu(data, lambda c: blake3.blake3(c).digest()),
            **{f"zstd level {level}, 64 KiB chunks": per_chunk_cpu(data, c.compress)
               for level, c in compressors.items()},
        }
        for name, seconds in figures.items():
            best[name] = min(best.get(name, seconds), seconds)
    gib = size / (1 << 30)
    print(f"{size / MiB:.0f} MiB of VM-disk-like data, best of {args.repeat}, one core each:")
    for name, seconds in best.items():
        rate = size / MiB / seconds
        print(f"  {name:<28} {seconds / gib:6.2f} s CPU per GiB  ({rate:6.0f} MiB/s)")
    raw = best["TLS server (encrypt)"] + best["TLS client (decrypt)"]
    print(f"raw download: {raw / gib:.2f} s CPU per GiB")
    for level in levels:
        export = raw + best["BLAKE3, 64 KiB chunks"] + best[f"zstd level {level}, 64 KiB chunks"]
        print(f"zstd level {level}: export {export / gib:.2f} s CPU per GiB (before pack writes "
              f"and fsyncs); ceiling of apply / raw throughput when both are CPU-bound: "
              f"{raw / export:.2f}")


if __name__ == "__main__":
    main()

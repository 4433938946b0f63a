"""Resumable Range reads and uploads against a real HTTP server that misbehaves on purpose.

The server speaks the datastore file interface's shape (GET/HEAD/PUT, Range → 206); the
simulator-based export tests cover the real vCenter path.
"""

from __future__ import annotations

import http.client
import http.server
import os
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from reconciler.adapters.datastore import (
    DatastoreFile,
    RangeReader,
    ZeroExtended,
    flat_extent,
    parse_datastore_path,
    upload,
)
from reconciler.errors import TransientError, VCenterError

DATA = os.urandom(3 * 1024 * 1024 + 17)


class Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    faults: ClassVar[list[str]] = []  # consumed one per GET: "drop", "503", "ok"
    cookies: ClassVar[list[str]] = []
    peers: ClassVar[list[tuple[str, int]]] = []  # the client's address, per GET
    version: ClassVar[str] = "HTTP/1.0"

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        data = self.files.get(self.path)
        self.send_response(200 if data is not None else 404)
        self.send_header("Content-Length", str(len(data or b"")))
        self.end_headers()

    def do_GET(self) -> None:
        self.cookies.append(self.headers.get("Cookie", ""))
        self.peers.append(self.client_address)
        data = self.files[self.path]
        fault = self.faults.pop(0) if self.faults else "ok"
        if fault == "503":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = (int(x) for x in self.headers["Range"].removeprefix("bytes=").split("-"))
        body = data[start : end + 1]
        self.send_response(206)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if fault == "drop":
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(body)

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        self.files[self.path] = self.rfile.read(length)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(params=["HTTP/1.0", "HTTP/1.1"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """The server, closing the connection after each answer (1.0) or keeping it (1.1: the
    reader then reads bodies off the socket itself and must leave the connection reusable)."""
    Handler.files.clear()
    Handler.faults.clear()
    Handler.cookies.clear()
    Handler.peers.clear()
    Handler.version = request.param
    handler = type("Versioned", (Handler,), {"protocol_version": request.param})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def connect(host: str, port: int) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(host, port, timeout=10)


def ds_file(host: str, port: int, path: str = "vm1/disk1-flat.vmdk") -> DatastoreFile:
    return DatastoreFile("sim", host, port, "DC0", "LocalDS_0", path)


def put(file: DatastoreFile, data: bytes) -> None:
    upload(file, connect, "vmware_soap_session=abc", [data[i : i + 65536]
                                                     for i in range(0, len(data), 65536)],
           len(data))


def test_a_datastore_path_splits_into_datastore_and_file() -> None:
    assert parse_datastore_path("[LocalDS_0] vm 1/disk1.vmdk") == ("LocalDS_0", "vm 1/disk1.vmdk")
    assert flat_extent("vm1/disk1.vmdk") == "vm1/disk1-flat.vmdk"
    with pytest.raises(ValueError):
        parse_datastore_path("vm1/disk1.vmdk")


def test_an_upload_then_a_ranged_read_round_trips_with_the_session_cookie(server) -> None:
    file = ds_file(*server)
    put(file, DATA)
    with RangeReader(file, connect, "vmware_soap_session=abc") as reader:
        assert reader.size == len(DATA)
        assert reader.read() == DATA
    assert set(Handler.cookies) == {"vmware_soap_session=abc"}


def test_a_dropped_connection_resumes_where_it_stopped(server) -> None:
    file = ds_file(*server)
    put(file, DATA)
    Handler.faults.extend(["ok", "drop", "503", "drop"])
    reader = RangeReader(file, connect, "c", sleep=lambda s: None, request_bytes=1 << 20)
    got = b"".join(iter(lambda: reader.read(1 << 20), b""))
    assert got == DATA
    assert reader.resumes == 3


def test_reading_into_a_reused_buffer_resumes_where_a_dropped_connection_stopped(
    server,
) -> None:
    file = ds_file(*server)
    put(file, DATA)
    Handler.faults.extend(["ok", "drop", "503", "drop"])
    reader = RangeReader(file, connect, "c", sleep=lambda s: None, request_bytes=1 << 20)
    buffer = bytearray(700_000)  # not a divisor of the range size: reads cross ranges
    parts = []
    while n := reader.readinto(buffer):
        parts.append(bytes(buffer[:n]))
    assert b"".join(parts) == DATA
    assert reader.resumes == 3
    assert reader.readinto(buffer) == 0


def test_every_range_of_a_file_comes_over_one_connection_when_the_server_keeps_it_alive(
    server,
) -> None:
    file = ds_file(*server)
    put(file, DATA)
    reader = RangeReader(file, connect, "c", request_bytes=1 << 20)
    buffer = bytearray(3 << 20)
    got = bytearray()
    while n := reader.readinto(buffer):
        got += buffer[:n]
    reader.seek(1 << 20)
    again = reader.read(1 << 20)
    assert (bytes(got), again) == (DATA, DATA[1 << 20 : 2 << 20])
    assert (reader.requests, reader.resumes) == (6, 0)  # HEAD, 4 ranges, 1 after the seek
    connections = len(set(Handler.peers))
    assert connections == (1 if Handler.version == "HTTP/1.1" else 5)


def test_a_zero_extended_file_reads_into_a_buffer_as_its_bytes_then_zeros(server) -> None:
    file = ds_file(*server)
    put(file, DATA)
    stream = ZeroExtended(RangeReader(file, connect, "c"), len(DATA) + 1_000_000)
    buffer = bytearray(1 << 20)
    parts = []
    while n := stream.readinto(buffer):
        parts.append(bytes(buffer[:n]))
    assert b"".join(parts) == DATA + bytes(1_000_000)
    stream.seek(len(DATA) - 5)
    assert stream.readinto(buffer) == 1_000_005
    assert bytes(buffer[:1_000_005]) == DATA[-5:] + bytes(1_000_000)
    stream.close()


def test_reads_after_a_seek_start_at_the_new_offset(server) -> None:
    file = ds_file(*server)
    put(file, DATA)
    reader = RangeReader(file, connect, "c")
    reader.read(10)
    reader.seek(2 * 1024 * 1024)
    assert reader.read(100) == DATA[2 * 1024 * 1024 : 2 * 1024 * 1024 + 100]
    reader.seek(5)
    assert reader.read(5) == DATA[5:10]


def test_a_server_that_keeps_failing_gives_a_transient_error_naming_the_file(server) -> None:
    file = ds_file(*server)
    put(file, DATA)
    Handler.faults.extend(["503"] * 10)
    reader = RangeReader(file, connect, "c", attempts=3, sleep=lambda s: None)
    with pytest.raises(TransientError, match=r"\[LocalDS_0\] vm1/disk1-flat.vmdk at byte 0"):
        reader.read(100)


def test_a_missing_file_is_a_clear_error(server) -> None:
    with pytest.raises(VCenterError, match="does not exist"):
        RangeReader(ds_file(server[0], server[1], "nope-flat.vmdk"), connect, "c")

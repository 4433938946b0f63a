"""A restore streams a disk as an HTTP request body (to a datastore upload).

`DiskReader.blocks()` is the body: `bytes` blocks, verified chunk by chunk, whose lengths add
up to the disk's size (the Content-Length). These tests pin that contract and send a disk
through the standard library's HTTP client to a local server; the end-to-end test against
the vSphere simulator lives with the datastore adapter.
"""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from reconciler.adapters.repository import reader as reader_module
from reconciler.errors import CorruptionError

from .disks import CHUNK, export, flip_chunk, noise, open_repo, point_id, text


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_module, "BATCH_BYTES", 2 * CHUNK)


def disk_contents() -> bytes:
    return noise("upload", 10 * CHUNK) + bytes(5 * CHUNK) + text("upload", 3 * CHUNK + 7)


@pytest.mark.usefixtures("small_batches")
def test_a_disk_streams_as_bytes_blocks_that_add_up_to_its_size_and_restart_from_zero(
    tmp_path: Path,
) -> None:
    data = disk_contents()
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"d0": data})
    disk = repo.open_disk(point_id(1), "d0")
    blocks = list(disk.blocks())
    assert all(type(block) is bytes and 0 < len(block) <= 2 * CHUNK for block in blocks)
    assert sum(len(block) for block in blocks) == disk.size == len(data)
    assert b"".join(blocks) == data  # zero chunks included: an upload has no holes
    assert b"".join(disk.blocks()) == data  # starts over: a retried upload calls it again
    assert b"".join(disk) == data  # iterating the reader is the same


@pytest.mark.usefixtures("small_batches")
def test_a_damaged_chunk_cuts_the_stream_short_with_an_error_naming_it(tmp_path: Path) -> None:
    data = noise("cut short", 12 * CHUNK)
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"d0": data})
    flip_chunk(repo, repo.open_disk(point_id(1), "d0").ids[9])
    sent: list[bytes] = []
    with pytest.raises(CorruptionError, match=rf"chunk 9 at offset {9 * CHUNK}"):
        for block in open_repo(tmp_path).open_disk(point_id(1), "d0").blocks():
            sent.append(block)
    assert b"".join(sent) == data[: 8 * CHUNK]  # good blocks before it, nothing wrong after


class Receiver(http.server.BaseHTTPRequestHandler):
    """Stores the body of each PUT, read by its Content-Length."""

    bodies: ClassVar[list[bytes]] = []
    timeout = 10  # a client that stops sending fails the test instead of hanging it

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        Receiver.bodies.append(self.rfile.read(length))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.HTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Receiver.bodies = []
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_a_disk_reader_is_a_request_body_for_the_standard_http_client(
    tmp_path: Path, server: http.server.HTTPServer
) -> None:
    data = disk_contents()
    repo = open_repo(tmp_path)
    export(repo, point_id(1), {"d0": data})
    disk = repo.open_disk(point_id(1), "d0")
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    headers = {"Content-Length": str(disk.size)}
    conn.request("PUT", "/disk-flat.vmdk", body=disk.blocks(), headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 201
    assert Receiver.bodies == [data]

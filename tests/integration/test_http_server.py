"""The controller's HTTP adapter on a real loopback socket: read-only, no cookies, fixed
answers for errors, IPv4 and IPv6."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest

from reconciler.adapters.http_server import HttpServer, Response


def boom() -> Response:
    raise RuntimeError("secret detail")


Served = tuple[HttpServer, list[str]]


@pytest.fixture(params=["127.0.0.1", "::1"])
def server(request: pytest.FixtureRequest) -> Iterator[Served]:
    errors: list[str] = []
    s = HttpServer((request.param, 0), {"/": lambda: Response(200, "text/plain", b"hi"),
                                        "/boom": boom},
                   on_error=lambda path, exc: errors.append(f"{path}: {exc}"))
    s.start()
    yield s, errors
    s.stop()


def ask(server: HttpServer, method: str, path: str) -> http.client.HTTPResponse:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, path)
    return conn.getresponse()


def test_get_and_head_are_served_with_protective_headers_and_no_cookie(server: Served) -> None:
    s, _ = server
    answer = ask(s, "GET", "/?refresh=1")
    assert answer.status == 200 and answer.read() == b"hi"
    assert answer.getheader("Set-Cookie") is None
    assert answer.getheader("X-Content-Type-Options") == "nosniff"
    assert answer.getheader("Cache-Control") == "no-store"
    head = ask(s, "HEAD", "/")
    assert head.status == 200 and head.read() == b""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_other_methods_are_refused(server: Served, method: str) -> None:
    s, _ = server
    answer = ask(s, method, "/")
    assert answer.status == 405 and answer.getheader("Allow") == "GET, HEAD"


def test_a_failing_page_is_a_fixed_500_and_the_error_goes_to_the_log(server: Served) -> None:
    s, errors = server
    answer = ask(s, "GET", "/boom")
    body = answer.read()
    assert answer.status == 500 and b"secret" not in body
    assert errors == ["/boom: secret detail"]
    assert ask(s, "GET", "/nope").status == 404

"""A small read-only HTTP server (the standard library's) for the controller's endpoints.

    server = HttpServer(("127.0.0.1", 9469), {"/metrics": metrics_page, ...})
    server.start()          # serves in a daemon thread; server.address is the bound one
    server.stop()

Each route is a function returning a `Response`. Only GET and HEAD are served (others get
405); unknown paths 404; a route that raises answers 500 with a fixed text (the exception
goes to `on_error`, never to the client). No cookies are ever set; every answer carries
headers that keep browsers from sniffing, framing, caching or loading anything else.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from reconciler.ports import Response

__all__ = ["HttpServer", "Response"]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "img-src 'none'; frame-ancestors 'none'; form-action 'none'",
}


Route = Callable[[], Response]


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class HttpServer:
    def __init__(self, address: tuple[str, int], routes: Mapping[str, Route], *,
                 on_error: Callable[[str, BaseException], None] | None = None) -> None:
        routes = dict(routes)
        report = on_error or (lambda path, exc: None)

        class Handler(BaseHTTPRequestHandler):
            server_version = "vmkeep"
            sys_version = ""

            def do_GET(self) -> None:
                self._answer(send_body=True)

            def do_HEAD(self) -> None:
                self._answer(send_body=False)

            def _refuse(self) -> None:
                self._send(Response(405, "text/plain; charset=utf-8",
                                    b"read-only: only GET and HEAD\n"), True, allow=True)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

            def _answer(self, send_body: bool) -> None:
                path = urlsplit(self.path).path
                route = routes.get(path)
                if route is None:
                    response = Response(404, "text/plain; charset=utf-8", b"not found\n")
                else:
                    try:
                        response = route()
                    except Exception as exc:
                        report(path, exc)
                        response = Response(500, "text/plain; charset=utf-8",
                                            b"internal error; see the controller's log\n")
                self._send(response, send_body)

            def _send(self, response: Response, send_body: bool, allow: bool = False) -> None:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in SECURITY_HEADERS.items():
                    self.send_header(name, value)
                if allow:
                    self.send_header("Allow", "GET, HEAD")
                self.end_headers()
                if send_body:
                    self.wfile.write(response.body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # requests are not logged (a scraper every 15 s is noise)

        server_class = _Server6 if ":" in address[0] else ThreadingHTTPServer
        self._server = server_class(address, Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="vmkeep-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

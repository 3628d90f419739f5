"""Serving packs on 127.0.0.1 for the length of a run.

`PackServer(pack)` serves one pack with the standard library's threading HTTP server on a free
loopback port: a manifest page as `text/html; charset=utf-8`, a manifest redirect as a 302 whose
Location is the target's canonical URL (so no port reaches the browser's view of the site), and 404
for anything else. A request is answered from the manifest alone: its path is only ever a key
looked up there, never joined onto a folder, and one that tries to leave the pack ("..", encoded or
not, a backslash, an absolute or authority path) gets 400. `PackServers(packs)` serves several at
once, one server a pack, as the mapping root URL -> port that `Browser` takes.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from harness.errors import HarnessError
from harness.web.pack import Pack

LOOPBACK = "127.0.0.1"


def request_key(raw_path: str) -> str | None:
    """The page key a request path asks for (query ignored), or None where it tries to leave the
    pack: a dot segment, encoded or not, a backslash, NUL, or a path that is not a plain "/..."."""
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/") or path.startswith("//"):
        return None
    key = unquote(path)
    if any(c in key for c in "\\\0") or any(s in (".", "..") for s in key.split("/")):
        return None
    return key.rstrip("/") or "/"


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        pack = self.server.pack
        key = request_key(self.path)
        if key is None:
            self._send(400, b"<h1>400 Bad Request</h1>")
        elif key in pack.redirects:
            self._send(302, b"", location=pack.root.url_for(pack.redirects[key]))
        elif key in pack.pages:
            self._send(200, pack.page_bytes(key))
        else:
            self._send(404, b"<h1>404 Not Found</h1>")

    def _send(self, code: int, body: bytes, location: str | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if location:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # a run's output is its records, not access logs
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, pack: Pack):
        self.pack = pack
        super().__init__((LOOPBACK, 0), _Handler)

    def handle_error(self, request, client_address) -> None:
        """A browser that hangs up early (a page cut at max_bytes) is expected; anything else is a bug
        and is printed as the standard library does."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class PackServer:
    """`with PackServer(pack) as server:` serves `pack` on 127.0.0.1:`server.port` until the block ends."""

    def __init__(self, pack: Pack):
        self.pack = pack
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the listening socket is bound to."""
        if self._server is None:
            raise HarnessError(f"{self.pack.name}: the pack server is not running")
        return self._server.socket.getsockname()[:2]

    @property
    def port(self) -> int:
        return self.address[1]

    def __enter__(self) -> "PackServer":
        self._server = _Server(self.pack)
        # A short poll so that leaving the block does not wait half a second per server.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"pack-server:{self.pack.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None


class PackServers(Mapping[str, int]):
    """Several packs served at once: root URL -> port, one server a pack; two packs may not share a
    host (a canonical URL must name one site)."""

    def __init__(self, packs: Iterable[Pack]):
        self._servers: dict[str, PackServer] = {}
        hosts: dict[str, Pack] = {}
        for pack in packs:
            other = hosts.setdefault(pack.root.host, pack)
            if other is not pack:
                raise HarnessError(f"{pack.dir}: its host {pack.root.host} is also {other.dir}'s; one pack a host")
            self._servers[pack.root_url] = PackServer(pack)

    def __enter__(self) -> "PackServers":
        try:
            for server in self._servers.values():
                server.__enter__()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for server in self._servers.values():
            server.__exit__()

    def __getitem__(self, root_url: str) -> int:
        return self._servers[root_url].port

    def __iter__(self) -> Iterator[str]:
        return iter(self._servers)

    def __len__(self) -> int:
        return len(self._servers)

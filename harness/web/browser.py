"""Fetching canonical URLs from the served packs, every failure an outcome.

`Browser(sites)` takes the served sites as root URL -> port (`PackServers` is one) and fetches a
canonical URL under one of those roots from `http://127.0.0.1:<port>/<key>`; that address is the
only one it ever connects to (its allow-list), so a `file:`, `ftp:` or `javascript:` URL, another
host or port, or a URL outside the site's root is refused without a connection. It follows
redirects itself, each hop checked the same way, at most `max_redirects` of them. A fetch never
raises: its `Fetch.status` is one of `STATUSES`, and a bad page is an observation like a good one.

WebWalker fetches the live site with crawl4ai and shows whatever the crawler returns; here the
failures a live site has (broken links, files that are not pages, huge or endless pages, redirect
loops, servers that stall or are down) are named, bounded and counted instead.
"""

from __future__ import annotations

import codecs
import http.client
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from harness.errors import HarnessError
from harness.web.page import Page, parse_page
from harness.web.pack import Root, canonical_url
from harness.web.server import LOOPBACK

STATUSES = ("ok", "broken", "not_html", "too_big", "redirect_loop", "timeout", "refused", "error")
SHOWN = ("ok", "too_big")  # the statuses of a fetch that has a page to show
HTML_TYPES = ("text/html", "application/xhtml+xml")
REDIRECT_CODES = (301, 302, 303, 307, 308)
BROKEN_CODES = (404, 410)
CHUNK = 65536


@dataclass(frozen=True)
class Fetch:
    status: str  # one of STATUSES
    url: str  # the final canonical URL (the last hop tried)
    page: Page | None = None  # for ok and too_big (cut at max_bytes)
    detail: str = ""  # why, in a few words, never with a port
    html: str = ""  # the page as sent (decoded), for ok and too_big: what a snapshot stores


class Browser:
    def __init__(self, sites: Mapping[str, int], max_bytes: int = 2_000_000, timeout_s: float = 10.0,
                 max_redirects: int = 5):
        self.max_bytes, self.timeout_s, self.max_redirects = max_bytes, timeout_s, max_redirects
        self._sites: dict[str, tuple[Root, int]] = {}
        for root_url, port in sites.items():
            root = Root.of(root_url)
            if root.host in self._sites:
                raise HarnessError(f"{root_url}: two served sites on host {root.host}; one pack a host")
            self._sites[root.host] = (root, port)

    def route(self, url: str | None) -> tuple[Root, int] | None:
        """The served site a canonical URL is under, or None: the allow-list."""
        if url is None:
            return None
        site = self._sites.get(urlsplit(url).netloc)
        return site if site is not None and site[0].contains(url) else None

    def fetch(self, url: str) -> Fetch:
        deadline = time.monotonic() + self.timeout_s
        hops: list[str] = []
        current, written = canonical_url(url, url), url
        while True:
            site = self.route(current)
            if site is None:
                return Fetch("refused", current or written, detail="not a page of a served site")
            if current in hops or len(hops) > self.max_redirects:
                return Fetch("redirect_loop", current, detail=f"after {len(hops)} redirects")
            hops.append(current)
            result = self._get(site, current, deadline)
            if isinstance(result, Fetch):
                return result
            current, written = canonical_url(result, current), result

    def connection(self, root: Root, port: int, timeout: float) -> http.client.HTTPConnection:
        """The transport to a served site: its pack server on loopback, whatever the canonical host."""
        return http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)

    def _get(self, site: tuple[Root, int], url: str, deadline: float) -> Fetch | str:
        """One request: a Fetch, or the Location a redirect names."""
        root, port = site
        parts = urlsplit(url)
        target = root.key(url) + (f"?{parts.query}" if parts.query else "")
        conn = self.connection(root, port, max(deadline - time.monotonic(), 0.001))
        watchdog = None
        try:
            conn.connect()
            # The socket is cut at the deadline, whatever read is waiting: a server that sends a byte
            # a second would pass any per-read timeout forever.
            watchdog = threading.Timer(max(deadline - time.monotonic(), 0), _cut, (conn.sock,))
            watchdog.daemon = True
            watchdog.start()
            conn.request("GET", target, headers={"Accept": "text/html", "Accept-Encoding": "identity"})
            response = conn.getresponse()
            return self._answer(response, url, root, deadline)
        except ConnectionRefusedError:
            return Fetch("error", url, detail="connection refused")
        except (OSError, http.client.HTTPException, ValueError) as e:  # ValueError: a malformed chunk size
            if isinstance(e, TimeoutError) or time.monotonic() >= deadline:
                return Fetch("timeout", url, detail=f"no page within {self.timeout_s:g} s")
            return Fetch("error", url, detail=f"connection failed ({type(e).__name__})")
        finally:
            if watchdog is not None:
                watchdog.cancel()
            conn.close()

    def _answer(self, response: http.client.HTTPResponse, url: str, root: Root, deadline: float) -> Fetch | str:
        if response.status in REDIRECT_CODES:
            location = response.getheader("Location")
            return location if location else Fetch("error", url, detail=f"HTTP {response.status} without Location")
        if response.status in BROKEN_CODES:
            return Fetch("broken", url, detail=f"HTTP {response.status}")
        if response.status != 200:
            return Fetch("error", url, detail=f"HTTP {response.status}")
        kind = response.headers.get_content_type() if response.getheader("Content-Type") else "none"
        if kind not in HTML_TYPES:
            return Fetch("not_html", url, detail=kind)
        body = bytearray()
        while len(body) <= self.max_bytes:
            chunk = response.read1(CHUNK)
            if not chunk:
                break
            body += chunk
        if time.monotonic() >= deadline:  # the watchdog's cut ends a read as an end of file would
            raise TimeoutError
        status = "too_big" if len(body) > self.max_bytes else "ok"
        if status == "ok" and response.length:  # fewer bytes than Content-Length said
            return Fetch("error", url, detail="page cut short")
        html = bytes(body[:self.max_bytes]).decode(_charset(response), errors="replace")
        detail = f"cut at {self.max_bytes} bytes" if status == "too_big" else ""
        return Fetch(status, url, parse_page(html, url, root), detail, html)


def _charset(response: http.client.HTTPResponse) -> str:
    name = response.headers.get_content_charset() or "utf-8"
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "utf-8"


def _cut(sock: socket.socket | None) -> None:
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class LiveBrowser(Browser):
    """A browser on live sites, for `harness data snapshot-web`: the allow-list is the sites' own hosts
    (and ports), reached directly (HTTPS for https roots), never a proxy."""

    def __init__(self, roots: list[str], **limits):
        super().__init__(dict.fromkeys(roots, 0), **limits)

    def connection(self, root: Root, port: int, timeout: float) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if root.scheme == "https" else http.client.HTTPConnection
        return kind(root.host, timeout=timeout)

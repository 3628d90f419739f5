"""The offline web (harness/web): packs load or are refused, the server serves only a pack's manifest,
pages read as text and WebWalker-like numbered links, the browser fetches only served sites and
turns every failure into a counted outcome, and an episode is bounded and deterministic. Packs are
built here in tmp_path; misbehaving servers (stalling, trickling, endless, off-site redirects) are
raw sockets started in the test. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.config import WebConfig
from harness.errors import HarnessError
from harness.web.browser import Browser
from harness.web.env import WebEnvironment
from harness.web.pack import Pack, Root, canonical_url
from harness.web.page import parse_page
from harness.web.server import PackServer, PackServers

SITE = "https://www.site.example/"


# -- building packs and misbehaving servers ------------------------------------------------------
def make_pack(folder: Path, pages: dict[str, str], redirects: dict | None = None, root: str = SITE) -> Path:
    """A pack in `folder`: key -> HTML, each page written as pages/<n>.html."""
    (folder / "pages").mkdir(parents=True)
    files = {}
    for n, (key, html) in enumerate(pages.items()):
        files[key] = f"p{n}.html"
        (folder / "pages" / files[key]).write_text(html, encoding="utf-8")
    body = {"format": 1, "name": folder.name, "root_url": root, "domain": "conference", "lang": "en",
            "source": "written", "pages": files, **({"redirects": redirects} if redirects else {})}
    (folder / "manifest.json").write_text(json.dumps(body))
    return folder


def html(title: str, body: str) -> str:
    return f"<html><head><title>{title}</title></head><body>{body}</body></html>"


SITE_PAGES = {
    "/": html("Harrowgate", '<h1>Harrowgate Birds</h1><p>A society.</p><a href="/publications">Publications</a> '
              '<a href="people">People</a> <a href="/gone">Old page</a> <a href="/old-pubs">Old publications</a> '
              '<a href="/loop-a">Loop</a> <a href="/big">Big</a>'),
    "/publications": html("Publications",
                          '<p>Annual report 2024.</p><a href="/">Home</a> <a href="/people">People</a>'),
    "/people": html("People", '<p>Chair: Ada Byrne.</p><a href="../">Home</a> <a href="publications">Publications</a>'),
    "/big": html("Big", "<p>" + "lorem ipsum " * 30_000 + "</p>"),
}
SITE_REDIRECTS = {"/old-pubs": "/publications", "/loop-a": "/loop-b", "/loop-b": "/loop-a"}


@pytest.fixture
def site(tmp_path) -> Pack:
    return Pack.load(make_pack(tmp_path / "site", SITE_PAGES, SITE_REDIRECTS))


@contextmanager
def raw_server(respond):
    """A socket server answering each connection with `respond(conn, stop)`, one at a time."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            with conn:
                try:
                    conn.settimeout(5)
                    conn.recv(65536)
                    respond(conn, stop)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def reply(head: str, body: bytes = b""):
    return lambda conn, stop: conn.sendall(head.encode() + b"\r\n\r\n" + body)


def stall_mid_body(conn, stop):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n<p>start")
    stop.wait(5)


def trickle(conn, stop):  # a byte every 20 ms for 3 s: no single read ever waits long
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n")
    for _ in range(150):
        if stop.wait(0.02):
            break
        conn.sendall(b"x")


def no_headers(conn, stop):
    stop.wait(5)


def endless(conn, stop):
    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n")
    while not stop.is_set():
        conn.sendall(b"<p>more</p>" * 1000)


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]


def raw_get(port: int, target: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.0\r\nHost: www.site.example\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


# -- packs ----------------------------------------------------------------------------------------
def test_a_pack_loads(site):
    assert (site.name, site.root_url, site.domain, site.source) == ("site", SITE, "conference", "written")
    assert set(site.pages) == {"/", "/publications", "/people", "/big"}
    assert b"Annual report 2024" in site.page_bytes("/publications")
    with pytest.raises(HarnessError, match="no page '/nope'"):
        site.page_bytes("/nope")


def _link_out(folder: Path) -> None:
    (folder.parent / "secret.html").write_text("TOPSECRET")
    (folder / "pages" / "p0.html").unlink()
    os.symlink(folder.parent / "secret.html", folder / "pages" / "p0.html")


BAD_PACKS = {
    "outside pages/": ({"pages": {"/": "../manifest.json"}}, None,
                       "pages['/']: '../manifest.json': a page file is a relative path inside pages/"),
    "absolute": ({"pages": {"/": "/etc/passwd"}}, None, "pages['/']: '/etc/passwd': a page file is a relative path"),
    "symlink out": ({}, _link_out, "pages['/']: 'p0.html' leads outside pages/"),
    "missing file": ({"pages": {"/": "nope.html"}}, None, "pages['/']: 'nope.html': no such file"),
    "unknown key": ({"pagez": {}}, None, "pagez: unknown key; did you mean: pages"),
    "no root page": ({"pages": {"/a": "p0.html"}}, None, "pages: no root page"),
    "domain": ({"domain": "conferences"}, None, "domain: 'conferences'; did you mean: conference"),
    "format": ({"format": 2}, None, "format: 2: only format 1"),
    "source": ({"source": "scraped"}, None, "source: 'scraped'"),
    "trailing slash": ({"pages": {"/": "p0.html", "/a/": "p0.html"}}, None, "pages['/a/']: '/a/': no trailing"),
    "relative key": ({"pages": {"/": "p0.html", "a": "p0.html"}}, None, "pages['a']: 'a': a page key"),
    "dot key": ({"pages": {"/": "p0.html", "/a/../b": "p0.html"}}, None, "dot segment"),
    "redirect target": ({"redirects": {"/old": "../x"}}, None, "redirects['/old'] target: '../x'"),
    "redirect on a page": ({"redirects": {"/": "/a"}}, None, "redirects['/']: is also a page"),
    "root url": ({"root_url": "ftp://www.site.example/"}, None,
                 "root_url: 'ftp://www.site.example/' is not a site root"),
    "name type": ({"name": 3}, None, "name: must be a non-empty string"),
}


@pytest.mark.parametrize("case", BAD_PACKS, ids=list(BAD_PACKS))
def test_a_bad_pack_is_refused_naming_the_file_and_key(tmp_path, case):
    change, setup, message = BAD_PACKS[case]
    folder = make_pack(tmp_path / "pack", {"/": html("x", "x")})
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, **change}))
    if setup:
        setup(folder)
    with pytest.raises(HarnessError) as e:
        Pack.load(folder)
    assert str(e.value).startswith(f"{folder / 'manifest.json'}: ")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_not_a_pack_or_not_json(tmp_path):
    with pytest.raises(HarnessError, match="not a site pack"):
        Pack.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(HarnessError, match=r"manifest.json: not JSON \(.*line 1\)"):
        Pack.load(tmp_path)


def test_a_symlink_inside_pages_is_allowed(tmp_path):
    folder = make_pack(tmp_path / "pack", {"/": html("x", "x"), "/b": html("b", "b")})
    (folder / "pages" / "p1.html").unlink()
    os.symlink("p0.html", folder / "pages" / "p1.html")
    assert Pack.load(folder).page_bytes("/b") == Pack.load(folder).page_bytes("/")


# -- canonical URLs -------------------------------------------------------------------------------
CANONICAL = [
    ("/x", "https://www.site.example/a/b", "https://www.site.example/x"),
    ("x", "https://www.site.example/a/b", "https://www.site.example/a/x"),
    ("../x", "https://www.site.example/a/b/c", "https://www.site.example/a/x"),
    ("x#part", "https://www.site.example/a", "https://www.site.example/x"),
    ("#top", "https://www.site.example/a", "https://www.site.example/a"),
    ("?q=1", "https://www.site.example/p", "https://www.site.example/p?q=1"),
    ("HTTPS://WWW.Site.Example:443/A/", SITE, "https://www.site.example/A"),
    ("https://www.site.example/a/./b/../c/", SITE, "https://www.site.example/a/c"),
    ("https://www.site.example", SITE, "https://www.site.example/"),
    ("  a b/é  ", SITE, "https://www.site.example/a%20b/%C3%A9"),
    ("https://www.site.example:8080/x", SITE, "https://www.site.example:8080/x"),
    ("mailto:a@b.example", SITE, "mailto:a@b.example"),
    ("javascript:void(0)#x", SITE, "javascript:void(0)"),
    ("http://[::1", SITE, None),
]


@pytest.mark.parametrize("href,base,expected", CANONICAL)
def test_canonical_urls(href, base, expected):
    assert canonical_url(href, base) == expected


def test_a_root_with_a_path_holds_only_what_is_below_it():
    root = Root.of("https://www.uni.example/dept/")
    assert (root.url, root.key("https://www.uni.example/dept/staff/a"), root.url_for("/staff")) == \
        ("https://www.uni.example/dept", "/staff/a", "https://www.uni.example/dept/staff")
    assert root.contains("https://www.uni.example/dept") and root.contains("https://www.uni.example/dept/x")
    for outside in ("https://www.uni.example/department", "https://www.uni.example/", "http://www.uni.example/dept/x",
                    "https://uni.example/dept/x"):
        assert not root.contains(outside), outside


def test_an_episode_on_a_root_with_a_path(tmp_path):
    root = "https://www.uni.example/dept/"
    pack = Pack.load(make_pack(tmp_path / "dept", {
        "/": html("Dept", '<a href="staff">Staff</a><a href="/dept/">Home</a><a href="/">University</a>'
                          '<a href="/department">Elsewhere</a>'),
        "/staff": html("Staff", '<p>Ada</p><a href="/dept">Department</a>')}, root=root))
    with PackServers([pack]) as servers:
        env = WebEnvironment(servers)
        first = env.reset(root)
        assert first.url == "https://www.uni.example/dept"
        assert first.text.endswith("Links (click by number):\n[1] Staff")
        staff = env.click(1)
        assert (staff.status, staff.url) == ("ok", "https://www.uni.example/dept/staff") and "Ada" in staff.text
        assert env.click(1).text == first.text


# -- pages ----------------------------------------------------------------------------------------
def test_page_text_is_the_visible_text():
    page = parse_page(
        "<!doctype html><html><head><title> The  Title </title><style>p{color:red}</style>"
        "<script>var hidden = 1;</script><meta name=x content=hidden></head><body>"
        "<h1>Heading  One</h1><p>First\n   paragraph &amp; <b>bold</b>.</p><noscript>hidden</noscript>"
        "<ul><li>one</li><li><p>two</p></li></ul><table><tr><th>Date</th><th>Event</th></tr>"
        "<tr><td>1 May</td><td>Deadline</td></tr></table>line<br>break<h3></h3><![bogus[ x ]]><div>after</div>"
        "<svg><title>icon</title></svg></body></html>",
        SITE, Root.of(SITE))
    assert page.title == "The Title"
    assert page.text == ("# Heading One\nFirst paragraph & bold.\n- one\n- two\nDate | Event\n1 May | Deadline\n"
                         "line\nbreak\nafter")


def test_a_head_left_open_ends_at_the_body():
    page = parse_page("<head><title>T</title><meta charset=utf-8><p>Shown</p>", SITE, Root.of(SITE))
    assert (page.title, page.text) == ("T", "Shown")


def test_the_link_rules():
    anchors = [
        ("https://www.site.example/pubs", "Publications"),  # absolute canonical
        ("/pubs#2024", "Pubs 2024"),  # the same URL: the first text wins
        ("intro", "Intro"),  # relative to the page, not the root
        ("../people/", "People"),
        ("#top", "Top"), ("guide", "Guide"),  # the page itself
        ("https://other.example/x", "Elsewhere"), ("https://www.site.example:8080/x", "Other port"),
        ("http://www.site.example/plain", "Other scheme"), ("ftp://www.site.example/f", "FTP"),
        ("mailto:x@site.example", "Mail"), ("javascript:void(0)", "Menu"), ("tel:+100", "Phone"),
        ("/logo.PNG", "Logo"), ("/paper.pdf", "Paper"), ("/data.zip", "Data"), ("/x.jpeg?v=2", "Photo"),
        ("/empty", ""),  # no text
        ("  /spaced  ", "Spaced"),
        ("/javascript-course", "JS course"),
    ]
    body = "".join(f'<a href="{href}">{text}</a>' for href, text in anchors)
    body += ('<a href="/events" title="Events"></a><a href="/news"><img src="n.png" alt="News"></a>'
             '<a name="x">No href</a>')
    page = parse_page(html("Guide", body), "https://www.site.example/docs/guide", Root.of(SITE))
    assert [(link.number, link.text, link.url) for link in page.links] == [
        (1, "Publications", "https://www.site.example/pubs"),
        (2, "Intro", "https://www.site.example/docs/intro"),
        (3, "People", "https://www.site.example/people"),
        (4, "Spaced", "https://www.site.example/spaced"),
        (5, "JS course", "https://www.site.example/javascript-course"),
        (6, "Events", "https://www.site.example/events"),
        (7, "News", "https://www.site.example/news"),
    ]


def test_a_page_renders_within_its_caps():
    body = "<p>" + "word " * 100 + "</p>" + "".join(f'<a href="/p{i}">Page {i}</a>' for i in range(10))
    page = parse_page(html("Caps", body), SITE, Root.of(SITE))
    text = page.render(page_chars=50, max_links=3)
    assert text.startswith("Page: Caps\nURL: https://www.site.example/\n\n" + page.text[:50] + "\n[... ")
    assert text.endswith("Links (click by number):\n[1] Page 0\n[2] Page 1\n[3] Page 2\n[... 7 more links not shown]")


# -- the server -----------------------------------------------------------------------------------
def test_the_server_serves_the_manifest_only(site):
    with PackServer(site) as server:
        port = server.port
        status, data = raw_get(server.port, "/publications")
        assert status == 200 and b"Content-Type: text/html; charset=utf-8" in data and b"Annual report" in data
        status, data = raw_get(server.port, "/publications/?x=1")
        assert status == 200 and b"Annual report" in data
        status, data = raw_get(server.port, "/old-pubs")
        assert status == 302 and b"Location: https://www.site.example/publications\r\n" in data
        for target in ("/nope", "/p1.html", "/pages/p1.html", "/manifest.json"):
            assert raw_get(server.port, target)[0] == 404, target
    with pytest.raises(ConnectionRefusedError):  # the port closes with the block
        raw_get(port, "/")


def test_the_server_listens_on_loopback_only(site):
    with PackServer(site) as server:
        assert server.address[0] == "127.0.0.1"
        # Where the machine has another interface, the port is closed on it.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            outside = probe.getsockname()[0]
        except OSError:
            outside = None
        finally:
            probe.close()
        if outside and not outside.startswith("127."):
            with pytest.raises(OSError):
                socket.create_connection((outside, server.port), timeout=2).close()


TRAVERSALS = ["/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt", "/..%2f..%2fsecret.txt",
              "/pages/../../secret.txt", "//etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
              "/a\\..\\..\\secret.txt", "http://www.site.example/../secret.txt", "/%00", "/."]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_the_server_refuses_traversal(tmp_path, site, target):
    (tmp_path / "secret.txt").write_text("TOPSECRET root:x:0:0")
    with PackServer(site) as server:
        status, data = raw_get(server.port, target)
    # 400, refused as a way out; "//etc/passwd" the standard library reads as "/etc/passwd": no such page
    assert status == (404 if target == "//etc/passwd" else 400)
    assert b"TOPSECRET" not in data and b"root:" not in data


def test_several_packs_are_served_at_once(tmp_path):
    a = Pack.load(make_pack(tmp_path / "a", {"/": html("A", "a")}, root="https://a.example/"))
    b = Pack.load(make_pack(tmp_path / "b", {"/": html("B", "b")}, root="https://b.example/"))
    with PackServers([a, b]) as servers:
        assert set(servers) == {"https://a.example/", "https://b.example/"}
        assert servers["https://a.example/"] != servers["https://b.example/"]
        env = WebEnvironment(servers)
        assert env.reset("https://b.example").text.startswith("Page: B\n")
    with pytest.raises(HarnessError, match="one pack a host"):
        PackServers([a, Pack.load(make_pack(tmp_path / "c", {"/": html("C", "c")}, root="https://a.example/x/"))])


# -- the browser ----------------------------------------------------------------------------------
REFUSED = ["file:///etc/passwd", "https://other.example/", "https://www.site.example:8080/",
           "ftp://www.site.example/x", "javascript:alert(1)", "mailto:a@site.example", "http://www.site.example/",
           "relative/path", "http://[::1"]


@pytest.mark.parametrize("url", REFUSED)
def test_the_browser_refuses_without_connecting(url):
    # The served site's port is closed: a fetch that connected would be an error, not a refusal.
    browser = Browser({SITE: free_port()})
    assert browser.fetch(url).status == "refused"
    assert browser.fetch(SITE).status == "error"


def test_the_browser_refuses_the_transport_address(site):
    with PackServer(site) as server:
        browser = Browser({SITE: server.port})
        assert browser.fetch(f"http://127.0.0.1:{server.port}/").status == "refused"
        assert browser.fetch(SITE).status == "ok"


STALL = "https://www.stall.example/"
RAW = {  # a misbehaving server -> the fetch's status
    "not html": (reply("HTTP/1.0 200 OK\r\nContent-Type: image/png", b"\x89PNG"), "not_html"),
    "no content type": (reply("HTTP/1.0 200 OK", b"<p>x</p>"), "not_html"),
    "server error": (reply("HTTP/1.0 500 Oops\r\nContent-Type: text/html", b"oops"), "error"),
    "cut short": (reply("HTTP/1.0 200 OK\r\nContent-Type: text/html\r\nContent-Length: 500", b"<p>x"), "error"),
    "redirect to a file": (reply("HTTP/1.0 302 Found\r\nLocation: file:///etc/passwd"), "refused"),
    "redirect to another host": (reply("HTTP/1.0 302 Found\r\nLocation: https://other.example/"), "refused"),
    "redirect to the transport": (reply("HTTP/1.0 302 Found\r\nLocation: http://127.0.0.1:1/"), "refused"),
    "redirect to ftp": (reply("HTTP/1.0 302 Found\r\nLocation: ftp://www.stall.example/x"), "refused"),
    "redirect without location": (reply("HTTP/1.0 302 Found"), "error"),
    "redirect to itself": (reply("HTTP/1.0 301 Moved\r\nLocation: /"), "redirect_loop"),
    "endless": (endless, "too_big"),
    "stall mid-body": (stall_mid_body, "timeout"),
    "trickle": (trickle, "timeout"),
    "no headers": (no_headers, "timeout"),
}


@pytest.mark.parametrize("case", RAW, ids=list(RAW))
def test_a_bad_server_is_an_outcome(case):
    respond, expected = RAW[case]
    with raw_server(respond) as port:
        start = time.monotonic()
        fetched = Browser({STALL: port}, max_bytes=50_000, timeout_s=0.5).fetch(STALL)
        elapsed = time.monotonic() - start
    assert fetched.status == expected, fetched
    assert elapsed < 2.0  # the deadline holds, whatever the server does
    assert (fetched.page is not None) == (expected == "too_big")
    if expected == "too_big":
        assert "more" in fetched.page.text and fetched.detail == "cut at 50000 bytes"


def test_connection_refused_is_an_error():
    fetched = Browser({SITE: free_port()}).fetch(SITE + "a")
    assert (fetched.status, fetched.url, fetched.detail) == ("error", SITE + "a", "connection refused")


def test_pack_redirects_and_broken_links(site):
    with PackServer(site) as server:
        browser = Browser({SITE: server.port}, max_bytes=100_000)
        assert (browser.fetch(SITE + "old-pubs").status, browser.fetch(SITE + "old-pubs").url) == \
            ("ok", SITE + "publications")
        assert browser.fetch(SITE + "loop-a").status == "redirect_loop"
        assert browser.fetch(SITE + "gone").status == "broken"
        big = browser.fetch(SITE + "big")
        assert big.status == "too_big" and big.page.text.startswith("lorem ipsum")


def test_a_long_redirect_chain_stops(tmp_path):
    chain = {f"/r{i}": f"/r{i + 1}" for i in range(8)}
    pack = Pack.load(make_pack(tmp_path / "chain", {"/": html("x", "x"), "/r8": html("End", "end")}, chain))
    with PackServer(pack) as server:
        assert Browser({SITE: server.port}, max_redirects=5).fetch(SITE + "r3").status == "ok"  # 5 hops
        assert Browser({SITE: server.port}, max_redirects=5).fetch(SITE + "r2").status == "redirect_loop"


# -- the episode ----------------------------------------------------------------------------------
def walk(env: WebEnvironment) -> list:
    """One fixed episode touching every kind of action."""
    return [env.reset("https://www.site.example"), env.click(1), env.click(1), env.back(), env.back(),
            env.click(3), env.click(4), env.back(), env.click(5), env.click(6), env.click(0), env.back(),
            env.click(99), env.click(-1), env.back(), env.click(2)]


def test_an_episode(site):
    with PackServers([site]) as servers:
        env = WebEnvironment(servers, WebConfig(max_bytes=100_000))
        obs = walk(env)
    assert [o.status for o in obs] == ["ok", "ok", "ok", "ok", "ok", "broken", "ok", "ok", "redirect_loop", "too_big",
                                       "bad_action", "ok", "bad_action", "bad_action", "bad_action", "ok"]
    assert obs[0].text.startswith("Page: Harrowgate\nURL: https://www.site.example/\n\n# Harrowgate Birds\nA society.")
    assert obs[0].text.endswith("[1] Publications\n[2] People\n[3] Old page\n[4] Old publications\n[5] Loop\n[6] Big")
    assert (obs[3], obs[4]) == (obs[1], obs[0])  # back shows a page as it was shown
    assert obs[5].text.startswith('Link [3] "Old page" could not be opened: the page does not exist (a broken link).'
                                  "\nYou are still on https://www.site.example/.\n\n"
                                  "Links (click by number):\n[1] Publications")
    assert (obs[5].url, obs[6].url) == (SITE, SITE + "publications")  # the second through a redirect
    assert obs[9].url == SITE + "big" and len(obs[9].text) < 2200  # a huge page, cut, shows page_chars of text
    assert obs[10].text == "There is no link [0] on this page: this page has no links; go back."
    assert obs[12].text == "There is no link [99] on this page: choose a number from 1 to 6."
    assert obs[14].text == "There is no previous page: this is the first page of the episode."
    assert obs[15].text.startswith("Page: People\n") and not any(o.done for o in obs)
    assert env.counts == {"ok": 9, "broken": 1, "redirect_loop": 1, "too_big": 1, "bad_action": 4}
    assert [(s.action, s.url, s.status) for s in env.trajectory[:7]] == [
        ("reset", SITE, "ok"), ("click 1", SITE + "publications", "ok"), ("click 1", SITE, "ok"),
        ("back", SITE + "publications", "ok"), ("back", SITE, "ok"), ("click 3", SITE + "gone", "broken"),
        ("click 4", SITE + "publications", "ok")]
    assert [s.chars for s in env.trajectory] == [len(o.text) for o in obs]


def test_no_port_reaches_an_observation(site):
    with PackServers([site]) as servers:
        port = str(servers[SITE])
        env = WebEnvironment(servers, WebConfig(max_bytes=100_000))
        obs = walk(env)
    shown = "".join(o.text + o.url for o in obs) + "".join(s.url for s in env.trajectory)
    assert port not in shown and "127.0.0.1" not in shown and "localhost" not in shown


def test_episodes_are_deterministic(site):
    runs = []
    for _ in range(2):  # two servers, two ports
        with PackServers([site]) as servers:
            env = WebEnvironment(servers, WebConfig(max_bytes=100_000))
            runs.append((walk(env), env.trajectory, env.counts))
    assert runs[0] == runs[1]


def test_the_page_bound_ends_the_episode(site):
    with PackServers([site]) as servers:
        env = WebEnvironment(servers, WebConfig(max_pages=2))
        env.reset(SITE)
        assert env.click(1).status == "ok"  # the second page
        env.back()
        assert env.click(1).status == "ok"  # fetched already: no new page
        env.back()
        over = env.click(2)
        assert (over.status, over.done, over.text) == ("page_limit", True,
                                                       "Page limit reached: 2 pages opened. The episode is over.")
        after = env.click(1)
        assert (after.status, after.done) == ("done", True)
        assert env.back().status == "done"
    assert env.counts == {"ok": 5, "page_limit": 1, "done": 2}


def test_the_step_bound_ends_the_episode(site):
    with PackServers([site]) as servers:
        env = WebEnvironment(servers, WebConfig(max_steps=3))
        env.reset(SITE)
        assert [env.click(1).done, env.click(7).done] == [False, False]
        last = env.back()
        assert last.done and last.text.endswith("Step limit reached: that was action 3 of 3. The episode is over.")
        assert (env.click(1).status, len(env.trajectory)) == ("done", 5)


def test_the_caps_bound_what_is_clickable(tmp_path):
    body = "<p>" + "word " * 100 + "</p>" + "".join(f'<a href="/p{i}">Page {i}</a>' for i in range(10))
    pack = Pack.load(make_pack(tmp_path / "caps", {"/": html("Caps", body), "/p3": html("P3", "three")}))
    with PackServers([pack]) as servers:
        env = WebEnvironment(servers, WebConfig(page_chars=50, max_links=3))
        first = env.reset(SITE)
        assert "[3] Page 2\n[... 7 more links not shown]" in first.text and "more characters not shown" in first.text
        assert env.click(4).status == "bad_action"
        assert env.click(3).status == "broken"


def test_a_site_whose_first_page_fails():
    with raw_server(reply("HTTP/1.0 404 Not Found\r\nContent-Type: text/html")) as port:
        env = WebEnvironment({STALL: port})
        first = env.reset(STALL)
    assert (first.status, first.done, first.url) == ("broken", True, STALL)
    assert first.text == ("The site's first page https://www.stall.example/ could not be opened: "
                          "the page does not exist (a broken link). The episode is over.")
    assert env.click(1).status == "done"


def test_misuse_is_refused(site):
    env = WebEnvironment({SITE: free_port()})
    with pytest.raises(HarnessError, match="call reset"):
        env.click(1)
    with pytest.raises(HarnessError, match="no site pack serves it"):
        env.reset("https://other.example/")
    for bad in ({"page_chars": 0}, {"max_steps": 2.5}, {"fetch_timeout_s": 0}, {"max_links": True}):
        with pytest.raises(HarnessError, match=f"web.{next(iter(bad))}="):
            WebConfig(**bad)
    assert WebConfig(max_redirects=0).max_redirects == 0

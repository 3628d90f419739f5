"""A fetched page as an agent reads it: title, visible text and numbered links.

Follows WebWalker's `visit_page` observation (Alibaba-NLP/WebWalker, `WebWalker/src/app.py`,
`extract_links_with_text`; `utils.py`, `clean_markdown`): the page's text, then the links an agent
may click, kept by the same rules: an anchor with text whose URL is under the site's root, not
`javascript:`, not an image or PDF. Departures, each for a reason:

- links are numbered and clicked by number, where WebWalker shows `<button>text<button>` and maps
  a clicked text back to its URL (two links with one text were one button there);
- a link is resolved against the page it is on (WebWalker resolves every href against the root URL,
  which breaks relative links on deeper pages), its fragment dropped, and de-duplicated by URL, the
  first anchor's text kept; a link to the page itself is dropped;
- the scheme kept is the root's (WebWalker drops an href containing "javascript" anywhere, a page
  named /javascript-course too), and a link to any file that is not a page (`NOT_PAGES`: images,
  documents, archives, media, scripts, data) is dropped, not only .jpg/.jpeg/.png/.gif/.pdf;
- an anchor without text takes its `title`, `aria-label` or image `alt` (WebWalker drops it, except
  for one site's `herf-mask` class); only `<a href>` links count (no `onclick` or `data-url`: packs
  link with `<a href>` only);
- the text is the page's visible text (headings as "#" lines, list items as "- " lines, table cells
  joined by " | "), link texts included: WebWalker's markdown drops every link, text and all, so
  a mailto address or a link's own words were nowhere in its observation.
"""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from harness.web.pack import Root, canonical_url

SKIPPED = frozenset({"script", "style", "noscript", "template", "svg", "canvas", "iframe", "object"})
BLOCKS = frozenset({"address", "article", "aside", "blockquote", "br", "dd", "details", "div", "dl",
                    "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr", "main",
                    "nav", "ol", "p", "pre", "section", "summary", "table", "tr", "ul", "caption"})
PREFIXES = {"h1": "# ", "h2": "## ", "h3": "### ", "h4": "#### ", "h5": "##### ", "h6": "###### ", "li": "- "}
CELLS = frozenset({"td", "th"})
HEAD = frozenset({"head", "title", "meta", "link", "base", "style", "script", "noscript", "template"})
NOT_PAGES = frozenset({  # files that are not web pages
    ".jpg", ".jpeg", ".png", ".gif", ".bmp", ".svg", ".webp", ".ico", ".tif", ".tiff",  # images
    ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".odt", ".ods", ".odp", ".csv",
    ".zip", ".gz", ".tgz", ".tar", ".bz2", ".xz", ".rar", ".7z",
    ".mp3", ".mp4", ".wav", ".ogg", ".avi", ".mov", ".webm", ".mkv",
    ".exe", ".dmg", ".iso", ".bin", ".apk", ".css", ".js", ".json", ".xml", ".rss",
})


@dataclass(frozen=True)
class Link:
    number: int
    text: str
    url: str  # canonical


@dataclass(frozen=True)
class Page:
    url: str  # canonical
    title: str
    text: str
    links: tuple[Link, ...]

    def render(self, page_chars: int, max_links: int) -> str:
        """The observation: title, URL, the text cut at `page_chars` characters, and the first
        `max_links` links (the only ones an agent can click)."""
        text = self.text or "(no text)"
        if len(text) > page_chars:
            text = text[:page_chars] + f"\n[... {len(text) - page_chars} more characters not shown]"
        return f"Page: {self.title or '(untitled)'}\nURL: {self.url}\n\n{text}\n\n{self.render_links(max_links)}"

    def render_links(self, max_links: int) -> str:
        if not self.links:
            return "Links: none on this page."
        lines = ["Links (click by number):"] + [f"[{link.number}] {link.text}" for link in self.links[:max_links]]
        if len(self.links) > max_links:
            lines.append(f"[... {len(self.links) - max_links} more links not shown]")
        return "\n".join(lines)


def parse_page(html: str, url: str, root: Root) -> Page:
    """`html` fetched from the canonical `url` of the site at `root`."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    reader.end_anchor()
    reader.break_line()
    return Page(url, _collapse("".join(reader.title)), "\n".join(reader.lines), keep_links(reader.anchors, url, root))


def keep_links(anchors: list[tuple[str, str]], page_url: str, root: Root) -> tuple[Link, ...]:
    """The (href, text) anchors an agent may click, numbered from 1 in page order."""
    seen, links = {page_url}, []
    for href, text in anchors:
        url = canonical_url(href, root.base(page_url))
        if not text or url is None or url in seen or not root.contains(url) or _not_a_page(url):
            continue
        seen.add(url)
        links.append(Link(len(links) + 1, text, url))
    return tuple(links)


def _not_a_page(url: str) -> bool:
    return PurePosixPath(urlsplit(url).path).suffix.lower() in NOT_PAGES


def _collapse(text: str) -> str:
    return " ".join(text.split())


class _Reader(HTMLParser):
    """Collects the title, the visible text as lines, and every `<a href>` with its text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.lines: list[str] = []
        self.anchors: list[tuple[str, str]] = []
        self._line: list[str] = []
        self._prefix = ""
        self._skip = 0  # depth inside elements never shown
        self._in_head = self._in_title = False
        self._anchor: tuple[str, list[str], list[str]] | None = None  # href, text, fallbacks

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIPPED:
            self._skip += 1
        if self._skip:
            return
        attr = {k: v or "" for k, v in attrs}
        if self._in_head and tag not in HEAD:  # as in a browser, the first body tag ends the head
            self._in_head = False
        if tag == "title" and not self.title:
            self._in_title = True
        elif tag == "head":
            self._in_head = True
        elif tag == "a":
            self.end_anchor()
            if "href" in attr:
                self._anchor = (attr["href"], [], [attr.get("title", ""), attr.get("aria-label", "")])
        elif tag == "img" and self._anchor is not None:
            self._anchor[2].append(attr.get("alt", ""))
        elif tag in PREFIXES:
            self.break_line()
            self._prefix = PREFIXES[tag]
        elif tag in BLOCKS:
            self.break_line()
        elif tag in CELLS and _collapse("".join(self._line)):
            self._line.append(" | ")

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIPPED:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if tag == "title":
            self._in_title = False
        elif tag == "head":
            self._in_head = False
        elif tag == "a":
            self.end_anchor()
        elif tag in PREFIXES or tag in BLOCKS:
            self.break_line()
            self._prefix = ""

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title.append(data)
        elif not self._in_head:
            self._line.append(data)
            if self._anchor is not None:
                self._anchor[1].append(data)

    def parse_marked_section(self, i: int, report: int = 1) -> int:
        """A marked section the standard library's parser does not know (`<![bogus[`) is skipped as
        a comment would be, where that parser raises AssertionError."""
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:
            end = self.rawdata.find(">", i + 3)
            return -1 if end < 0 else end + 1

    def end_anchor(self) -> None:
        if self._anchor is not None:
            href, text, fallbacks = self._anchor
            label = _collapse("".join(text)) or next((_collapse(f) for f in fallbacks if _collapse(f)), "")
            self.anchors.append((href, label))
            self._anchor = None

    def break_line(self) -> None:
        """Ends the line; a heading's or list item's prefix waits for its first text."""
        text = _collapse("".join(self._line))
        if text:
            self.lines.append(self._prefix + text)
            self._prefix = ""
        self._line = []

"""A site pack (a folder: `manifest.json`, `pages/`, optionally `qa/`) and canonical URLs.

A pack stands in for a real site that cannot be reached. Its manifest names the site's root URL and
maps page keys to HTML files under `pages/`:

    {"format": 1, "name": "...", "root_url": "https://www.site.example/", "domain": "conference",
     "lang": "en", "source": "written", "pages": {"/": "index.html", "/a/b": "a/b.html"},
     "redirects": {"/old": "/new"}}

A key is a URL path relative to the root's path, starting with "/" ("/" is the root page itself;
on a root at a host's "/", the key is the URL path). Loading checks every key and type, and that
each page file exists and stays inside `pages/` (no "..", no absolute path, no symlink out of it):
pages are read only through these checked paths, never from a requested path.

Canonical URLs are what agents see: resolved against the page they appear on, without fragment,
scheme and host lower case, the default port dropped, dot segments resolved, unsafe characters
percent-encoded and no trailing slash except on "/" (so a relative "ada" on /people is /ada, as on
any page without a trailing slash: a pack whose pages stand for folders links root-relative or
absolute). A URL is under the root, as WebWalker's
`process_url(ROOT_URL, url).startswith(ROOT_URL)`, when it has the root's scheme and host and its
path is the root's or below it (departure: on a path boundary, so /dept does not hold /department).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NoReturn
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from harness.errors import HarnessError
from harness.registry import nearest

WEB_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}
DOMAINS = ("organization", "education", "conference", "game", "wiki")
SOURCES = ("written", "snapshot")  # or "generated:<dataset>"
REQUIRED = ("format", "name", "root_url", "domain", "lang", "source", "pages")
OPTIONAL = ("redirects",)
# RFC 3986 characters a path or query keeps as they are; anything else is percent-encoded.
PATH_SAFE = "/%:@!$&'()*+,;=-._~"
QUERY_SAFE = PATH_SAFE + "?"


def canonical_url(href: str, base: str) -> str | None:
    """`href` resolved against `base` in canonical form, or None where it does not parse. A URL with
    a scheme other than http(s) (mailto:, javascript:, file:, ftp:) comes back resolved and
    without fragment, otherwise as written: it is never under a root, and the browser refuses it."""
    try:
        parts = urlsplit(urljoin(base, href.strip()))
        scheme = parts.scheme.lower()
        if scheme not in WEB_SCHEMES:
            return urlunsplit(parts._replace(fragment=""))
        host, port = (parts.hostname or ""), parts.port
    except ValueError:  # a malformed host or port
        return None
    host = f"[{host}]" if ":" in host else host  # IPv6
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    if "@" in parts.netloc:  # user info: kept, so it matches no root
        netloc = parts.netloc.rpartition("@")[0] + "@" + netloc
    path = quote(_clean_path(parts.path), safe=PATH_SAFE)
    return urlunsplit((scheme, netloc, path, quote(parts.query, safe=QUERY_SAFE), ""))


def _clean_path(path: str) -> str:
    """Dot segments resolved (RFC 3986 5.2.4, which urljoin skips on absolute URLs), no trailing
    slash except on "/"."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    return ("/" + "/".join(out)).rstrip("/") or "/"


@dataclass(frozen=True)
class Root:
    """A site's root URL: which canonical URLs are under it, and the page key of each."""

    url: str  # canonical
    scheme: str
    host: str
    prefix: str  # the root's path without trailing slash ("" for a host's "/")

    @classmethod
    def of(cls, root_url: str) -> "Root":
        url = canonical_url(root_url, root_url)
        parts = urlsplit(url or "")
        if url is None or parts.scheme not in WEB_SCHEMES or not parts.hostname or parts.query:
            raise HarnessError(f"{root_url!r} is not a site root (https://host/ or https://host/path, no query)")
        return cls(url, parts.scheme, parts.netloc, parts.path.rstrip("/"))

    def contains(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme == self.scheme and parts.netloc == self.host
                and (parts.path == (self.prefix or "/") or parts.path.startswith(self.prefix + "/")))

    def key(self, url: str) -> str:
        """The page key of a canonical URL under the root (percent-encoded as the URL is)."""
        return urlsplit(url).path[len(self.prefix):] or "/"

    def base(self, url: str) -> str:
        """What relative links on the page at canonical `url` resolve against: the URL itself, but the
        root page of a root with a path keeps its slash ("staff" on https://x/dept/ is /dept/staff)."""
        return url + "/" if self.prefix and url == self.url else url

    def url_for(self, key: str) -> str:
        path = quote(self.prefix + key if key != "/" else (self.prefix or "/"), safe=PATH_SAFE)
        return f"{self.scheme}://{self.host}{path}"


@dataclass(frozen=True)
class Pack:
    dir: Path
    name: str
    root: Root
    domain: str
    lang: str
    source: str
    pages: dict[str, str]  # key -> file under pages/
    redirects: dict[str, str]  # key -> key

    @property
    def root_url(self) -> str:
        return self.root.url

    @classmethod
    def load(cls, folder: str | Path) -> "Pack":
        folder = Path(folder)
        path = folder / "manifest.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HarnessError(f"{folder}: not a site pack (no manifest.json)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise HarnessError(f"{path}: unreadable ({e})") from None
        except json.JSONDecodeError as e:
            raise HarnessError(f"{path}: not JSON ({e.msg}, line {e.lineno})") from None
        check = _Checker(path)
        if not isinstance(manifest, dict):
            check.fail("", "must be a JSON object")
        for key in manifest:
            if key not in REQUIRED + OPTIONAL:
                check.fail(key, f"unknown key; {nearest(key, list(REQUIRED + OPTIONAL))}")
        for key in REQUIRED:
            if key not in manifest:
                check.fail(key, "missing")
        if manifest["format"] != 1 or isinstance(manifest["format"], bool):
            check.fail("format", f"{manifest['format']!r}: only format 1 is known")
        for key in ("name", "root_url", "lang", "source"):
            if not isinstance(manifest[key], str) or not manifest[key].strip():
                check.fail(key, "must be a non-empty string")
        if manifest["domain"] not in DOMAINS:
            check.fail("domain", f"{manifest['domain']!r}; {nearest(str(manifest['domain']), list(DOMAINS))}")
        source = manifest["source"]
        if source not in SOURCES and not (source.startswith("generated:") and len(source) > len("generated:")):
            check.fail("source", f"{source!r}: one of {', '.join(SOURCES)} or generated:<dataset>")
        try:
            root = Root.of(manifest["root_url"])
        except HarnessError as e:
            raise HarnessError(f"{path}: root_url: {e}") from None
        pages = check.table(manifest, "pages")
        if "/" not in pages:
            check.fail("pages", 'no root page "/"')
        pages_dir = (folder / "pages").resolve()
        for key, file in pages.items():
            check.page_file(f"pages[{key!r}]", pages_dir, file)
        redirects = check.table(manifest, "redirects") if "redirects" in manifest else {}
        for key, target in redirects.items():
            if key in pages:
                check.fail(f"redirects[{key!r}]", "is also a page")
            check.key(f"redirects[{key!r}] target", target)
        return cls(folder, manifest["name"], root, manifest["domain"], manifest["lang"], source, pages, redirects)

    def page_bytes(self, key: str) -> bytes:
        if key not in self.pages:
            raise HarnessError(f"{self.dir}: no page {key!r} in the pack")
        return (self.dir / "pages" / self.pages[key]).read_bytes()


class _Checker:
    """One-line errors naming the manifest and the key."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str) -> NoReturn:
        raise HarnessError(f"{self.path}: {key + ': ' if key else ''}{problem}")

    def key(self, where: str, key) -> None:
        if not isinstance(key, str) or not key.startswith("/"):
            self.fail(where, f"{key!r}: a page key is a string starting with '/'")
        if key != "/" and (key.endswith("/") or "//" in key):
            self.fail(where, f"{key!r}: no trailing or doubled slash")
        if any(c in key for c in "?#\\\0") or any(s in (".", "..") for s in key.split("/")):
            self.fail(where, f"{key!r}: no query, fragment, backslash or dot segment")

    def table(self, manifest: dict, name: str) -> dict[str, str]:
        table = manifest[name]
        if not isinstance(table, dict):
            self.fail(name, "must be an object of page key -> string")
        for key, value in table.items():
            self.key(f"{name}[{key!r}]", key)
            if not isinstance(value, str) or not value:
                self.fail(f"{name}[{key!r}]", "must be a non-empty string")
        return table

    def page_file(self, where: str, pages_dir: Path, file: str) -> None:
        rel = PurePosixPath(file)
        if rel.is_absolute() or ".." in rel.parts or "\\" in file or "\0" in file:
            self.fail(where, f"{file!r}: a page file is a relative path inside pages/")
        real = (pages_dir / rel).resolve()
        if not real.is_relative_to(pages_dir):
            self.fail(where, f"{file!r} leads outside pages/ (a link)")
        if not real.is_file():
            self.fail(where, f"{file!r}: no such file in pages/")


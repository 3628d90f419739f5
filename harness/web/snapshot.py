"""`harness data snapshot-web`: a site frozen into a pack, so that its questions can be asked offline.

What is crawled follows the agents' own link rules (`harness.web.page.keep_links`, WebWalker's: under
the root, no `javascript:`, no images or PDFs), breadth first from the root, up to `max_pages`; the
questions' `source_website` pages are always captured, reached or not. Each page is stored as the
HTML the site sent, so replaying the pack parses what the crawl parsed: the same observations.

A coverage check then marks a question stale (`info.stale`, the reason) when one of its source pages
was not captured, is not reachable from the root inside the snapshot, or (a single-source question)
does not hold the answer, which a multi-source answer may combine from several pages:
stale questions stay in the pack's `qa/stale.jsonl`, counted, and are never scored. Headless
rendering of pages built by scripts is not done: what the server sends is what is stored.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from pathlib import Path

from harness import runs
from harness.errors import HarnessError
from harness.web.browser import Browser, Fetch
from harness.web.pack import Root, canonical_url


def crawl(browser: Browser, root: Root, must: list[str], max_pages: int) -> tuple[dict[str, Fetch], dict[str, int]]:
    """The pages captured (canonical URL -> fetch) and the counts of every fetch outcome."""
    captured: dict[str, Fetch] = {}
    counts: dict[str, int] = {}
    queue, seen = deque([root.url]), {root.url}

    def fetch(url: str) -> Fetch:
        got = browser.fetch(url)
        counts[got.status] = counts.get(got.status, 0) + 1
        if got.status == "ok":
            captured[got.url] = got
        return got

    while queue and len(captured) < max_pages:
        got = fetch(queue.popleft())
        for link in got.page.links if got.status == "ok" else ():
            if link.url not in seen:
                seen.add(link.url)
                queue.append(link.url)
    for url in must:
        if url not in captured:
            fetch(url)
    return captured, counts


def reachable(captured: dict[str, Fetch], root: Root) -> set[str]:
    """The captured pages an agent can reach from the root by clicking, inside the snapshot."""
    found, queue = {root.url}, deque([root.url])
    while queue:
        for link in captured[queue.popleft()].page.links:
            if link.url in captured and link.url not in found:
                found.add(link.url)
                queue.append(link.url)
    return found


def stale_reason(row: dict, captured: dict[str, Fetch], reached: set[str]) -> str | None:
    sources = [canonical_url(u, u) for u in (row.get("info") or {}).get("source_website", [])]
    missing = [u for u in sources if u not in captured]
    if missing:
        return f"source page not captured: {missing[0]}"
    away = [u for u in sources if u not in reached]
    if away:
        return f"source page not reachable from the root: {away[0]}"
    answer = str(row.get("answer", "")).casefold()
    single = (row.get("info") or {}).get("hop", "single_source") == "single_source"
    if single and sources and not any(answer in captured[u].page.text.casefold() for u in sources):
        return "the answer is not on its source page"
    return None


def snapshot(browser: Browser, root_url: str, out: str | Path, rows: list[dict], max_pages: int = 200,
             name: str | None = None, domain: str = "organization", lang: str = "en") -> dict:
    """Freeze the site at `root_url` into the pack `out` with the questions `rows` (WebWalkerQA's
    schema) that ask about it, each checked for coverage; the stats."""
    root = Root.of(root_url)
    must = list(dict.fromkeys(u for r in rows for u in (r.get("info") or {}).get("source_website", [])))
    captured, counts = crawl(browser, root, [canonical_url(u, u) for u in must], max_pages)
    if root.url not in captured:
        got = browser.fetch(root.url)
        raise HarnessError(f"{root.url}: the site's root page could not be opened ({got.status}: {got.detail}); "
                           "nothing written")
    reached = reachable(captured, root)
    fresh, stale = [], []
    for row in rows:
        reason = stale_reason(row, captured, reached)
        if reason is None:
            fresh.append(row)
        else:
            stale.append({**row, "info": {**(row.get("info") or {}), "stale": reason}})
    pages = {root.key(url): f"{hashlib.sha1(url.encode()).hexdigest()[:16]}.html" for url in sorted(captured)}
    manifest = {"format": 1, "name": name or root.host, "root_url": root.url, "domain": domain, "lang": lang,
                "source": "snapshot", "pages": pages}
    with runs.run_directory(Path(out)) as tmp:
        (tmp / "pages").mkdir()
        for url in sorted(captured):
            (tmp / "pages" / pages[root.key(url)]).write_text(captured[url].html, encoding="utf-8")
        runs.write_json(tmp / "manifest.json", manifest)
        (tmp / "qa").mkdir()
        for split, kept in (("test", fresh), ("stale", stale)):
            if kept:
                runs.write_jsonl(tmp / "qa" / f"{split}.jsonl", kept)
    return {"pages": len(captured), "reachable": len(reached), "questions": len(fresh), "stale": len(stale),
            "fetches": counts, "stale_reasons": [r["info"]["stale"] for r in stale]}


def read_rows(path: str | Path, root_url: str) -> list[dict]:
    """The rows of a WebWalkerQA-schema file that ask about the site at `root_url`."""
    root = Root.of(root_url)
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if isinstance(r, dict) and r.get("root_url") and Root.of(r["root_url"]).url == root.url]

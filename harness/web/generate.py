"""Wiki site packs generated from multi-hop QA rows: the context paragraphs of HotpotQA or
2WikiMultihopQA rows become the articles of a small offline wiki, their questions WebWalkerQA rows
over it, so the web setting trains and validates on sites no test question uses.

One pack per (dataset, split), `wiki-<dataset>-<split>` (`harness/web/splits.py` says which split
each feeds). The root links one index page per first letter; a letter with more than `INDEX_CHUNK`
articles links range pages instead, which link the articles. An article is its paragraphs, with a
link where its text first names another article's title (no list of its row's other titles: an
answer that is a title would be on every page of the row, and the question dropped). A question
keeps its row's question and answer; its source pages are the articles of its supporting titles,
its golden paths the index clicks from the root to each. Hop: multi_source when the supporting
titles are two or more. Difficulty: the row's own `level` (HotpotQA), else by the clicks of its
golden paths together (`CLICKS`).

A question is dropped, and counted by reason, when its answer is yes or no (it is on every page),
a supporting title has no paragraph, or its answer can be read on the root or on any page off its
golden paths and source pages: the agent must walk to the answer, not find it on the way. The
answer is matched as whole words, case-insensitively, in a page's visible text. Same rows in, same
pack bytes out.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from harness import runs
from harness.errors import HarnessError
from harness.tasks.base import RowError, require
from harness.web.splits import GENERATED, pack_name, packs_dir

INDEX_CHUNK = 40  # most links an index page holds before it is split into range pages
CLICKS = ((4, "easy"), (6, "medium"))  # total golden-path clicks up to which a question is that easy; then hard
LEVELS = ("easy", "medium", "hard")
LABELS = {"hotpotqa": "HotpotQA", "2wmh": "2WikiMultihopQA"}
CREDITS = {
    "hotpotqa": "HotpotQA (Yang et al., distractor setting; CC BY-SA 4.0)",
    "2wmh": "2WikiMultihopQA (Ho et al.; Apache-2.0)",
}


@dataclass(frozen=True)
class Row:
    id: str
    question: str
    answer: str
    level: str | None
    paragraphs: tuple[tuple[str, str], ...]  # (title, text) in the row's order
    supporting: tuple[str, ...]  # titles, first mention first


def _title(title) -> str:
    return " ".join(html.unescape(str(title)).split())


def _text(sentences: list[str], joiner: str) -> str:
    return html.unescape(joiner.join(sentences)).strip()  # HotpotQA's text holds escapes (&amp;)


def hotpotqa_row(row: dict) -> Row:
    require(row, "id", "question", "answer", "context.title", "context.sentences", "supporting_facts.title")
    titles, sentences = row["context"]["title"], row["context"]["sentences"]
    if len(titles) != len(sentences):
        raise RowError("context.title and context.sentences differ in length")
    paragraphs = tuple((_title(t), _text(s, "")) for t, s in zip(titles, sentences))
    supporting = tuple(dict.fromkeys(_title(t) for t in row["supporting_facts"]["title"]))
    return Row(row["id"], html.unescape(row["question"]), html.unescape(row["answer"]), row.get("level"), paragraphs,
               supporting)


def twowiki_row(row: dict) -> Row:
    require(row, "_id", "question", "answer", "context", "supporting_facts")
    if not all(isinstance(e, list) and len(e) == 2 and isinstance(e[1], list) for e in row["context"]):
        raise RowError("context entries must be [title, [sentence, ...]]")
    paragraphs = tuple((_title(t), _text(s, " ")) for t, s in row["context"])
    supporting = tuple(dict.fromkeys(_title(f[0]) for f in row["supporting_facts"] if f))
    return Row(row["_id"], html.unescape(row["question"]), html.unescape(row["answer"]), None, paragraphs, supporting)


READERS = {"hotpotqa": hotpotqa_row, "2wmh": twowiki_row}


# -- pages ---------------------------------------------------------------------------------------

def page_html(site: str, title: str, nav: list[tuple[str, str]], body: str, footer: str = "",
              root: bool = False) -> str:
    """One page of a pack, written or generated: header (the site's name, linking the root), nav,
    the page's heading and body (already HTML), footer."""
    esc = html.escape
    links = "\n".join(f'<a href="{esc(href)}">{esc(text)}</a>' for text, href in nav)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{esc(site if root else f'{title} | {site}')}</title>\n</head>\n<body>\n"
            f'<header><a href="/">{esc(site)}</a></header>\n<nav>\n{links}\n</nav>\n<main>\n'
            f"<h1>{esc(title)}</h1>\n{body}</main>\n<footer>{footer}</footer>\n</body>\n</html>\n")


def link_list(links: list[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="{html.escape(href)}">{html.escape(text)}</a></li>\n' for text, href in links)
    return f"<ul>\n{items}</ul>\n"


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", _ascii(title).lower()).strip("-")[:80].strip("-") or "article"


def _letter(title: str) -> str:
    first = next((c for c in _ascii(title).upper() if c.isalnum()), "")
    return first if "A" <= first <= "Z" else "0–9" if first.isdigit() else "Other"


class _Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)


def visible_text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return " ".join(" ".join(parser.parts).split())


def answer_pattern(answer: str) -> re.Pattern:
    """Whole words, any case, any run of whitespace between them."""
    words = [re.escape(w) for w in answer.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


class Wiki:
    """The articles of a set of rows and the index over them: each page's key and HTML, and each
    article's path from the root as (anchor text, key) clicks."""

    def __init__(self, rows: list[Row], site: str, credit: str):
        self.site, self.nav = site, [("Main page", "/"), ("About", "/about")]
        self.texts: dict[str, list[str]] = {}  # title -> its distinct paragraphs, over all rows
        for row in rows:
            for title, text in row.paragraphs:
                if title and text and text not in self.texts.setdefault(title, []):
                    self.texts[title].append(text)
        order = sorted(self.texts, key=lambda t: (_ascii(t).casefold(), t))
        self.key = self._keys(order)
        self.path: dict[str, list[tuple[str, str]]] = {}
        letters = defaultdict(list)
        for title in order:
            letters[_letter(title)].append(title)
        index, index_pages = [], {}
        for letter in sorted(letters, key=lambda x: (len(x) > 1, x)):  # A-Z, then 0–9 and Other
            index.append((letter, "/index/" + _slug(letter)))
            index_pages.update(self._index(letter, index[-1][1], letters[letter]))
        by_first = defaultdict(list)  # first word -> titles: mentions are found word by word
        for title in order:
            if len(title) >= 4 and (m := re.match(r"\w+", title)):
                by_first[m.group()].append(title)
        self.pages = {  # key -> HTML
            "/": page_html(site, site, self.nav, "<p>Articles by the first letter of their title:</p>\n"
                           + link_list(index), root=True),
            "/about": page_html(site, "About", self.nav, f"<p>This wiki is generated from the context paragraphs "
                                f"of {html.escape(credit)}. Its article text is theirs, from Wikipedia.</p>\n"),
            **index_pages,
            **{self.key[title]: self._article(title, by_first) for title in order},
        }

    @staticmethod
    def _keys(order: list[str]) -> dict[str, str]:
        keys: dict[str, str] = {}
        taken: set[str] = set()
        for title in order:
            key, n = f"/wiki/{_slug(title)}", 1
            while key in taken:
                n += 1
                key = f"/wiki/{_slug(title)}-{n}"
            keys[title] = key
            taken.add(key)
        return keys

    def _index(self, letter: str, key: str, titles: list[str]) -> dict[str, str]:
        """The index pages of a letter: one, or one linking range pages of `INDEX_CHUNK` articles."""
        if len(titles) <= INDEX_CHUNK:
            for t in titles:
                self.path[t] = [(letter, key), (t, self.key[t])]
            return {key: self._list(f"Articles: {letter}", [(t, self.key[t]) for t in titles])}
        pages, ranges = {}, []
        for n, start in enumerate(range(0, len(titles), INDEX_CHUNK), start=1):
            chunk = titles[start:start + INDEX_CHUNK]
            label, sub = f"{chunk[0]} – {chunk[-1]}", f"{key}/{n}"
            ranges.append((label, sub))
            pages[sub] = self._list(f"Articles: {label}", [(t, self.key[t]) for t in chunk])
            for t in chunk:
                self.path[t] = [(letter, key), (label, sub), (t, self.key[t])]
        return {key: self._list(f"Articles: {letter}", ranges), **pages}

    def _list(self, title: str, links: list[tuple[str, str]]) -> str:
        return page_html(self.site, title, self.nav, link_list(links))

    def _article(self, title: str, by_first: dict[str, list[str]]) -> str:
        body = "".join(f"<p>{self._linked(text, title, by_first)}</p>\n" for text in self.texts[title])
        return page_html(self.site, title, self.nav, body)

    def _linked(self, text: str, title: str, by_first: dict[str, list[str]]) -> str:
        """`text` as HTML, the first mention of each other title a link (longest title first)."""
        out, at, seen = [], 0, {title}
        for m in re.finditer(r"\w+", text):
            if m.start() < at:
                continue
            for other in sorted(by_first.get(m.group(), ()), key=len, reverse=True):
                end = m.start() + len(other)
                if other not in seen and text.startswith(other, m.start()) and not text[end:end + 1].isalnum():
                    seen.add(other)
                    out += [html.escape(text[at:m.start()]), f'<a href="{self.key[other]}">{html.escape(other)}</a>']
                    at = end
                    break
        return "".join(out) + html.escape(text[at:])


# -- questions -----------------------------------------------------------------------------------

def _difficulty(row: Row, clicks: int) -> str:
    if row.level in LEVELS:
        return row.level
    return next((level for most, level in CLICKS if clicks <= most), "hard")


class _Words:
    """Which pages hold every word of a phrase: candidates for the exact match, found fast."""

    def __init__(self, texts: dict[str, str]):
        self.texts = texts
        self.index: dict[str, set[str]] = defaultdict(set)
        for key, text in texts.items():
            for word in set(re.findall(r"\w+", text.casefold())):
                self.index[word].add(key)

    def pages_with(self, phrase: str) -> set[str]:
        words = set(re.findall(r"\w+", phrase.casefold()))
        keys = set.intersection(*(self.index.get(w, set()) for w in words)) if words else set(self.texts)
        pattern = answer_pattern(phrase)
        return {k for k in keys if pattern.search(self.texts[k])}


def _questions(rows: list[Row], wiki: Wiki, root_url: str) -> tuple[list[dict], Counter]:
    words = _Words({key: visible_text(page) for key, page in wiki.pages.items()})
    kept, dropped = [], Counter()
    for row in rows:
        if row.answer.strip().casefold() in ("yes", "no"):
            dropped["yes/no answer"] += 1
            continue
        if not row.supporting or any(t not in wiki.path for t in row.supporting):
            dropped["a supporting paragraph missing"] += 1
            continue
        paths = [wiki.path[t] for t in row.supporting]
        on_path = {"/"} | {key for path in paths for _, key in path}
        if words.pages_with(row.answer) - (on_path - {"/"}):
            dropped["answer on the root or off its paths"] += 1
            continue
        hop = "multi_source" if len(paths) > 1 else "single_source"
        kept.append({
            "question": row.question, "answer": row.answer, "root_url": root_url, "id": row.id,
            "info": {"domain": "wiki", "hop": hop,
                     "difficulty_level": _difficulty(row, sum(len(p) for p in paths)), "lang": "en",
                     "source_website": [root_url.rstrip("/") + path[-1][1] for path in paths],
                     "golden_path": ["->".join(["root"] + [anchor for anchor, _ in path]) for path in paths],
                     "type": hop},
        })
    return kept, dropped


# -- packs ---------------------------------------------------------------------------------------

def pack_files(rows: list[dict], dataset: str, split: str, source: str = "rows") -> tuple[dict[str, str], dict]:
    """The pack of `rows` (the dataset's own schema) as its files' text by path in the pack, and
    its stats: pages, rows, questions kept, dropped by reason. `source` names the rows in errors."""
    if dataset not in READERS:
        raise HarnessError(f"no wiki generator for dataset {dataset!r}; known: {', '.join(READERS)}")
    parsed = []
    for i, row in enumerate(rows, start=1):
        try:
            parsed.append(READERS[dataset](row))
        except RowError as e:
            raise HarnessError(f"{source}: row {i}: {e}") from None
        except (TypeError, AttributeError, KeyError, IndexError, ValueError) as e:
            raise HarnessError(f"{source}: row {i}: a field has the wrong type ({type(e).__name__}: {e})") from None
    name = pack_name(dataset, split)
    root_url = f"https://{name}.example/"
    wiki = Wiki(parsed, f"{LABELS[dataset]} Wiki ({split})", CREDITS[dataset])
    questions, dropped = _questions(parsed, wiki, root_url)
    pages = {key: ("index.html" if key == "/" else key.lstrip("/") + ".html") for key in wiki.pages}
    manifest = {"format": 1, "name": name, "root_url": root_url, "domain": "wiki", "lang": "en",
                "source": f"generated:{dataset}", "pages": pages}
    files = {"manifest.json": json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
             f"qa/{split}.jsonl": "".join(json.dumps(q, ensure_ascii=False) + "\n" for q in questions),
             **{f"pages/{pages[key]}": page for key, page in wiki.pages.items()}}
    return files, {"pack": name, "pages": len(pages), "rows": len(parsed), "questions": len(questions),
                   "dropped": dict(sorted(dropped.items()))}


def generate_pack(rows: list[dict], dataset: str, split: str, out_dir: str | Path, source: str = "rows") -> dict:
    """Write the pack of `rows` to `out_dir`, replaced whole, and return its stats (`pack_files`)."""
    files, stats = pack_files(rows, dataset, split, source)
    with runs.run_directory(Path(out_dir)) as tmp:  # synced, whole, when renamed into place
        for rel, text in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text, encoding="utf-8")
    return stats


def build_web_packs(data_dir: str | Path, out: str | Path | None = None) -> list[dict]:
    """Every pack the data directory's HotpotQA and 2WikiMultihopQA splits make, written to
    `<out or data_dir>/webwalker/packs/<name>/`; one stats record a pack (`generate_pack`)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise HarnessError(f"{data_dir}: data directory not found")
    folder = packs_dir(out or data_dir)
    summary = []
    for name, (dataset, split) in GENERATED.items():
        path = data_dir / dataset / f"{split}.jsonl"
        if path.is_file():
            rows = [row for _, row in runs.read_jsonl(path)]
            stats = generate_pack(rows, dataset, split, folder / name, str(path))
            summary.append({**stats, "source": str(path), "written": str(folder / name)})
    if not summary:
        raise HarnessError(f"{data_dir}: no hotpotqa/ or 2wmh/ split files (<task>/<split>.jsonl) to build packs from")
    return summary

"""Render the written site packs from their sources: `python harness/web/sites/render.py`.

Each written site is one source file, `src/<pack>.txt`, and its pack is rendered into `<pack>/`
(manifest.json, pages/, qa/), which is what ships and what the environment reads. Edit the source
and render again, never the rendered files: tests/test_web_packs.py fails when they differ.

A source opens with `key: value` lines: `site` (its name), `root_url`, `domain`, `lang`, `nav`
(`Label=/key` items separated by ` ; `, the main sections every page links) and `footer`. Then a
page per `=== /key | Title` line, its body below it in blocks separated by blank lines: `## ...` a
heading, lines of `- ...` a list, lines of `| a | b |` a table (the first row its header), anything
else a paragraph; inline, `[anchor text](/key)` is a link. The last section, `=== qa`, holds the
site's own questions, one a line: `difficulty hop | question | answer | golden path ; golden path`,
their source pages the ends of their golden paths. The project-written fixture questions of the
site (harness/tasks/fixtures/webwalker, matched by root_url) are copied as they are into the split
they are in, the site's own questions follow in qa/test.jsonl, and every question's golden paths
are walked on the rendered pages.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import sys
from pathlib import Path

from harness.errors import HarnessError
from harness.tasks.base import FIXTURES, SPLITS
from harness.web.generate import LEVELS, page_html

SITES = Path(__file__).parent
HEADER = ("site", "root_url", "domain", "lang", "nav", "footer")
HOPS = ("single_source", "multi_source")
LINK = re.compile(r"\[([^\]]+)\]\((/[^)\s]*)\)")


def inline(text: str) -> str:
    """Escaped text with its `[anchor](/key)` links as HTML links."""
    out, at = [], 0
    for m in LINK.finditer(text):
        out += [html.escape(text[at:m.start()]), f'<a href="{html.escape(m.group(2))}">{html.escape(m.group(1))}</a>']
        at = m.end()
    return "".join(out) + html.escape(text[at:])


def block(lines: list[str]) -> str:
    if lines[0].startswith("## "):  # a heading is its own line; what follows it is the next block
        return f"<h2>{inline(lines[0][3:])}</h2>\n" + (block(lines[1:]) if lines[1:] else "")
    if all(line.startswith("- ") for line in lines):
        return "<ul>\n" + "".join(f"<li>{inline(line[2:])}</li>\n" for line in lines) + "</ul>\n"
    if all(line.startswith("|") for line in lines):
        rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
        head = "".join(f"<th>{inline(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>\n" for row in rows[1:])
        return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"
    return f"<p>{inline(' '.join(lines))}</p>\n"


def body_html(lines: list[str]) -> str:
    blocks, current = [], []
    for line in lines + [""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            blocks.append(block(current))
            current = []
    return "".join(blocks)


def parse(src: Path) -> tuple[dict, dict[str, tuple[str, list[str]]], list[tuple[int, str]]]:
    """The header, the pages (key -> title and body lines) and the question lines of a source."""
    header, pages, qa, current = {}, {}, [], None
    for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("=== "):
            key, _, title = line[4:].partition(" | ")
            if key in pages or (key == "qa") != (not title):
                raise HarnessError(f"{src}:{n}: expected a new '=== /key | Title' or '=== qa'")
            current = None if key == "qa" else pages.setdefault(key, (title.strip(), []))[1]
        elif current is not None:
            current.append(line)
        elif pages and line.strip():
            qa.append((n, line))
        elif line.strip():
            name, sep, value = line.partition(": ")
            if name not in HEADER or not sep:
                raise HarnessError(f"{src}:{n}: expected 'key: value' with key one of {', '.join(HEADER)}")
            header[name] = value.strip()
    missing = [k for k in HEADER if k not in header]
    if missing or "/" not in pages:
        raise HarnessError(f"{src}: missing {', '.join(missing) or 'the root page /'}")
    return header, pages, qa


def links(page: str) -> list[tuple[str, str]]:
    """(anchor text, key) of every link of a rendered page."""
    found = re.findall(r'<a href="([^"]*)">([^<]*)</a>', page)
    return [(html.unescape(text), html.unescape(href)) for href, text in found]


def walk(path: str, rendered: dict[str, str], where: str) -> str:
    """The key a golden path leads to, clicking its anchor texts from the root."""
    steps = path.split("->")
    if steps[0] != "root":
        raise HarnessError(f"{where}: golden path {path!r} does not start at root")
    key = "/"
    for anchor in steps[1:]:
        targets = {k for text, k in links(rendered[key]) if text == anchor}
        if len(targets) != 1:
            raise HarnessError(f"{where}: {path!r}: page {key} has {len(targets)} links {anchor!r}")
        key = targets.pop()
    return key


def fixture_rows(src: Path, root_url: str, rendered: dict[str, str]) -> dict[str, list[str]]:
    """The fixture lines of the site by split, as they are, once their golden paths are walked."""
    rows: dict[str, list[str]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        for line in (FIXTURES / "webwalker" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["root_url"] == root_url:
                where = f"{src}: fixture {row['question']!r}"
                ends = [root_url.rstrip("/") + walk(p, rendered, where) for p in row["info"]["golden_path"]]
                if ends != row["info"]["source_website"]:
                    raise HarnessError(f"{where}: its golden paths lead to {ends}")
                rows[split].append(line)
    return rows


def own_row(src: Path, n: int, line: str, header: dict, rendered: dict[str, str]) -> str:
    """A question line of the source as a WebWalkerQA row, its sources where its paths lead."""
    try:
        level_hop, question, answer, paths = (part.strip() for part in line.split(" | "))
        level, hop = level_hop.split()
    except ValueError:
        raise HarnessError(f"{src}:{n}: expected 'difficulty hop | question | answer | path ; path'") from None
    if level not in LEVELS or hop not in HOPS:
        raise HarnessError(f"{src}:{n}: {level_hop!r}: difficulty one of {', '.join(LEVELS)}, hop one of "
                           f"{', '.join(HOPS)}")
    golden = [p.strip() for p in paths.split(" ; ")]
    info = {"domain": header["domain"], "hop": hop, "difficulty_level": level, "lang": header["lang"],
            "source_website": [header["root_url"].rstrip("/") + walk(p, rendered, f"{src}:{n}") for p in golden],
            "golden_path": golden, "type": hop}
    return json.dumps({"question": question, "answer": answer, "root_url": header["root_url"], "info": info},
                      ensure_ascii=False)


def render(src: Path, out: Path) -> None:
    """Render the source `src` into the pack folder `out` (its pages/ and qa/ replaced whole)."""
    header, pages, qa = parse(src)
    nav = [tuple(item.strip().split("=")) for item in header["nav"].split(" ; ")]
    rendered = {key: page_html(header["site"], title, nav, body_html(lines), inline(header["footer"]), key == "/")
                for key, (title, lines) in pages.items()}
    for key, page in rendered.items():
        for text, target in links(page):
            if target not in rendered:
                raise HarnessError(f"{src}: page {key} links {target!r} ({text!r}), which is no page")
    rows = fixture_rows(src, header["root_url"], rendered)
    rows["test"] += [own_row(src, n, line, header, rendered) for n, line in qa]
    files = {key: "index.html" if key == "/" else key.lstrip("/") + ".html" for key in pages}
    manifest = {"format": 1, "name": out.name, "root_url": header["root_url"], "domain": header["domain"],
                "lang": header["lang"], "source": "written", "pages": files}
    for folder in ("pages", "qa"):
        shutil.rmtree(out / folder, ignore_errors=True)
    for key, page in rendered.items():
        (out / "pages" / files[key]).parent.mkdir(parents=True, exist_ok=True)
        (out / "pages" / files[key]).write_text(page, encoding="utf-8")
    (out / "qa").mkdir()
    for split, lines in rows.items():
        if lines:
            (out / "qa" / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(out_root: Path = SITES) -> None:
    for src in sorted((SITES / "src").glob("*.txt")):
        render(src, out_root / src.stem)


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else SITES)
    except HarnessError as e:
        sys.exit(f"error: {e}")

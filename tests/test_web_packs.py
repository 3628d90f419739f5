"""Site packs: the written ones shipped in harness/web/sites and the wikis generated from HotpotQA
and 2WikiMultihopQA rows. Pages are read here with html.parser alone, so these checks do not lean
on the environment's own page reader."""

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import deque
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.tasks.base import FIXTURES
from harness.web import generate
from harness.web.pack import Pack
from harness.web.splits import DEFAULT_PACKS, GENERATED, SITES, WRITTEN, pack_dir, pack_name

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
HOPS = ("single_source", "multi_source")
LEVELS = ("easy", "medium", "hard")
DOMAINS = ("organization", "education", "conference", "game", "wiki")

# What each source page of a written multi_source question contributes, in source_website order:
# every page must hold its part, so no page of the answer is decoration.
EVIDENCE = {
    "What would a new adult member pay in total for the annual membership plus the coach seat on the Fenmoor "
    "Reservoir trip?": ["£25", "£12 for members"],
    "Who leads the Harrowgate Birding Society's 2025 field trips to Saltmarsh Point and Brackenridge Moor?":
        ["Graham Oduya", "Sam Whitlock"],
    "What is the name of the new hide at the reserve where the Harrowgate Birding Society holds its beginners' "
    "walks?": ["at Kestle Marsh", "Reedbed Hide"],
    "Which annual publication is edited by the leader of the Harrowgate Birding Society's Greyhaven Estuary trip?":
        ["Leader: Tomasz Brennan", "Tomasz Brennan also edits the annual Harrowgate Bird Report"],
    "Which Greenfield Community College scholarship is open to nursing students with a GPA of at least 3.2?":
        ["Halvorsen Health Scholarship | Students in any Health Sciences division program | 3.2",
         "Nursing is part of the Health Sciences division"],
    "In which buildings are Greenfield Community College's library and bookstore?":
        ["Cedar Building", "Maple Building"],
    "What is the NCLEX-RN pass rate of the Greenfield program whose new simulation lab opened in September 2024?":
        ["simulation lab for nursing students", "92%"],
    "What would an in-district student pay in tuition for 12 credit hours plus one semester parking permit at "
    "Greenfield Community College?": ["$142", "Semester | $60"],
    "How many weeks separate the FEdge 2025 submission deadline from the notification date?":
        ["April 14, 2025", "March 17, 2025"],
    "What are the early workshop-only registration fee and the largest student travel grant at FEdge 2025?":
        ["Workshop only | €180", "up to €600"],
    "Which FEdge 2025 general chair works at the same institution as the morning keynote speaker?":
        ["Dr. Ines Carvalho, Universidade do Tejo", "Prof. Rui Almeida, Universidade do Tejo"],
    "How many days before the FEdge 2025 workshop does the reduced hotel rate for attendees end?":
        ["until May 20, 2025", "Workshop | June 15, 2025"],
    "Which Starforge Tactics patch came out on the same day as the Emberfall expansion?":
        ["October 8, 2024", "2.5.0 | October 8, 2024"],
    "Which classes did the Tidebreak and Emberfall expansions add to Starforge Tactics?": ["Tidecaller", "Pyrewarden"],
    "On what date was the Starforge Tactics patch with the reworked enemy AI described in the dev diary released?":
        ["ships in patch 2.7.0", "2.7.0 | January 28, 2025"],
    "What would the Standard Edition of Starforge Tactics plus the expansion that introduced the Veil Syndicate "
    "cost together?": ["Emberfall introduced the Veil Syndicate", "Standard Edition | $29.99", "Emberfall | $24.99"],
}


class Page(HTMLParser):
    """A page's title, visible text (table cells joined by ' | '), nav links and links."""

    def __init__(self, html: str):
        super().__init__()
        self.title, self.parts, self.links, self.nav_links = "", [], [], 0
        self._tags, self._href, self._anchor = [], None, []
        self.feed(html)
        self.close()
        self.text = " ".join(" ".join(self.parts).split())

    def handle_starttag(self, tag, attrs):
        self._tags.append(tag)
        if tag == "a":
            self._href, self._anchor = dict(attrs).get("href"), []
        if tag == "td" or tag == "th":
            self.parts.append("|")

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links.append((" ".join("".join(self._anchor).split()), self._href))
            self.nav_links += "nav" in self._tags
            self._href = None
        if tag in self._tags:
            del self._tags[len(self._tags) - 1 - self._tags[::-1].index(tag):]

    def handle_data(self, data):
        self.parts.append(data)
        if self._href is not None:
            self._anchor.append(data)
        if self._tags and self._tags[-1] == "title":
            self.title += data


def files_of(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8") for p in folder.rglob("*") if p.is_file()}


def load(files: dict[str, str]):
    """The manifest, the pages by key and the qa rows by split of a pack's files."""
    manifest = json.loads(files["manifest.json"])
    pages = {key: Page(files[f"pages/{file}"]) for key, file in manifest["pages"].items()}
    qa = {split: [json.loads(line) for line in files[f"qa/{split}.jsonl"].splitlines()]
          for split in ("train", "validation", "test") if f"qa/{split}.jsonl" in files}
    return manifest, pages, qa


def distances(pages: dict[str, Page]) -> dict[str, int]:
    """Clicks from the root to every page it reaches (breadth first over internal links)."""
    seen, todo = {"/": 0}, deque(["/"])
    while todo:
        key = todo.popleft()
        for _, href in pages[key].links:
            if href in pages and href not in seen:
                seen[href] = seen[key] + 1
                todo.append(href)
    return seen


def walk(pages: dict[str, Page], path: str) -> list[str]:
    """The pages a golden path visits, clicking its anchor texts from the root."""
    steps = path.split("->")
    assert steps[0] == "root", path
    visited = ["/"]
    for anchor in steps[1:]:
        targets = {href for text, href in pages[visited[-1]].links if text == " ".join(anchor.split())}
        assert len(targets) == 1, f"{path!r}: {visited[-1]} has {len(targets)} links {anchor!r}"
        visited.append(targets.pop())
    return visited


def has(text: str, phrase: str) -> bool:
    """`phrase` in `text` as whole words, case-insensitively (what the generator's drop rule means)."""
    words = r"\s+".join(re.escape(w) for w in phrase.split())
    return re.search(rf"(?<!\w){words}(?!\w)", text, re.IGNORECASE) is not None


def check_rows(manifest, pages, rows):
    base = manifest["root_url"].rstrip("/")
    for row in rows:
        info = row["info"]
        assert row["root_url"] == manifest["root_url"] and row["question"] and row["answer"]
        assert info["hop"] in HOPS and info["type"] == info["hop"] and info["difficulty_level"] in LEVELS
        assert info["domain"] == manifest["domain"] and info["lang"] == manifest["lang"]
        assert len(info["source_website"]) == len(info["golden_path"]) >= 1
        assert (info["hop"] == "multi_source") == (len(info["source_website"]) > 1), row["question"]
        for url, path in zip(info["source_website"], info["golden_path"]):
            assert url.startswith(base + "/") and url.removeprefix(base) in pages, url
            assert base + walk(pages, path)[-1] == url, (row["question"], path)


# -- written packs -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def written():
    return {name: load(files_of(SITES / name)) for name in WRITTEN}


@pytest.mark.parametrize("name", WRITTEN)
def test_written_pack_is_valid_and_linked(name, written):
    manifest, pages, qa = written[name]
    assert set(manifest) == {"format", "name", "root_url", "domain", "lang", "source", "pages"}
    assert manifest["format"] == 1 and manifest["name"] == name and manifest["source"] == "written"
    assert manifest["domain"] in DOMAINS and manifest["root_url"].endswith(".example/")
    assert len(pages) >= 25 and "/" in pages
    for key, page in pages.items():
        assert key == "/" or (key.startswith("/") and not key.endswith("/")), key
        assert page.title.strip() and page.nav_links >= 3 and len(page.text) > 200, key
        for text, href in page.links:
            assert href.startswith("/") and text, (key, href)
            assert href in pages, f"{name}: {key} links {href!r} ({text!r}), which is no page"
    assert set(distances(pages)) == set(pages), "pages the root does not reach"
    assert set(qa) <= {"train", "validation", "test"} and qa.get("test")


@pytest.mark.parametrize("name", WRITTEN)
def test_written_questions_are_answered_on_their_pages(name, written):
    manifest, pages, qa = written[name]
    base, clicks = manifest["root_url"].rstrip("/"), distances(pages)
    for rows in qa.values():
        check_rows(manifest, pages, rows)
        for row in rows:
            keys = [url.removeprefix(base) for url in row["info"]["source_website"]]
            if row["info"]["hop"] == "single_source":
                assert has(pages[keys[0]].text, row["answer"]), row["question"]
                continue
            assert all(clicks[key] >= 2 for key in keys), f"{row['question']!r}: a source page is 1 click from the root"
            facts = EVIDENCE.get(row["question"])
            assert facts is not None and len(facts) == len(keys), f"no EVIDENCE for {row['question']!r}"
            for key, fact in zip(keys, facts):
                assert fact in pages[key].text, (row["question"], key, fact)


def test_written_packs_serve_their_fixture_questions_as_written(written):
    roots = {written[name][0]["root_url"]: name for name in WRITTEN}
    for split in ("train", "validation", "test"):
        lines = (FIXTURES / "webwalker" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        for root, name in roots.items():
            want = [line for line in lines if json.loads(line)["root_url"] == root]
            path = SITES / name / "qa" / f"{split}.jsonl"
            have = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
            assert have[:len(want)] == want, f"{name} {split}: the fixture rows are not copied as they are"
            if split != "test":
                assert len(have) == len(want), f"{name} {split}: only fixture rows outside the test split"


def test_written_test_questions_fill_every_hop_and_difficulty(written):
    rows = [row for name in WRITTEN for row in written[name][2]["test"]]
    cells = {(row["info"]["hop"], row["info"]["difficulty_level"]) for row in rows}
    assert len(rows) >= 24
    assert cells == {(hop, level) for hop in HOPS for level in LEVELS}
    assert len({row["question"] for row in rows}) == len(rows)
    assert {written[name][0]["domain"] for name in WRITTEN} >= {"organization", "education", "conference", "game"}


def test_written_packs_are_their_sources_rendered(tmp_path):
    spec = importlib.util.spec_from_file_location("render_sites", SITES / "render.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    render.main(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(WRITTEN)
    for name in WRITTEN:
        made = sorted(p.relative_to(tmp_path / name) for p in (tmp_path / name).rglob("*") if p.is_file())
        shipped = sorted(p.relative_to(SITES / name) for p in (SITES / name).rglob("*") if p.is_file())
        assert made == shipped, f"{name}: files differ from a fresh render"
        for rel in made:
            assert (tmp_path / name / rel).read_bytes() == (SITES / name / rel).read_bytes(), \
                f"{name}/{rel} is not its source rendered: run python harness/web/sites/render.py"


def test_render_refuses_a_link_to_no_page_and_a_broken_golden_path(tmp_path):
    spec = importlib.util.spec_from_file_location("render_sites", SITES / "render.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    head = ("site: S\nroot_url: https://www.s.example/\ndomain: game\nlang: en\nnav: News=/news\nfooter: f\n\n"
            "=== / | S\nHello, see [News](/news).\n\n=== /news | News\nNothing yet.\n")
    src = tmp_path / "s.txt"
    src.write_text(head + "See [Old](/old).\n")
    with pytest.raises(HarnessError, match="links '/old'"):
        render.render(src, tmp_path / "s")
    src.write_text(head + "\n=== qa\neasy single_source | Q? | A | root->News->Archive\n")
    with pytest.raises(HarnessError, match="s.txt:15: .*0 links 'Archive'"):
        render.render(src, tmp_path / "s")


def test_packs_split_as_documented():
    assert DEFAULT_PACKS["test"][:len(WRITTEN)] == WRITTEN  # the written sites' questions first
    assert {dataset for dataset, _ in GENERATED.values()} == set(generate.READERS)
    for split in ("train", "validation", "test"):
        generated = [name for name in DEFAULT_PACKS[split] if name not in WRITTEN]
        assert {GENERATED[name] for name in generated} == {("hotpotqa", split), ("2wmh", split)}
    assert pack_dir(WRITTEN[0]) == SITES / WRITTEN[0]
    with pytest.raises(HarnessError, match="did you mean: greenfieldcc"):
        pack_dir("greenfield")
    with pytest.raises(HarnessError, match="build-web"):
        pack_dir(pack_name("hotpotqa", "train"))


def test_written_packs_load_in_the_environment():
    for name in WRITTEN:
        loaded = Pack.load(SITES / name)
        assert loaded.name == name and len(loaded.pages) >= 25


# -- generated packs -----------------------------------------------------------------------------

def rows_of(dataset: str, split: str) -> list[dict]:
    path = DATA / dataset / f"{split}.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found: the real HotpotQA/2Wiki samples live in ../shared/data")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module", params=sorted(GENERATED.values()), ids=lambda p: f"{p[0]}-{p[1]}")
def generated(request):
    dataset, split = request.param
    files, stats = generate.pack_files(rows_of(dataset, split), dataset, split)
    return files, stats, load(files)


def test_generated_pack_is_valid_and_reachable(generated):
    files, stats, (manifest, pages, qa) = generated
    assert manifest["source"] == f"generated:{stats['pack'].split('-')[1]}" and manifest["domain"] == "wiki"
    assert set(files) == {"manifest.json", *(f"pages/{file}" for file in manifest["pages"].values()),
                          *(f"qa/{split}.jsonl" for split in qa)}
    clicks = distances(pages)
    assert set(clicks) == set(pages)
    for key, page in pages.items():
        assert page.title and all(href in pages for _, href in page.links), key
    # the root links index pages only, not every article
    assert not any(href.startswith("/wiki/") for _, href in pages["/"].links)
    (rows,) = qa.values()
    assert len(rows) == stats["questions"] > 0
    assert stats["questions"] + sum(stats["dropped"].values()) == stats["rows"]
    check_rows(manifest, pages, rows)
    base = manifest["root_url"].rstrip("/")
    assert all(clicks[url.removeprefix(base)] >= 2 for row in rows for url in row["info"]["source_website"])


def test_generated_answers_are_only_on_their_paths(generated):
    """A question's answer is on no page but those of its golden paths and sources, and not on the root."""
    _, _, (manifest, pages, qa) = generated
    (rows,) = qa.values()
    folded = {key: page.text.casefold() for key, page in pages.items()}  # a fast first sieve
    for row in rows:
        answer = " ".join(row["answer"].split())
        assert answer.casefold() not in ("yes", "no")
        allowed = {key for path in row["info"]["golden_path"] for key in walk(pages, path)} - {"/"}
        leaks = [key for key, text in folded.items()
                 if key not in allowed and answer.casefold() in text and has(pages[key].text, answer)]
        assert not leaks, f"{row['question']!r}: answer {row['answer']!r} on {leaks[:3]}"


def test_generated_pack_is_the_same_bytes_in_another_process(tmp_path):
    rows = rows_of("2wmh", "validation")
    generate.generate_pack(rows, "2wmh", "validation", tmp_path / "a")
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    code = ("import json, sys; from harness.web.generate import generate_pack; "
            "generate_pack(json.load(open(sys.argv[1])), '2wmh', 'validation', sys.argv[2])")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "rows.json"), str(tmp_path / "b")], check=True,
                   cwd=ROOT, env=env)
    a = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    b = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert a == b and len(a) > 100


def test_build_web_packs_writes_every_split_of_a_data_dir(tmp_path):
    data = tmp_path / "data"
    for dataset, split in (("hotpotqa", "train"), ("2wmh", "validation")):
        (data / dataset).mkdir(parents=True)
        rows = rows_of(dataset, split)[:12]
        (data / dataset / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = generate.build_web_packs(data)
    assert [s["pack"] for s in summary] == [pack_name("hotpotqa", "train"), pack_name("2wmh", "validation")]
    for stats in summary:
        assert pack_dir(stats["pack"], data) == Path(stats["written"])
        manifest, pages, qa = load(files_of(Path(stats["written"])))
        assert len(pages) == stats["pages"] and len(next(iter(qa.values()))) == stats["questions"]
    out = tmp_path / "elsewhere"
    assert generate.build_web_packs(data, out)[0]["written"].startswith(str(out / "webwalker" / "packs"))


def test_build_web_packs_refuses_bad_rows_and_empty_dirs(tmp_path):
    with pytest.raises(HarnessError, match="no hotpotqa/ or 2wmh/ split files"):
        generate.build_web_packs(tmp_path)
    (tmp_path / "2wmh").mkdir()
    (tmp_path / "2wmh" / "train.jsonl").write_text(json.dumps({"_id": "x", "question": "q?", "answer": "a"}) + "\n")
    with pytest.raises(HarnessError, match=r"2wmh/train.jsonl: row 1: missing key 'context'"):
        generate.build_web_packs(tmp_path)
    assert not (tmp_path / "webwalker" / "packs" / pack_name("2wmh", "train")).exists()
    with pytest.raises(HarnessError, match="no wiki generator for dataset 'nq'"):
        generate.pack_files([], "nq", "train")


def test_generated_packs_load_in_the_environment(tmp_path):
    generate.generate_pack(rows_of("2wmh", "train")[:5], "2wmh", "train", tmp_path / "p")
    assert Pack.load(tmp_path / "p").name == pack_name("2wmh", "train")

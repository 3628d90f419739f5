"""CBT with no data directory: items built once from the books shipped with the harness into the
cache, the cache reused, and the project-written sample without spaCy. tests/conftest.py sets
HARNESS_CBT_SAMPLE so the other tests read the sample; these tests unset it.

SLOW: the `built` fixture builds the shipped books once for this module (about a minute on 2 cores;
skipped without the `cbt` extra). The tests above it are fast."""

import json
import logging
import sys

import pytest

from harness.data import shipped
from harness.data.books import Book, assign_splits, read_books, read_declared_splits
from harness.errors import HarnessError
from harness.tasks import get_task
from harness.tasks.base import FIXTURES, SPLITS

MINIMUM = {"train": 300, "validation": 100, "test": 200}


@pytest.fixture
def no_data_dir(monkeypatch, tmp_path):
    """No data directory, a fresh cache, the sample not forced, nothing remembered by this process."""
    for var in ("HARNESS_DATA_DIR", shipped.SAMPLE_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shipped, "_results", {})
    monkeypatch.setattr("harness.tasks.base._WARNED_SAMPLES", set())
    return tmp_path / "cache"


# -- fast -------------------------------------------------------------------------------------
def test_the_shipped_books_are_small_public_domain_and_declared():
    books = sorted(p.name for p in shipped.BOOKS.glob("*.txt"))
    assert len(books) >= 3 and not list(shipped.BOOKS.glob("**/cbt_*"))  # none of CBT's own (GFDL) files
    assert sum((shipped.BOOKS / b).stat().st_size for b in books) < 3_000_000
    source = (shipped.BOOKS / "SOURCE.md").read_text()
    assert "public domain" in source and all(f"`{b}`" in source for b in books)
    declared = read_declared_splits(shipped.BOOKS)
    assert sorted(declared) == books and set(declared.values()) == set(SPLITS)
    splits = {b.name: b for b in read_books(shipped.BOOKS)}
    assign_splits(list(splits.values()), shipped.SEED, declared)
    assert {name: b.split for name, b in splits.items()} == declared


def test_declared_splits_must_name_books_and_agree_with_the_cbt_rules(tmp_path):
    def books():
        return [Book("a.txt", "A", "a", tokenised=False), Book("b.txt", "B", "b", tokenised=False),
                Book("jungle.txt", "The Jungle Book", "j", tokenised=False)]

    got = books()
    assign_splits(got, 0, {"a.txt": "validation"})
    assert [(b.split, b.reason) for b in got] == [
        ("validation", "declared in splits.json"), ("train", "seeded shuffle of the other books (seed 0)"),
        ("test", "a CBT test book (by title): kept out of train")]
    with pytest.raises(HarnessError, match="puts jungle.txt in train, but it must be test: a CBT test book"):
        assign_splits(books(), 0, {"jungle.txt": "train"})
    with pytest.raises(HarnessError, match="names books that are not in the folder: c.txt"):
        assign_splits(books(), 0, {"c.txt": "train"})
    (tmp_path / "splits.json").write_text(json.dumps({"a.txt": "dev"}))
    with pytest.raises(HarnessError, match=r"a.txt: unknown split 'dev'; valid: train, validation, test"):
        read_declared_splits(tmp_path)
    assert read_declared_splits(tmp_path / "nowhere") == {}


def test_without_spacy_cbt_reads_the_sample_and_says_why(no_data_dir, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "spacy", None)
    task = get_task("cbt")
    assert len(task.load("train")) == 24 and task.source == str(FIXTURES / "cbt" / "train.jsonl")
    warned = [r.getMessage() for r in caplog.records if "project-written sample" in r.getMessage()]
    assert len(warned) == 1 and "could not build CBT items from the books shipped" in warned[0]
    assert "spaCy is not installed: pip install 'dits-harness[cbt]'" in warned[0]
    assert not list(no_data_dir.glob("data/*"))  # no partial build left behind


def test_other_tasks_and_the_sample_switch_keep_the_sample(no_data_dir, monkeypatch):
    monkeypatch.setattr(shipped, "build", lambda final: pytest.fail("built"))
    arc = get_task("arc_c")
    arc.load("test")
    assert arc.source == str(FIXTURES / "arc_c" / "test.jsonl")
    monkeypatch.setenv(shipped.SAMPLE_ENV, "1")
    cbt = get_task("cbt")
    cbt.load("test")
    assert cbt.source == str(FIXTURES / "cbt" / "test.jsonl")
    monkeypatch.delenv(shipped.SAMPLE_ENV)
    cbt.load("test", data_dir=FIXTURES)  # the sample as a data directory, explicitly
    assert cbt.source == str(FIXTURES / "cbt" / "test.jsonl")


# -- slow: one build of the shipped books -----------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The shipped books built once through the cbt task's first load (about a minute)."""
    pytest.importorskip("spacy", reason="the cbt extra (spaCy) is not installed")
    cache = tmp_path_factory.mktemp("cache")
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("harness").addHandler(handler)
    with pytest.MonkeyPatch.context() as mp:
        for var in ("HARNESS_DATA_DIR", shipped.SAMPLE_ENV):
            mp.delenv(var, raising=False)
        mp.setenv("HARNESS_CACHE", str(cache))
        mp.setattr(shipped, "_results", {})
        try:
            task = get_task("cbt")
            questions = task.load("train")
        finally:
            logging.getLogger("harness").removeHandler(handler)
        folder, why = shipped.shipped_cbt_dir()
    if folder is None:
        pytest.skip(why)
    return {"cache": cache, "folder": folder, "task": task, "train": questions,
            "log": [r.getMessage() for r in records]}


def test_shipped_books_build_three_disjoint_splits(built):
    folder = built["folder"]
    assert folder.parent == built["cache"] / "data" and folder.name == f"cbt-books-{shipped.cache_key()}"
    assert built["task"].source == str(folder / "cbt" / "train.jsonl")  # the run record names the build
    n_books = len(list(shipped.BOOKS.glob("*.txt")))
    assert [m for m in built["log"] if m.startswith("cbt: building")] == [
        f"cbt: building items from the {n_books} public-domain books shipped with the harness (about a minute, "
        f"once; cached in {folder})"]
    manifest = json.loads((folder / "cbt" / "manifest.json").read_text())
    assert manifest["seed"] == shipped.SEED and manifest["type"] == shipped.TYPE
    for split in SPLITS:
        assert manifest["counts"][split] >= MINIMUM[split], manifest["counts"]
        rows = (folder / "cbt" / f"{split}.jsonl").read_text().splitlines()
        assert len(rows) == manifest["counts"][split]
    assert len(built["train"]) == manifest["counts"]["train"]
    by_split = {s: {b["name"] for b in manifest["books"] if b["split"] == s and b["items"]} for s in SPLITS}
    assert all(by_split.values()) and not (by_split["train"] & (by_split["validation"] | by_split["test"]))
    assert not by_split["validation"] & by_split["test"]
    assert "alice-in-wonderland.txt" in by_split["test"]  # CBT's test books stay out of train


def test_a_second_load_reuses_the_cache(built, monkeypatch):
    folder = built["folder"]
    stamps = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    for var in ("HARNESS_DATA_DIR", shipped.SAMPLE_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HARNESS_CACHE", str(built["cache"]))
    monkeypatch.setattr(shipped, "_results", {})  # as a new process would
    monkeypatch.setattr(shipped, "build", lambda final: pytest.fail("built again"))
    task = get_task("cbt")
    assert len(task.load("test", limit=5)) == 5 and task.source == str(folder / "cbt" / "test.jsonl")
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == stamps
    assert [p.name for p in (built["cache"] / "data").iterdir()] == [folder.name]  # no partial left

